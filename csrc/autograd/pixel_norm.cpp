// Autograd of pixel_norm, pixel_norm_backward and pixel_norm_backward_from_output.
//
//   y  = x * r,  r = rsqrt(mean_c(x^2) + eps)
//   gx = pixel_norm_backward(g, x) = r*g - r^3 * x * mean_c(g*x)
//      = pixel_norm_backward_from_output(g, y, r) = r * (g - y * mean_c(g*y))   (r saved by the convs)
//
// The Jacobian dy/dx is symmetric, so the derivative of pixel_norm_backward with respect to g is
// pixel_norm_backward again, and that of pixel_norm_backward_from_output with respect to g is
// itself; their derivatives with respect to x, y and r are written with differentiable ATen ops
// (so any higher order works too), in the accumulation dtype.

#include "autograd_common.h"

namespace progan_ext {
namespace autograd {
namespace {

struct PixelNorm : public torch::autograd::Function<PixelNorm> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, double eps) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->saved_data["eps"] = eps;
    ctx->save_for_backward({x});
    return Ops::pixel_norm(x, eps);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    return {Ops::pixel_norm_backward(grads[0], x, ctx->saved_data["eps"].toDouble()), none()};
  }
};

struct PixelNormBackward : public torch::autograd::Function<PixelNormBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& x, double eps) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->saved_data["eps"] = eps;
    ctx->save_for_backward({grad, x});
    return Ops::pixel_norm_backward(grad, x, eps);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &g = saved[0], &x = saved[1], &u = grads[0];
    const double eps = ctx->saved_data["eps"].toDouble();
    at::Tensor grad_g, grad_x;
    if (ctx->needs_input_grad(0)) grad_g = Ops::pixel_norm_backward(u, x, eps);
    if (ctx->needs_input_grad(1)) {
      // d/dx <u, r*g - r^3 x p>, p = mean(g x):
      //   = -r^3 x mean(u g) + 3 r^5 x p mean(u x) - r^3 p u - r^3 mean(u x) g
      const at::Tensor xf = acc(x), gf = acc(g), uf = acc(u);
      const at::Tensor r = at::rsqrt(xf.square().mean(1, true) + eps);
      const at::Tensor r3 = r * r * r;
      const at::Tensor p = (gf * xf).mean(1, true), ux = (uf * xf).mean(1, true), ug = (uf * gf).mean(1, true);
      grad_x = (xf * (3 * r3 * r * r * p * ux - r3 * ug) - r3 * (p * uf + ux * gf)).to(x.scalar_type());
    }
    return {grad_g, grad_x, none()};
  }
};

struct PixelNormBackwardFromOutput : public torch::autograd::Function<PixelNormBackwardFromOutput> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& y, const at::Tensor& r) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({grad, y, r});
    return Ops::pixel_norm_backward_from_output(grad, y, r);
  }

  // gx = r * (g - y m), m = mean_c(g y). With upstream h:
  //   d/dg = r * (h - y mean_c(h y))        (the op itself: its Jacobian in g is symmetric)
  //   d/dy = -r * (h m + g mean_c(h y))
  //   d/dr = sum_c h * (g - y m)
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &g = saved[0], &y = saved[1], &r = saved[2], &h = grads[0];
    at::Tensor grad_g, grad_y, grad_r;
    if (ctx->needs_input_grad(0)) grad_g = Ops::pixel_norm_backward_from_output(h, y, r);
    if (ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) {
      const at::Tensor gf = acc(g), yf = acc(y), hf = acc(h);
      const at::Tensor m = (gf * yf).mean(1, true);
      if (ctx->needs_input_grad(1))
        grad_y = (-r * (hf * m + gf * (hf * yf).mean(1, true))).to(y.scalar_type());
      if (ctx->needs_input_grad(2)) grad_r = (hf * (gf - yf * m)).sum(1, true).to(r.scalar_type());
    }
    return {grad_g, grad_y, grad_r};
  }
};

at::Tensor pixel_norm(const at::Tensor& x, double eps) { return PixelNorm::apply(x, eps); }

at::Tensor pixel_norm_backward(const at::Tensor& grad, const at::Tensor& x, double eps) {
  return PixelNormBackward::apply(grad, x, eps);
}

at::Tensor pixel_norm_backward_from_output(const at::Tensor& grad, const at::Tensor& y, const at::Tensor& r) {
  return PixelNormBackwardFromOutput::apply(grad, y, r);
}

}  // namespace
}  // namespace autograd
}  // namespace progan_ext

TORCH_LIBRARY_IMPL(PROGAN_OPS_NS, Autograd, m) {
  m.impl("pixel_norm", &progan_ext::autograd::pixel_norm);
  m.impl("pixel_norm_backward", &progan_ext::autograd::pixel_norm_backward);
  m.impl("pixel_norm_backward_from_output", &progan_ext::autograd::pixel_norm_backward_from_output);
}
