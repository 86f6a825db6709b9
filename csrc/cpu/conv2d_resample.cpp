// conv2d_resample and conv2d_resample_grad_weight on the CPU: the linear building blocks of every
// conv op ("same", "up", "down"; schema comments in progan_ext.cpp). They call at::conv2d /
// at::convolution_backward on transformed weights; the upsampled tensor is never stored.
//
// "up" (nearest 2x upsample, then 3x3 conv, padding 1), per axis: output 2i+p reads the upsampled
// rows 2i+p-1, 2i+p, 2i+p+1, i.e. low-res rows
//   p = 0:  x[i-1]*w0 + x[i]*(w1+w2)        (2-tap kernel (w0, w1+w2) starting at x[i-1])
//   p = 1:  x[i]*(w0+w1) + x[i+1]*w2        (2-tap kernel (w0+w1, w2) starting at x[i])
// so each of the four output parities (py, px) is a 2x2 conv of x. A 2x2 conv of x with padding
// 1 gives (H+1)x(W+1) outputs, where output j starts at x[j-1]: parity p is rows p..p+H-1. The
// four 2x2 kernels are stacked along Cout and run as four GEMMs, one per tap (conv_up_phases);
// the epilogue (conv_epilogue.h) then gathers each output pixel from its phase, so interleaving
// costs no extra pass.
//
// "down" (3x3 conv, padding 1, then 2x2 average pool): output i averages conv rows 2i and 2i+1,
// which read x[2i-1..2i+2]: one 4x4 stride-2 conv (padding 1) with the kernel
//   K4 = (w placed at offsets (0,0), (0,1), (1,0), (1,1) of a 4x4 grid, summed) / 4.

#include <ATen/Functions.h>
#include <torch/library.h>

#include "conv_epilogue.h"
#include "conv_resample.h"

namespace progan_ext {
namespace {

// Per-axis tap-summing matrices of the up phases: 2-tap kernel = M[p] @ (w0, w1, w2).
at::Tensor phase_matrix(int64_t parity, const at::TensorOptions& opts) {
  static double m[2][2][3] = {{{1, 0, 0}, {0, 1, 1}}, {{1, 1, 0}, {0, 0, 1}}};
  return at::from_blob(m[parity], {2, 3}, at::TensorOptions().dtype(at::kDouble)).to(opts.dtype(), false, true);
}

// [Cout, Cin, 3, 3] -> [4*Cout, Cin, 2, 2]: phase q = 2*py + px at channels q*Cout..(q+1)*Cout.
at::Tensor up_phase_weights(const at::Tensor& w) {
  const at::Tensor m0 = phase_matrix(0, w.options()), m1 = phase_matrix(1, w.options());
  std::vector<at::Tensor> phases;
  for (int py = 0; py < 2; ++py)
    for (int px = 0; px < 2; ++px)
      phases.push_back(at::matmul(at::matmul(py ? m1 : m0, w), (px ? m1 : m0).t()));
  return at::cat(phases, 0).contiguous();
}

// [Cout, Cin, 3, 3] -> [Cout, Cin, 4, 4], the padded-and-summed kernel / 4.
at::Tensor down_weight(const at::Tensor& w) {
  at::Tensor k4 = at::zeros({w.size(0), w.size(1), 4, 4}, w.options());
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) k4.narrow(2, a, 3).narrow(3, b, 3).add_(w);
  return k4.mul_(0.25);
}

at::Tensor weight_grad(const at::Tensor& grad_out, const at::Tensor& x, at::IntArrayRef weight_shape,
                       int64_t stride, int64_t padding) {
  const at::Tensor w = at::empty(weight_shape, x.options());
  auto grads = at::convolution_backward(grad_out, x, w, c10::nullopt, {stride, stride}, {padding, padding}, {1, 1},
                                        false, {0, 0}, 1, {false, true, false});
  return std::get<1>(grads);
}

at::Tensor conv2d_resample_cpu(const at::Tensor& x_in, const at::Tensor& w_in, double scale,
                               c10::string_view mode_name) {
  const Resample mode = parse_resample(mode_name);
  check_conv_input(x_in, w_in, mode, "conv2d_resample");
  check_finite(scale, "scale", "conv2d_resample");
  const auto fmt = layout_of(x_in);
  const auto ct = conv_compute_dtype(x_in.scalar_type());
  const at::Tensor x = x_in.to(ct).contiguous(fmt), w = w_in.to(ct);
  if (mode != Resample::Up) {
    const at::Tensor z = conv_resample_compute(x, w, scale, mode);
    return conv_epilogue(z, c10::nullopt, Act::Linear, 0.0, false, fmt, x_in.scalar_type());
  }
  // Interleave the phases (and cast) in one pass: the identity epilogue through UpPhaseSource.
  const at::Tensor phases = conv_up_phases(x, w, scale);
  const int64_t cout = w.size(0);
  return conv_epilogue(phases, UpPhaseSource{cout, x.size(2), x.size(3)},
                       {x.size(0), cout, 2 * x.size(2), 2 * x.size(3)}, c10::nullopt, Act::Linear, 0.0, false, fmt,
                       x_in.scalar_type(), false);
}

at::Tensor conv2d_resample_grad_weight_cpu(const at::Tensor& x_in, const at::Tensor& g_in, double scale,
                                           c10::string_view mode_name, int64_t k) {
  const Resample mode = parse_resample(mode_name);
  check_conv_grad_weight_args(x_in, g_in, scale, mode, k);
  const auto fmt = layout_of(x_in);
  const auto ct = conv_compute_dtype(x_in.scalar_type());
  const at::Tensor x = x_in.to(ct).contiguous(fmt), g = g_in.to(ct).contiguous(fmt);
  const int64_t cout = g.size(1), cin = x.size(1), n = x.size(0), h = x.size(2), w = x.size(3);
  at::Tensor gw;
  if (mode == Resample::Same) {
    gw = weight_grad(g, x, {cout, cin, k, k}, 1, k / 2);
  } else if (mode == Resample::Down) {
    const at::Tensor g4 = weight_grad(g, x, {cout, cin, 4, 4}, 2, 1);
    gw = at::zeros({cout, cin, 3, 3}, x.options());
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b) gw.add_(g4.narrow(2, a, 3).narrow(3, b, 3));
    gw.mul_(0.25);
  } else {
    // The gradient of the stacked phase conv: phase q's grad_out sits at offset (py, px) of an
    // (H+1)x(W+1) grid, zero elsewhere; then each 2x2 kernel grad goes back through its M's.
    at::Tensor gs = at::zeros({n, 4 * cout, h + 1, w + 1}, g.options().memory_format(fmt));
    const at::Tensor gv = g.view({n, cout, h, 2, w, 2});
    for (int py = 0; py < 2; ++py)
      for (int px = 0; px < 2; ++px)
        gs.narrow(1, (2 * py + px) * cout, cout).narrow(2, py, h).narrow(3, px, w).copy_(gv.select(5, px).select(3, py));
    const at::Tensor g2 = weight_grad(gs, x, {4 * cout, cin, 2, 2}, 1, 1);
    const at::Tensor m0 = phase_matrix(0, x.options()), m1 = phase_matrix(1, x.options());
    gw = at::zeros({cout, cin, 3, 3}, x.options());
    for (int py = 0; py < 2; ++py)
      for (int px = 0; px < 2; ++px)
        gw.add_(at::matmul(at::matmul((py ? m1 : m0).t(), g2.narrow(0, (2 * py + px) * cout, cout)), px ? m1 : m0));
  }
  gw = gw.mul_(scale).contiguous();
  return gw.to(x_in.scalar_type());
}

}  // namespace

