// 1x1 convolutions with few input or few output channels: toRGB (Cout = 3), fromRGB (Cin = 3),
// the input gradients of both (conv2d_resample with the weight transposed: Cin = 3, Cout = 3) and
// their weight gradients. With at most kPointwiseFew channels on one side they do about 2 x few
// FLOPs per element moved, far below the ~300 FLOPs per byte where H100 tensor cores stop waiting
// for memory, so the tensor-core path only adds bytes there: the NHWC copy of an NCHW x, zero
// channels padded to the 16-byte vector and a 64-wide output tile that is 95% padding. Instead
// the input is read in place, the few channels of the short side kept in registers and each
// output written once, bias, activation and pixel norm applied (the same epilogue, in acc_t, as
// conv_simple_kernel and the norm pass). Any dtype, float64 included. Two layouts:
//  * NCHW: one thread per output pixel reads its channels straight from the planes (a warp's
//    lanes are adjacent pixels, so every channel access is one contiguous run of the plane);
//  * channels_last (the `rows` kernels, below): a group of lanes per pixel over its contiguous
//    row of long-side channels, in 16-byte vectors where the rows allow.
//
// The weight times the scale is staged per block in shared memory as acc_t, in chunks of
// kPointwiseChunk long-side channels laid out [chunk][few]: a thread reads the `few` weights of one
// long-side channel (broadcast loads on NCHW, where every lane reads the same address; 16-byte
// row loads on NHWC, the rows padded against bank conflicts). Sums run over ci in order
// 0..Cin-1: deterministic, as every kernel here.
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

// Row r's place in the staged arrays (weights at pw_row(r) * kPointwiseFew, bias at pw_row(r)).
// kGroup = 0: packed (the NCHW kernels, where every lane reads the same row: broadcasts). kGroup =
// VEC > 1 (the NHWC kernels, where lane gl of a pixel's group reads rows gl * VEC + t): an empty row
// after every VEC rows, so the rows a quarter warp's 16-byte loads read at once are 4 * (VEC + 1)
// words apart (VEC 8: 36 words, distinct banks) instead of 4 * VEC (all in one bank).
template <int kGroup>
__host__ __device__ constexpr int pw_row(int r) {
  return kGroup > 0 ? r + r / kGroup : r;
}

// Stages w[co][ci] * scale for the long-side channels [c0, c0 + kPointwiseChunk) that exist into
// ws[pw_row(c - c0) * kPointwiseFew + f], f the short-side channel (zero past the few); and, when
// `bias` is given (the long side is Cout), bias[c] into bs[pw_row(c - c0)]. The caller syncs after, and
// reads only the rows staged.
template <typename T, int kGroup = 0>
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
    ws[pw_row<kGroup>(i / kPointwiseFew) * kPointwiseFew + i % kPointwiseFew] = v;
  }
  if (long_is_cout && bias != nullptr)
    for (int i = threadIdx.x; i < rows; i += blockDim.x) bs[pw_row<kGroup>(i)] = static_cast<acc>(bias[c0 + i]);
}

