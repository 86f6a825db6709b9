// Host-side helpers shared by the CPU and CUDA implementations: argument checks (one function
// per op, so both backends raise the same messages), the activation enum and dtype dispatch.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <string>

namespace progan_ext {

// float16 / bfloat16 / float32 / float64; the kernels accumulate in at::opmath_type<scalar_t>
// (float for the 16-bit types).
#define PROGAN_DISPATCH_FLOATING_TYPES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

enum class Act : int { Linear = 0, LRelu = 1 };

inline Act parse_act(c10::string_view act) {
  if (act == "lrelu") return Act::LRelu;
  if (act == "linear") return Act::Linear;
  TORCH_CHECK_VALUE(false, "act must be 'lrelu' or 'linear', got '", std::string(act), "'");
}

inline void check_float_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kFloat8_e4m3fn &&
                       t.scalar_type() != at::kFloat8_e5m2,
                   name, " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
}

inline void check_like(const at::Tensor& x, const at::Tensor& t, const char* xname, const char* tname) {
  TORCH_CHECK_VALUE(t.device() == x.device(), tname, " is on ", t.device(), " but ", xname, " is on ",
                    x.device());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), tname, " has dtype ", t.scalar_type(), " but ",
                   xname, " has dtype ", x.scalar_type());
}

inline void check_eps(double eps) {
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0, "eps must be a positive finite number, got ", eps);
}

inline void check_alpha(double alpha) {
  TORCH_CHECK_VALUE(std::isfinite(alpha) && alpha >= 0,
                    "alpha (leaky ReLU slope) must be a finite number >= 0, got ", alpha);
}

// The memory format the kernels work in and write their output in: channels_last(_3d) when the
// input's strides say so, else contiguous. A non-contiguous input is first made contiguous in
// this format. (The fake kernels mirror this with torch._prims_common.suggest_memory_format.)
inline at::MemoryFormat layout_of(const at::Tensor& x) {
  return (x.dim() == 4 || x.dim() == 5) ? x.suggest_memory_format() : at::MemoryFormat::Contiguous;
}

inline void check_pixel_norm_args(const at::Tensor& x, double eps) {
  check_float_tensor(x, "x");
  TORCH_CHECK_VALUE(x.dim() == 2 || x.dim() == 4, "pixel_norm: x must have rank 2 or 4, got shape ",
                    x.sizes());
  check_eps(eps);
}

inline void check_minibatch_stddev_args(const at::Tensor& x, int64_t group_size, int64_t num_features,
                                        double eps) {
  check_float_tensor(x, "x");
  TORCH_CHECK_VALUE(x.dim() == 4, "minibatch_stddev: x must have rank 4, got shape ", x.sizes());
  TORCH_CHECK_VALUE(group_size >= 1, "minibatch_stddev: group_size must be >= 1, got ", group_size);
  TORCH_CHECK_VALUE(num_features >= 1, "minibatch_stddev: num_features must be >= 1, got ", num_features);
  check_eps(eps);
  const int64_t n = x.size(0);
  TORCH_CHECK_VALUE(n >= 1, "minibatch_stddev needs a non-empty batch");
  const int64_t g = std::min(group_size, n);
  TORCH_CHECK_VALUE(n % g == 0, "minibatch_stddev: batch size ", n, " is not divisible by the group size ",
                    g);
  TORCH_CHECK_VALUE(x.size(1) % num_features == 0, "minibatch_stddev: channels ", x.size(1),
                    " are not divisible by num_features ", num_features);
}

inline void check_bias_act_args(const at::Tensor& x, const c10::optional<at::Tensor>& bias, double alpha) {
  check_float_tensor(x, "x");
  TORCH_CHECK_VALUE(x.dim() >= 2 && x.dim() <= 5, "bias_act: x must have rank 2 to 5, got shape ", x.sizes());
  check_alpha(alpha);
  if (bias.has_value()) {
    check_like(x, *bias, "x", "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == x.size(1), "bias_act: bias must have shape [",
                      x.size(1), "], got ", bias->sizes());
  }
}

inline void check_same_shape(const at::Tensor& a, const at::Tensor& b, const char* aname, const char* bname) {
  check_like(a, b, aname, bname);
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), aname, " has shape ", a.sizes(), " but ", bname, " has shape ",
                    b.sizes());
}

}  // namespace progan_ext