at::Tensor conv_resample_compute(const at::Tensor& x, const at::Tensor& weight, double scale, Resample mode) {
  TORCH_INTERNAL_ASSERT(mode != Resample::Up);
  const auto fmt = layout_of(x);
  if (mode == Resample::Same) return at::conv2d(x, weight.mul(scale), {}, 1, weight.size(2) / 2).contiguous(fmt);
  return at::conv2d(x, down_weight(weight.mul(scale)), {}, 2, 1).contiguous(fmt);
}

at::Tensor conv_up_phases(const at::Tensor& x, const at::Tensor& weight, double scale) {
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3), cout = weight.size(0);
  // Zero-padded input, channels innermost: [N*(H+2)*(W+2), Cin].
  const at::Tensor xp = at::constant_pad_nd(x.permute({0, 2, 3, 1}), {0, 0, 1, 1, 1, 1}, 0)
                            .contiguous()
                            .view({n * (h + 2) * (w + 2), cin});
  const at::Tensor k = up_phase_weights(weight.mul(scale));  // [4*Cout, Cin, 2, 2]
  const int64_t rows = xp.size(0) - (w + 3);                 // windows that stay inside the buffer
  at::Tensor out = at::empty({xp.size(0), 4 * cout}, x.options());
  at::Tensor o = out.narrow(0, 0, rows);
  for (int dy = 0; dy < 2; ++dy)
    for (int dx = 0; dx < 2; ++dx) {
      // Tap (dy, dx) of every window starting at row r reads input row r + dy*(W+2) + dx.
      const at::Tensor a = xp.narrow(0, dy * (w + 2) + dx, rows);
      const at::Tensor b = k.select(3, dx).select(2, dy).t();  // [Cin, 4*Cout]
      if (dy == 0 && dx == 0) at::mm_out(o, a, b);
      else o.addmm_(a, b);
    }
  return out;
}

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) {
  m.impl("conv2d_resample", &conv2d_resample_cpu);
  m.impl("conv2d_resample_grad_weight", &conv2d_resample_grad_weight_cpu);
}

}  // namespace progan_ext