// The few outputs' epilogue, in acc_t: a[f] = act(a[f] + bias[f]) for f < Cout; returns the
// inverse norm r of the pixel (1 without pixel norm), by which the caller scales what it stores.
template <typename T>
__device__ __forceinline__ acc_t<T> few_out_epilogue(acc_t<T> (&a)[kPointwiseFew], const T* __restrict__ bias,
                                                    const PointwiseParams& p, acc_t<T> alpha) {
  using acc = acc_t<T>;
  acc ss = acc(0);
#pragma unroll
  for (int f = 0; f < kPointwiseFew; ++f) {
    if (f < p.Cout) {
      a[f] = apply_act(a[f] + (bias != nullptr ? static_cast<acc>(bias[f]) : acc(0)), p.lrelu, alpha);
      ss += a[f] * a[f];
    }
  }
  return p.pixel_norm ? acc(1) / sqrt(ss / acc(p.Cout) + acc(1e-8)) : acc(1);
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
  const acc r = few_out_epilogue(a, bias, p, alpha);
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

// ---- channels_last (NHWC): a group of lanes per pixel, over the long side's channels -----------
// On NHWC a pixel's channels are one contiguous row, and a thread per pixel would make every warp
// access stride over 32 rows (toRGB at 16 bf16 channels: 32 B apart, 2 of every 32 bytes used per
// load). Instead, as in pixel_norm_rows_kernel, `lanes` = lanes_per_row(long / VEC) lanes share a
// pixel and each takes VEC adjacent long-side channels per access (VEC = kVec<T>, 16 bytes, when
// the long side is a multiple of it and the rows are 16-byte aligned; else 1), so that a warp's
// access is one contiguous run of 32 / lanes rows. The few short-side values of the block's pixels
// go through shared memory (few_rows_load / few_rows_store, below), where every lane of a pixel's
// group reads them (one address: a broadcast). Sums over the group are group_sum (a fixed xor
// order: deterministic).
//
// Each thread takes `pix` (1 or kRowsPixels, chosen by the host from the grid size) pixels,
// `groups` = blockDim.x / lanes apart, so that every weight row a lane reads from shared memory
// serves pix pixels: with one pixel per thread, toRGB in bf16 would read 8 rows of 16 bytes
// (4 quarter-warp wavefronts each) per 16 bytes of x, as many shared wavefronts per SM and
// clock as the HBM delivers bytes / 16, so shared memory would cap the kernel at the copy
// ceiling; at 2 it has twice that headroom. The pix loads of a step are independent, which also
// keeps more bytes in flight per thread. (4 pixels per thread took 65-110 registers: 25-37.5%
// occupancy on an H100.) A pixel's sums run in the same order for every pix: the result does not depend on it.
// No grid-stride loop, and the loop bounds are uniform over the block: every lane reaches the
// barriers and the full-mask shuffles. grid = ceil(pixels / (groups * pix)).
constexpr int kRowsPixels = 2;

// The few-side rows of a block's pixels [qb, qb + nb) are one contiguous run of nb * F values (F =
// the few channels, a 3-value row for RGB). Read or written per pixel by its group, each of the F
// requests of a warp would touch the sectors of the warp's whole run (36-50% of the bytes moved
// used); so the run goes through shared memory, moved by consecutive threads on consecutive
// elements (every sector whole), and the groups read / write their pixels' values there.
constexpr int kFewStage = kRowsPixels * kPointwiseThreads * kPointwiseFew;  // at most: 1 lane per pixel

template <typename T>
__device__ __forceinline__ void few_rows_load(const T* __restrict__ src, acc_t<T>* fs, int n) {
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) fs[i] = static_cast<acc_t<T>>(src[i]);
}

template <typename T>
__device__ __forceinline__ void few_rows_store(T* __restrict__ dst, const acc_t<T>* fs, int n) {
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) dst[i] = static_cast<T>(fs[i]);
}

