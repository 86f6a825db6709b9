// pixel_norm on the CPU: y = x * rsqrt(mean_c(x^2) + eps), and its gradient.
//
// The input is seen as N*S pixels of C channels (S = H*W, 1 for rank-2 input). A pixel's
// channel c lives at base + c*channel_stride: channel_stride is S in NCHW memory and 1 in
// channels_last / rank-2 memory. Pixels are processed in blocks so that the inner loop runs
// over adjacent memory in both layouts.

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../common.h"

namespace progan_ext {
namespace {

constexpr int64_t kBlock = 64;  // pixels per block: accumulators fit in registers / L1

struct PixelLayout {
  int64_t pixels;          // N * S
  int64_t channels;        // C
  int64_t spatial;         // S
  bool channels_inner;     // channels_last or rank 2
  int64_t pixel_offset(int64_t p) const {  // memory offset of channel 0 of pixel p
    return channels_inner ? p * channels : (p / spatial) * channels * spatial + p % spatial;
  }
  int64_t channel_stride() const { return channels_inner ? 1 : spatial; }
  int64_t pixel_stride() const { return channels_inner ? channels : 1; }
};

PixelLayout pixel_layout(const at::Tensor& x) {
  const int64_t n = x.size(0), c = x.size(1), s = x.dim() == 4 ? x.size(2) * x.size(3) : 1;
  const bool inner = x.dim() == 2 || layout_of(x) == at::MemoryFormat::ChannelsLast;
  return {n * s, c, s, inner};
}

// Calls fn(offset of pixel block's channel 0, pixels in block) over all pixels, in parallel.
// A block never crosses an image boundary in NCHW memory (its pixels are then adjacent).
template <typename Fn>
void for_pixel_blocks(const PixelLayout& v, Fn&& fn) {
  const int64_t per_image = v.channels_inner ? v.pixels : (v.spatial + kBlock - 1) / kBlock;
  const int64_t images = v.channels_inner ? 1 : v.pixels / v.spatial;
  const int64_t span = v.channels_inner ? kBlock : v.spatial;
  const int64_t blocks = v.channels_inner ? (v.pixels + kBlock - 1) / kBlock : images * per_image;
  at::parallel_for(0, blocks, std::max<int64_t>(1, 32768 / (kBlock * std::max<int64_t>(v.channels, 1))),
                   [&](int64_t b0, int64_t b1) {
                     for (int64_t b = b0; b < b1; ++b) {
                       int64_t first, len;
                       if (v.channels_inner) {
                         first = b * kBlock;
                         len = std::min(kBlock, v.pixels - first);
                       } else {
                         const int64_t s0 = (b % per_image) * kBlock;
                         first = (b / per_image) * span + s0;
                         len = std::min(kBlock, span - s0);
                       }
                       fn(v.pixel_offset(first), len);
                     }
                   });
}

template <typename scalar_t>
void pixel_norm_forward_kernel(const scalar_t* x, scalar_t* y, const PixelLayout& v, double eps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cs = v.channel_stride(), ps = v.pixel_stride(), C = v.channels;
  for_pixel_blocks(v, [&](int64_t base, int64_t len) {
    acc_t r[kBlock] = {};
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < len; ++i) {
        const acc_t xv = static_cast<acc_t>(x[base + c * cs + i * ps]);
        r[i] += xv * xv;
      }
    for (int64_t i = 0; i < len; ++i) r[i] = acc_t(1) / std::sqrt(r[i] / acc_t(C) + acc_t(eps));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < len; ++i) {
        const int64_t o = base + c * cs + i * ps;
        y[o] = static_cast<scalar_t>(static_cast<acc_t>(x[o]) * r[i]);
      }
  });
}

// grad_x = r*g - r^3 * x * mean_c(g*x), r = rsqrt(mean_c(x^2) + eps)
template <typename scalar_t>
void pixel_norm_backward_kernel(const scalar_t* g, const scalar_t* x, scalar_t* gx, const PixelLayout& v,
                                double eps) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t cs = v.channel_stride(), ps = v.pixel_stride(), C = v.channels;
  for_pixel_blocks(v, [&](int64_t base, int64_t len) {
    acc_t sxx[kBlock] = {}, sgx[kBlock] = {};
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < len; ++i) {
        const int64_t o = base + c * cs + i * ps;
        const acc_t xv = static_cast<acc_t>(x[o]);
        sxx[i] += xv * xv;
        sgx[i] += static_cast<acc_t>(g[o]) * xv;
      }
    for (int64_t i = 0; i < len; ++i) {
      const acc_t r = acc_t(1) / std::sqrt(sxx[i] / acc_t(C) + acc_t(eps));
      sxx[i] = r;                             // coefficient of g
      sgx[i] = r * r * r * sgx[i] / acc_t(C);  // coefficient of x
    }
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < len; ++i) {
        const int64_t o = base + c * cs + i * ps;
        gx[o] = static_cast<scalar_t>(sxx[i] * static_cast<acc_t>(g[o]) - sgx[i] * static_cast<acc_t>(x[o]));
      }
  });
}

at::Tensor pixel_norm_cpu(const at::Tensor& x_in, double eps) {
  check_pixel_norm_args(x_in, eps);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  const PixelLayout v = pixel_layout(x);
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pixel_norm_cpu", [&] {
    pixel_norm_forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), v, eps);
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
  const PixelLayout v = pixel_layout(x);
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pixel_norm_backward_cpu", [&] {
    pixel_norm_backward_kernel<scalar_t>(g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                         gx.mutable_data_ptr<scalar_t>(), v, eps);
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) {
  m.impl("pixel_norm", &pixel_norm_cpu);
  m.impl("pixel_norm_backward", &pixel_norm_backward_cpu);
}

}  // namespace progan_ext
