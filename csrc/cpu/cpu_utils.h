// Helpers shared by the CPU kernels: the intra-op thread pool, grain sizes, instruction-set
// multiversioning and fp32 loads/stores of every dtype. No kernel logic lives here.
//
// Why not at::parallel_for and at::vec::Vectorized directly: an extension is compiled without
// -fopenmp and without -mavx2 (torch.utils.cpp_extension adds neither), so at::parallel_for
// runs serially and at::vec::Vectorized is its DEFAULT (scalar array) implementation. Instead
//  * parallel_for below runs on ATen's own OpenMP pool through torch_parallel_for (the stable C
//    ABI of torch >= 2.10; at::parallel_for when this file is compiled with OpenMP or for an
//    older torch), so the kernels use exactly the threads torch.get_num_threads() says;
//  * the inner loops are plain, branch-free loops over adjacent memory that the compiler
//    vectorises, compiled once per instruction set (AVX-512, AVX2+FMA, baseline) by
//    PROGAN_CPU_MULTIVERSION and picked at load time by the dynamic linker (GCC target_clones).
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__has_include)
#if __has_include(<torch/csrc/stable/c/shim.h>) && !defined(_OPENMP)
#include <torch/csrc/stable/c/shim.h>
#if defined(TORCH_FEATURE_VERSION) && defined(TORCH_VERSION_2_10_0) && TORCH_FEATURE_VERSION >= TORCH_VERSION_2_10_0
#define PROGAN_CPU_TORCH_POOL 1
#endif
#endif
#endif

// One clone per x86-64 microarchitecture level; elsewhere (Clang, macOS, ARM) a single build.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__ELF__)
#define PROGAN_CPU_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PROGAN_CPU_MULTIVERSION
#endif

// Helpers called from a PROGAN_CPU_MULTIVERSION kernel must be inlined into it to be compiled for
// the clone's instruction set (an out-of-line copy is baseline code).
#if defined(__GNUC__)
#define PROGAN_CPU_INLINE inline __attribute__((always_inline))
#else
#define PROGAN_CPU_INLINE inline
#endif

// For loops that may run in place (the same buffer read and written at the same index): no
// loop-carried dependence, but the compiler cannot prove it and would take its scalar fallback.
#if defined(__GNUC__) && !defined(__clang__)
#define PROGAN_CPU_IVDEP _Pragma("GCC ivdep")
#else
#define PROGAN_CPU_IVDEP
#endif

namespace progan_ext {
namespace cpu {

// ---- parallelism -------------------------------------------------------------------------------

// Work (in elements touched) below which a parallel region costs more than it saves.
constexpr int64_t kMinParallelWork = 32768;

// Items per chunk so that each chunk touches at least kMinParallelWork elements.
inline int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kMinParallelWork / std::max<int64_t>(1, work_per_item));
}

// f(begin, end) over [begin, end) in chunks of at least `grain` items, on torch's intra-op pool.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
#ifdef PROGAN_CPU_TORCH_POOL
  if (end - begin <= grain) {
    f(begin, end);
    return;
  }
  auto call = [](int64_t b, int64_t e, void* ctx) { (*static_cast<const F*>(ctx))(b, e); };
  // torch_parallel_for returns an error code only when f throws; the kernels never do.
  const auto err = torch_parallel_for(begin, end, grain, call, const_cast<void*>(static_cast<const void*>(&f)));
  TORCH_CHECK(err == AOTI_TORCH_SUCCESS, "progan_ext: a parallel CPU kernel failed");
#else
  at::parallel_for(begin, end, grain, f);
#endif
}

// ---- fp32 (fp64 for double) loads and stores -----------------------------------------------------

// The accumulation type of T: float for the 16-bit types, T otherwise.
template <typename T>
struct AccType {
  using type = T;
};
template <>
struct AccType<c10::BFloat16> {
  using type = float;
};
template <>
struct AccType<c10::Half> {
  using type = float;
};
template <typename T>
using acc_t = typename AccType<T>::type;

// Branch-free conversions (c10's bfloat16 rounding branches on NaN, which stops vectorisation).
PROGAN_CPU_INLINE float load(const c10::BFloat16* p) {
  const uint32_t bits = static_cast<uint32_t>(p->x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
PROGAN_CPU_INLINE float load(const c10::Half* p) { return static_cast<float>(*p); }
PROGAN_CPU_INLINE float load(const float* p) { return *p; }
PROGAN_CPU_INLINE double load(const double* p) { return *p; }

// Round to nearest even; NaN stays a (quiet) NaN.
PROGAN_CPU_INLINE void store(c10::BFloat16* p, float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  p->x = static_cast<uint16_t>(f != f ? 0x7FC0u : rounded);
}
PROGAN_CPU_INLINE void store(c10::Half* p, float f) { *p = static_cast<c10::Half>(f); }
PROGAN_CPU_INLINE void store(float* p, float f) { *p = f; }
PROGAN_CPU_INLINE void store(double* p, double f) { *p = f; }

// Leaky ReLU with slope `slope` >= 0 (1: identity) whose output keeps, in its sign, whether the
// input was > 0: an input of exactly 0 gives -0, as on the CUDA kernels (device_utils.cuh). The
// gradient is read off the output (leaky_positive), and a bfloat16 output that rounds a tiny
// positive input to +0 still gets slope 1. A blend, not a branch, provided the compiler may
// evaluate both sides: with the default -ftrapping-math GCC if-converts this (and leaky_positive's
// `||`) only where masked instructions exist (AVX-512) and leaves a scalar branch in the AVX2 and
// baseline clones, 5-10x slower; setup.py and CMakeLists.txt build with -fno-trapping-math.
template <typename A>
PROGAN_CPU_INLINE A leaky(A v, A slope) {
  const A neg = -std::abs(v * slope);
  return v > A(0) ? v : neg;
}

// Whether the leaky ReLU that wrote y had an input > 0: y > 0, or y is +0 (bits all zero).
template <typename A>
PROGAN_CPU_INLINE bool leaky_positive(A y) {
  using Bits = std::conditional_t<sizeof(A) == 8, uint64_t, uint32_t>;
  Bits bits;
  std::memcpy(&bits, &y, sizeof bits);
  return y > A(0) || bits == 0;
}

// Lanes of the partial sums in reductions: wide enough for AVX-512, and a fixed order, so a
// reduction's result does not depend on the thread count or the instruction set.
constexpr int64_t kLanes = 16;

// Sum over i < n of a[i] * b[i] in acc_t<T>, with kLanes partial sums.
template <typename T>
PROGAN_CPU_INLINE acc_t<T> dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  using A = acc_t<T>;
  A part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += load(a + i + l) * load(b + i + l);
  A sum = 0;
  for (; i < n; ++i) sum += load(a + i) * load(b + i);
  for (int64_t l = 0; l < kLanes; ++l) sum += part[l];
  return sum;
}

}  // namespace cpu
}  // namespace progan_ext
