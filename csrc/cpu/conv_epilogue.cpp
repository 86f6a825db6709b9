// conv_epilogue on the CPU (conv_epilogue.h): act + optional pixel norm in one pass over z,
// written once in the output's layout and dtype.
//
// Three walks, each over adjacent memory, each pixel handled by one thread in a fixed order:
//  * same layout, no pixel norm: one flat element-wise loop;
//  * channels_last z and y: pixel by pixel, the channel sum of squares with lane partial sums,
//    then one scaling pass over the pixel's channels (still in L1);
//  * NCHW y (z NCHW or channels_last): blocks of adjacent pixels of one image; from channels_last
//    z the block is first transposed into a small buffer, so the output rows are written whole.

#include "conv_epilogue.h"

#include <ATen/ops/empty.h>

#include <cmath>
#include <vector>

#include "cpu_utils.h"

namespace progan_ext {
namespace {

using cpu::acc_t;
using cpu::load;
using cpu::store;

constexpr int64_t kBlock = 64;      // NCHW output pixels per block
constexpr int64_t kCLBlock = 16;    // channels_last -> NCHW: pixels transposed per block
constexpr double kPixelNormEps = 1e-8;

// The accumulation type: float, or double for double input.
template <typename Z>
using epi_t = std::conditional_t<std::is_same_v<Z, double>, double, float>;

template <typename A>
PROGAN_CPU_INLINE A act(A v, A slope) {
  return cpu::leaky(v, slope);
}

template <typename A>
PROGAN_CPU_INLINE A inv_norm(A sum_sq, int64_t C) {
  return A(1) / std::sqrt(sum_sq / A(C) + A(kPixelNormEps));
}

// y[i] = act(z[i]), i < n. z and y may be the same memory (then read and written at the same index).
template <typename Z, typename Y>
PROGAN_CPU_MULTIVERSION void act_run(const Z* z, Y* y, int64_t n, epi_t<Z> slope) {
  PROGAN_CPU_IVDEP
  for (int64_t i = 0; i < n; ++i) store(y + i, static_cast<acc_t<Y>>(act(static_cast<epi_t<Z>>(load(z + i)), slope)));
}

// Pixels [p0, p1) of channels_last z and y (C adjacent channels each), with pixel norm; the
// inverse norm of pixel p goes to rn[p] when rn is given (so for every walk below).
template <typename Z, typename Y>
PROGAN_CPU_MULTIVERSION void pixel_norm_cl(const Z* z, Y* y, epi_t<Z>* rn, int64_t C, int64_t p0, int64_t p1,
                                           epi_t<Z> slope) {
  using A = epi_t<Z>;
  for (int64_t p = p0; p < p1; ++p) {
    const Z* zp = z + p * C;
    Y* yp = y + p * C;
    A part[cpu::kLanes] = {};
    int64_t c = 0;
    for (; c + cpu::kLanes <= C; c += cpu::kLanes)
      for (int64_t l = 0; l < cpu::kLanes; ++l) {
        const A v = act(static_cast<A>(load(zp + c + l)), slope);
        part[l] += v * v;
      }
    A ss = 0;
    for (; c < C; ++c) {
      const A v = act(static_cast<A>(load(zp + c)), slope);
      ss += v * v;
    }
    for (int64_t l = 0; l < cpu::kLanes; ++l) ss += part[l];
    const A r = inv_norm(ss, C);
    if (rn != nullptr) rn[p] = r;
    PROGAN_CPU_IVDEP
    for (c = 0; c < C; ++c) store(yp + c, static_cast<acc_t<Y>>(act(static_cast<A>(load(zp + c)), slope) * r));
  }
}

// One block of `len` <= kBlock adjacent pixels of NCHW z and y (channel c of pixel i at c*S + i).
template <typename Z, typename Y>
PROGAN_CPU_MULTIVERSION void pixel_norm_nchw(const Z* z, Y* y, epi_t<Z>* rn, int64_t C, int64_t S, int64_t len,
                                             epi_t<Z> slope) {
  using A = epi_t<Z>;
  A r[kBlock] = {};
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) {
      const A v = act(static_cast<A>(load(z + c * S + i)), slope);
      r[i] += v * v;
    }
  for (int64_t i = 0; i < len; ++i) r[i] = inv_norm(r[i], C);
  if (rn != nullptr)
    for (int64_t i = 0; i < len; ++i) rn[i] = r[i];
  for (int64_t c = 0; c < C; ++c) {
    PROGAN_CPU_IVDEP
    for (int64_t i = 0; i < len; ++i)
      store(y + c * S + i, static_cast<acc_t<Y>>(act(static_cast<A>(load(z + c * S + i)), slope) * r[i]));
  }
}

// One block of `len` <= kCLBlock pixels: channels_last z (pixel i at z + i*C) to NCHW y (channel c
// of pixel i at y[c*S + i]); buf holds C * kCLBlock values.
template <typename Z, typename Y>
PROGAN_CPU_MULTIVERSION void transpose_block(const Z* __restrict z, Y* __restrict y, epi_t<Z>* __restrict buf,
                                             epi_t<Z>* __restrict rn, int64_t C, int64_t S, int64_t len,
                                             epi_t<Z> slope, bool pixel_norm) {
  using A = epi_t<Z>;
  int64_t c0 = 0;
  if (len == kCLBlock) {  // whole tiles: fixed trip counts and buffer strides, transposed in registers
    for (; c0 + kCLBlock <= C; c0 += kCLBlock) {
      A t[kCLBlock][kCLBlock];
      for (int64_t i = 0; i < kCLBlock; ++i)
        for (int64_t c = 0; c < kCLBlock; ++c) t[i][c] = act(static_cast<A>(load(z + i * C + c0 + c)), slope);
      A* __restrict b = buf + c0 * kCLBlock;
      for (int64_t c = 0; c < kCLBlock; ++c)
        for (int64_t i = 0; i < kCLBlock; ++i) b[c * kCLBlock + i] = t[i][c];
    }
  }
  for (int64_t i = 0; i < len; ++i)
    for (int64_t c = c0; c < C; ++c) buf[c * kCLBlock + i] = act(static_cast<A>(load(z + i * C + c)), slope);
  A r[kCLBlock];
  for (int64_t i = 0; i < kCLBlock; ++i) r[i] = 0;
  if (pixel_norm) {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < kCLBlock; ++i) r[i] += buf[c * kCLBlock + i] * buf[c * kCLBlock + i];
    for (int64_t i = 0; i < kCLBlock; ++i) r[i] = inv_norm(r[i], C);
    if (rn != nullptr)
      for (int64_t i = 0; i < len; ++i) rn[i] = r[i];
  } else {
    for (int64_t i = 0; i < kCLBlock; ++i) r[i] = A(1);
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) store(y + c * S + i, static_cast<acc_t<Y>>(buf[c * kCLBlock + i] * r[i]));
}

