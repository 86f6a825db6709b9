// Autograd of minibatch_stddev and minibatch_stddev_backward.
//
// With the group view x[g, m, f, j] (G group members, M groups, F features, j over Cf*H*W = J),
// d_gj = x_gj - mean_g x_gj, s_j = sqrt(mean_g d_gj^2 + eps) and S[m, f] = mean_j s_j:
//
//     dS/dx_gj = d_gj / (J G s_j)
//     gx = g[:, :C] + gS * d / (J G s)        gS[m, f] = sum of g over channel C+f of the group
//
// minibatch_stddev_backward is linear in g; its derivatives (differentiable ATen ops, in the
// accumulation dtype) are, for an incoming gradient u shaped like x:
//     d/dg: u on the first C channels, K[m, f] = sum_gj u_gj d_gj / (J G s_j) on channel C+f
//     d/dx: gS/(J G) * ((u - mean_g u)/s - A_j d/(G s^3)),  A_j = sum_g u_gj d_gj

#include "autograd_common.h"

namespace progan_ext {
namespace autograd {
namespace {

struct MinibatchStddev : public torch::autograd::Function<MinibatchStddev> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t group, int64_t features, double eps) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->saved_data["group"] = group;
    ctx->saved_data["features"] = features;
    ctx->saved_data["eps"] = eps;
    ctx->save_for_backward({x});
    return Ops::minibatch_stddev(x, group, features, eps);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const at::Tensor gx = Ops::minibatch_stddev_backward(grads[0], x, ctx->saved_data["group"].toInt(),
                                                         ctx->saved_data["features"].toInt(),
                                                         ctx->saved_data["eps"].toDouble());
    return {gx, none(), none(), none()};
  }
};

struct MinibatchStddevBackward : public torch::autograd::Function<MinibatchStddevBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& x, int64_t group,
                            int64_t features, double eps) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->saved_data["group"] = group;
    ctx->saved_data["features"] = features;
    ctx->saved_data["eps"] = eps;
    ctx->save_for_backward({grad, x});
    return Ops::minibatch_stddev_backward(grad, x, group, features, eps);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &grad = saved[0], &x = saved[1], &u = grads[0];
    const int64_t features = ctx->saved_data["features"].toInt();
    const double eps = ctx->saved_data["eps"].toDouble();
    const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    const int64_t g = std::min(ctx->saved_data["group"].toInt(), n), m = n / g;
    // x as [G, M, F, J] in the accumulation dtype, d = x - mean_g, s = sqrt(var_g + eps).
    const at::Tensor xg = acc(x).reshape({g, m, features, (c / features) * h * w});
    const at::Tensor d = xg - xg.mean(0, true);
    const at::Tensor s = at::sqrt(d.square().mean(0, true) + eps);
    const double jg = static_cast<double>(d.size(3) * g);
    const at::Tensor uf = acc(u).reshape(d.sizes());
    at::Tensor grad_g, grad_x;
    if (ctx->needs_input_grad(0)) {
      const at::Tensor k = (uf * d / s).sum(at::IntArrayRef{0, 3}) / jg;  // [M, F]
      const at::Tensor stat = k.reshape({1, m, features, 1, 1}).expand({g, m, features, h, w}).reshape({n, features, h, w});
      grad_g = at::cat({u, stat.to(u.scalar_type())}, 1);
    }
    if (ctx->needs_input_grad(1)) {
      const at::Tensor gs =
          acc(grad.slice(1, c)).reshape({g, m, features, h * w}).sum(at::IntArrayRef{0, 3}).reshape({1, m, features, 1}) / jg;
      const at::Tensor a = (uf * d).sum(0, true);
      const at::Tensor gx = gs * ((uf - uf.mean(0, true)) / s - a * d / (s * static_cast<double>(g) * s * s));
      grad_x = gx.reshape({n, c, h, w}).to(x.scalar_type());
    }
    return {grad_g, grad_x, none(), none(), none()};
  }
};

at::Tensor minibatch_stddev(const at::Tensor& x, int64_t group, int64_t features, double eps) {
  return MinibatchStddev::apply(x, group, features, eps);
}

at::Tensor minibatch_stddev_backward(const at::Tensor& grad, const at::Tensor& x, int64_t group, int64_t features,
                                     double eps) {
  return MinibatchStddevBackward::apply(grad, x, group, features, eps);
}

}  // namespace
}  // namespace autograd
}  // namespace progan_ext

TORCH_LIBRARY_IMPL(PROGAN_OPS_NS, Autograd, m) {
  m.impl("minibatch_stddev", &progan_ext::autograd::minibatch_stddev);
  m.impl("minibatch_stddev_backward", &progan_ext::autograd::minibatch_stddev_backward);
}
