// 1x1 convolutions on NCHW with few input or few output channels: toRGB (Cout = 3), fromRGB
// (Cin = 3), the input gradients of both (conv2d_resample with the weight transposed: Cin = 3,
// Cout = 3) and their weight gradients. With at most kPointwiseFew channels on one side they do
// about 2 x few FLOPs per element moved, far below the ~300 FLOPs per byte where H100 tensor
// cores stop waiting for memory, so the tensor-core path only adds bytes there: the NHWC copy
// of x, zero channels padded to the 16-byte vector and a 64-wide output tile that is 95%
// padding. Instead one thread per output pixel reads its channels straight from the NCHW planes
// (a warp's lanes are adjacent pixels, so every channel access is one contiguous run of the
// plane), keeps the few channels of the short side in registers and writes each output once,
// bias, activation and pixel norm applied (the same epilogue, in acc_t, as conv_simple_kernel
// and the norm pass). Any dtype, float64 included.
//
// The weight times the scale is staged per block in shared memory as acc_t, in chunks of
// kPointwiseChunk long-side channels laid out [chunk][few]: a thread reads the `few` weights of one
// long-side channel with one broadcast load per value (no bank conflicts: every lane reads the
// same address). Sums run over ci in order 0..Cin-1: deterministic, as every kernel here.
#pragma once

#include "conv_geom.cuh"

namespace progan_ext {
namespace cuda {

constexpr int kPointwiseFew = 4, kPointwiseChunk = 256, kPointwiseThreads = 256;
static_assert(kPointwiseThreads == 256, "the launches spell the block size out (tests/test_device_code.py)");

struct PointwiseParams {
  int64_t N, S;         // images, pixels per image (H * W)
  int64_t Cin, Cout;
  int64_t ws0, ws1;     // strides of the weight [Cout][Cin][1][1] along Cout and Cin
  bool lrelu, pixel_norm;
};

// Stages w[co][ci] * scale for the long-side channels [c0, c0 + kPointwiseChunk) that exist into
// ws[(c - c0) * kPointwiseFew + f], f the short-side channel (zero past the few); and, when
// `bias` is given (the long side is Cout), bias[c] into bs[c - c0]. The caller syncs after, and
// reads only the rows staged.
template <typename T>
__device__ __forceinline__ void pointwise_stage(const T* __restrict__ w, const T* __restrict__ bias,
                                                const PointwiseParams& p, bool long_is_cout, int64_t c0,
                                                acc_t<T> scale, acc_t<T>* ws, acc_t<T>* bs) {
  using acc = acc_t<T>;
  const int64_t longs = long_is_cout ? p.Cout : p.Cin, fews = long_is_cout ? p.Cin : p.Cout;
  const int rows = int(longs - c0 < kPointwiseChunk ? longs - c0 : kPointwiseChunk);  // toRGB at 16 inputs: 16
  for (int i = threadIdx.x; i < rows * kPointwiseFew; i += blockDim.x) {
    const int64_t c = c0 + i / kPointwiseFew, f = i % kPointwiseFew;
    acc v = acc(0);
    if (f < fews) {
      const int64_t co = long_is_cout ? c : f, ci = long_is_cout ? f : c;
      v = static_cast<acc>(w[co * p.ws0 + ci * p.ws1]) * scale;
    }
    ws[i] = v;
  }
  if (long_is_cout && bias != nullptr)
    for (int i = threadIdx.x; i < rows; i += blockDim.x) bs[i] = static_cast<acc>(bias[c0 + i]);
}

// Few outputs (Cout <= kPointwiseFew, toRGB): thread = pixel q of [0, N*S); acc[f] += w[f][ci] * x[ci]
// over all ci, then bias, activation, pixel norm over the Cout values. One pixel per thread and
// no grid-stride loop (every thread reaches the staging barriers): grid = ceil(N*S / blockDim.x).
template <typename T>
__global__ void conv_pointwise_few_out_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                              const T* __restrict__ bias, T* __restrict__ y,
                                              acc_t<T>* __restrict__ rnorm, PointwiseParams p, acc_t<T> scale,
                                              acc_t<T> alpha) {
  using acc = acc_t<T>;
  PROGAN_SHARED(acc, ws, kPointwiseChunk * kPointwiseFew);
  const int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool valid = q < p.N * p.S;
  const int64_t n = valid ? q / p.S : 0, s = valid ? q - n * p.S : 0;  // in-range pointers only
  const T* xp = x + n * p.Cin * p.S + s;
  acc a[kPointwiseFew] = {};
  for (int64_t c0 = 0; c0 < p.Cin; c0 += kPointwiseChunk) {
    __syncthreads();  // the previous chunk's weights are no longer read
    pointwise_stage(w, static_cast<const T*>(nullptr), p, /*long_is_cout=*/false, c0, scale, ws,
                    static_cast<acc*>(nullptr));
    __syncthreads();
    const int64_t len = p.Cin - c0 < kPointwiseChunk ? p.Cin - c0 : kPointwiseChunk;
    if (valid) {
      for (int64_t i = 0; i < len; ++i) {
        const acc v = static_cast<acc>(xp[(c0 + i) * p.S]);
#pragma unroll
        for (int f = 0; f < kPointwiseFew; ++f) a[f] += ws[i * kPointwiseFew + f] * v;
      }
    }
  }
  if (!valid) return;
  acc ss = acc(0);
#pragma unroll
  for (int f = 0; f < kPointwiseFew; ++f) {
    if (f < p.Cout) {
      a[f] = apply_act(a[f] + (bias != nullptr ? static_cast<acc>(bias[f]) : acc(0)), p.lrelu, alpha);
      ss += a[f] * a[f];
    }
  }
  const acc r = p.pixel_norm ? acc(1) / sqrt(ss / acc(p.Cout) + acc(1e-8)) : acc(1);
  if (rnorm != nullptr) rnorm[q] = r;
  T* yp = y + n * p.Cout * p.S + s;
#pragma unroll
  for (int f = 0; f < kPointwiseFew; ++f)
    if (f < p.Cout) yp[f * p.S] = static_cast<T>(p.pixel_norm ? a[f] * r : a[f]);
}

// Few inputs (Cin <= kPointwiseFew, fromRGB): thread = pixel q; its Cin values in registers, then
// for each co the dot product, bias and activation. With pixel norm the outputs are computed twice
// (a few FMAs each): once for the sum of squares, once to write them normalized.
template <typename T>
__global__ void conv_pointwise_few_in_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                             const T* __restrict__ bias, T* __restrict__ y,
                                             acc_t<T>* __restrict__ rnorm, PointwiseParams p, acc_t<T> scale,
                                             acc_t<T> alpha) {
  using acc = acc_t<T>;
  PROGAN_SHARED(acc, ws, kPointwiseChunk * kPointwiseFew);
  PROGAN_SHARED(acc, bs, kPointwiseChunk);
  const int64_t q = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool valid = q < p.N * p.S;
  const int64_t n = valid ? q / p.S : 0, s = valid ? q - n * p.S : 0;  // in-range pointers only
  acc xv[kPointwiseFew];
#pragma unroll
  for (int f = 0; f < kPointwiseFew; ++f)
    xv[f] = valid && f < p.Cin ? static_cast<acc>(x[(n * p.Cin + f) * p.S + s]) : acc(0);
  T* yp = y + n * p.Cout * p.S + s;
  acc ss = acc(0), r = acc(1);
  for (int pass = p.pixel_norm ? 0 : 1; pass < 2; ++pass) {  // pass 0: the sum of squares only
    if (pass == 1 && p.pixel_norm) r = acc(1) / sqrt(ss / acc(p.Cout) + acc(1e-8));
    for (int64_t c0 = 0; c0 < p.Cout; c0 += kPointwiseChunk) {
      __syncthreads();
      pointwise_stage(w, bias, p, /*long_is_cout=*/true, c0, scale, ws, bs);
      __syncthreads();
      const int64_t len = p.Cout - c0 < kPointwiseChunk ? p.Cout - c0 : kPointwiseChunk;
      if (!valid) continue;
      for (int64_t i = 0; i < len; ++i) {
        acc v = acc(0);
#pragma unroll
        for (int f = 0; f < kPointwiseFew; ++f) v += ws[i * kPointwiseFew + f] * xv[f];
        v = apply_act(bias != nullptr ? v + bs[i] : v, p.lrelu, alpha);
        if (pass == 0) ss += v * v;
        else yp[(c0 + i) * p.S] = static_cast<T>(p.pixel_norm ? v * r : v);
      }
    }
  }
  if (valid && rnorm != nullptr) rnorm[q] = r;
}