// fn(image, first pixel, pixels) over blocks of `block` adjacent pixels that never cross an image.
template <typename Fn>
void for_pixel_blocks(int64_t N, int64_t S, int64_t block, int64_t work_per_pixel, const Fn& fn) {
  const int64_t per_image = (S + block - 1) / block;
  cpu::parallel_for(0, N * per_image, cpu::grain_for(work_per_pixel * std::min(S, block)), [&](int64_t b0, int64_t b1) {
    int64_t n = b0 / per_image, k = b0 % per_image;  // once per chunk
    for (int64_t b = b0; b < b1; ++b) {
      fn(n, k * block, std::min(block, S - k * block));
      if (++k == per_image) k = 0, ++n;
    }
  });
}

template <typename Z, typename Y>
void epilogue_kernel(const at::Tensor& z, at::Tensor& y, at::Tensor* inv_norm, bool z_cl, bool y_cl, Act act_kind,
                     double alpha, bool pixel_norm) {
  using A = epi_t<Z>;
  const Z* zp = z.const_data_ptr<Z>();
  Y* yp = y.mutable_data_ptr<Y>();
  A* rn = inv_norm != nullptr ? inv_norm->mutable_data_ptr<A>() : nullptr;
  const A slope = act_kind == Act::LRelu ? static_cast<A>(alpha) : A(1);
  const int64_t N = z.size(0), C = z.size(1), S = z.size(2) * z.size(3), numel = z.numel();
  if (z_cl == y_cl && !pixel_norm) {
    constexpr int64_t kChunk = 4096;
    cpu::parallel_for(0, (numel + kChunk - 1) / kChunk, cpu::grain_for(kChunk), [&](int64_t c0, int64_t c1) {
      const int64_t b = c0 * kChunk, e = std::min(numel, c1 * kChunk);
      act_run<Z, Y>(zp + b, yp + b, e - b, slope);
    });
  } else if (z_cl && y_cl) {
    cpu::parallel_for(0, N * S, cpu::grain_for(2 * C),
                      [&](int64_t p0, int64_t p1) { pixel_norm_cl<Z, Y>(zp, yp, rn, C, p0, p1, slope); });
  } else if (!z_cl) {
    TORCH_INTERNAL_ASSERT(!y_cl, "conv_epilogue: NCHW z with channels_last y");
    for_pixel_blocks(N, S, kBlock, 2 * C, [&](int64_t n, int64_t s0, int64_t len) {
      pixel_norm_nchw<Z, Y>(zp + n * C * S + s0, yp + n * C * S + s0, rn ? rn + n * S + s0 : nullptr, C, S, len,
                            slope);
    });
  } else {
    for_pixel_blocks(N, S, kCLBlock, 2 * C, [&](int64_t n, int64_t s0, int64_t len) {
      thread_local std::vector<A> buf;
      buf.resize(C * kCLBlock);
      transpose_block<Z, Y>(zp + (n * S + s0) * C, yp + n * C * S + s0, buf.data(), rn ? rn + n * S + s0 : nullptr, C,
                            S, len, slope, pixel_norm);
    });
  }
}

}  // namespace

