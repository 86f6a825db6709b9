// pixel_norm on the CPU: y = x * rsqrt(mean_c(x^2) + eps), and its gradient
//   grad_x = r*g - r^3 * x * mean_c(g*x),  r = rsqrt(mean_c(x^2) + eps),
// also from the output and a saved r (the pixel-normed convs): grad_x = r * (g - y * mean_c(g*y)).
//
// The input is N images of S = H*W pixels of C channels (S = 1 for rank-2 input). Both layouts
// keep the inner loops on adjacent memory:
//  * channels_last / rank 2: a pixel's C channels are adjacent; the channel sums are dot
//    products with fixed lane partial sums (cpu::dot), then one scaling pass per pixel;
//  * NCHW: a block of up to kBlock adjacent pixels of one image; the per-pixel sums are
//    accumulated channel by channel, vectorised across the block's pixels.
// Every pixel is reduced by one thread in a fixed order: results do not depend on the thread count.

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>

#include "../common.h"
#include "../pixel_norm_checks.h"
#include "cpu_utils.h"

namespace progan_ext {
namespace {

using cpu::acc_t;
using cpu::load;
using cpu::store;

constexpr int64_t kBlock = 64;  // NCHW pixels per block: the per-pixel sums stay in registers / L1

// ---- channels innermost ------------------------------------------------------------------------

constexpr int64_t kGroup = 8;  // channels_last pixels whose channel sums are finished together

// out[j] = cpu::dot(a + j*C, b + j*C, C) for j < np <= kGroup: the same sums in the same order (so
// the same bits), but the final reduction of the kLanes partial sums runs across the group's
// pixels at once, vectorised, instead of as one dependent chain of kLanes adds per pixel (the
// bf16 forward at 64 channels spent ~100 cycles per pixel; benchmarks/NOTES.md).
template <typename T>
PROGAN_CPU_INLINE void group_dots(const T* __restrict a, const T* __restrict b, int64_t C, int64_t np,
                                  acc_t<T>* __restrict out) {
  using A = acc_t<T>;
  A part[cpu::kLanes][kGroup];
  for (int64_t j = 0; j < kGroup; ++j) {
    A lane[cpu::kLanes] = {};
    A tail = 0;
    if (j < np) {
      const T* __restrict aj = a + j * C;
      const T* __restrict bj = b + j * C;
      int64_t i = 0;
      for (; i + cpu::kLanes <= C; i += cpu::kLanes)
        for (int64_t l = 0; l < cpu::kLanes; ++l) lane[l] += load(aj + i + l) * load(bj + i + l);
      for (; i < C; ++i) tail += load(aj + i) * load(bj + i);
    }
    out[j] = tail;
    for (int64_t l = 0; l < cpu::kLanes; ++l) part[l][j] = lane[l];
  }
  for (int64_t l = 0; l < cpu::kLanes; ++l)
    for (int64_t j = 0; j < kGroup; ++j) out[j] += part[l][j];
}

template <typename T>
PROGAN_CPU_MULTIVERSION void forward_pixels(const T* __restrict x, T* __restrict y, int64_t C, int64_t p0,
                                            int64_t p1, acc_t<T> eps) {
  using A = acc_t<T>;
  // bf16 / fp16: groups of pixels (bf16, 64 channels, 1 thread: 1.06-1.09 -> 0.80-0.91 ms)
  if constexpr (sizeof(T) == 2) {
    for (int64_t p = p0; p < p1; p += kGroup) {
      const int64_t np = std::min(kGroup, p1 - p);
      A r[kGroup];
      group_dots(x + p * C, x + p * C, C, np, r);
      for (int64_t j = 0; j < kGroup; ++j) r[j] = A(1) / std::sqrt(r[j] / A(C) + eps);
      for (int64_t j = 0; j < np; ++j) {
        const T* __restrict xp = x + (p + j) * C;
        T* __restrict yp = y + (p + j) * C;
        for (int64_t c = 0; c < C; ++c) store(yp + c, load(xp + c) * r[j]);
      }
    }
  } else {  // fp32 / fp64: one pixel at a time measured faster (0.28-0.36 vs 0.39-0.45 ms grouped)
    for (int64_t p = p0; p < p1; ++p) {
      const T* __restrict xp = x + p * C;
      T* __restrict yp = y + p * C;
      const A r = A(1) / std::sqrt(cpu::dot(xp, xp, C) / A(C) + eps);
      for (int64_t c = 0; c < C; ++c) store(yp + c, load(xp + c) * r);
    }
  }
}

template <typename T>
PROGAN_CPU_MULTIVERSION void backward_pixels(const T* __restrict g, const T* __restrict x, T* __restrict gx,
                                             int64_t C, int64_t p0, int64_t p1, acc_t<T> eps) {
  using A = acc_t<T>;
  for (int64_t p = p0; p < p1; ++p) {
    const T* __restrict xp = x + p * C;
    const T* __restrict gp = g + p * C;
    T* __restrict gxp = gx + p * C;
    const A r = A(1) / std::sqrt(cpu::dot(xp, xp, C) / A(C) + eps);
    const A cx = r * r * r * cpu::dot(gp, xp, C) / A(C);
    for (int64_t c = 0; c < C; ++c) store(gxp + c, r * load(gp + c) - cx * load(xp + c));
  }
}

// From the output: grad_x = r * (g - y * mean_c(g*y)), r the saved inverse norm of each pixel.
template <typename T>
PROGAN_CPU_MULTIVERSION void from_output_pixels(const T* __restrict g, const T* __restrict y,
                                                const acc_t<T>* __restrict r, T* __restrict gx, int64_t C,
                                                int64_t p0, int64_t p1) {
  using A = acc_t<T>;
  for (int64_t p = p0; p < p1; ++p) {
    const T* __restrict yp = y + p * C;
    const T* __restrict gp = g + p * C;
    T* __restrict gxp = gx + p * C;
    const A rp = r[p], cy = rp * cpu::dot(gp, yp, C) / A(C);
    for (int64_t c = 0; c < C; ++c) store(gxp + c, rp * load(gp + c) - cy * load(yp + c));
  }
}

// ---- NCHW: blocks of adjacent pixels -----------------------------------------------------------

// Block of `len` <= kBlock pixels starting at x (channel c of pixel i at x[c*S + i]).
template <typename T>
PROGAN_CPU_MULTIVERSION void forward_block(const T* __restrict x, T* __restrict y, int64_t C, int64_t S, int64_t len,
                                           acc_t<T> eps) {
  using A = acc_t<T>;
  A r[kBlock] = {};
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) {
      const A v = load(x + c * S + i);
      r[i] += v * v;
    }
  for (int64_t i = 0; i < len; ++i) r[i] = A(1) / std::sqrt(r[i] / A(C) + eps);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) store(y + c * S + i, load(x + c * S + i) * r[i]);
}

