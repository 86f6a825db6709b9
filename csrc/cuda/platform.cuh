// The one place where the CUDA sources meet their two compilers.
//
//  * nvcc (the product): CUDA's own headers; inline PTX for cp.async.
//  * host C++ with PROGAN_EXT_EMULATION (the emulated build, csrc/emu): the same kernel sources run
//    on the CPU against an emulation of the CUDA device API that keeps its execution semantics.
//
// Kernel code uses, instead of the raw constructs, only these wrappers:
//  * PROGAN_CUDA_ARCH        instead of __CUDA_ARCH__ (0 in nvcc's host pass, 900 when emulated);
//  * PROGAN_SHARED(T, name, n[, align])  a block-shared array `T name[n]` (a `T*` when emulated);
//  * async_copy16 / async_copy_commit / async_copy_wait<N>  for cp.async (inline PTX on sm_80+);
//  * launches through PROGAN_LAUNCH (launch.cuh), never <<<>>> directly.
#pragma once

#if defined(PROGAN_EXT_EMULATION)
#include "../emu/device.h"
#include "../emu/wmma.h"
#define PROGAN_CUDA_ARCH 900  // the emulator models an sm_90 device (cp.async, bf16 and TF32 WMMA)
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
#if defined(__CUDA_ARCH__)
#define PROGAN_CUDA_ARCH __CUDA_ARCH__
#else
#define PROGAN_CUDA_ARCH 0  // nvcc's host pass: kernel bodies are parsed, not run
#endif
#endif

#include <cstdint>

// A block-shared array. In CUDA a __shared__ array; in the emulator a pointer into the running
// block's shared memory (poisoned before every block), the same for every thread of the block.
#if defined(PROGAN_EXT_EMULATION)
#define PROGAN_SHARED_ALIGNED(T, name, n, align)                   \
  static char name##_emu_tag; /* its address names this declaration */ \
  T* const name = ::progan_emu::shared_array<T, (n), (align)>(&name##_emu_tag)
#else
#define PROGAN_SHARED_ALIGNED(T, name, n, align) __shared__ __align__(align) T name[n]
#endif
#define PROGAN_SHARED(T, name, n) PROGAN_SHARED_ALIGNED(T, name, n, alignof(T))

namespace progan_ext {
namespace cuda {

// ---- cp.async: 16-byte global -> shared copies that land at the matching wait -------------------
// When !valid the destination is zero-filled and the source not read (callers pass a valid
// address anyway: the tensor base). Without sm_80 (nvcc's host pass) a plain synchronous copy.
__device__ __forceinline__ void async_copy16(void* smem_dst, const void* gsrc, bool valid) {
#if defined(PROGAN_EXT_EMULATION)
  progan_emu::async_copy16(smem_dst, gsrc, valid);
#elif PROGAN_CUDA_ARCH >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gsrc), "r"(src_bytes));
#else
  uint4 v = make_uint4(0, 0, 0, 0);
  if (valid) v = *reinterpret_cast<const uint4*>(gsrc);
  *reinterpret_cast<uint4*>(smem_dst) = v;
#endif
}

// Closes the group of copies issued since the last commit.
__device__ __forceinline__ void async_copy_commit() {
#if defined(PROGAN_EXT_EMULATION)
  progan_emu::async_commit();
#elif PROGAN_CUDA_ARCH >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most N committed groups of this thread are still in flight.
template <int N>
__device__ __forceinline__ void async_copy_wait() {
#if defined(PROGAN_EXT_EMULATION)
  progan_emu::async_wait(N);
#elif PROGAN_CUDA_ARCH >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

}  // namespace cuda
}  // namespace progan_ext
