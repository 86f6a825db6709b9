// Shared by the autograd formulas (csrc/autograd/<op>.cpp): typed handles of the ops of this
// module's namespace, and small helpers.
//
// Every op's derivative is written with other ops of the same namespace, called through the
// dispatcher: inside Function::forward below autograd (the op's own kernel), inside backward with
// autograd (so that create_graph=True records the backward too, and the gradient penalty's double
// backward runs through the same formulas). These formulas are C++ rather than
// torch.library.register_autograd: a Python autograd kernel costs every call, with or without
// grad, a round trip into the interpreter (10-30 us on the CPU, as much as a small op's work).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "../ops_ns.h"

namespace progan_ext {
namespace autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<at::Tensor>;

template <typename Sig>
c10::TypedOperatorHandle<Sig> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Sig>();
}

// The ops of this module, called through the dispatcher (each handle looked up once). In an
// unnamed namespace: the handles are static locals, and those of an inline function with external
// linkage would be bound process-wide (GCC's STB_GNU_UNIQUE) to one copy shared by every module
// loaded, so the emulated module would call the ops of progan_ext instead of its own.
namespace {
struct Ops {
  using T = at::Tensor;
  using CT = const at::Tensor&;
  using Pair = std::tuple<at::Tensor, at::Tensor>;
  using FusedSig = T(CT, CT, const OptTensor&, double, c10::string_view, double, bool);
  using DownSig = T(CT, CT, const OptTensor&, double, c10::string_view, double);
  using PnSig = Pair(CT, CT, const OptTensor&, double, c10::string_view, double);

  static T bias_act(CT x, const OptTensor& b, c10::string_view act, double alpha) {
    static auto h = op_handle<T(CT, const OptTensor&, c10::string_view, double)>(PROGAN_OP("bias_act"));
    return h.call(x, b, act, alpha);
  }
  static T bias_act_backward(CT g, CT y, double alpha) {
    static auto h = op_handle<T(CT, CT, double)>(PROGAN_OP("bias_act_backward"));
    return h.call(g, y, alpha);
  }
  static T pixel_norm(CT x, double eps) {
    static auto h = op_handle<T(CT, double)>(PROGAN_OP("pixel_norm"));
    return h.call(x, eps);
  }
  static T pixel_norm_backward(CT g, CT x, double eps) {
    static auto h = op_handle<T(CT, CT, double)>(PROGAN_OP("pixel_norm_backward"));
    return h.call(g, x, eps);
  }
  static T pixel_norm_backward_from_output(CT g, CT y, CT r) {
    static auto h = op_handle<T(CT, CT, CT)>(PROGAN_OP("pixel_norm_backward_from_output"));
    return h.call(g, y, r);
  }
  static T minibatch_stddev(CT x, int64_t group, int64_t features, double eps) {
    static auto h = op_handle<T(CT, int64_t, int64_t, double)>(PROGAN_OP("minibatch_stddev"));
    return h.call(x, group, features, eps);
  }
  static T minibatch_stddev_backward(CT g, CT x, int64_t group, int64_t features, double eps) {
    static auto h = op_handle<T(CT, CT, int64_t, int64_t, double)>(PROGAN_OP("minibatch_stddev_backward"));
    return h.call(g, x, group, features, eps);
  }
  static T eq_conv2d(CT x, CT w, const OptTensor& b, double gain, c10::string_view act, double alpha, bool pn) {
    static auto h = op_handle<FusedSig>(PROGAN_OP("eq_conv2d"));
    return h.call(x, w, b, gain, act, alpha, pn);
  }
  static T upsample_conv2d(CT x, CT w, const OptTensor& b, double gain, c10::string_view act, double alpha, bool pn) {
    static auto h = op_handle<FusedSig>(PROGAN_OP("upsample_conv2d"));
    return h.call(x, w, b, gain, act, alpha, pn);
  }
  static T conv2d_downsample(CT x, CT w, const OptTensor& b, double gain, c10::string_view act, double alpha) {
    static auto h = op_handle<DownSig>(PROGAN_OP("conv2d_downsample"));
    return h.call(x, w, b, gain, act, alpha);
  }
  static Pair eq_conv2d_pn(CT x, CT w, const OptTensor& b, double gain, c10::string_view act, double alpha) {
    static auto h = op_handle<PnSig>(PROGAN_OP("eq_conv2d_pn"));
    return h.call(x, w, b, gain, act, alpha);
  }
  static Pair upsample_conv2d_pn(CT x, CT w, const OptTensor& b, double gain, c10::string_view act, double alpha) {
    static auto h = op_handle<PnSig>(PROGAN_OP("upsample_conv2d_pn"));
    return h.call(x, w, b, gain, act, alpha);
  }
  static T conv2d_resample(CT x, CT w, double scale, c10::string_view mode) {
    static auto h = op_handle<T(CT, CT, double, c10::string_view)>(PROGAN_OP("conv2d_resample"));
    return h.call(x, w, scale, mode);
  }
  static T conv2d_resample_grad_weight(CT x, CT g, double scale, c10::string_view mode, int64_t k) {
    static auto h = op_handle<T(CT, CT, double, c10::string_view, int64_t)>(PROGAN_OP("conv2d_resample_grad_weight"));
    return h.call(x, g, scale, mode, k);
  }
};
}  // namespace

// An undefined tensor: the gradient of a non-tensor argument, or of an input that needs none.
inline at::Tensor none() { return at::Tensor(); }

// t in the accumulation dtype (float32, or float64 for float64).
inline at::Tensor acc(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? t : t.to(at::kFloat); }

// Sum over every dim but 1 (the channel dim): the gradient of a per-channel bias.
inline at::Tensor sum_but_channels(const at::Tensor& t) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (d != 1) dims.push_back(d);
  return t.sum(dims);
}

}  // namespace autograd
}  // namespace progan_ext
