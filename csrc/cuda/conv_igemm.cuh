// Tensor-core (implicit-GEMM) convolution kernels of the equalized-LR convolutions, and the design
// note of their path (the other paths' note: conv_geom.cuh). Simple kernels: conv_simple.cuh; host
// code: conv_common.cuh.
//
// ---- Design note (continued from conv_geom.cuh) ---------------------------------------------------
// The third forward path (the pointwise and simple paths: conv_geom.cuh):
//  * implicit-GEMM fast path (igemm::conv_igemm_kernel) for float16/bfloat16 (WMMA m16n16k16)
//    and float32 when TF32 is allowed (WMMA m16n16k8 tf32), on sm_80+. GEMM with M = output
//    pixels (of one phase for UP), N = Cout, K = taps x Cin (tap-major, Cin inner: a K step is
//    BK channels at one tap). The A tile has two loaders (conv_igemm_load.cuh): an NHWC input,
//    16-byte aligned with Cin % vec == 0 (vec = 16 B / element size: 8 halves, 4 floats; the host
//    zero-pads other Cin up to it), by cp.async of 16-byte runs of channels; an NCHW input read
//    in place (no NHWC copy: a K step of a channel is a run of an image row) by element loads
//    through registers into column-major A tiles. The packed weights: 16-byte aligned.
//      block = 256 threads = 8 warps, tile BM=128 pixels x BN=64 Cout, BK = 64 bytes of channels
//      (32 halves / 16 floats); warp w computes rows 32*(w/2)..+32, cols 32*(w%2)..+32 as 2x2
//      WMMA fragments with fp32 accumulators.
//      Tiles are filled by cp.async (16 B per copy, zero-fill for padding / ragged Cin / Cout)
//      through a 3-stage ring (kStages; pipelined_k_loop, which the weight-gradient GEMM shares):
//      two K steps are in flight while one is computed, and a K step costs one barrier. (The 2
//      stages before it had one K step of copies in flight while one was computed, and took two
//      barriers per step; the H200 run of 2026-12-04 measured that kernel at 20% of the matmul
//      ceiling, under half of what its shared-memory traffic allows by the model in
//      benchmarks/NOTES.md.) Each thread issues 2 A copies (rows tid/4 and tid/4+64, chunk
//      tid%4) and 1 B copy per K step (NCHW: 16 | 8 element loads of one row instead, below).
//      smem (3 stages): A 3 x 128 x 80 B = 30720 B, B 3 x 32 x 144 B = 13824 B (halves) or
//      3 x 16 x 272 B = 13056 B (floats); the epilogue reuses the buffer for the fp32 C tile,
//      row-major 128 x (64+4) for channels_last output, column-major 64 x (128+4) for NCHW (the
//      stores' walking order either way, so the epilogue's shared accesses are conflict-free)
//      = 34816 B, plus 128 x 8 B of per-row output offsets (computed once per row before the
//      main loop, so the epilogue's stores need no division) -> 45568 B static (halves; < 48 KB).
//      The K loop walks (tap, channel step) with an incremental cursor, not ks / cin_steps.
//      Row pads (+16 B) shift consecutive rows by 16 B mod 128 B so that fragment loads of 8 rows
//      spread over the banks; they also keep every WMMA pointer 32-byte aligned (Tile asserts).
//      Why these tiles: 128x64 gives each warp a 32x32 sub-tile (4 MMAs per 4 fragment loads) and
//      keeps smem < 48 KB so that several blocks fit an SM; BN=64 matches the high-resolution
//      ProGAN layers (Cout 16..64), where the fused pixel norm is then done inside the tile.
//      A block with at most 32 live output channels (Cout 16 / 32, a ragged last column tile)
//      maps its warps onto the rows instead (rows 16w..+16, the 1 or 2 live column fragments):
//      the padding columns cost no MMA, and every warp keeps a share of the work.
//    Epilogue: bias + leaky ReLU in fp32, then pixel norm in-tile when Cout <= BN (one block holds
//    every channel of its pixels); when Cout > BN the pre-norm fp32 values go to a workspace and a
//    second pass (norm_pass_*_kernel, conv_simple.cuh) normalizes each pixel in a fixed order (deterministic,
//    no atomics).
//    Split-K for the small maps (4^2..16^2: a few dozen tiles, each a K loop of up to 288 steps):
//    when the tiles would fill fewer than two blocks per H100 SM, the K steps are split into up
//    to 8 ranges of >= 16 steps (grid.z = splits x P); each block writes its raw fp32 tile to its
//    split's slice of a workspace, and split_k_finish_kernel (conv_simple.cuh) adds the slices in
//    split order, then bias and activation (then the norm pass). Deterministic: the split count
//    depends only on the shapes.
//  * float32 without TF32 and float64 take the simple path.
// conv2d_resample_grad_weight: grad_w[co,ci,ky,kx] = scale * sum_{n,pixels} g * patch.
//  * pointwise path: the 1x1 convs of the pointwise forward path (conv_pointwise.cuh).
//  * fast path (half/bfloat16, and float32 as TF32 when TF32 is allowed for convolutions; sm_80+;
//    NCHW x and grad_out read in place, any channel counts; otherwise both made NHWC, Cin and
//    Cout zero-padded by the host to multiples of the 16-byte vector):
//    grad_weight_igemm_kernel, a WMMA GEMM for the gradient of the EFFECTIVE kernel (rows Cin of
//    one tap, cols Cout, reduction over the pixels of one phase, split into fixed chunks with fp32
//    partial tiles in a workspace); the chunks are summed in order, then the host maps the result back to the k x k
//    kernel with the transposed folds (conv2d_resample.cu).
//  * simple path (everything else): straight from the definition (no phase algebra): grid
//    (weight element, pixel chunk), each block reduces its chunk with a fixed-order block_sum into
//    a workspace; a second kernel sums the chunks in order. On channels_last a block takes 32
//    adjacent input channels of one (co, tap) instead, lanes on the channels (contiguous in a
//    pixel's row), warps on pixels (grad_weight_partial_rows_kernel).
//  Both deterministic: the chunk counts depend only on the shapes.
// --------------------------------------------------------------------------------------------------
#pragma once