template <typename T>
PROGAN_CPU_MULTIVERSION void backward_block(const T* __restrict g, const T* __restrict x, T* __restrict gx, int64_t C,
                                            int64_t S, int64_t len, acc_t<T> eps) {
  using A = acc_t<T>;
  A sxx[kBlock] = {}, sgx[kBlock] = {};
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) {
      const A xv = load(x + c * S + i);
      sxx[i] += xv * xv;
      sgx[i] += load(g + c * S + i) * xv;
    }
  for (int64_t i = 0; i < len; ++i) {
    const A r = A(1) / std::sqrt(sxx[i] / A(C) + eps);
    sxx[i] = r;                             // coefficient of g
    sgx[i] = r * r * r * sgx[i] / A(C);  // coefficient of x
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i)
      store(gx + c * S + i, sxx[i] * load(g + c * S + i) - sgx[i] * load(x + c * S + i));
}

// From the output, a block of `len` pixels whose inverse norms start at r.
template <typename T>
PROGAN_CPU_MULTIVERSION void from_output_block(const T* __restrict g, const T* __restrict y,
                                               const acc_t<T>* __restrict r, T* __restrict gx, int64_t C,
                                               int64_t S, int64_t len) {
  using A = acc_t<T>;
  A sgy[kBlock] = {};
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) sgy[i] += load(g + c * S + i) * load(y + c * S + i);
  for (int64_t i = 0; i < len; ++i) sgy[i] = r[i] * sgy[i] / A(C);  // coefficient of y
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < len; ++i) store(gx + c * S + i, r[i] * load(g + c * S + i) - sgy[i] * load(y + c * S + i));
}

