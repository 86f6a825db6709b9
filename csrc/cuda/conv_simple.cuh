// Simple-path convolution kernels (any dtype, float64 included; any layout and shape): one thread
// per output element for the forward, a per-pixel norm pass, and the deterministic two-pass weight
// gradient; and the split-K reduction of the tensor-core conv. The design note of both paths is in
// conv_igemm.cuh; geometry in conv_geom.cuh.
#pragma once

#include "conv_geom.cuh"

namespace progan_ext {
namespace cuda {

// ================================ simple path ================================================
// One thread per output element, e in [0, N*Cout*Ho*Wo), e enumerating the output in ITS memory
// order (so stores are coalesced and y[e] is the element's address). w: W_eff in acc_t,
// [P][Cout][Cin][kt][kt] contiguous. If `pre` is non-null the fp32/fp64 pre-norm value goes there
// (same order as y) and y is written later by the norm pass (norm_pass_*_kernel).
template <typename T, ConvMode M>
__global__ void conv_simple_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ w,
                                   const T* __restrict__ bias, T* __restrict__ y, acc_t<T>* __restrict__ pre,
                                   ConvGeom g, bool channels_last, bool lrelu, acc_t<T> alpha) {
  using acc = acc_t<T>;
  const int64_t total = g.N * g.Cout * g.Ho * g.Wo;
  const Strides4 sx = strides_of(g.Cin, g.H, g.W, channels_last);
  const int kk = g.kt * g.kt;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, co, oy, ox, r = e;
    if (channels_last) {
      co = r % g.Cout; r /= g.Cout;
      ox = r % g.Wo; r /= g.Wo;
      oy = r % g.Ho; n = r / g.Ho;
    } else {
      ox = r % g.Wo; r /= g.Wo;
      oy = r % g.Ho; r /= g.Ho;
      co = r % g.Cout; n = r / g.Cout;
    }
    const int phase = M == ConvMode::Up ? int((oy & 1) * 2 + (ox & 1)) : 0;
    const int64_t iy0 = tap0<M>(oy, g.pad), ix0 = tap0<M>(ox, g.pad);
    const acc* wp = w + (int64_t(phase) * g.Cout + co) * g.Cin * kk;
    const T* xn = x + n * sx.n;
    acc s = acc(0);
    for (int64_t ci = 0; ci < g.Cin; ++ci) {
      const T* xc = xn + ci * sx.c;
      const acc* wc = wp + ci * kk;
      for (int ty = 0; ty < g.kt; ++ty) {
        const int64_t iy = iy0 + ty;
        if (iy < 0 || iy >= g.H) continue;  // zero padding
        for (int tx = 0; tx < g.kt; ++tx) {
          const int64_t ix = ix0 + tx;
          if (ix < 0 || ix >= g.W) continue;
          s += wc[ty * g.kt + tx] * static_cast<acc>(xc[iy * sx.h + ix * sx.w]);
        }
      }
    }
    if (bias != nullptr) s += static_cast<acc>(bias[co]);
    s = apply_act(s, lrelu, alpha);
    if (pre != nullptr) pre[e] = s;
    else y[e] = static_cast<T>(s);
  }
}

// The norm pass: pixel norm over the Cout channels of each output pixel, reading the pre-norm
// values `pre` (acc_t, laid out like y) and writing y = v * r, r = rsqrt(mean_c v^2 + 1e-8), and
// rnorm[p] = r when rnorm is given. Two layouts, two kernels, both reading whole sectors:
//  * NCHW: one thread per pixel walks the channels in order 0..C-1; a warp's lanes are adjacent
//    pixels, so each channel's access is one contiguous run.
//  * channels_last: a pixel's channels are one contiguous row; a group of `lanes` lanes per pixel
//    (lanes_per_row(C): a warp from C = 32 up) strides over it, the sum is a group_sum.
// Both sum in a fixed order (deterministic).
template <typename T>
__global__ void norm_pass_planes_kernel(const acc_t<T>* __restrict__ pre, T* __restrict__ y,
                                        acc_t<T>* __restrict__ rnorm, int64_t N, int64_t C, int64_t S) {
  using acc = acc_t<T>;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < N * S;
       p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (p / S) * C * S + p % S;  // channel 0 of pixel p
    acc ss = acc(0);
    for (int64_t c = 0; c < C; ++c) {
      const acc v = pre[base + c * S];
      ss += v * v;
    }
    const acc r = acc(1) / sqrt(ss / acc(C) + acc(1e-8));
    if (rnorm != nullptr) rnorm[p] = r;
    for (int64_t c = 0; c < C; ++c) y[base + c * S] = static_cast<T>(pre[base + c * S] * r);
  }
}