#include "conv_igemm_load.cuh"
#include "conv_simple.cuh"

namespace progan_ext {
namespace cuda {

// ================================ implicit-GEMM fast path (fp16 / bf16, sm_80+) =============
namespace igemm {

// The main loop of both tensor-core GEMMs: a ring of kSlots shared-memory slots (stages) filled by
// cp.async. K step j goes to slot j % kSlots, and its copies form this thread's commit group j (a
// group is committed for every j, empty past the last step, so the counts stay uniform). Iteration ks
// waits for group ks, then one barrier says that (a) every thread's copies of step ks have landed
// and (b) every warp has finished computing step ks - 1; (b) frees slot (ks - 1) % kSlots, which
// is refilled right away with step ks + kSlots - 1. So kSlots - 1 steps are in flight while one
// is computed, and a K step costs one barrier. load(slot) issues the next K step's copies (the
// steps are loaded in order); compute(slot) runs one K step; drain() is called once, where the
// load after the last would be (a loader that stores a step's values a step late, through
// registers, stores the last step's there: before the barrier of the step that reads them; such a
// loader needs kSlots >= 3, for step j is then loaded two iterations before it is read and stored
// one before). On return every copy has landed and every warp is done with the slots, so the
// buffer may be reused (the epilogue's C tile).
template <int kSlots, typename Load, typename Compute, typename Drain>
__device__ __forceinline__ void pipelined_k_loop(int64_t ksteps, Load&& load, Compute&& compute, Drain&& drain) {
  static_assert(kSlots >= 2, "a ring of at least two slots");
#pragma unroll
  for (int j = 0; j < kSlots - 1; ++j) {
    if (j < ksteps) load(j);
    else if (j == ksteps) drain();
    async_copy_commit();
  }
  int slot = 0;  // ks % kSlots, kept by increments
  for (int64_t ks = 0; ks < ksteps; ++ks) {
    async_copy_wait<kSlots - 2>();  // this thread's group ks has landed
    __syncthreads();                // ... everyone else's too, and slot (ks - 1) % kSlots is free
    if (ks + kSlots - 1 < ksteps) load(slot == 0 ? kSlots - 1 : slot - 1);
    else if (ks + kSlots - 1 == ksteps) drain();
    async_copy_commit();
    compute(slot);
    slot = slot + 1 == kSlots ? 0 : slot + 1;
  }
  async_copy_wait<0>();  // the groups still open are empty
  __syncthreads();       // every warp done with its last slot
}
template <int kSlots, typename Load, typename Compute>
__device__ __forceinline__ void pipelined_k_loop(int64_t ksteps, Load&& load, Compute&& compute) {
  pipelined_k_loop<kSlots>(ksteps, load, compute, [] {});
}

// T = half | bfloat16 | float (TF32). kInCl: x NHWC [N,H,W,Cin], Cin % kVecE == 0, 16-byte
// aligned (ARowsNhwc); else x NCHW [N,x_cin,H,W] read in place, any alignment (AColsNchw;
// conv_igemm_load.cuh). wt: [P][kt*kt][Cin][CoutP] (scale folded), CoutP % kVecE == 0, 16-byte aligned. bias: float
// [Cout] or null. Output y (or fp32 `pre` when the norm needs a second pass, laid out like y).
// rnorm: null, or with norm_in_tile the per-pixel inverse norms [N][Ho][Wo] (float).
// grid = (ceil(Mp/BM), ceil(Cout/BN), splits * P). __launch_bounds__(256, 2): two blocks per SM must fit
// (at most 128 registers per thread), the occupancy floor of tools/check_device_code.py; ptxas
// would spill rather than exceed it, and the check fails on any spill.
template <typename T, ConvMode M, bool kInCl>
__global__ void __launch_bounds__(kThreads, 2)
conv_igemm_kernel(const T* __restrict__ x, const T* __restrict__ wt, const float* __restrict__ bias,
                  T* __restrict__ y, float* __restrict__ pre, float* __restrict__ rnorm, FastParams p) {
#if PROGAN_CUDA_ARCH > 0 && PROGAN_CUDA_ARCH < 800
  __trap();  // never launched: the host dispatches here only when built for sm_80+ (bf16 WMMA, cp.async)
#else
  using W = typename Mma<T>::W;
  using Prec = typename Mma<T>::Prec;
  constexpr int kK = Mma<T>::kK;
  using TL = Tile<T>;
  using AL = std::conditional_t<kInCl, ARowsNhwc<T, M>, AColsNchw<T, M>>;  // the A tile's loader
  using ALayout = std::conditional_t<AL::kColMajor, nvcuda::wmma::col_major, nvcuda::wmma::row_major>;
  constexpr int kBK = TL::kBK, kVecE = TL::kVecE, kLdA = AL::kLd, kLdB = TL::kLdB;
  constexpr int kStageA = AL::kStage, kStageB = TL::kStageB;
  using namespace nvcuda;
  PROGAN_SHARED_ALIGNED(unsigned char, smem, TL::kSmemBytes + kBM * 8, 128);
  T* sA = reinterpret_cast<T*>(smem);                       // [kStages][BM][kLdA] | [kStages][BK][kLdA]
  T* sB = reinterpret_cast<T*>(smem) + kStages * kStageA;   // [kStages][BK][kLdB]
  float* sC = reinterpret_cast<float*>(smem);         // [BM][kLdC] or [BN][kLdCT], after the main loop
  int64_t* sRow = reinterpret_cast<int64_t*>(smem + TL::kSmemBytes);  // [BM] output offset of channel 0

  const ConvGeom& g = p.g;
  const int tid = threadIdx.x, warp = tid / 32;
  const int phase = int(blockIdx.z % g.phases);      // UP: (py,px) = (phase>>1, phase&1)
  const int split = int(blockIdx.z / g.phases);       // K range (split-K; 0 otherwise)
  const int py = phase >> 1, px = phase & 1;
  const int64_t m0 = int64_t(blockIdx.x) * kBM;      // first GEMM row of the tile
  const int64_t n0 = int64_t(blockIdx.y) * kBN;      // first output channel

  AL aload;  // this thread's part of the A tile (conv_igemm_load.cuh)
  aload.init(x, p, m0, tid, py, px);
  // ---- output offsets: row r's element of channel co is at sRow[r] + co * (channels_last ? 1 :
  // Ho*Wo), -1 for rows >= Mp. One set of divisions per row here, instead of three per stored
  // element in the epilogue; read after the main loop's barriers.
  if (tid < kBM) {
    const int64_t m = m0 + tid;
    int64_t o = -1;
    if (m < p.Mp) {
      const int64_t qx = m % p.Wp, qy = (m / p.Wp) % p.Hp, n = m / (p.Wp * p.Hp);
      const int64_t oy = M == ConvMode::Up ? 2 * qy + py : qy, ox = M == ConvMode::Up ? 2 * qx + px : qx;
      o = p.out_cl ? ((n * g.Ho + oy) * g.Wo + ox) * g.Cout : (n * g.Cout * g.Ho + oy) * g.Wo + ox;
    }
    sRow[tid] = o;
  }
  // ---- B: thread loads chunk (tid % kBChunks) of K-row tid / kBChunks (kBK rows x kBChunks
  // chunks = 256 copies).
  const int b_row = tid / TL::kBChunks, b_chunk = tid % TL::kBChunks;
  const int64_t b_col = n0 + kVecE * b_chunk;        // first of kVecE output channels
  const bool b_col_ok = b_col < p.CoutP;             // CoutP % kVecE == 0: chunk all in or all out
  const int kk = g.kt * g.kt;
  const int64_t cin_steps = (g.Cin + kBK - 1) / kBK;
  const int64_t ks_begin = int64_t(split) * p.split_steps;  // the host leaves no split empty
  const int64_t ks_total = int64_t(kk) * cin_steps - ks_begin;
  const int64_t ksteps = ks_total < p.split_steps ? ks_total : p.split_steps;
  const T* wphase = wt + int64_t(phase) * kk * g.Cin * p.CoutP;

  // The K-step cursor of the next load_stage call: tap (ld_ty, ld_tx) and first channel ld_c0.
  // The steps are loaded in order (ks_begin, ks_begin + 1, ...), so the cursor advances by
  // additions, Cin innermost; no per-step division (one set here, for the split's first step).
  // What depends on the tap alone (bounds tests, the tap's image offset, the weight pointer) is set
  // when the tap changes (set_tap); a step within a tap adds its channel offset (benchmarks/NOTES.md).
  const int first_tap = int(ks_begin / cin_steps);
  int ld_ty = first_tap / g.kt, ld_tx = first_tap % g.kt;
  int ld_c0 = int(ks_begin % cin_steps) * kBK;  // Cin < 2^31 (host)
  const T* b_src;      // weight element (tap, ld_c0 + b_row, b_col)
  const auto set_tap = [&]() {
    aload.set_tap(ld_ty, ld_tx, g);
    b_src = wphase + ((int64_t(ld_ty) * g.kt + ld_tx) * g.Cin + ld_c0 + b_row) * p.CoutP + b_col;
  };
  set_tap();
  auto load_stage = [&](int stage) {
    const int c0 = ld_c0;
    aload.load(sA + stage * kStageA, c0, g);
    const bool okb = b_col_ok && c0 + b_row < g.Cin;
    async_copy16(sB + stage * kStageB + b_row * kLdB + kVecE * b_chunk, okb ? b_src : wt, okb);  // pitch 144|272 B = 16 B multiple
    ld_c0 += kBK;
    b_src += int64_t(kBK) * p.CoutP;
    if (ld_c0 >= g.Cin) {  // the next tap (none after the last)
      ld_c0 = 0;
      if (++ld_tx == g.kt) ld_tx = 0, ++ld_ty;
      if (ld_ty < g.kt) set_tap();
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, kK, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  // Warp tile: fragments i < ni (rows wm + 16i) x j < nj (columns wn + 16j); block-uniform. With
  // > 32 live channels warp w takes rows 32*(w/2)..+32, columns 32*(w%2)..+32. A narrow block
  // (<= 32: Cout 16 / 32, a ragged last tile) would leave the odd warps all padding; its warps
  // take rows 16w..+16 and the 1 or 2 live column fragments: 1/2 or 1/4 of the MMAs, on every warp.
  const int live = g.Cout - n0 < kBN ? int(g.Cout - n0) : kBN;
  const bool narrow = live <= 32;
  const int wm = narrow ? 16 * warp : (warp / 2) * 32, wn = narrow ? 0 : (warp % 2) * 32;
  const int ni = narrow ? 1 : 2, nj = narrow ? (live + 15) / 16 : 2;

  // The K loop, compiled per warp-tile shape: the hot full-tile loop carries no narrow guards.
  const auto k_loop = [&](auto ni_c, auto nj_c) {
    constexpr int NI = decltype(ni_c)::value, NJ = decltype(nj_c)::value;
    pipelined_k_loop<kStages>(ksteps, load_stage, [&](int stage) {
      const T* tA = sA + stage * kStageA;
      const T* tB = sB + stage * kStageB;
#pragma unroll
      for (int kq = 0; kq < kBK; kq += kK) {
        wmma::fragment<wmma::matrix_a, 16, 16, kK, Prec, ALayout> fa[NI];
        wmma::fragment<wmma::matrix_b, 16, 16, kK, Prec, wmma::row_major> fb[NJ];
#pragma unroll
        // A offsets, row-major: 16 rows * 80 B = 1280 B, kq * sizeof(T) = 0|32 B; column-major:
        // kq columns * (272|528) B (AColsNchw asserts), (wm + 16i) * sizeof(T): 32 B multiples.
        for (int i = 0; i < NI; ++i) {
          const T* pa = AL::kColMajor ? tA + kq * kLdA + wm + 16 * i : tA + (wm + 16 * i) * kLdA + kq;
          wmma::load_matrix_sync(fa[i], reinterpret_cast<const W*>(pa), kLdA);
        }
#pragma unroll
        // B offsets: kq rows * (144|272) B (Tile asserts), (wn+16j) * sizeof(T): 32 B multiples.
        for (int j = 0; j < NJ; ++j)
          wmma::load_matrix_sync(fb[j], reinterpret_cast<const W*>(tB + kq * kLdB + wn + 16 * j), kLdB);
        if constexpr (std::is_same_v<T, float>) {  // round the fp32 operands to TF32
#pragma unroll
          for (int i = 0; i < NI; ++i)
#pragma unroll
            for (int t = 0; t < fa[i].num_elements; ++t) fa[i].x[t] = wmma::__float_to_tf32(fa[i].x[t]);
#pragma unroll
          for (int j = 0; j < NJ; ++j)
#pragma unroll
            for (int t = 0; t < fb[j].num_elements; ++t) fb[j].x[t] = wmma::__float_to_tf32(fb[j].x[t]);
        }
#pragma unroll
        for (int i = 0; i < NI; ++i)
#pragma unroll
          for (int j = 0; j < NJ; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
    }, [&] { aload.drain(); });  // returns with every copy landed and every warp done with the slots: sC may reuse them
  };
  if (!narrow)
    k_loop(std::integral_constant<int, 2>{}, std::integral_constant<int, 2>{});
  else if (nj == 2)
    k_loop(std::integral_constant<int, 1>{}, std::integral_constant<int, 2>{});
  else
    k_loop(std::integral_constant<int, 1>{}, std::integral_constant<int, 1>{});

  // ---- epilogue: accumulators -> sC (the A/B buffers are free: last barrier above) ----------
  // The C tile is laid out the way the stores walk it, so that every pass over it reads
  // consecutive words across a warp (no bank conflicts): channels_last row-major [BM][kLdC]
  // (lanes on adjacent channels of a pixel), NCHW column-major [BN][kLdCT] (lanes on adjacent
  // pixels of a channel).
  const bool col = !p.out_cl;
  const auto at = [col](int r, int c) { return col ? c * kLdCT + r : r * kLdC + c; };
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {  // (wm+16i)*272 B, (wn+16j)*4 B; (wn+16j)*528 B, (wm+16i)*4 B: 32 B multiples
      if (i >= ni || j >= nj) continue;  // a narrow block's unused fragments (columns >= live are never read)
      if (col)
        wmma::store_matrix_sync(sC + at(wm + 16 * i, wn + 16 * j), acc[i][j], kLdCT, wmma::mem_col_major);
      else
        wmma::store_matrix_sync(sC + at(wm + 16 * i, wn + 16 * j), acc[i][j], kLdC, wmma::mem_row_major);
    }
  __syncthreads();

  // bias + activation in place; columns >= Cout are left untouched (never stored). Element e
  // walks the tile in its memory order.
  // Only the ncols live columns are walked: with a narrow Cout (toRGB: 3) a warp's channels_last
  // stores are then 32 consecutive elements of the output, not 3 lanes of 32.
  const int ncols = live;
  const auto rc = [col, ncols](int e, int& r, int& c) {
    if (col) {
      r = e % kBM, c = e / kBM;
    } else if (ncols == kBN) {  // the usual full tile: shifts, not divisions
      r = e / kBN, c = e % kBN;
    } else {
      r = e / ncols, c = e % ncols;
    }
  };
  for (int e = tid; e < kBM * ncols; e += kThreads) {
    int r, c;
    rc(e, r, c);
    float v = sC[at(r, c)];
    if (bias != nullptr) v += bias[n0 + c];
    sC[at(r, c)] = p.lrelu ? leaky_relu(v, p.alpha) : v;
  }
  __syncthreads();
  if (p.norm_in_tile) {
    // Cout <= BN and n0 == 0: row r holds every channel of its pixel. Sums in a fixed order
    // (deterministic). NCHW (column-major): a thread per row walks its channels, a warp's lanes
    // on adjacent rows. channels_last (row-major): a warp per row, lanes on adjacent channels,
    // then warp_sum; each warp takes kBM / 8 rows.
    const auto finish = [&](int row, float ss, bool write_r) {
      const float r = rsqrtf(ss / float(g.Cout) + 1e-8f);
      const int64_t m = m0 + row;
      if (write_r && rnorm != nullptr && m < p.Mp) {  // pixel (n, oy, ox) of row m, as in out_offset below
        const int64_t qx = m % p.Wp, qy = (m / p.Wp) % p.Hp, n = m / (p.Wp * p.Hp);
        const int64_t oy = M == ConvMode::Up ? 2 * qy + py : qy, ox = M == ConvMode::Up ? 2 * qx + px : qx;
        rnorm[(n * g.Ho + oy) * g.Wo + ox] = r;
      }
      return r;
    };
    static_assert(kBM <= kThreads && kBN == 64 && kBM % (kThreads / 32) == 0, "norm work split");
    if (col) {
      if (tid < kBM) {
        float ss = 0.f;
        for (int c = 0; c < ncols; ++c) ss += sC[at(tid, c)] * sC[at(tid, c)];
        const float r = finish(tid, ss, true);
        for (int c = 0; c < ncols; ++c) sC[at(tid, c)] *= r;
      }
    } else {
      const int lane = tid % 32;
      for (int row = warp * (kBM / 8); row < (warp + 1) * (kBM / 8); ++row) {
        const float v0 = lane < ncols ? sC[at(row, lane)] : 0.f;
        const float v1 = lane + 32 < ncols ? sC[at(row, lane + 32)] : 0.f;
        const float r = finish(row, warp_sum(v0 * v0 + v1 * v1), lane == 0);
        if (lane < ncols) sC[at(row, lane)] = v0 * r;
        if (lane + 32 < ncols) sC[at(row, lane + 32)] = v1 * r;
      }
    }
    __syncthreads();
  }

  // ---- store, at the row offsets computed before the main loop (output pixel of GEMM row m:
  // SAME/DOWN (qy,qx); UP (2qy+py, 2qx+px)).
  // channels_last: consecutive threads take consecutive channels of a row (coalesced);
  // NCHW: consecutive threads take consecutive rows (pixels) of a channel.
  const int64_t co_stride = p.out_cl ? 1 : g.Ho * g.Wo;
  for (int e = tid; e < kBM * ncols; e += kThreads) {
    int r, c;
    rc(e, r, c);
    const int64_t row = sRow[r];
    if (row >= 0) {
      const int64_t o = row + (n0 + c) * co_stride;
      const float v = sC[at(r, c)];
      if (pre != nullptr) pre[o + split * p.split_stride] = v;
      else y[o] = static_cast<T>(v);
    }
  }
#endif
}

// ---- weight gradient as a GEMM (fp16 / bf16, sm_80+) ---------------------------------------
// G_eff[P][tap][ci][co] = sum over the GEMM rows (pixels) m of phase P of
//   A[m][(tap, ci)] * gout[pixel(m)][co]
// i.e. the gradient w.r.t. the EFFECTIVE kernel (times nothing: the host applies scale and maps it
// back to the k x k kernel by the transposed fold). GEMM: rows = Cin (one tap per block), cols =
// Cout, reduction = pixels, split into fixed chunks (grid.z = P * chunks) whose fp32 partial
// tiles go to a workspace [chunks][P][taps][Cin][Cout]; grad_weight_finish_kernel<float> sums the
// chunks in order (deterministic).
// T = half | bfloat16 (WMMA m16n16k16) | float (TF32 WMMA m16n16k8, operands rounded to TF32).
// Preconditions (host), kInCl: x and gout NHWC contiguous and 16-byte aligned, Cin and Cout
// multiples of GwTile<T>::kVecE (16-byte chunks along channels are then all in or all out of range;
// the host zero-pads other channel counts). !kInCl: x and gout NCHW contiguous, read in place (any
// alignment and channel counts): a warp loads one channel of the step's 32 consecutive pixels, and
// the tiles are [channel][pixel] (A = x^T row-major, B = gout col-major for the fragment loads);
// each step's values are stored a step later, as in AColsNchw (conv_igemm_load.cuh).
// Block: 256 threads = 8 warps; tile 64 ci x 64 co; K step 32 pixels; warp w owns rows
// 16*(w%4)..+16 and cols 32*(w/4)..+32 (2 fragments). smem per stage: A [32 px][64+VEC ci] and
// B [32 px][64+VEC co]: 2 x 4608 B (halves) or 2 x 8704 B (floats); 3 stages for halves = 27648 B,
// 2 for floats = 34816 B (pipelined_k_loop); the fp32 epilogue tile 64 x 68 x 4 = 17408 B reuses it.
constexpr int kGwTile = 64, kGwBK = 32;
constexpr int kGwLdC = kGwTile + 4;  // floats per epilogue row
constexpr int kGwSmemC = kGwTile * kGwLdC * 4;

template <typename T>
struct GwTile {
  static constexpr int kVecE = 16 / int(sizeof(T));            // elements per 16-byte copy: 8 | 4
  static constexpr int kLd = kGwTile + kVecE;                   // row pitch: 144 B | 272 B (16 B mod 128)
  static constexpr int kStage = kGwBK * kLd;                    // elements per operand per stage
  static constexpr int kChunks = kGwTile / kVecE;               // 16-byte copies per row: 8 | 16
  static constexpr int kCopies = kGwBK * kChunks / kThreads;    // per thread, operand and stage: 1 | 2
  // 3 slots for halves (27648 B); 2 for floats (3 would need 52224 B: over the static 48 KB)
  static constexpr int kStages = sizeof(T) == 2 ? 3 : 2;
  static constexpr int kSmemAB = kStages * 2 * kStage * int(sizeof(T));
  static constexpr int kSmemBytes = kSmemAB > kGwSmemC ? kSmemAB : kGwSmemC;
  // NCHW operands read in place: tiles [64 channels][32 px + VEC] (a channel's pixels contiguous),
  // each thread 8 channels of one pixel per operand and step, element loads through registers.
  static constexpr int kLdT = kGwBK + kVecE;                   // 80 B | 144 B (16 B mod 128)
  static constexpr int kStageT = kGwTile * kLdT;
  static constexpr int kPerT = kGwTile / (kThreads / kGwBK);    // channels per thread and operand: 8
  static constexpr int kSmemABT = kStages * 2 * kStageT * int(sizeof(T));
  static constexpr int kSmemBytesT = kSmemABT > kGwSmemC ? kSmemABT : kGwSmemC;
  static_assert(kCopies * kThreads == kGwBK * kChunks, "whole copies per thread");
  static_assert((kStageT * sizeof(T)) % 32 == 0 && (16 * kLdT * sizeof(T)) % 32 == 0 &&
                (Mma<T>::kK * sizeof(T)) % 32 == 0 && kSmemBytesT <= 48 * 1024, "NCHW tiles: WMMA alignment, smem");
  static_assert((kStage * sizeof(T)) % 32 == 0 && (Mma<T>::kK * kLd * sizeof(T)) % 32 == 0,
                "WMMA needs 32-byte aligned tiles and K-step offsets");
  static_assert(kSmemBytes <= 48 * 1024, "static shared memory limit");
};

struct GradWeightParams {
  ConvGeom g;
  int64_t Mp, Hp, Wp;  // GEMM rows per phase and the phase's output grid (as FastParams)
  int64_t chunk_len;   // pixels per chunk (multiple of kGwBK)
  int chunks;          // chunks per phase
  int cin_tiles;       // ceil(Cin / 64)
};

template <typename T, ConvMode M, bool kInCl>
__global__ void __launch_bounds__(kThreads)
grad_weight_igemm_kernel(const T* __restrict__ x, const T* __restrict__ gout, float* __restrict__ partial,
                         GradWeightParams p) {
#if PROGAN_CUDA_ARCH > 0 && PROGAN_CUDA_ARCH < 800
  __trap();  // never launched: the host dispatches here only when built for sm_80+
#else
  using W = typename Mma<T>::W;
  using Prec = typename Mma<T>::Prec;
  constexpr int kK = Mma<T>::kK;
  using TL = GwTile<T>;
  constexpr int kVecE = TL::kVecE;
  constexpr int kLd = kInCl ? TL::kLd : TL::kLdT, kStage = kInCl ? TL::kStage : TL::kStageT;
  using namespace nvcuda;
  PROGAN_SHARED_ALIGNED(unsigned char, smem, kInCl ? TL::kSmemBytes : TL::kSmemBytesT, 128);
  // NHWC: [kStages][32 px][kLd] (channels contiguous); NCHW: [kStages][64 ch][kLd] (pixels contiguous)
  T* sA = reinterpret_cast<T*>(smem);
  T* sB = reinterpret_cast<T*>(smem) + TL::kStages * kStage;
  float* sC = reinterpret_cast<float*>(smem);       // [64 ci][kGwLdC], after the main loop

  const ConvGeom& g = p.g;
  const int tid = threadIdx.x, warp = tid / 32;
  const int tap = blockIdx.x / p.cin_tiles;
  const int64_t ci0 = int64_t(blockIdx.x % p.cin_tiles) * kGwTile;
  const int64_t co0 = int64_t(blockIdx.y) * kGwTile;
  const int phase = blockIdx.z / p.chunks, chunk = blockIdx.z % p.chunks;
  const int py = phase >> 1, px = phase & 1;
  const int ty = tap / g.kt, tx = tap % g.kt;
  const int64_t pb = int64_t(chunk) * p.chunk_len;
  const int64_t pe = pb + p.chunk_len < p.Mp ? pb + p.chunk_len : p.Mp;  // pb < Mp: host sizes chunks
  const int64_t ksteps = (pe - pb + kGwBK - 1) / kGwBK;

  // Thread tid owns row tid / 8 of each K step (32 pixels) in both operands, and copies the
  // 16-byte chunks tid % 8 + 8 i (i < kCopies) of it: a quarter warp covers 128 contiguous bytes
  // of one row. The K steps are loaded in order; the thread keeps its row's pixel (n, qy, qx) at the
  // next step and moves it on by kGwBK pixels with a mixed-radix add whose digits (step_n, step_y,
  // step_x) are computed once: no per-step division.
  // (NCHW: thread tid owns pixel row tid % 32 and channels kPerT * (tid / 32) + [0, kPerT) of both
  // operands; the same cursor.)
  constexpr int kRowThreads = TL::kChunks / TL::kCopies;
  static_assert(kThreads / kRowThreads == kGwBK, "one row per thread");
  const int row = kInCl ? tid / kRowThreads : tid % kGwBK;
  constexpr int kPer = TL::kPerT;
  const int cg = tid / kGwBK;                    // NCHW: channel group
  T va[kPer], vb[kPer];                          // NCHW: the last loaded step's values ...
  T* pend = nullptr;                             // ... and their A stage (null: none)
  const auto store_pending = [&] {
    if (pend != nullptr) {
#pragma unroll
      for (int e = 0; e < kPer; ++e) {
        pend[(kPer * cg + e) * kLd + row] = va[e];
        pend[TL::kStages * kStage + (kPer * cg + e) * kLd + row] = vb[e];
      }
    }
  };
  const int64_t hw = p.Hp * p.Wp;
  const int step_x = int(kGwBK % hw % p.Wp), step_y = int(kGwBK % hw / p.Wp), step_n = int(kGwBK / hw);
  int ld_qx = int((pb + row) % p.Wp), ld_qy = int((pb + row) / p.Wp % p.Hp), ld_n = int((pb + row) / hw);
  int64_t ld_m = pb + row;  // GEMM row of this thread's row at the next step
  auto load_stage = [&](int stage) {
    const bool ok = ld_m < pe;
    const int64_t qx = ld_qx, qy = ld_qy, n = ld_n;  // N < 2^31 (host)
    ld_m += kGwBK;
    if ((ld_qx += step_x) >= p.Wp) ld_qx -= int(p.Wp), ++ld_qy;  // qx + step_x < 2 Wp
    if ((ld_qy += step_y) >= p.Hp) ld_qy -= int(p.Hp), ++ld_n;   // qy + 1 + step_y < 2 Hp
    ld_n += step_n;
    int64_t iy, ix, oy, ox;
    if constexpr (M == ConvMode::Up) {
      iy = qy + py - 1 + ty; ix = qx + px - 1 + tx;
      oy = 2 * qy + py; ox = 2 * qx + px;
    } else {
      iy = tap0<M>(qy, g.pad) + ty; ix = tap0<M>(qx, g.pad) + tx;
      oy = qy; ox = qx;
    }
    const bool in_a = ok && iy >= 0 && iy < g.H && ix >= 0 && ix < g.W;
    if constexpr (!kInCl) {
      store_pending();  // the previous step's values: their loads were issued a step ago
      const int64_t ca = ci0 + kPer * cg, cb = co0 + kPer * cg, xhw = g.H * g.W, ghw = g.Ho * g.Wo;
      const T* xs = x + ((n * g.Cin + ca) * g.H + (in_a ? iy : 0)) * g.W + (in_a ? ix : 0);
      const T* gs = gout + ((n * g.Cout + cb) * g.Ho + oy) * g.Wo + ox;  // read only when ok
      const T zero = T(0.f);
      if (in_a && ca + kPer <= g.Cin) {
#pragma unroll
        for (int e = 0; e < kPer; ++e) va[e] = xs[e * xhw];
      } else {
#pragma unroll
        for (int e = 0; e < kPer; ++e) va[e] = in_a && ca + e < g.Cin ? xs[e * xhw] : zero;
      }
      if (ok && cb + kPer <= g.Cout) {
#pragma unroll
        for (int e = 0; e < kPer; ++e) vb[e] = gs[e * ghw];
      } else {
#pragma unroll
        for (int e = 0; e < kPer; ++e) vb[e] = ok && cb + e < g.Cout ? gs[e * ghw] : zero;
      }
      pend = sA + stage * kStage;
      // A step stored a step late is read one ring iteration after its store only with >= 3
      // slots; with 2 (floats) slot j is read right after the barrier that precedes the store.
      if constexpr (TL::kStages < 3) {
        store_pending();
        pend = nullptr;
      }
    } else {
      const int64_t xpix = ((n * g.H + iy) * g.W + ix) * g.Cin, gpix = ((n * g.Ho + oy) * g.Wo + ox) * g.Cout;
#pragma unroll
      for (int i = 0; i < TL::kCopies; ++i) {
        const int ch = tid % kRowThreads + kRowThreads * i;
        const int64_t c = ci0 + kVecE * ch;
        const bool oka = in_a && c < g.Cin;
        const T* srca = oka ? x + xpix + c : x;
        async_copy16(sA + stage * kStage + row * kLd + kVecE * ch, srca, oka);  // 16 B multiples: aligned
        const int64_t co = co0 + kVecE * ch;
        const bool okb = ok && co < g.Cout;
        const T* srcb = okb ? gout + gpix + co : gout;
        async_copy16(sB + stage * kStage + row * kLd + kVecE * ch, srcb, okb);
      }
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, kK, float> acc[2];
  wmma::fill_fragment(acc[0], 0.0f);
  wmma::fill_fragment(acc[1], 0.0f);
  const int wi = 16 * (warp % 4), wj = 32 * (warp / 4);

  pipelined_k_loop<TL::kStages>(ksteps, load_stage, [&](int stage) {
    const T* tA = sA + stage * kStage;
    const T* tB = sB + stage * kStage;
#pragma unroll
    for (int kq = 0; kq < kGwBK; kq += kK) {
      // A^T: element (ci i, pixel k) at tA[k*kLd + i] = col_major with ldm kLd (NCHW: tA[i*kLd + k],
      // row_major). Offsets kq*kLd elements (GwTile asserts) and wi elements (0..48: 32 B
      // multiples) keep 32 B alignment; NCHW: wi*kLd (16-row multiples) and kq elements.
      using LA = std::conditional_t<kInCl, wmma::col_major, wmma::row_major>;
      using LB = std::conditional_t<kInCl, wmma::row_major, wmma::col_major>;
      wmma::fragment<wmma::matrix_a, 16, 16, kK, Prec, LA> fa;
      wmma::load_matrix_sync(fa, reinterpret_cast<const W*>(kInCl ? tA + kq * kLd + wi : tA + wi * kLd + kq), kLd);
      if constexpr (std::is_same_v<T, float>) {  // round the fp32 operands to TF32
#pragma unroll
        for (int t = 0; t < fa.num_elements; ++t) fa.x[t] = wmma::__float_to_tf32(fa.x[t]);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, kK, Prec, LB> fb;
        const T* pb_ = kInCl ? tB + kq * kLd + wj + 16 * j : tB + (wj + 16 * j) * kLd + kq;
        wmma::load_matrix_sync(fb, reinterpret_cast<const W*>(pb_), kLd);
        if constexpr (std::is_same_v<T, float>) {
#pragma unroll
          for (int t = 0; t < fb.num_elements; ++t) fb.x[t] = wmma::__float_to_tf32(fb.x[t]);
        }
        wmma::mma_sync(acc[j], fa, fb, acc[j]);
      }
    }
  }, [&] {
    store_pending();
    pend = nullptr;
  });  // returns with every copy landed and every warp done with the slots: sC may reuse them
#pragma unroll
  for (int j = 0; j < 2; ++j)  // wi*272 B and (wj+16j)*4 B: multiples of 32 B
    wmma::store_matrix_sync(sC + wi * kGwLdC + wj + 16 * j, acc[j], kGwLdC, wmma::mem_row_major);
  __syncthreads();
  const int taps = g.kt * g.kt;
  float* out = partial + ((int64_t(chunk) * g.phases + phase) * taps + tap) * g.Cin * g.Cout;
  for (int e = tid; e < kGwTile * kGwTile; e += kThreads) {  // consecutive threads: consecutive co
    const int r = e / kGwTile, c = e % kGwTile;
    if (ci0 + r < g.Cin && co0 + c < g.Cout) out[(ci0 + r) * g.Cout + co0 + c] = sC[r * kGwLdC + c];
  }
#endif
}

}  // namespace igemm

}  // namespace cuda
}  // namespace progan_ext
