// Tile geometry of the tensor-core conv (igemm::conv_igemm_kernel, conv_igemm.cuh), its
// parameters, and the two loaders of its A tile, one per memory format of x.
//
// A[m][(tap, c)] = x at the input pixel of GEMM row m shifted by the tap, channel c (zero outside
// the image, past x's channels and for rows >= Mp). A K step is one tap and kBK channels from c0.
// The kernel keeps the K cursor and calls, per thread: init once; set_tap(ty, tx) when the tap
// changes; load(dA, c0) once per K step, in step order (dA: the step's stage); drain() once, after
// the last load (pipelined_k_loop does).
//  * ARowsNhwc, NHWC x: a K step of one row is a contiguous, 16-byte aligned run of channels,
//    copied by cp.async (a thread: 16-byte chunk tid%4 of rows tid/4 and tid/4 + 64). Stage
//    row-major [kBM][kLdA], read by row_major fragment loads. (An NCHW x copied to NHWC by the
//    host, Cin zero-padded to the 16-byte vector, takes this loader too.)
//  * AColsNchw, NCHW x read in place (no NHWC copy, no channel padding): a K step of one channel
//    is a run of pixels, a row of the image shifted by the tap, so no 16-byte alignment can be
//    counted on: element loads, a warp's lanes on 32 consecutive rows (coalesced along the image
//    row). A thread owns row tid % kBM and half (tid / kBM) of the step's channels. Stage
//    column-major [kBK][kBM + kVecE] (a channel's column of pixels contiguous: the stores of a
//    warp are conflict-free), read by col_major fragment loads. The values of step j are loaded
//    into registers when step j is issued and stored to its stage at the next load (or at drain),
//    a K step later, so that the loads' latency overlaps a step of MMAs as cp.async's does; the
//    ring's barriers order the stores (slot j is free from the barrier of step j - kSlots + 1 on,
//    and the store precedes the barrier of step j).
#pragma once

#include <type_traits>

#include "conv_geom.cuh"
#include "platform.cuh"

