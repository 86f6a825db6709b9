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

inline void check_minibatch_stddev_backward_args(const at::Tensor& grad, const at::Tensor& x, int64_t group_size,
                                                 int64_t num_features, double eps) {
  check_minibatch_stddev_args(x, group_size, num_features, eps);
  check_like(x, grad, "x", "grad");
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == N && grad.size(1) == C + num_features &&
                        grad.size(2) == x.size(2) && grad.size(3) == x.size(3),
                    "minibatch_stddev_backward: grad must have shape [", N, ", ", C + num_features, ", ", x.size(2),
                    ", ", x.size(3), "], got ", grad.sizes());
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


// ---- equalized-LR convolutions ---------------------------------------------------------------

// The resampling of the conv building blocks (schema comments in progan_ext.cpp).
enum class Resample : int { Same = 0, Up = 1, Down = 2 };

inline Resample parse_resample(c10::string_view mode) {
  if (mode == "same") return Resample::Same;
  if (mode == "up") return Resample::Up;
  if (mode == "down") return Resample::Down;
  TORCH_CHECK_VALUE(false, "mode must be 'same', 'up' or 'down', got '", std::string(mode), "'");
}

// x [N, Cin, H, W] and weight [Cout, Cin, k, k] (k odd; k == 3 when resampling); for "down" H and
// W must be even. The messages mirror progan_ext.reference.check_conv.
inline void check_conv_input(const at::Tensor& x, const at::Tensor& weight, Resample mode, const char* op) {
  check_float_tensor(x, "x");
  check_float_tensor(weight, "weight");
  TORCH_CHECK_VALUE(x.dim() == 4, "x must have rank 4, got shape ", x.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 4, "weight must have rank 4, got shape ", weight.sizes());
  check_like(x, weight, "x", "weight");
  TORCH_CHECK_VALUE(weight.size(1) == x.size(1), op, ": x has ", x.size(1), " channels but weight expects ",
                    weight.size(1), " (weight shape ", weight.sizes(), ")");
  const int64_t kh = weight.size(2), kw = weight.size(3);
  TORCH_CHECK_VALUE(kh == kw && kh % 2 == 1, op, ": the kernel must be square with an odd size, got ", kh, "x",
                    kw);
  TORCH_CHECK_VALUE(mode == Resample::Same || kh == 3, op, ": kernel size must be one of (3,), got ", kh);
  TORCH_CHECK_VALUE(weight.size(0) >= 1 && weight.size(1) >= 1, op, ": weight has an empty dimension: ",
                    weight.sizes());
  if (mode == Resample::Down) {
    TORCH_CHECK_VALUE(x.size(2) % 2 == 0 && x.size(3) % 2 == 0, op, ": height and width must be even, got ",
                      x.size(2), "x", x.size(3));
  }
}

inline void check_finite(double v, const char* what, const char* op) {
  TORCH_CHECK_VALUE(std::isfinite(v), op, ": ", what, " must be a finite number, got ", v);
}

// The fused public ops: eq_conv2d ("same"), upsample_conv2d ("up"), conv2d_downsample ("down").
inline void check_conv_args(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                            double gain, c10::string_view act, double alpha, Resample mode, const char* op) {
  check_conv_input(x, weight, mode, op);
  check_finite(gain, "gain", op);
  parse_act(act);
  check_alpha(alpha);
  if (bias.has_value()) {
    check_like(x, *bias, "x", "bias");
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), "bias must have shape [",
                      weight.size(0), "], got ", bias->sizes());
  }
}

// Output spatial size of conv2d_resample for an input of size `in`.
inline int64_t resampled_size(int64_t in, Resample mode) {
  return mode == Resample::Up ? in * 2 : mode == Resample::Down ? in / 2 : in;
}

// The largest kernel_size conv2d_resample_grad_weight takes: far beyond any useful kernel, and it
// keeps k and k*k in the int range of the kernels (a larger value used to wrap around).
constexpr int64_t kMaxKernelSize = 4095;

// conv2d_resample_grad_weight: x [N, Cin, H, W], grad_out [N, Cout, H', W'] with H', W' the
// resampled size of H, W, kernel_size odd (3 when resampling).
inline void check_conv_grad_weight_args(const at::Tensor& x, const at::Tensor& grad_out, double scale,
                                        Resample mode, int64_t kernel_size) {
  const char* op = "conv2d_resample_grad_weight";
  check_float_tensor(x, "x");
  TORCH_CHECK_VALUE(x.dim() == 4, "x must have rank 4, got shape ", x.sizes());
  TORCH_CHECK_VALUE(grad_out.dim() == 4, "grad_out must have rank 4, got shape ", grad_out.sizes());
  check_like(x, grad_out, "x", "grad_out");
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1, op, ": kernel_size must be a positive odd number, got ",
                    kernel_size);
  TORCH_CHECK_VALUE(kernel_size <= kMaxKernelSize, op, ": kernel_size must be at most ", kMaxKernelSize, ", got ",
                    kernel_size);
  TORCH_CHECK_VALUE(mode == Resample::Same || kernel_size == 3, op, ": kernel size must be one of (3,), got ",
                    kernel_size);
  if (mode == Resample::Down) {
    TORCH_CHECK_VALUE(x.size(2) % 2 == 0 && x.size(3) % 2 == 0, op, ": height and width must be even, got ",
                      x.size(2), "x", x.size(3));
  }
  TORCH_CHECK_VALUE(grad_out.size(0) == x.size(0) && grad_out.size(1) >= 1 &&
                        grad_out.size(2) == resampled_size(x.size(2), mode) &&
                        grad_out.size(3) == resampled_size(x.size(3), mode),
                    op, ": grad_out has shape ", grad_out.sizes(), ", which does not match x of shape ", x.sizes(),
                    " resampled by '", mode == Resample::Up ? "up" : mode == Resample::Down ? "down" : "same", "'");
  check_finite(scale, "scale", op);
}

}  // namespace progan_ext
