// Probe kernels for the memory tracer's own tests (tests/test_memory_tracer.py): warp-wide access
// patterns whose sectors and bank conflicts are known, compiled like the product kernels of the
// memory-tracing build (instrumented). Exposed as
// torch.ops.progan_ext_emu_trace.trace_probe(name, args) -> Tensor (the kernel's output).

#include <ATen/ops/arange.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <string>

#include "../../cuda/device_utils.cuh"
#include "../../cuda/launch.cuh"

namespace progan_ext {
namespace cuda {
namespace {

using namespace nvcuda;

// Lane t of the grid loads x[offset + t * stride]; lanes of a warp at or above `active` sit out.
__global__ void global_f32_probe(const float* x, float* out, int stride, int offset, int active) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (int(threadIdx.x % 32) < active) out[t] = x[offset + t * stride];
}

// 16-byte loads: lane t loads the float4 at x + 4 * t * stride.
__global__ void global_f4_probe(const float* x, float* out, int stride) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const Vec<float, 4> v = load_vec<float, 4>(x + 4 * t * stride);
  out[t] = v.v[0] + v.v[1] + v.v[2] + v.v[3];
}

// A loop: iteration i of lane l loads x[32 * i + l] (n requests of one warp, each 4 sectors).
__global__ void global_loop_probe(const float* x, float* out, int n) {
  float acc = 0.f;
  for (int i = 0; i < n; ++i) acc += x[32 * i + threadIdx.x];
  out[threadIdx.x] = acc;
}

// Shared memory, 4-byte words: lane l stores and loads s[l * stride] (stride 32: 32-way).
__global__ void shared_f32_probe(float* out, int stride) {
  PROGAN_SHARED_ALIGNED(float, s, 32 * 64, 128);
  const int l = threadIdx.x;
  s[l * stride] = float(l);
  __syncwarp();
  out[l] = s[l * stride];
}

// Shared memory, N-float vectors: lane l stores and loads the vector at s + N * l * stride.
template <int N>
__global__ void shared_vec_probe(float* out, int stride) {
  PROGAN_SHARED_ALIGNED(float, s, 32 * 64, 128);
  const int l = threadIdx.x;
  Vec<float, N> v;
  for (int i = 0; i < N; ++i) v.v[i] = float(l + i);
  store_vec(s + N * l * stride, v);
  __syncwarp();
  const Vec<float, N> w = load_vec<float, N>(s + N * l * stride);
  out[l] = w.v[0];
}

// cp.async: lane l copies x[4l .. 4l+4) to shared memory (16 sectors; 4 shared wavefronts).
__global__ void async_copy_probe(const float* x, float* out) {
  PROGAN_SHARED_ALIGNED(float, s, 128, 128);
  const int l = threadIdx.x;
  async_copy16(s + 4 * l, x + 4 * l, true);
  async_copy_commit();
  async_copy_wait<0>();
  __syncwarp();
  out[l] = s[l];
}

// wmma: a 16 x 16 half tile with leading dimension ldm loaded from shared memory (ldm 16: rows 128
// bytes apart, 2-way conflicts in the ldmatrix phases; ldm 24: none).
__global__ void wmma_load_probe(float* out, int ldm) {
  PROGAN_SHARED_ALIGNED(__half, s, 16 * 32, 128);
  const int l = threadIdx.x;
  for (int i = l; i < 16 * ldm; i += 32) s[i] = __half(float(i % 7));
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::load_matrix_sync(fa, s, unsigned(ldm));
  out[l] = float(fa.x[0]);
}

int64_t arg(c10::IntArrayRef args, size_t i, int64_t fallback) { return args.size() > i ? args[i] : fallback; }

at::Tensor trace_probe(c10::string_view name_view, c10::IntArrayRef args) {
  const std::string name(name_view);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor x = at::arange(32 * 64 * 8 + 64, f32);  // 64-byte aligned (the CPU allocator's)
  const float* xp = x.const_data_ptr<float>();
  const int a0 = int(arg(args, 0, 1)), a1 = int(arg(args, 1, 0)), a2 = int(arg(args, 2, 32)), warps = int(arg(args, 3, 1));
  at::Tensor out = at::zeros({32 * warps}, f32);
  float* op = out.mutable_data_ptr<float>();
  if (name == "global_f32") {  // args: stride, offset, active lanes, warps
    TORCH_CHECK_VALUE(a1 + 32 * warps * a0 <= x.numel(), "trace_probe: stride too large");
    PROGAN_LAUNCH(global_f32_probe, 1, 32 * warps, 0, nullptr, xp, op, a0, a1, a2);
  } else if (name == "global_f4") {  // args: stride
    PROGAN_LAUNCH(global_f4_probe, 1, 32, 0, nullptr, xp, op, a0);
  } else if (name == "global_loop") {  // args: iterations
    PROGAN_LAUNCH(global_loop_probe, 1, 32, 0, nullptr, xp, op, a0);
  } else if (name == "shared_f32") {  // args: stride (at most 64)
    PROGAN_LAUNCH(shared_f32_probe, 1, 32, 0, nullptr, op, a0);
  } else if (name == "shared_f2") {
    PROGAN_LAUNCH(shared_vec_probe<2>, 1, 32, 0, nullptr, op, a0);
  } else if (name == "shared_f4") {
    PROGAN_LAUNCH(shared_vec_probe<4>, 1, 32, 0, nullptr, op, a0);
  } else if (name == "async_copy") {
    PROGAN_LAUNCH(async_copy_probe, 1, 32, 0, nullptr, xp, op);
  } else if (name == "wmma_load") {  // args: ldm (16 or 24)
    PROGAN_LAUNCH(wmma_load_probe, 1, 32, 0, nullptr, op, a0);
  } else {
    TORCH_CHECK_VALUE(false, "trace_probe: unknown probe '", name, "'");
  }
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace progan_ext

PROGAN_EMU_LIBRARY_FRAGMENT(PROGAN_EMU_NS, m) {
  m.def("trace_probe(str name, int[] args) -> Tensor", &progan_ext::cuda::trace_probe);
}