namespace progan_ext {
namespace cuda {
namespace igemm {

constexpr int kBM = 128, kBN = 64, kThreads = 256;
constexpr int kStages = 3;              // cp.async pipeline depth of the conv kernel's main loop
constexpr int kLdC = kBN + 4;           // floats per smem C row, channels_last output (272 B)
constexpr int kLdCT = kBM + 4;          // floats per smem C column, NCHW output (528 B)
constexpr int kSmemC = (kBM * kLdC > kBN * kLdCT ? kBM * kLdC : kBN * kLdCT) * 4;  // epilogue tile, bytes

// Tile geometry per element type T (2-byte half/bfloat16 or 4-byte float). A K step is 64 bytes
// of channels (32 halves / 16 floats), so in both cases an A row is 4 copies of 16 B and the
// B tile (K step x 64 Cout) is 256 copies: the same thread -> copy mapping works for every T.
template <typename T>
struct Tile {
  static constexpr int kVecE = 16 / int(sizeof(T));   // elements per 16-byte copy: 8 | 4
  static constexpr int kBK = 64 / int(sizeof(T));     // K step (channels): 32 | 16
  static constexpr int kLdA = kBK + kVecE;            // A row pitch: 80 B (rows 16 B apart mod 128 B)
  static constexpr int kLdB = kBN + kVecE;            // B row pitch: 144 B | 272 B
  static constexpr int kStageA = kBM * kLdA;          // elements
  static constexpr int kStageB = kBK * kLdB;          // elements
  static constexpr int kBChunks = kBN / kVecE;        // 16-byte copies per B row: 8 | 16
  static constexpr int kSmemAB = kStages * (kStageA + kStageB) * int(sizeof(T));
  static constexpr int kSmemBytes = kSmemAB > kSmemC ? kSmemAB : kSmemC;
  static_assert(kBK / kVecE == 4 && kBK * kBChunks == kThreads, "one A-row chunk / one B copy per thread");
  static_assert(kSmemBytes + kBM * 8 <= 48 * 1024, "static shared memory limit (with the row offsets)");
  static_assert((kStageA * sizeof(T)) % 32 == 0 && (kStageB * sizeof(T)) % 32 == 0,
                "WMMA needs 32-byte aligned stage bases");
  static_assert((16 * kLdA * sizeof(T)) % 32 == 0 && (8 * kLdB * sizeof(T)) % 32 == 0,
                "fragment row offsets (16 A rows, 8|16 B rows) keep 32-byte alignment");
};

template <typename T> struct WmmaType;
template <> struct WmmaType<c10::Half> { using type = __half; };
template <> struct WmmaType<c10::BFloat16> { using type = __nv_bfloat16; };

// WMMA shape per element type: m16n16k16 for half/bfloat16, m16n16k8 TF32 for float (inputs
// rounded to TF32 after the fragment load, fp32 accumulation).
template <typename T>
struct Mma {
  using W = typename WmmaType<T>::type;  // element type of the fragment loads
  using Prec = W;                        // fragment precision tag
  static constexpr int kK = 16;
};
template <>
struct Mma<float> {
  using W = float;
  using Prec = nvcuda::wmma::precision::tf32;
  static constexpr int kK = 8;
};

struct FastParams {
  ConvGeom g;
  int64_t Mp;         // GEMM rows per phase: N*Hp*Wp, (Hp,Wp) = output grid of one phase
  int64_t Hp, Wp;
  int64_t CoutP;      // Cout rounded up to Tile<T>::kVecE (row length of wt)
  int64_t x_cin;      // channels of x: g.Cin for an NHWC x (padded by the host), <= g.Cin for an NCHW
                      // x read in place (g.Cin, padded, is the packed weights' row count)
  bool out_cl;        // output memory format
  bool lrelu;
  float alpha;
  bool norm_in_tile;  // pixel norm inside the tile (requires Cout <= kBN, gridDim.y == 1)
  // Split-K (splits > 1): block z = split * P + phase runs K steps [split * split_steps, + split_steps)
  // and writes its raw fp32 sums (the host passes no bias, linear, no norm) to pre + split * numel(y).
  int splits;
  int64_t split_steps;
  int64_t split_stride;
};

// The input coordinates of GEMM row m's tap (0, 0) pixel, and its image n.
template <ConvMode M>
__device__ __forceinline__ void row_tap0(int64_t m, const FastParams& p, int py, int px, int64_t& n, int64_t& iy0,
                                         int64_t& ix0) {
  const int64_t qx = m % p.Wp, qy = (m / p.Wp) % p.Hp;
  n = m / (p.Wp * p.Hp);
  if constexpr (M == ConvMode::Up) {  // output (2qy+py, 2qx+px); tap 0 at q + parity - 1
    iy0 = qy + py - 1;
    ix0 = qx + px - 1;
  } else {
    iy0 = tap0<M>(qy, p.g.pad);
    ix0 = tap0<M>(qx, p.g.pad);
  }
}

template <typename T, ConvMode M>
struct ARowsNhwc {
  static constexpr bool kColMajor = false;
  static constexpr int kVecE = Tile<T>::kVecE, kLd = Tile<T>::kLdA, kStage = Tile<T>::kStageA;
  const T* x;
  const T* img[2];       // the row's tap (0, 0) pixel, chunk `chunk` (outside the image at the borders:
                         // only offset from, and read only through taps inside it)
  int64_t iy0[2], ix0[2];
  int64_t tap_off;       // elements from a row's tap (0, 0) pixel to its current tap pixel
  int row, chunk;
  bool ok[2], in[2];     // row < Mp; and its current tap pixel inside the image

