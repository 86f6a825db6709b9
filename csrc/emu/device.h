// progan_ext CUDA emulator: the CUDA device API as host C++, for compiling csrc/cuda a second time
// (PROGAN_EXT_EMULATION builds only; included through csrc/cuda/platform.cuh, never directly).
//
// Kernels see the qualifiers (__global__, __device__, ...) as nothing, threadIdx & co. as the
// running fiber's indices, __syncthreads and the warp intrinsics as blocking points of the
// scheduler (runtime.h), and every intrinsic the kernels use with CUDA's meaning. Blocking
// intrinsics are noinline so that their return address identifies the call site.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "runtime.h"

// ---- qualifiers --------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#ifdef PROGAN_EMU_TRACE
// The memory tracer names an access by its instruction: inlining every helper, as nvcc does, gives
// each source-level load and store its own site.
#define __forceinline__ inline __attribute__((always_inline))
#else
#define __forceinline__ inline
#endif
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__

using dim3 = progan_emu::dim3;
using uint3 = progan_emu::uint3;
using cudaStream_t = struct progan_emu_stream*;
using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;

#define threadIdx (::progan_emu::thread_idx())
#define blockIdx (::progan_emu::block_idx())
#define blockDim (::progan_emu::block_dim())
#define gridDim (::progan_emu::grid_dim())
#define warpSize 32

// ---- synchronisation ---------------------------------------------------------------------------
__attribute__((noinline)) inline void __syncthreads() { progan_emu::syncthreads(__builtin_return_address(0)); }

__attribute__((noinline)) inline void __syncwarp(unsigned mask = 0xffffffffu) {
  progan_emu::warp_collective(progan_emu::Collective::SyncWarp, __builtin_return_address(0), mask, 0, 0, 32);
}

// Memory fences: the emulator is sequentially consistent, so they only have to exist.
inline void __threadfence() {}
inline void __threadfence_block() {}

[[noreturn]] inline void __trap() { progan_emu::fail("__trap() executed"); }

// ---- warp shuffles and votes -------------------------------------------------------------------
namespace progan_emu {
template <typename T>
inline T shuffle(Collective kind, const void* site, unsigned mask, T var, int arg, int width) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = warp_collective(kind, site, mask, bits, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace progan_emu

template <typename T>
__attribute__((noinline)) T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  return progan_emu::shuffle(progan_emu::Collective::ShflIdx, __builtin_return_address(0), mask, var, src_lane, width);
}
template <typename T>
__attribute__((noinline)) T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return progan_emu::shuffle(progan_emu::Collective::ShflUp, __builtin_return_address(0), mask, var, int(delta), width);
}
template <typename T>
__attribute__((noinline)) T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  return progan_emu::shuffle(progan_emu::Collective::ShflDown, __builtin_return_address(0), mask, var, int(delta),
                             width);
}
template <typename T>
__attribute__((noinline)) T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  return progan_emu::shuffle(progan_emu::Collective::ShflXor, __builtin_return_address(0), mask, var, lane_mask,
                             width);
}
__attribute__((noinline)) inline unsigned __ballot_sync(unsigned mask, int pred) {
  return unsigned(progan_emu::warp_collective(progan_emu::Collective::Ballot, __builtin_return_address(0), mask,
                                              pred != 0, 0, 32));
}
__attribute__((noinline)) inline int __any_sync(unsigned mask, int pred) {
  return int(progan_emu::warp_collective(progan_emu::Collective::Any, __builtin_return_address(0), mask, pred != 0,
                                         0, 32));
}
__attribute__((noinline)) inline int __all_sync(unsigned mask, int pred) {
  return int(progan_emu::warp_collective(progan_emu::Collective::All, __builtin_return_address(0), mask, pred != 0,
                                         0, 32));
}

// ---- math and bit intrinsics (CUDA's meaning; fast-math variants at full precision) -------------
using std::exp;
using std::fabs;
using std::log;
using std::sqrt;
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return std::isnan(x) ? 0.0f : x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((uint64_t(a) * b) >> 32); }
template <typename T>
inline T __ldg(const T* p) { return *p; }

// Atomics: fibers never interleave inside one, so a plain read-modify-write is atomic.
template <typename T>
inline T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <typename T>
inline T atomicMax(T* p, T v) { T old = *p; *p = old < v ? v : old; return old; }
template <typename T>
inline T atomicMin(T* p, T v) { T old = *p; *p = v < old ? v : old; return old; }
template <typename T>
inline T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <typename T>
inline T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }

// ---- shared memory (through the PROGAN_SHARED macros of csrc/cuda/platform.cuh) -----------------
namespace progan_emu {
template <typename T, size_t N, size_t Align>
inline T* shared_array(const void* tag) {
  return static_cast<T*>(shared_static(tag, sizeof(T) * N, Align < alignof(T) ? alignof(T) : Align));
}
}  // namespace progan_emu
