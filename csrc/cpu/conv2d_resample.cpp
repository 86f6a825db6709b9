// conv2d_resample and conv2d_resample_grad_weight on the CPU: the linear building blocks of every
// conv op ("same", "up", "down"; schema comments in progan_ext.cpp). Each is one oneDNN call
// (at::conv2d, at::conv_transpose2d, at::convolution_backward) on a transformed kernel; the
// upsampled tensor is never stored.
//
// "down" (3x3 conv, padding 1, then 2x2 average pool): output i averages conv rows 2i and 2i+1,
// which read x[2i-1..2i+2]: one 4x4 stride-2 conv (padding 1) with the kernel
//   K[a] = (w[a] + w[a-1]) / 4 per axis (w[-1] = w[3] = 0): the 3x3 kernel placed at offsets 0
//   and 1 of a 4x4 grid and summed.
// "up" (nearest 2x upsample, then 3x3 conv, padding 1), per axis: output 2i+p reads low-res rows
//   p = 0:  x[i-1]*w0 + x[i]*(w1+w2),    p = 1:  x[i]*(w0+w1) + x[i+1]*w2,
// which is conv_transpose2d(x, K, stride 2, padding 1) with the 4-tap kernel
//   K = (w2, w1+w2, w0+w1, w0)
// (a transposed conv writes output 2j + a - 1 from input j with tap a). Each output pixel costs
// 2x2 multiply-adds per channel pair instead of 3x3, and oneDNN writes the interleaved output.
// The gradients of the kernels go back through the same per-axis maps (fold_kernel_grad).

#include <ATen/Functions.h>
#include <torch/library.h>


#include "conv_layout.h"
#include "conv_resample.h"
#include "cpu_utils.h"