// Few outputs (toRGB; fromRGB's input gradient): lane gl of each of its pixels' groups sums its
// channels gl*VEC + t (+ lanes*VEC per step) into a[k][f], the group adds the lanes' sums, then
// every lane of the group runs the epilogue and lane f % lanes puts output f of the pixel's row in
// the block's staged output rows, which the block then stores in one contiguous run.
template <typename T, int VEC>
__global__ void conv_pointwise_rows_few_out_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                   const T* __restrict__ bias, T* __restrict__ y,
                                                   acc_t<T>* __restrict__ rnorm, PointwiseParams p, int lanes,
                                                   int pix, acc_t<T> scale, acc_t<T> alpha) {
  using acc = acc_t<T>;
  constexpr int kGroup = VEC > 1 ? VEC : 0;
  PROGAN_SHARED_ALIGNED(acc, ws, pw_row<kGroup>(kPointwiseChunk) * kPointwiseFew, alignof(Vec<acc, kPointwiseFew>));
  PROGAN_SHARED(acc, fs, kFewStage);
  const int gl = int(threadIdx.x) % lanes, groups = int(blockDim.x) / lanes;
  const int64_t P = p.N * p.S;
  const int64_t q0 = int64_t(blockIdx.x) * groups * pix + threadIdx.x / lanes;  // pixel k: q0 + k * groups
  acc a[kRowsPixels][kPointwiseFew] = {};
  for (int64_t c0 = 0; c0 < p.Cin; c0 += kPointwiseChunk) {
    __syncthreads();  // the previous chunk's weights are no longer read
    pointwise_stage<T, kGroup>(w, static_cast<const T*>(nullptr), p, /*long_is_cout=*/false, c0, scale, ws,
                               static_cast<acc*>(nullptr));
    __syncthreads();
    const int len = int(p.Cin - c0 < kPointwiseChunk ? p.Cin - c0 : kPointwiseChunk);  // a multiple of VEC
    for (int i = gl * VEC; i < len; i += lanes * VEC) {
      Vec<T, VEC> v[kRowsPixels];
#pragma unroll
      for (int k = 0; k < kRowsPixels; ++k) {
        const int64_t q = q0 + int64_t(k) * groups;
        if (k < pix && q < P) {
          v[k] = load_vec<T, VEC>(x + q * p.Cin + c0 + i);
        } else {
#pragma unroll
          for (int t = 0; t < VEC; ++t) v[k].v[t] = T(0);
        }
      }
#pragma unroll
      for (int t = 0; t < VEC; ++t) {
        const Vec<acc, kPointwiseFew> wr = load_vec<acc, kPointwiseFew>(ws + pw_row<kGroup>(i + t) * kPointwiseFew);
#pragma unroll
        for (int k = 0; k < kRowsPixels; ++k) {
          const acc xv = static_cast<acc>(v[k].v[t]);
#pragma unroll
          for (int f = 0; f < kPointwiseFew; ++f) a[k][f] += wr.v[f] * xv;
        }
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kRowsPixels; ++k) {
    if (k >= pix) break;  // uniform
#pragma unroll
    for (int f = 0; f < kPointwiseFew; ++f) a[k][f] = group_sum(a[k][f], lanes);
    const int64_t q = q0 + int64_t(k) * groups;
    if (q >= P) continue;
    const acc r = few_out_epilogue(a[k], bias, p, alpha);
    if (rnorm != nullptr && gl == 0) rnorm[q] = r;
    acc* row = fs + (int(threadIdx.x) / lanes + k * groups) * int(p.Cout);  // pixel q's staged row
#pragma unroll
    for (int f = 0; f < kPointwiseFew; ++f)
      if (f < p.Cout && f % lanes == gl) row[f] = p.pixel_norm ? a[k][f] * r : a[k][f];
  }
  __syncthreads();
  const int64_t qb = int64_t(blockIdx.x) * groups * pix;  // the block's first pixel, and its pixel count:
  const int nb = int(P - qb < groups * pix ? P - qb : int64_t(groups) * pix);
  few_rows_store(y + qb * p.Cout, fs, nb * int(p.Cout));
}

// Few inputs (fromRGB; toRGB's input gradient): every lane of a pixel's group holds the pixel's Cin
// values (from the block's staged input rows), lane gl computes outputs gl*VEC + t (+ lanes*VEC
// per step) and stores them as one vector.
// With pixel norm a first pass sums the squares, group_sum gives the row's sum, and the second pass
// recomputes the outputs (a few FMAs each) to store them normalized.
template <typename T, int VEC>
__global__ void conv_pointwise_rows_few_in_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                  const T* __restrict__ bias, T* __restrict__ y,
                                                  acc_t<T>* __restrict__ rnorm, PointwiseParams p, int lanes,
                                                  int pix, acc_t<T> scale, acc_t<T> alpha) {
  using acc = acc_t<T>;
  constexpr int kGroup = VEC > 1 ? VEC : 0;
  PROGAN_SHARED_ALIGNED(acc, ws, pw_row<kGroup>(kPointwiseChunk) * kPointwiseFew, alignof(Vec<acc, kPointwiseFew>));
  PROGAN_SHARED(acc, bs, pw_row<kGroup>(kPointwiseChunk));
  PROGAN_SHARED(acc, fs, kFewStage);
  const int gl = int(threadIdx.x) % lanes, groups = int(blockDim.x) / lanes;
  const int64_t P = p.N * p.S;
  const int64_t qb = int64_t(blockIdx.x) * groups * pix;                       // the block's first pixel
  const int nb = int(P - qb < groups * pix ? P - qb : int64_t(groups) * pix);  // and its pixel count
  const int64_t q0 = qb + threadIdx.x / lanes;                                 // pixel k: q0 + k * groups
  few_rows_load(x + qb * p.Cin, fs, nb * int(p.Cin));
  __syncthreads();
  acc xv[kRowsPixels][kPointwiseFew], ss[kRowsPixels], r[kRowsPixels];
#pragma unroll
  for (int k = 0; k < kRowsPixels; ++k) {
    const int64_t q = q0 + int64_t(k) * groups;
    const acc* row = fs + (int(threadIdx.x) / lanes + k * groups) * int(p.Cin);  // pixel q's staged row
#pragma unroll
    for (int f = 0; f < kPointwiseFew; ++f) xv[k][f] = k < pix && q < P && f < p.Cin ? row[f] : acc(0);
    ss[k] = acc(0);
    r[k] = acc(1);
  }
  for (int pass = p.pixel_norm ? 0 : 1; pass < 2; ++pass) {  // pass 0: the sums of squares only
    if (pass == 1 && p.pixel_norm) {
#pragma unroll
      for (int k = 0; k < kRowsPixels; ++k) r[k] = acc(1) / sqrt(group_sum(ss[k], lanes) / acc(p.Cout) + acc(1e-8));
    }
    for (int64_t c0 = 0; c0 < p.Cout; c0 += kPointwiseChunk) {
      __syncthreads();
      pointwise_stage<T, kGroup>(w, bias, p, /*long_is_cout=*/true, c0, scale, ws, bs);
      __syncthreads();
      const int len = int(p.Cout - c0 < kPointwiseChunk ? p.Cout - c0 : kPointwiseChunk);  // a multiple of VEC
      for (int i = gl * VEC; i < len; i += lanes * VEC) {
        Vec<T, VEC> out[kRowsPixels];
#pragma unroll
        for (int t = 0; t < VEC; ++t) {
          const Vec<acc, kPointwiseFew> wr = load_vec<acc, kPointwiseFew>(ws + pw_row<kGroup>(i + t) * kPointwiseFew);
          const acc b = bias != nullptr ? bs[pw_row<kGroup>(i + t)] : acc(0);
#pragma unroll
          for (int k = 0; k < kRowsPixels; ++k) {
            acc v = acc(0);
#pragma unroll
            for (int f = 0; f < kPointwiseFew; ++f) v += wr.v[f] * xv[k][f];
            v = apply_act(v + b, p.lrelu, alpha);
            if (pass == 0) ss[k] += v * v;
            else out[k].v[t] = static_cast<T>(p.pixel_norm ? v * r[k] : v);
          }
        }
        if (pass == 0) continue;
#pragma unroll
        for (int k = 0; k < kRowsPixels; ++k) {
          const int64_t q = q0 + int64_t(k) * groups;
          if (k < pix && q < P) store_vec<T, VEC>(y + q * p.Cout + c0 + i, out[k]);
        }
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kRowsPixels; ++k) {
    const int64_t q = q0 + int64_t(k) * groups;
    if (k < pix && q < P && rnorm != nullptr && gl == 0) rnorm[q] = r[k];
  }
}

// Weight gradient on NHWC: gw[co][ci] = scale * sum over pixels of g[p][co] * x[p][ci], `lng` the
// rows of the long side (L channels), `few` the rows of the other (F <= kPointwiseFew). grid
// (chunks, slices): block (c, sl) sums the pixels [c * chunk_len, (c + 1) * chunk_len) for the long
// channels of slice sl, lanes * VEC of them; groups of `lanes` lanes take the chunk's pixels in turn,
// lane gl holding VEC x F sums for its VEC channels (reads: a contiguous lanes * VEC run per row,
// the few values a broadcast). Then the warp's groups add up (xor over the lanes with the same gl),
// the warps' sums meet in shared memory in the weight's order (j: the slice's values as they lie in
// gw), and thread j adds the 8 warps' values for j in order and writes partial row c, consecutive
// threads on consecutive addresses of gw. The finish kernel adds the rows in order and applies the
// scale: deterministic.
struct PointwiseRowsGradParams {
  int64_t P, L, F;    // pixels (N * H * W), long-side and few-side channels
  int64_t chunk_len;
  int lanes;
  bool long_is_cout;  // fromRGB: the long side is the output (gradient) side
};

// A warp's row of the reduction buffer: up to 32 * VEC channels x kPointwiseFew values, with a
// word of padding after every 32 (value j at j + j / 32) so that the lanes' stores, VEC or VEC * F
// values apart, spread over the banks.
template <int VEC>
constexpr int kPwRedRow = 32 * VEC * kPointwiseFew + VEC * kPointwiseFew;

template <typename T, int VEC>
__global__ void grad_weight_pointwise_rows_kernel(const T* __restrict__ lng, const T* __restrict__ few,
                                                  acc_t<T>* __restrict__ partial, PointwiseRowsGradParams p) {
  using acc = acc_t<T>;
  constexpr int kWarps = kPointwiseThreads / 32;
  PROGAN_SHARED(acc, red, kWarps * kPwRedRow<VEC>);
  const int lanes = p.lanes, gl = int(threadIdx.x) % lanes, warp = int(threadIdx.x) / 32;
  const int group = int(threadIdx.x) / lanes, groups = int(blockDim.x) / lanes, sw = lanes * VEC;
  const int64_t cs = int64_t(blockIdx.y) * sw;  // the slice's first channel
  const int64_t c = cs + int64_t(gl) * VEC;     // this lane's first channel
  const bool own = c < p.L;  // VEC > 1: L is a multiple of VEC, so the whole vector is in range
  const int64_t s0 = int64_t(blockIdx.x) * p.chunk_len;
  const int64_t s1 = s0 + p.chunk_len < p.P ? s0 + p.chunk_len : p.P;
  acc sum[VEC][kPointwiseFew] = {};
  if (own) {
    for (int64_t s = s0 + group; s < s1; s += groups) {
      const Vec<T, VEC> v = load_vec<T, VEC>(lng + s * p.L + c);
      acc fv[kPointwiseFew];
#pragma unroll
      for (int f = 0; f < kPointwiseFew; ++f) fv[f] = f < p.F ? static_cast<acc>(few[s * p.F + f]) : acc(0);
#pragma unroll
      for (int t = 0; t < VEC; ++t)
#pragma unroll
        for (int f = 0; f < kPointwiseFew; ++f) sum[t][f] += static_cast<acc>(v.v[t]) * fv[f];
    }
  }
  const auto slot = [&](int j) { return j + j / 32; };
  const auto order = [&](int cl, int f) { return p.long_is_cout ? cl * int(p.F) + f : f * sw + cl; };
#pragma unroll
  for (int t = 0; t < VEC; ++t) {
#pragma unroll
    for (int f = 0; f < kPointwiseFew; ++f) {
      for (int off = 16; off >= lanes; off >>= 1) sum[t][f] += __shfl_xor_sync(0xffffffffu, sum[t][f], off);
      if (int(threadIdx.x) % 32 < lanes && f < p.F)
        red[warp * kPwRedRow<VEC> + slot(order(gl * VEC + t, f))] = sum[t][f];
    }
  }
  __syncthreads();
  const int64_t nw = p.L * p.F;
  for (int j = int(threadIdx.x); j < sw * int(p.F); j += int(blockDim.x)) {
    const int cl = p.long_is_cout ? j / int(p.F) : j % sw, f = p.long_is_cout ? j % int(p.F) : j / sw;
    if (cs + cl >= p.L) continue;  // the last slice's channels past L
    acc v = acc(0);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += red[w * kPwRedRow<VEC> + slot(j)];
    partial[int64_t(blockIdx.x) * nw + (p.long_is_cout ? (cs + cl) * p.F + f : f * p.L + cs + cl)] = v;
  }
}

}  // namespace cuda
}  // namespace progan_ext