template <typename T>
__global__ void norm_pass_rows_kernel(const acc_t<T>* __restrict__ pre, T* __restrict__ y,
                                      acc_t<T>* __restrict__ rnorm, int64_t pixels, int64_t C, int lanes) {
  using acc = acc_t<T>;
  const int lane = threadIdx.x % 32, sub = lane % lanes, per_warp = 32 / lanes;
  const int64_t warps_total = int64_t(gridDim.x) * (blockDim.x / 32);
  // The loop bound is uniform over the warp: every lane reaches the shuffles of group_sum.
  for (int64_t p0 = (int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32) * per_warp; p0 < pixels;
       p0 += warps_total * per_warp) {
    const int64_t p = p0 + lane / lanes;
    const bool valid = p < pixels;
    acc ss = acc(0);
    for (int64_t c = sub; valid && c < C; c += lanes) {
      const acc v = pre[p * C + c];
      ss += v * v;
    }
    ss = group_sum(ss, lanes);
    const acc r = acc(1) / sqrt(ss / acc(C) + acc(1e-8));
    if (valid && sub == 0 && rnorm != nullptr) rnorm[p] = r;
    for (int64_t c = sub; valid && c < C; c += lanes) y[p * C + c] = static_cast<T>(pre[p * C + c] * r);
  }
}

// The split-K reduction of the tensor-core conv: out[e] = act(sum_{s < splits} partial[s][e] +
// bias[c(e)]), the slices added in split order (deterministic), e in y's memory order (coalesced),
// written to y, or to `pre` (fp32, laid out like y) for the norm pass. `pre` may be partial's
// slice 0 (so neither is __restrict__): each element is read before it is written, by the same
// thread, and never read again. 32-bit indices: a conv splits only when its tiles fill fewer than
// 264 blocks, so numel * splits < 264 * 128 * 64 * 8 < 2^31 (the host checks it), and the channel
// of e costs an inline 32-bit division instead of a 64-bit division subroutine per element.
template <typename T>
__global__ void split_k_finish_kernel(const float* partial, const float* __restrict__ bias, T* __restrict__ y,
                                      float* pre, unsigned numel, int splits, unsigned C, unsigned S,
                                      bool channels_last, bool lrelu, float alpha) {
  for (unsigned e = blockIdx.x * blockDim.x + threadIdx.x; e < numel; e += gridDim.x * blockDim.x) {
    float v = partial[e];
    for (int s = 1; s < splits; ++s) v += partial[unsigned(s) * numel + e];
    if (bias != nullptr) v += bias[channels_last ? e % C : e / S % C];
    v = apply_act(v, lrelu, alpha);
    if (pre != nullptr) pre[e] = v;
    else y[e] = static_cast<T>(v);
  }
}

// ================================ grad weight (simple, deterministic) ========================
// The input value that tap (ky, kx) of the ORIGINAL k x k kernel meets at output pixel (oy, ox),
// straight from the definition of each mode (no phase algebra), zero outside the image; xc points
// at channel ci of the sample, sh / sw are x's row / column strides:
//   SAME: x[oy+ky-pad, ox+kx-pad]
//   UP:   x[(oy+ky-1)>>1, (ox+kx-1)>>1]   (upsampled coords in [0,2H))
//   DOWN: sum_{dy,dx in 0,1} x[2oy+dy+ky-1, 2ox+dx+kx-1] / 4
template <typename T, ConvMode M>
__device__ __forceinline__ acc_t<T> tap_input(const T* __restrict__ xc, int64_t sh, int64_t sw, const ConvGeom& g,
                                              int64_t oy, int64_t ox, int ky, int kx) {
  using acc = acc_t<T>;
  if constexpr (M == ConvMode::Same) {
    const int64_t iy = oy + ky - g.pad, ix = ox + kx - g.pad;
    return iy >= 0 && iy < g.H && ix >= 0 && ix < g.W ? static_cast<acc>(xc[iy * sh + ix * sw]) : acc(0);
  } else if constexpr (M == ConvMode::Up) {
    const int64_t uy = oy + ky - 1, ux = ox + kx - 1;  // in the (virtual) upsampled image
    return uy >= 0 && uy < 2 * g.H && ux >= 0 && ux < 2 * g.W ? static_cast<acc>(xc[(uy >> 1) * sh + (ux >> 1) * sw])
                                                              : acc(0);
  } else {
    acc v = acc(0);
    for (int dy = 0; dy < 2; ++dy)
      for (int dx = 0; dx < 2; ++dx) {
        const int64_t iy = 2 * oy + dy + ky - 1, ix = 2 * ox + dx + kx - 1;
        if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) v += static_cast<acc>(xc[iy * sh + ix * sw]);
      }
    return v * acc(0.25);
  }
}

