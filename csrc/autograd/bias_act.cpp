// Autograd of bias_act and bias_act_backward.
//
//   y  = act(x + b)
//   gx = bias_act_backward(g, y, alpha) = g * (y > 0 or y is +0 ? 1 : alpha)   (lrelu; g for linear)
//   gb = sum of gx over every dim but 1
//
// (the kernels write -0 for an input of exactly 0, so the slope is 1 exactly when the input was > 0,
// also after a 16-bit output rounded a tiny input to zero). bias_act_backward is linear in g and
// piecewise constant in y, so its own derivative is bias_act_backward of the incoming gradient (and
// zero with respect to y).

#include "autograd_common.h"

namespace progan_ext {
namespace autograd {
namespace {

struct BiasAct : public torch::autograd::Function<BiasAct> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const OptTensor& bias, c10::string_view act,
                            double alpha) {
    at::Tensor y;
    {
      at::AutoDispatchBelowADInplaceOrView below;
      y = Ops::bias_act(x, bias, act, alpha);
    }
    const bool lrelu = act == "lrelu";
    ctx->saved_data["lrelu"] = lrelu;
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["bias"] = bias.has_value() && bias->defined();
    ctx->save_for_backward({lrelu ? y : none()});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor y = ctx->get_saved_variables()[0];
    const at::Tensor gx =
        ctx->saved_data["lrelu"].toBool() ? Ops::bias_act_backward(grads[0], y, ctx->saved_data["alpha"].toDouble())
                                          : grads[0];
    const bool has_bias = ctx->saved_data["bias"].toBool();
    at::Tensor gb = has_bias && ctx->needs_input_grad(1) ? sum_but_channels(gx) : none();
    return {gx, gb, none(), none()};
  }
};

struct BiasActBackward : public torch::autograd::Function<BiasActBackward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& y, double alpha) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->saved_data["alpha"] = alpha;
    ctx->save_for_backward({y});
    return Ops::bias_act_backward(grad, y, alpha);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor y = ctx->get_saved_variables()[0];
    at::Tensor grad_g =
        ctx->needs_input_grad(0) ? Ops::bias_act_backward(grads[0], y, ctx->saved_data["alpha"].toDouble()) : none();
    return {grad_g, none(), none()};
  }
};

at::Tensor bias_act(const at::Tensor& x, const OptTensor& bias, c10::string_view act, double alpha) {
  return BiasAct::apply(x, bias, act, alpha);
}

at::Tensor bias_act_backward(const at::Tensor& grad, const at::Tensor& y, double alpha) {
  return BiasActBackward::apply(grad, y, alpha);
}

}  // namespace
}  // namespace autograd
}  // namespace progan_ext

TORCH_LIBRARY_IMPL(PROGAN_OPS_NS, Autograd, m) {
  m.impl("bias_act", &progan_ext::autograd::bias_act);
  m.impl("bias_act_backward", &progan_ext::autograd::bias_act_backward);
}