  __device__ __forceinline__ void init(const T* x_, const FastParams& p, int64_t m0, int tid, int py, int px) {
    x = x_;
    row = tid / 4;
    chunk = tid % 4;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t m = m0 + row + 64 * i;
      ok[i] = m < p.Mp;
      int64_t n;
      row_tap0<M>(ok[i] ? m : 0, p, py, px, n, iy0[i], ix0[i]);
      img[i] = x + ((n * p.g.H + iy0[i]) * p.g.W + ix0[i]) * p.g.Cin + kVecE * chunk;
    }
  }
  __device__ __forceinline__ void set_tap(int ty, int tx, const ConvGeom& g) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int64_t iy = iy0[i] + ty, ix = ix0[i] + tx;
      in[i] = ok[i] && iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
    }
    tap_off = (int64_t(ty) * g.W + tx) * g.Cin;
  }
  __device__ __forceinline__ void load(T* dA, int c0, const ConvGeom& g) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      // Cin % kVecE == 0, so a chunk starting below Cin lies entirely below Cin.
      const bool v = in[i] && c0 + kVecE * chunk < g.Cin;
      const T* src = v ? img[i] + tap_off + c0 : x;
      async_copy16(dA + (row + 64 * i) * kLd + kVecE * chunk, src, v);  // 16 B aligned: row pitch 80 B
    }
  }
  __device__ __forceinline__ void drain() {}  // cp.async lands by itself
};

template <typename T, ConvMode M>
struct AColsNchw {
  static constexpr bool kColMajor = true;
  static constexpr int kBK = Tile<T>::kBK;
  static constexpr int kPer = kBK / 2;                   // channels per thread and K step: 16 | 8
  static constexpr int kLd = kBM + Tile<T>::kVecE;       // channel column pitch: 272 B | 528 B (16 B mod 128)
  static constexpr int kStage = kBK * kLd;               // elements
  static_assert(kThreads == 2 * kBM, "a thread per (row, half of the step's channels)");
  static_assert(kStages >= 3, "a step stored a step late is read an iteration later (pipelined_k_loop)");
  static_assert(kStage <= Tile<T>::kStageA, "fits the NHWC stage the shared buffer is sized for");
  static_assert((kStage * sizeof(T)) % 32 == 0 && (8 * kLd * sizeof(T)) % 32 == 0,
                "WMMA: 32-byte aligned stages and fragment column offsets (kq = 8 | 16)");
  const T* img;          // the row's image, channel 0
  const T* pix;          // the row's current tap pixel, channel 0 (valid when in)
  T* pend;               // where the values in v go (null: none pending)
  int64_t iy0, ix0, hw, cin;
  int row, half;
  bool ok, in;
  T v[kPer];

  __device__ __forceinline__ void init(const T* x, const FastParams& p, int64_t m0, int tid, int py, int px) {
    row = tid % kBM;
    half = tid / kBM;
    const int64_t m = m0 + row;
    ok = m < p.Mp;
    int64_t n;
    row_tap0<M>(ok ? m : 0, p, py, px, n, iy0, ix0);
    hw = p.g.H * p.g.W;
    cin = p.x_cin;
    img = x + n * cin * hw;
    pix = img;
    pend = nullptr;
  }
  __device__ __forceinline__ void set_tap(int ty, int tx, const ConvGeom& g) {
    const int64_t iy = iy0 + ty, ix = ix0 + tx;
    in = ok && iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
    pix = in ? img + iy * g.W + ix : img;
  }
  __device__ __forceinline__ void store() {
    if (pend != nullptr) {
#pragma unroll
      for (int e = 0; e < kPer; ++e) pend[e * kLd] = v[e];
    }
  }
  __device__ __forceinline__ void load(T* dA, int c0, const ConvGeom&) {
    store();  // the previous step's values: their loads were issued a K step ago
    const int64_t c = c0 + kPer * half;
    const T* src = pix + c * hw;
    if (in && c + kPer <= cin) {
#pragma unroll
      for (int e = 0; e < kPer; ++e) v[e] = src[e * hw];
    } else {  // outside the image, or the step runs past x's channels
      const T zero = T(0.f);
#pragma unroll
      for (int e = 0; e < kPer; ++e) v[e] = in && c + e < cin ? src[e * hw] : zero;
    }
    pend = dA + kPer * half * kLd + row;
  }
  __device__ __forceinline__ void drain() {
    store();
    pend = nullptr;
  }
};

}  // namespace igemm
}  // namespace cuda
}  // namespace progan_ext