// Partial sums on NCHW: block (widx = blockIdx.x, chunk = blockIdx.y) reduces pixels
// [chunk*chunk_len, min(P, (chunk+1)*chunk_len)) of P = N*Ho*Wo output pixels of
// g[n,co,oy,ox] * tap_input(...) for the weight element widx = ((co*Cin + ci)*k + ky)*k + kx;
// lanes on adjacent pixels (x and g made NCHW contiguous on the host).
template <typename T, ConvMode M>
__global__ void grad_weight_partial_kernel(const T* __restrict__ x, const T* __restrict__ gout,
                                           acc_t<T>* __restrict__ partial, ConvGeom g, int k, int64_t chunk_len) {
  using acc = acc_t<T>;
  PROGAN_SHARED(acc, scratch, 32);
  const int64_t nw = g.Cout * g.Cin * k * k;
  const int64_t widx = blockIdx.x;
  const int kx = int(widx % k), ky = int((widx / k) % k);
  const int64_t ci = (widx / (int64_t(k) * k)) % g.Cin, co = widx / (int64_t(k) * k * g.Cin);
  const Strides4 sx = strides_of(g.Cin, g.H, g.W, false);
  const Strides4 sg = strides_of(g.Cout, g.Ho, g.Wo, false);
  const int64_t P = g.N * g.Ho * g.Wo;
  const int64_t p0 = int64_t(blockIdx.y) * chunk_len, p1 = p0 + chunk_len < P ? p0 + chunk_len : P;
  acc s = acc(0);
  for (int64_t p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    const int64_t ox = p % g.Wo, oy = (p / g.Wo) % g.Ho, n = p / (g.Wo * g.Ho);
    const acc gv = static_cast<acc>(gout[n * sg.n + co * sg.c + oy * sg.h + ox * sg.w]);
    s += gv * tap_input<T, M>(x + n * sx.n + ci * sx.c, sx.h, sx.w, g, oy, ox, ky, kx);
  }
  s = block_sum(s, scratch);  // fixed order: deterministic
  if (threadIdx.x == 0) partial[int64_t(blockIdx.y) * nw + widx] = s;
}

// The same partial sums on channels_last, where the kernel above would have its lanes walk pixels
// Cin elements apart (a sector per lane: 13% of the bytes moved used). Here block (wb =
// blockIdx.x, chunk) takes 32 adjacent input channels ci = ci0 + lane of one (co, ky, kx): a warp
// reads x at one pixel as one contiguous run of its row, and g[pixel][co] as one broadcast; warp w
// takes the chunk's pixels p0 + w, p0 + w + warps, ... The warps' sums meet in shared memory and
// lane t adds them in warp order (deterministic), writing partial[chunk][widx(co, ci0 + t, ky, kx)].
// wb = ((co * k + ky) * k + kx) * ci_blocks + ci_block.
template <typename T, ConvMode M>
__global__ void grad_weight_partial_rows_kernel(const T* __restrict__ x, const T* __restrict__ gout,
                                                acc_t<T>* __restrict__ partial, ConvGeom g, int k,
                                                int64_t chunk_len) {
  using acc = acc_t<T>;
  constexpr int kMaxWarps = 8;
  PROGAN_SHARED(acc, red, kMaxWarps * 32);
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32, warps = int(blockDim.x) / 32;
  const int64_t ci_blocks = (g.Cin + 31) / 32, wb = blockIdx.x;
  const int64_t ci = (wb % ci_blocks) * 32 + lane;
  const int64_t tap = wb / ci_blocks, co = tap / (int64_t(k) * k);
  const int kx = int(tap % k), ky = int(tap / k % k);
  const Strides4 sx = strides_of(g.Cin, g.H, g.W, true);
  const int64_t P = g.N * g.Ho * g.Wo;
  const int64_t p0 = int64_t(blockIdx.y) * chunk_len, p1 = p0 + chunk_len < P ? p0 + chunk_len : P;
  acc s = acc(0);
  for (int64_t p = p0 + warp; ci < g.Cin && p < p1; p += warps) {
    const int64_t ox = p % g.Wo, oy = (p / g.Wo) % g.Ho, n = p / (g.Wo * g.Ho);
    const acc gv = static_cast<acc>(gout[p * g.Cout + co]);  // p is the pixel's NHWC row index
    s += gv * tap_input<T, M>(x + n * sx.n + ci, sx.h, sx.w, g, oy, ox, ky, kx);
  }
  red[warp * 32 + lane] = s;
  __syncthreads();
  if (warp == 0 && ci < g.Cin) {
    acc t = acc(0);
    for (int w = 0; w < warps; ++w) t += red[w * 32 + lane];
    const int64_t nw = g.Cout * g.Cin * k * k;
    partial[int64_t(blockIdx.y) * nw + ((co * g.Cin + ci) * k + ky) * k + kx] = t;
  }
}

// grad_w[i] = scale * sum_{c < chunks} partial[c][i], summed in chunk order.
template <typename T>
__global__ void grad_weight_finish_kernel(const acc_t<T>* __restrict__ partial, T* __restrict__ gw, int64_t nw,
                                          int64_t chunks, acc_t<T> scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nw; i += int64_t(gridDim.x) * blockDim.x) {
    acc_t<T> s = 0;
    for (int64_t c = 0; c < chunks; ++c) s += partial[c * nw + i];
    gw[i] = static_cast<T>(s * scale);
  }
}

}  // namespace cuda
}  // namespace progan_ext