// Weight gradient of the same convs: gw[co][ci] = scale * sum over (n, p) of g[n, co, p] * x[n, ci, p].
// `lng` is the tensor with the long side's channels (x for toRGB, the gradient for fromRGB), `few`
// the other (<= kPointwiseFew channels). grid (ceil(L / warps per block), chunks): warp w of block
// (bx, c) owns long channel l = bx * warps + w and sums, with its lanes strided over the pixels of
// chunk c, the products with each of the few channels (their runs are read by every warp of the
// block: L1 hits); then warp_sum, and lane 0 writes partial[c][co * Cin + ci]. A chunk lies inside
// one image (chunks_per_image of them per image, chunk_len pixels each), so no pixel index is ever
// divided. grad_weight_finish_kernel adds the chunks in order and applies the scale: deterministic.
struct PointwiseGradParams {
  int64_t N, S, L, F;   // images, pixels per image, long-side and few-side channels
  int64_t chunk_len, chunks_per_image;
  bool long_is_cout;    // fromRGB: the long side is the output (gradient) side
};

template <typename T>
__global__ void grad_weight_pointwise_kernel(const T* __restrict__ lng, const T* __restrict__ few,
                                             acc_t<T>* __restrict__ partial, PointwiseGradParams p) {
  using acc = acc_t<T>;
  const int warps = blockDim.x / 32, lane = threadIdx.x % 32;
  const int64_t l = int64_t(blockIdx.x) * warps + threadIdx.x / 32;
  const int64_t chunk = blockIdx.y, n = chunk / p.chunks_per_image;
  const int64_t s0 = (chunk % p.chunks_per_image) * p.chunk_len;
  const int64_t s1 = s0 + p.chunk_len < p.S ? s0 + p.chunk_len : p.S;
  if (l >= p.L) return;  // whole warps: the warp_sum below sees all 32 lanes
  const T* a = lng + (n * p.L + l) * p.S;
  const T* b = few + n * p.F * p.S;
  acc sum[kPointwiseFew] = {};
  for (int64_t s = s0 + lane; s < s1; s += 32) {
    const acc v = static_cast<acc>(a[s]);
#pragma unroll
    for (int f = 0; f < kPointwiseFew; ++f)
      if (f < p.F) sum[f] += v * static_cast<acc>(b[f * p.S + s]);
  }
  const int64_t nw = p.L * p.F;
#pragma unroll
  for (int f = 0; f < kPointwiseFew; ++f) {
    if (f >= p.F) break;
    const acc total = warp_sum(sum[f]);
    if (lane == 0) partial[blockIdx.y * nw + (p.long_is_cout ? l * p.F + f : f * p.L + l)] = total;
  }
}

}  // namespace cuda
}  // namespace progan_ext