// fn(offset of the block's first element, pixels in the block) over every NCHW block, in parallel.
template <typename Fn>
void for_nchw_blocks(int64_t N, int64_t C, int64_t S, const Fn& fn) {
  const int64_t per_image = (S + kBlock - 1) / kBlock;
  cpu::parallel_for(0, N * per_image, cpu::grain_for(C * std::min(S, kBlock)), [&](int64_t b0, int64_t b1) {
    int64_t n = b0 / per_image, k = b0 % per_image;  // once per chunk
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t s0 = k * kBlock;
      fn(n * C * S + s0, std::min(kBlock, S - s0));
      if (++k == per_image) k = 0, ++n;
    }
  });
}

struct PixelGrid {
  int64_t n, c, s;
  bool channels_inner;
};

PixelGrid pixel_grid(const at::Tensor& x) {
  const int64_t s = x.dim() == 4 ? x.size(2) * x.size(3) : 1;
  return {x.size(0), x.size(1), s, x.dim() == 2 || layout_of(x) == at::MemoryFormat::ChannelsLast};
}

at::Tensor pixel_norm_cpu(const at::Tensor& x_in, double eps) {
  check_pixel_norm_args(x_in, eps);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  const PixelGrid v = pixel_grid(x);
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pixel_norm_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const auto e = static_cast<acc_t<scalar_t>>(eps);
    if (v.channels_inner) {
      cpu::parallel_for(0, v.n * v.s, cpu::grain_for(v.c),
                        [&](int64_t p0, int64_t p1) { forward_pixels<scalar_t>(xp, yp, v.c, p0, p1, e); });
    } else {
      for_nchw_blocks(v.n, v.c, v.s,
                      [&](int64_t off, int64_t len) { forward_block<scalar_t>(xp + off, yp + off, v.c, v.s, len, e); });
    }
  });
  return y;
}

at::Tensor pixel_norm_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, double eps) {
  check_pixel_norm_args(x_in, eps);
  check_same_shape(x_in, grad_in, "x", "grad");
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt), g = grad_in.contiguous(fmt);
  at::Tensor gx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return gx;
  const PixelGrid v = pixel_grid(x);
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pixel_norm_backward_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    const auto e = static_cast<acc_t<scalar_t>>(eps);
    if (v.channels_inner) {
      cpu::parallel_for(0, v.n * v.s, cpu::grain_for(2 * v.c),
                        [&](int64_t p0, int64_t p1) { backward_pixels<scalar_t>(gp, xp, gxp, v.c, p0, p1, e); });
    } else {
      for_nchw_blocks(v.n, v.c, v.s, [&](int64_t off, int64_t len) {
        backward_block<scalar_t>(gp + off, xp + off, gxp + off, v.c, v.s, len, e);
      });
    }
  });
  return gx;
}

at::Tensor pixel_norm_backward_from_output_cpu(const at::Tensor& grad_in, const at::Tensor& y_in,
                                               const at::Tensor& r_in) {
  check_pixel_norm_from_output_args(grad_in, y_in, r_in);
  const auto fmt = layout_of(y_in);
  const at::Tensor y = y_in.contiguous(fmt), g = grad_in.contiguous(fmt), r = r_in.contiguous();
  at::Tensor gx = at::empty(y.sizes(), y.options().memory_format(fmt));
  if (y.numel() == 0) return gx;
  const PixelGrid v = pixel_grid(y);
  PROGAN_DISPATCH_FLOATING_TYPES(y.scalar_type(), "pixel_norm_backward_from_output_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    const acc_t<scalar_t>* rp = r.const_data_ptr<acc_t<scalar_t>>();  // pixel n*S + s
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    if (v.channels_inner) {
      cpu::parallel_for(0, v.n * v.s, cpu::grain_for(2 * v.c), [&](int64_t p0, int64_t p1) {
        from_output_pixels<scalar_t>(gp, yp, rp, gxp, v.c, p0, p1);
      });
    } else {
      for_nchw_blocks(v.n, v.c, v.s, [&](int64_t off, int64_t len) {
        const int64_t pixel = (off / (v.c * v.s)) * v.s + off % (v.c * v.s);  // n*S + s0
        from_output_block<scalar_t>(gp + off, yp + off, rp + pixel, gxp + off, v.c, v.s, len);
      });
    }
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) {
  m.impl("pixel_norm", &pixel_norm_cpu);
  m.impl("pixel_norm_backward", &pixel_norm_backward_cpu);
  m.impl("pixel_norm_backward_from_output", &pixel_norm_backward_from_output_cpu);
}

}  // namespace progan_ext
