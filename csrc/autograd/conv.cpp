// Autograd of the equalized-LR convolutions (eq_conv2d, upsample_conv2d, conv2d_downsample, the
// pixel-normed forms eq_conv2d_pn / upsample_conv2d_pn) and of their linear building blocks
// conv2d_resample / conv2d_resample_grad_weight.
//
// Notation: R(x, w, s, mode) = conv2d_resample(x, w, s, mode) (mode "same", "up" or "down"), linear
// in x and in w; GW(x, g, s, mode, k) = conv2d_resample_grad_weight, with <g, R(x, w)> = <GW(x, g), w>.
// w' = w.flip(2, 3).transpose(0, 1) is the kernel of the adjoint conv. With U the nearest 2x
// upsample and A the 2x2 average pool, U^T = 4 A and A^T = U / 4, hence
//
//     dR/dx^T g:  same -> R(g, w', s, "same"),  up -> R(g, w', 4 s, "down"),  down -> R(g, w', s/4, "up")
//     dR/dw^T g:  GW(x, g, s, mode, k)
//
// GW is bilinear too: for an incoming gradient u (shaped like w),
//     d<u, GW(x, g)>/dg = R(x, u, s, mode),   d<u, GW(x, g)>/dx = dR/dx^T g with kernel u,
// so both building blocks are differentiable to any order through compiled kernels.
//
// The fused ops y = act(R(x, w, scale, mode) + b) (scale = gain/sqrt(Cin*k*k)) then have
//     gz = bias_act_backward(g, y, alpha) (lrelu; g for linear),  gb = sum_{n,h,w} gz,
//     gx = dR/dx^T gz,  gw = GW(x, gz, scale, mode, k).
// With pixel_norm, the pre-norm activation a is recomputed in backward with the same fused op
// (pixel_norm=False, so it stays in the graph under create_graph) and gz = bias_act_backward(
// pixel_norm_backward(g, a, 1e-8), a, alpha). Only inputs and outputs are saved.
//
// The pixel-normed forms (what progan_ext.ops calls) also return the per-pixel inverse norm
// r = rsqrt(mean_c(a^2) + 1e-8), so y = a * r and backward needs no second convolution: with
// a = y / r, and for incoming gradients gy (of y) and gr (of r), with dr/da_c = -r^2 y_c / C,
//     ga = pixel_norm_backward_from_output(gy, y, r) - (r^2 / C) * y * gr,
//     gz = bias_act_backward(ga, y, alpha)
// (y has a's sign). Every step is a differentiable op of saved inputs and outputs, so the double
// backward of the WGAN-GP penalty runs through the same formulas.

#include <cmath>

#include "autograd_common.h"

namespace progan_ext {
namespace autograd {
namespace {

constexpr double kPixelNormEps = 1e-8;

enum Mode { kSame = 0, kUp = 1, kDown = 2 };

const char* mode_name(int mode) { return mode == kUp ? "up" : mode == kDown ? "down" : "same"; }

int parse_mode(c10::string_view m) { return m == "up" ? kUp : m == "down" ? kDown : kSame; }

// dR(x, w, scale, mode)/dx^T g: the mirrored mode with the adjoint kernel. A 1x1 kernel is its own
// mirror, so its adjoint is the transposed view of w, without the copy flip() makes (every kernel
// reads strided weights): one launch less per toRGB / fromRGB backward.
at::Tensor grad_input(const at::Tensor& g, const at::Tensor& w, double scale, int mode) {
  const bool one_tap = w.size(2) == 1 && w.size(3) == 1;
  const at::Tensor adjoint = (one_tap ? w : w.flip({2, 3})).transpose(0, 1);
  if (mode == kUp) return Ops::conv2d_resample(g, adjoint, scale * 4.0, "down");
  if (mode == kDown) return Ops::conv2d_resample(g, adjoint, scale * 0.25, "up");
  return Ops::conv2d_resample(g, adjoint, scale, "same");
}

struct ConvResample : public torch::autograd::Function<ConvResample> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, double scale,
                            c10::string_view mode) {
    at::AutoDispatchBelowADInplaceOrView below;
    at::Tensor out = Ops::conv2d_resample(x, w, scale, mode);  // validates mode
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["mode"] = static_cast<int64_t>(parse_mode(mode));
    ctx->save_for_backward({x, w});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &g = grads[0];
    const double scale = ctx->saved_data["scale"].toDouble();
    const int mode = static_cast<int>(ctx->saved_data["mode"].toInt());
    at::Tensor gx, gw;
    if (ctx->needs_input_grad(0)) gx = grad_input(g, w, scale, mode);
    if (ctx->needs_input_grad(1)) gw = Ops::conv2d_resample_grad_weight(x, g, scale, mode_name(mode), w.size(-1));
    return {gx, gw, none(), none()};
  }
};

struct ConvResampleGradWeight : public torch::autograd::Function<ConvResampleGradWeight> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& grad_out, double scale,
                            c10::string_view mode, int64_t k) {
    at::AutoDispatchBelowADInplaceOrView below;
    at::Tensor out = Ops::conv2d_resample_grad_weight(x, grad_out, scale, mode, k);
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["mode"] = static_cast<int64_t>(parse_mode(mode));
    ctx->save_for_backward({x, grad_out});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &grad_out = saved[1], &u = grads[0];
    const double scale = ctx->saved_data["scale"].toDouble();
    const int mode = static_cast<int>(ctx->saved_data["mode"].toInt());
    at::Tensor gx, gg;
    if (ctx->needs_input_grad(0)) gx = grad_input(grad_out, u, scale, mode);
    if (ctx->needs_input_grad(1)) gg = Ops::conv2d_resample(x, u, scale, mode_name(mode));
    return {gx, gg, none(), none(), none()};
  }
};