namespace progan_ext {
namespace {

// Per axis, the 4 taps of the resampling kernels from the 3 taps of w, and the adjoint map:
//   down: (w0, w0+w1, w1+w2, w2)      up: the same reversed, (w2, w1+w2, w0+w1, w0).
// `step` is the stride between taps in memory (1 along a row, 3 or 4 along a column).
inline void taps4(const double* w, int64_t wstep, double* k, int64_t kstep, bool up) {
  const double a = w[0], b = w[wstep], c = w[2 * wstep];
  const double t[4] = {a, a + b, b + c, c};
  for (int i = 0; i < 4; ++i) k[i * kstep] = t[up ? 3 - i : i];
}
inline void taps3(const double* k, int64_t kstep, double* w, int64_t wstep, bool up) {
  double t[4];
  for (int i = 0; i < 4; ++i) t[up ? 3 - i : i] = k[i * kstep];
  w[0] = t[0] + t[1], w[wstep] = t[1] + t[2], w[2 * wstep] = t[2] + t[3];
}

// out[i] = w[i] * factor over a flat array, in w's accumulation type (what eager's `w * scale` does).
template <typename W, typename O>
PROGAN_CPU_MULTIVERSION void scale_run(const W* __restrict w, O* __restrict out, int64_t n, double factor) {
  using A = cpu::acc_t<W>;
  const A f = static_cast<A>(factor);
  for (int64_t i = 0; i < n; ++i) cpu::store(out + i, static_cast<cpu::acc_t<O>>(cpu::load(w + i) * f));
}

// The kernel oneDNN runs for `mode`, from w [Cout, Cin, k, k] (any strides and dtype):
//   same: w * scale;  down: [Cout, Cin, 4, 4] per taps4, * scale / 4;
//   up:   [Cin, Cout, 4, 4] (conv_transpose2d's layout) per taps4 reversed, * scale.
// Computed in double, rounded once to `dtype`; no temporaries beyond one kernel's taps.
at::Tensor conv_kernel(const at::Tensor& w, double scale, Resample mode, at::ScalarType dtype) {
  const int64_t cout = w.size(0), cin = w.size(1), k = w.size(2);
  const bool up = mode == Resample::Up;
  const int64_t kk = mode == Resample::Same ? k : 4;
  const double factor = mode == Resample::Down ? scale / 4 : scale;
  at::Tensor out = at::empty(up ? at::IntArrayRef{cin, cout, kk, kk} : at::IntArrayRef{cout, cin, kk, kk},
                             w.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "conv_kernel", [&] {
    using W = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "conv_kernel_out", [&] {
      const W* p = w.const_data_ptr<W>();
      scalar_t* q = out.mutable_data_ptr<scalar_t>();
      if (mode == Resample::Same && w.is_contiguous()) {  // the forward's kernel: a flat scaled copy
        scale_run<W, scalar_t>(p, q, w.numel(), factor);
        return;
      }
      const auto st = w.strides();
      cpu::parallel_for(0, cout, cpu::grain_for(cin * kk * kk), [&](int64_t o0, int64_t o1) {
        double src[9], rows[12], taps[16];
        for (int64_t o = o0; o < o1; ++o)
          for (int64_t i = 0; i < cin; ++i) {
            const W* wp = p + o * st[0] + i * st[1];
            scalar_t* d = q + (up ? i * cout + o : o * cin + i) * kk * kk;
            if (mode == Resample::Same) {
              for (int64_t y = 0; y < k; ++y)
                for (int64_t x = 0; x < k; ++x)
                  d[y * k + x] = static_cast<scalar_t>(static_cast<double>(wp[y * st[2] + x * st[3]]) * factor);
              continue;
            }
            for (int y = 0; y < 3; ++y)
              for (int x = 0; x < 3; ++x) src[y * 3 + x] = static_cast<double>(wp[y * st[2] + x * st[3]]) * factor;
            for (int y = 0; y < 3; ++y) taps4(src + y * 3, 1, rows + y * 4, 1, up);  // along x: 3x4
            for (int x = 0; x < 4; ++x) taps4(rows + x, 4, taps + x, 4, up);         // along y: 4x4
            for (int t = 0; t < 16; ++t) d[t] = static_cast<scalar_t>(taps[t]);
          }
      });
    });
  });
  return out;
}

// The adjoint of conv_kernel: from the gradient dK of the kernel oneDNN ran (any strides), the
// gradient of w [Cout, Cin, k, k] in `dtype`.
at::Tensor fold_kernel_grad(const at::Tensor& dk, int64_t cout, int64_t cin, int64_t k, double scale, Resample mode,
                            at::ScalarType dtype) {
  const bool up = mode == Resample::Up;
  const double factor = mode == Resample::Down ? scale / 4 : scale;
  at::Tensor out = at::empty({cout, cin, k, k}, dk.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dk.scalar_type(), "fold_kernel_grad", [&] {
    using D = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fold_kernel_grad_out", [&] {
      const D* p = dk.const_data_ptr<D>();
      scalar_t* q = out.mutable_data_ptr<scalar_t>();
      const auto st = dk.strides();
      cpu::parallel_for(0, cout, cpu::grain_for(cin * 16), [&](int64_t o0, int64_t o1) {
        double g[16], rows[12], w3[9];
        for (int64_t o = o0; o < o1; ++o)
          for (int64_t i = 0; i < cin; ++i) {
            const D* s = p + (up ? i * st[0] + o * st[1] : o * st[0] + i * st[1]);
            scalar_t* d = q + (o * cin + i) * k * k;
            if (mode == Resample::Same) {
              for (int64_t y = 0; y < k; ++y)
                for (int64_t x = 0; x < k; ++x)
                  d[y * k + x] = static_cast<scalar_t>(static_cast<double>(s[y * st[2] + x * st[3]]) * factor);
              continue;
            }
            for (int a = 0; a < 4; ++a)
              for (int b = 0; b < 4; ++b) g[a * 4 + b] = static_cast<double>(s[a * st[2] + b * st[3]]) * factor;
            for (int a = 0; a < 4; ++a) taps3(g + a * 4, 1, rows + a * 3, 1, up);  // along x: 4x3
            for (int x = 0; x < 3; ++x) taps3(rows + x, 3, w3 + x, 3, up);         // along y: 3x3
            for (int t = 0; t < 9; ++t) d[t] = static_cast<scalar_t>(w3[t]);
          }
      });
    });
  });
  return out;
}

// A 1x1 convolution is a GEMM over the input as it lies (oneDNN would reorder NCHW input to a
// blocked format first): channels_last x is a [N*H*W, Cin] matrix, NCHW x a batch of [Cin, H*W].
// On channels_last input oneDNN's nhwc 1x1 kernels are as fast or faster for bfloat16, for the
// weight gradient, and for few input channels (a GEMM with K < 16: fromRGB's 3, toRGB's input
// gradient) above kSmallGemmPixels pixels; below it oneDNN's fixed cost per call dominates and the
// GEMM is 1.3-3x faster (benchmarks/NOTES.md).
constexpr int64_t kSmallGemmPixels = 8192;

bool gemm_1x1(bool channels_last, int64_t cin, int64_t pixels, at::ScalarType dtype) {
  if (!channels_last) return true;
  if (dtype == at::kBFloat16) return false;
  return cin >= 16 || pixels <= kSmallGemmPixels;
}

at::Tensor conv1x1(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias, bool cl) {
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), wd = x.size(3), cout = w.size(0);
  const at::Tensor w2 = w.view({cout, cin});
  if (cl) {
    const at::Tensor x2 = x.permute({0, 2, 3, 1}).reshape({n * h * wd, cin});
    const at::Tensor z = bias.has_value() ? at::addmm(*bias, x2, w2.t()) : at::mm(x2, w2.t());
    return z.view({n, h, wd, cout}).permute({0, 3, 1, 2});
  }
  const at::Tensor x3 = x.view({n, cin, h * wd});
  const at::Tensor z = bias.has_value()
                           ? at::baddbmm(bias->view({1, cout, 1}).expand({n, cout, h * wd}), w2.expand({n, cout, cin}), x3)
                           : at::matmul(w2, x3);
  return z.view({n, cout, h, wd});
}