at::Tensor conv_epilogue(const at::Tensor& z, Act act, double alpha, bool pixel_norm, at::MemoryFormat fmt,
                         at::ScalarType out_dtype, at::Tensor* inv_norm) {
  // A tensor contiguous in both formats (C == 1 or H*W == 1) is read as y's format.
  const bool y_cl = fmt == at::MemoryFormat::ChannelsLast;
  const bool z_cl = z.is_contiguous(at::MemoryFormat::ChannelsLast) && (y_cl || !z.is_contiguous());
  TORCH_INTERNAL_ASSERT(z.dim() == 4 && (z_cl || z.is_contiguous()));
  const bool same = z_cl == y_cl && z.scalar_type() == out_dtype;
  if (inv_norm != nullptr) {
    TORCH_INTERNAL_ASSERT(pixel_norm, "conv_epilogue: inverse norms asked for without pixel norm");
    const auto r_dtype = z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    *inv_norm = at::empty({z.size(0), 1, z.size(2), z.size(3)}, z.options().dtype(r_dtype));
  }
  if (same && act == Act::Linear && !pixel_norm) return z;
  at::Tensor y = same ? z : at::empty(z.sizes(), z.options().dtype(out_dtype).memory_format(fmt));
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, z.scalar_type(), "conv_epilogue", [&] {
    using Z = scalar_t;
    PROGAN_DISPATCH_FLOATING_TYPES(out_dtype, "conv_epilogue_out", [&] {
      epilogue_kernel<Z, scalar_t>(z, y, inv_norm, z_cl, y_cl, act, alpha, pixel_norm);
    });
  });
  return y;
}

}  // namespace progan_ext