// What the fused ops' backward keeps besides tensors.
void save_fused_args(AutogradContext* ctx, const OptTensor& bias, double gain, c10::string_view act, double alpha) {
  ctx->saved_data["gain"] = gain;
  ctx->saved_data["lrelu"] = act == "lrelu";  // the forward op accepted act: "lrelu" or "linear"
  ctx->saved_data["alpha"] = alpha;
  ctx->saved_data["bias"] = bias.has_value() && bias->defined();
}

// The gradient of the pre-activation from the gradient g of the activation with output y.
at::Tensor act_grad(AutogradContext* ctx, const at::Tensor& g, const at::Tensor& y) {
  return ctx->saved_data["lrelu"].toBool() ? Ops::bias_act_backward(g, y, ctx->saved_data["alpha"].toDouble()) : g;
}

// Gradients of R(x, w, scale, mode) + bias given gz, the gradient of the sum, for the argument
// list (x, w, bias, <n_rest non-tensors>).
variable_list fused_grads(AutogradContext* ctx, const at::Tensor& gz, const at::Tensor& x, const at::Tensor& w,
                          int mode, size_t n_rest) {
  const double scale = ctx->saved_data["gain"].toDouble() / std::sqrt(static_cast<double>(w.size(1) * w.size(2) * w.size(3)));
  variable_list out(3 + n_rest);
  if (ctx->needs_input_grad(0)) out[0] = grad_input(gz, w, scale, mode);
  if (ctx->needs_input_grad(1)) out[1] = Ops::conv2d_resample_grad_weight(x, gz, scale, mode_name(mode), w.size(-1));
  if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) out[2] = gz.sum({0, 2, 3});
  return out;
}

// eq_conv2d (kSame), upsample_conv2d (kUp), conv2d_downsample (kDown: pixel_norm always false).
template <int kMode>
struct FusedConv : public torch::autograd::Function<FusedConv<kMode>> {
  static at::Tensor run(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, double gain,
                        c10::string_view act, double alpha, bool pixel_norm) {
    if (kMode == kUp) return Ops::upsample_conv2d(x, w, b, gain, act, alpha, pixel_norm);
    if (kMode == kDown) return Ops::conv2d_downsample(x, w, b, gain, act, alpha);
    return Ops::eq_conv2d(x, w, b, gain, act, alpha, pixel_norm);
  }

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                            double gain, c10::string_view act, double alpha, bool pixel_norm) {
    at::Tensor y;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      y = run(x, w, b, gain, act, alpha, pixel_norm);
    }
    save_fused_args(ctx, b, gain, act, alpha);
    ctx->saved_data["pixel_norm"] = pixel_norm;
    // The pixel-norm path recomputes its pre-norm activation from the inputs.
    ctx->save_for_backward({x, w, b.has_value() ? *b : none(), pixel_norm ? none() : y});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2], &g = grads[0];
    at::Tensor gz;
    if (ctx->saved_data["pixel_norm"].toBool()) {
      const char* act = ctx->saved_data["lrelu"].toBool() ? "lrelu" : "linear";
      const at::Tensor a = run(x, w, b.defined() ? OptTensor(b) : c10::nullopt, ctx->saved_data["gain"].toDouble(),
                               act, ctx->saved_data["alpha"].toDouble(), false);
      gz = act_grad(ctx, Ops::pixel_norm_backward(g, a, kPixelNormEps), a);
    } else {
      gz = act_grad(ctx, g, saved[3]);
    }
    return fused_grads(ctx, gz, x, w, kMode, 4);
  }
};

