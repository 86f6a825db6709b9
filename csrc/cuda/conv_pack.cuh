// Device side: the tensor-core convolutions' weight operand, built from the raw parameter by one
// kernel (host side in conv_common.cuh, pack_weight). It replaces a chain of 10-30 small ATen ops
// (cast, scale, per-axis folds with select/add/stack per phase, permute, pad, cast, copy), whose
// launches cost more than the convolution itself at 4^2..16^2.
//
//   wt[s][ci][co] = W_eff[p][co][ci][ty][tx]   (slot s = (p * kt + ty) * kt + tx)
//
// for ci < CinP, co < CoutP, zero where ci >= Cin or co >= Cout (the channel padding of the igemm
// loaders), W_eff as in conv_geom.cuh's design note: the raw taps times the equalized scale, then
// for UP the per-phase folds (parity 0 taps (w0, w1+w2), parity 1 (w0+w1, w2)) and for DOWN the
// summed kernel (w0, w0+w1, w1+w2, w2) / 4, along rows first, then columns, in fp32, rounded once
// to T: the same operations in the same order as the ATen chain it replaces.
//
// A block owns a 32 (co) x 32 (ci) tile: its raw taps (scaled, fp32) are staged in shared memory by
// coalesced loads that follow the weight's memory order (the adjoint kernel of the input gradient
// is a transposed view, whose co dimension is the contiguous one), then every slot is written with
// lanes along co, the operand's contiguous dimension.
#pragma once

#include "conv_geom.cuh"
#include "platform.cuh"

namespace progan_ext {
namespace cuda {

constexpr int kPackTile = 32;           // co and ci per block
constexpr int kPackThreads = 256;       // 8 warps: warp w writes ci = w, w + 8, w + 16, w + 24
constexpr int kPackMaxStagedTaps = 9;   // k <= 3 is staged; SAME with k >= 5 reads global memory
constexpr int kPackPitch = kPackTile * kPackMaxStagedTaps + 1;  // floats per staged co row (+1: banks)

struct PackGeom {
  int64_t cout, cin, coutp, cinp;
  int64_t s0, s1, s2, s3;  // the weight's strides, in elements
  int k;                   // raw kernel size
  float scale;
};

// The first raw tap and the tap count (1 or 2) that effective tap t of one axis sums.
template <ConvMode M>
__device__ __forceinline__ void fold_taps(int parity, int t, int& first, int& count) {
  if constexpr (M == ConvMode::Down) {  // (w0, w0+w1, w1+w2, w2)
    first = t == 0 ? 0 : t - 1;
    count = (t == 0 || t == 3) ? 1 : 2;
  } else if constexpr (M == ConvMode::Up) {  // parity 0: (w0, w1+w2); parity 1: (w0+w1, w2)
    first = parity == 0 ? (t == 0 ? 0 : 1) : (t == 0 ? 0 : 2);
    count = parity == 0 ? (t == 0 ? 1 : 2) : (t == 0 ? 2 : 1);
  } else {
    first = t;
    count = 1;
  }
}

// W_eff at slot s of the raw kernel `raw` (k x k scaled taps, row-major, stride 1).
template <ConvMode M>
__device__ __forceinline__ float folded(const float* raw, int k, int s) {
  if constexpr (M == ConvMode::Same) {
    return raw[s];
  } else {
    constexpr int kt = M == ConvMode::Up ? 2 : 4;
    const int p = s / (kt * kt), ty = (s / kt) % kt, tx = s % kt;
    int r0, rn, c0, cn;
    fold_taps<M>(p >> 1, ty, r0, rn);  // UP: phase p = 2 * py + px
    fold_taps<M>(p & 1, tx, c0, cn);
    float v = 0.f;
    for (int c = c0; c < c0 + cn; ++c) {
      float r = raw[r0 * k + c];
      if (rn == 2) r = r + raw[(r0 + 1) * k + c];
      v = c == c0 ? r : v + r;
    }
    return M == ConvMode::Down ? v * 0.25f : v;
  }
}

// Grid (ceil(CoutP / 32), ceil(CinP / 32)), kPackThreads threads; wt is [slots][CinP][CoutP].
template <typename T, ConvMode M>
__global__ void __launch_bounds__(kPackThreads) pack_weight_kernel(const T* __restrict__ w, T* __restrict__ wt,
                                                                   PackGeom p) {
  PROGAN_SHARED(float, raw, kPackTile * kPackPitch);
  const int k = p.k, kk = k * k;
  const int slots = M == ConvMode::Same ? kk : 16;  // UP: 4 phases x 2 x 2; DOWN: 4 x 4
  const int64_t co0 = int64_t(blockIdx.x) * kPackTile, ci0 = int64_t(blockIdx.y) * kPackTile;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const bool staged = kk <= kPackMaxStagedTaps;
  if (staged) {
    // Element e of the tile's 32 x 32 x kk taps, enumerated in the weight's memory order: ci outer
    // when co is the contiguous dimension (a transposed view), else co outer.
    const bool co_inner = p.s0 < p.s1;
    const int per_outer = kPackTile * kk;
    for (int e = threadIdx.x; e < kPackTile * per_outer; e += kPackThreads) {
      const int outer = e / per_outer, rem = e % per_outer, inner = rem / kk, t = rem % kk;
      const int co_l = co_inner ? inner : outer, ci_l = co_inner ? outer : inner;
      const int64_t co = co0 + co_l, ci = ci0 + ci_l;
      float v = 0.f;
      if (co < p.cout && ci < p.cin)
        v = static_cast<float>(w[co * p.s0 + ci * p.s1 + (t / k) * p.s2 + (t % k) * p.s3]) * p.scale;
      raw[co_l * kPackPitch + ci_l * kk + t] = v;
    }
    __syncthreads();
  }
  const int64_t co = co0 + lane;
  if (co >= p.coutp) return;  // no barrier follows
  for (int s = 0; s < slots; ++s) {
    for (int j = 0; j < kPackTile / 8; ++j) {
      const int ci_l = warp + 8 * j;
      const int64_t ci = ci0 + ci_l;
      if (ci >= p.cinp) break;
      float v = 0.f;
      if (staged)
        v = folded<M>(raw + lane * kPackPitch + ci_l * kk, k, s);
      else if (co < p.cout && ci < p.cin)  // SAME with k >= 5: the tap straight from global memory
        v = static_cast<float>(w[co * p.s0 + ci * p.s1 + (s / k) * p.s2 + (s % k) * p.s3]) * p.scale;
      wt[(int64_t(s) * p.cinp + ci) * p.coutp + co] = static_cast<T>(v);
    }
  }
}

}  // namespace cuda
}  // namespace progan_ext
