// Device helpers shared by every CUDA kernel of progan_ext: accumulation types, 16-byte vector
// access, warp/block reductions and grid sizing. Kept free of heavy ATen headers so that kernel
// files compile quickly; the same code compiles with nvcc and in the emulated build (platform.cuh).
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "platform.cuh"

namespace progan_ext {
namespace cuda {

// Accumulation type: float for half/bfloat16/float, double for double.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Elements of T in one 16-byte access (4 float, 8 half/bfloat16, 2 double).
template <typename T>
constexpr int kVec = 16 / sizeof(T);

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}

template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, N>& v) {
  *reinterpret_cast<Vec<T, N>*>(p) = v;
}

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over each aligned group of `lanes` lanes (a power of two <= 32) of a full warp, every lane
// getting its group's sum; a fixed xor-butterfly order (deterministic). All 32 lanes must call it.
template <typename T>
__device__ __forceinline__ T group_sum(T v, int lanes) {
  for (int offset = lanes / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Lanes per row for rows of `items` items walked by a lane group (group_sum): the next power of
// two, at most a warp, so that small rows share a warp instead of leaving lanes idle.
inline int lanes_per_row(int64_t items) {
  int lanes = 1;
  while (lanes < 32 && lanes < items) lanes *= 2;
  return lanes;
}

// Sum over the block, in a fixed order (deterministic). `scratch` holds >= 32 values; every
// thread of the block must call it (blockDim.x a multiple of 32: warp_sum's full mask); all
// threads get the result.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : T(0);
  return warp_sum(v);
}

// Leaky ReLU whose output keeps, in its sign, whether the input was > 0: an input of exactly 0
// gives -0 (and a negative input, times alpha >= 0, stays negative or -0). The gradient is read off
// the output (lrelu_positive), and a 16-bit output rounds a tiny positive input to +0 and a tiny
// negative one to -0: the sign survives the rounding, so the slope is PyTorch's (1 iff input > 0)
// in every dtype. -0 and +0 compare equal, so the forward values are unchanged.
template <typename acc>
__host__ __device__ __forceinline__ acc leaky_relu(acc v, acc alpha) {
  return v > acc(0) ? v : v == acc(0) ? -acc(0) : v * alpha;
}

// The slope of leaky_relu at the input that produced output y: y > 0 or y == +0 (sign bit clear).
template <typename T>
__host__ __device__ __forceinline__ bool lrelu_positive(T y) {
  if constexpr (std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>)
    return static_cast<float>(y) > 0.f || y.x == 0;  // raw bits 0x0000: +0
  else
    return y > T(0) || (y == T(0) && T(1) / y > T(0));  // 1/+0 = +inf, 1/-0 = -inf
}

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over n items: enough to fill the GPU, never more than needed.
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 8) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(n, threads), max_blocks)));
}

// Threads for a block that shares `work` items among its threads (a block_sum over them): the
// work rounded up to whole warps, 32 to max_threads. A reduction over a 4x4 map's pixels or a
// small minibatch group then runs one or two warps instead of eight mostly idle ones (and the
// emulator, which runs every thread, does a fraction of the work). Depends only on the shapes.
inline int threads_for(int64_t work, int max_threads = 256) {
  return static_cast<int>(std::min<int64_t>(max_threads, std::max<int64_t>(32, ceil_div(work, 32) * 32)));
}

}  // namespace cuda
}  // namespace progan_ext