// eq_conv2d_pn (kSame), upsample_conv2d_pn (kUp): outputs (y, r).
template <int kMode>
struct FusedConvPn : public torch::autograd::Function<FusedConvPn<kMode>> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                               double gain, c10::string_view act, double alpha) {
    std::tuple<at::Tensor, at::Tensor> out;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      out = kMode == kUp ? Ops::upsample_conv2d_pn(x, w, b, gain, act, alpha)
                         : Ops::eq_conv2d_pn(x, w, b, gain, act, alpha);
    }
    save_fused_args(ctx, b, gain, act, alpha);
    ctx->save_for_backward({x, w, std::get<0>(out), std::get<1>(out)});
    ctx->set_materialize_grads(false);  // r is rarely used: its gradient then stays undefined
    return {std::get<0>(out), std::get<1>(out)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &y = saved[2], &r = saved[3];
    const at::Tensor &gy = grads[0], &gr = grads[1];
    at::Tensor ga;
    if (gy.defined()) ga = Ops::pixel_norm_backward_from_output(gy, y, r);  // one pass, no y / r tensor
    if (gr.defined()) {
      const at::Tensor t = ((r * r) * gr * (-1.0 / static_cast<double>(y.size(1))) * y).to(y.scalar_type());
      ga = ga.defined() ? ga + t : t;
    }
    if (!ga.defined()) return variable_list(6);
    return fused_grads(ctx, act_grad(ctx, ga, y), x, w, kMode, 3);
  }
};

at::Tensor conv2d_resample(const at::Tensor& x, const at::Tensor& w, double scale, c10::string_view mode) {
  return ConvResample::apply(x, w, scale, mode);
}

at::Tensor conv2d_resample_grad_weight(const at::Tensor& x, const at::Tensor& grad_out, double scale,
                                       c10::string_view mode, int64_t k) {
  return ConvResampleGradWeight::apply(x, grad_out, scale, mode, k);
}

at::Tensor eq_conv2d(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, double gain, c10::string_view act,
                     double alpha, bool pixel_norm) {
  return FusedConv<kSame>::apply(x, w, b, gain, act, alpha, pixel_norm);
}

at::Tensor upsample_conv2d(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, double gain,
                           c10::string_view act, double alpha, bool pixel_norm) {
  return FusedConv<kUp>::apply(x, w, b, gain, act, alpha, pixel_norm);
}

at::Tensor conv2d_downsample(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, double gain,
                             c10::string_view act, double alpha) {
  return FusedConv<kDown>::apply(x, w, b, gain, act, alpha, false);
}

std::tuple<at::Tensor, at::Tensor> eq_conv2d_pn(const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                                                double gain, c10::string_view act, double alpha) {
  auto out = FusedConvPn<kSame>::apply(x, w, b, gain, act, alpha);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> upsample_conv2d_pn(const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                                                      double gain, c10::string_view act, double alpha) {
  auto out = FusedConvPn<kUp>::apply(x, w, b, gain, act, alpha);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace autograd
}  // namespace progan_ext

TORCH_LIBRARY_IMPL(PROGAN_OPS_NS, Autograd, m) {
  m.impl("conv2d_resample", &progan_ext::autograd::conv2d_resample);
  m.impl("conv2d_resample_grad_weight", &progan_ext::autograd::conv2d_resample_grad_weight);
  m.impl("eq_conv2d", &progan_ext::autograd::eq_conv2d);
  m.impl("upsample_conv2d", &progan_ext::autograd::upsample_conv2d);
  m.impl("conv2d_downsample", &progan_ext::autograd::conv2d_downsample);
  m.impl("eq_conv2d_pn", &progan_ext::autograd::eq_conv2d_pn);
  m.impl("upsample_conv2d_pn", &progan_ext::autograd::upsample_conv2d_pn);
}