// The gradient of conv1x1's weight for NCHW x and g: sum over pixels of g (x) x, one GEMM.
at::Tensor conv1x1_grad_weight(const at::Tensor& g, const at::Tensor& x) {
  const int64_t n = x.size(0), cin = x.size(1), s = x.size(2) * x.size(3), cout = g.size(1);
  return at::mm(g.view({n, cout, s}).transpose(0, 1).reshape({cout, n * s}),
                x.view({n, cin, s}).transpose(0, 1).reshape({cin, n * s}).t());
}

at::Tensor conv2d_resample_cpu(const at::Tensor& x, const at::Tensor& w, double scale, c10::string_view mode_name) {
  const Resample mode = parse_resample(mode_name);
  check_conv_input(x, w, mode, "conv2d_resample");
  check_finite(scale, "scale", "conv2d_resample");
  const at::Tensor z = conv_resample_compute(x, w, c10::nullopt, scale, mode);
  return conv_epilogue(z, Act::Linear, 0.0, false, layout_of(x), x.scalar_type());
}

at::Tensor conv2d_resample_grad_weight_cpu(const at::Tensor& x_in, const at::Tensor& g_in, double scale,
                                           c10::string_view mode_name, int64_t k) {
  const Resample mode = parse_resample(mode_name);
  check_conv_grad_weight_args(x_in, g_in, scale, mode, k);
  const int64_t cout = g_in.size(1), cin = x_in.size(1);
  const auto ct = conv_compute_dtype(x_in.scalar_type());
  if (x_in.numel() == 0 || g_in.numel() == 0) return at::zeros({cout, cin, k, k}, x_in.options());
  const auto cfmt = layout_of(x_in);  // oneDNN's backward-weights pass is fastest on the layout as given
  const at::Tensor x = to_conv_input(x_in, ct, cfmt), g = to_conv_input(g_in, ct, cfmt);
  if (k == 1 && cfmt != at::MemoryFormat::ChannelsLast) {
    const at::Tensor dk = conv1x1_grad_weight(g, x);
    return fold_kernel_grad(dk.view({cout, cin, 1, 1}), cout, cin, 1, scale, mode, x_in.scalar_type());
  }
  const int64_t kk = mode == Resample::Same ? k : 4, pad = mode == Resample::Same ? k / 2 : 1;
  const int64_t stride = mode == Resample::Same ? 1 : 2;
  const bool up = mode == Resample::Up;
  // Only the kernel's shape matters: output_mask asks for the weight gradient alone.
  const at::Tensor shape_only = at::empty(up ? at::IntArrayRef{cin, cout, kk, kk} : at::IntArrayRef{cout, cin, kk, kk},
                                          x.options());
  const at::Tensor dk = std::get<1>(at::convolution_backward(g, x, shape_only, c10::nullopt, {stride, stride},
                                                             {pad, pad}, {1, 1}, up, {0, 0}, 1, {false, true, false}));
  return fold_kernel_grad(dk, cout, cin, k, scale, mode, x_in.scalar_type());
}

}  // namespace

at::Tensor conv_resample_compute(const at::Tensor& x_in, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias_in, double scale, Resample mode) {
  const auto ct = conv_compute_dtype(x_in.scalar_type());
  const int64_t k = weight.size(2);
  const auto cfmt = conv_layout(mode, k, layout_of(x_in));
  const at::Tensor x = to_conv_input(x_in, ct, cfmt);
  const at::Tensor w = conv_kernel(weight, scale, mode, ct);
  const c10::optional<at::Tensor> bias = bias_in.has_value() ? c10::optional<at::Tensor>(bias_in->to(ct)) : c10::nullopt;
  at::Tensor z;
  if (k == 1 && gemm_1x1(cfmt == at::MemoryFormat::ChannelsLast, x.size(1), x.size(0) * x.size(2) * x.size(3), ct)) {
    z = conv1x1(x, w, bias, cfmt == at::MemoryFormat::ChannelsLast);
  } else if (mode == Resample::Up) {
    z = at::conv_transpose2d(x, w, bias, {2, 2}, {1, 1});
  } else {
    const int64_t stride = mode == Resample::Down ? 2 : 1, pad = mode == Resample::Down ? 1 : weight.size(2) / 2;
    z = at::conv2d(x, w, bias, {stride, stride}, {pad, pad});
  }
  return z.is_contiguous(cfmt) ? z : z.contiguous(cfmt);
}

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) {
  m.impl("conv2d_resample", &conv2d_resample_cpu);
  m.impl("conv2d_resample_grad_weight", &conv2d_resample_grad_weight_cpu);
}

}  // namespace progan_ext
