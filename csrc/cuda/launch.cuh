// Host side of the CUDA kernels, the same code in the GPU build and the emulated build: kernel
// launches, device guard, stream, device queries, kernel registration and the record of which
// kernel path a call took. Every difference between the two builds is in this file (and in
// platform.cuh for device code).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <utility>

#include "../kernel_paths.h"
#include "platform.cuh"

#if !defined(PROGAN_EXT_EMULATION)
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace progan_ext {
namespace cuda {

#if defined(PROGAN_EXT_EMULATION)
// The emulated kernels run synchronously on CPU tensors: no device, no stream.
struct DeviceGuard {
  explicit DeviceGuard(const at::Tensor&) {}
};
inline cudaStream_t current_stream() { return nullptr; }
// The emulated device: an sm_90 unless PROGAN_EMU_SM says otherwise (e.g. 75, to test the
// simple paths that a pre-Ampere GPU takes).
// PROGAN_EMU_KERNEL_ARCH (default: the device's) is the arch the kernels were "built" for, to test
// the host code's handling of a build that only has older PTX.
int emulated_sm();
int emulated_kernel_arch();
inline int device_sm(const at::Tensor&) { return emulated_sm(); }
template <typename K>
inline int kernel_ptx_arch(K) { return emulated_kernel_arch(); }
inline void check_on_device(const at::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), op, ": the emulated CUDA kernels take CPU tensors, got ", x.device());
}
#else
struct DeviceGuard {
  c10::cuda::CUDAGuard guard;
  explicit DeviceGuard(const at::Tensor& t) : guard(t.device()) {}
};
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
// Compute capability of the tensor's device as major*10 + minor (80 for an A100, 90 for an H100).
inline int device_sm(const at::Tensor& x) {
  int major = 0, minor = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, x.get_device()));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, x.get_device()));
  return major * 10 + minor;
}
// The virtual architecture a kernel's code was generated for (its __CUDA_ARCH__ / 10). A build
// whose arch list only has PTX for an older GPU JIT-compiles that PTX on a newer one, so a kernel
// body selected by `PROGAN_CUDA_ARCH >= 800` is absent although the device is sm_80+.
template <typename K>
inline int kernel_ptx_arch(K kernel) {
  cudaFuncAttributes attr{};
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, reinterpret_cast<const void*>(kernel)));
  return attr.ptxVersion;
}
inline void check_on_device(const at::Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.is_cuda(), op, ": x must be a CUDA tensor");
}
#endif

// Launches kernel<<<grid, block, smem, stream>>>(args...) and checks the launch. `name` is the
// kernel as written at the call site (for the emulator's error messages).
template <typename... Params, typename... Args>
inline void launch_kernel(void (*kernel)(Params...), const char* name, dim3 grid, dim3 block, size_t smem,
                          cudaStream_t stream, Args&&... args) {
#if defined(PROGAN_EXT_EMULATION)
  (void)stream;
  try {
    progan_emu::launch(kernel, name, grid, block, smem, std::forward<Args>(args)...);
  } catch (const progan_emu::Error& e) {
    TORCH_CHECK(false, e.what());
  }
#else
  (void)name;
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

}  // namespace cuda
}  // namespace progan_ext

// PROGAN_LAUNCH(kernel, grid, block, smem, stream, args...): a kernel launch. A kernel name with
// template arguments goes in parentheses: PROGAN_LAUNCH((k<T, M>), grid, ...).
#define PROGAN_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::progan_ext::cuda::launch_kernel(kernel, #kernel, grid, block, smem, stream, ##__VA_ARGS__)

// Registers this file's kernels: for CUDA tensors in the GPU build, under the progan_ext_emu
// namespace (same schemas) for CPU tensors in the emulated build.
#if defined(PROGAN_EXT_EMULATION)
#define PROGAN_CUDA_KERNELS(m) TORCH_LIBRARY_IMPL(PROGAN_EMU_NS, CPU, m)  // progan_ext_emu (runtime.h)
#else
#define PROGAN_CUDA_KERNELS(m) TORCH_LIBRARY_IMPL(progan_ext, CUDA, m)
#endif
