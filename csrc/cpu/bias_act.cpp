// bias_act on the CPU: y = act(x + bias[c]) and the leaky-ReLU gradient grad * (y > 0 ? 1 : alpha).
//
// A contiguous tensor is a grid of rows x cols: NCHW-like memory has one channel per row
// (rows = N*C, cols = spatial size), channels-innermost memory has one channel per column
// (rows = N*spatial, cols = C).

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "../common.h"

namespace progan_ext {
namespace {

struct RowLayout {
  int64_t rows, cols, channels;
  bool channels_inner;
  int64_t channel(int64_t row, int64_t col) const { return channels_inner ? col : row % channels; }
};

RowLayout row_layout(const at::Tensor& x, at::MemoryFormat fmt) {
  const int64_t c = x.size(1), numel = x.numel();
  const bool inner = fmt == at::MemoryFormat::ChannelsLast || fmt == at::MemoryFormat::ChannelsLast3d;
  const int64_t spatial = c == 0 ? 0 : numel / (x.size(0) * c);
  return inner ? RowLayout{numel / std::max<int64_t>(c, 1), c, c, true}
               : RowLayout{x.size(0) * c, spatial, c, false};
}

template <typename Fn>
void for_rows(const RowLayout& v, Fn&& fn) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(v.cols, 1));
  at::parallel_for(0, v.rows, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) fn(r, r * v.cols);
  });
}

template <typename scalar_t>
void bias_act_forward_kernel(const scalar_t* x, const scalar_t* bias, scalar_t* y, const RowLayout& v, Act act,
                             double alpha_d) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t alpha = static_cast<acc_t>(alpha_d);
  for_rows(v, [&](int64_t row, int64_t base) {
    for (int64_t col = 0; col < v.cols; ++col) {
      acc_t z = static_cast<acc_t>(x[base + col]);
      if (bias) z += static_cast<acc_t>(bias[v.channel(row, col)]);
      if (act == Act::LRelu && z < acc_t(0)) z *= alpha;
      y[base + col] = static_cast<scalar_t>(z);
    }
  });
}

template <typename scalar_t>
void bias_act_backward_kernel(const scalar_t* g, const scalar_t* y, scalar_t* gx, const RowLayout& v,
                              double alpha_d) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t alpha = static_cast<acc_t>(alpha_d);
  for_rows(v, [&](int64_t, int64_t base) {
    for (int64_t col = 0; col < v.cols; ++col) {
      const acc_t gv = static_cast<acc_t>(g[base + col]);
      gx[base + col] = static_cast<scalar_t>(static_cast<acc_t>(y[base + col]) > acc_t(0) ? gv : gv * alpha);
    }
  });
}

at::Tensor bias_act_cpu(const at::Tensor& x_in, const c10::optional<at::Tensor>& bias_in, c10::string_view act_name,
                        double alpha) {
  check_bias_act_args(x_in, bias_in, alpha);
  const Act act = parse_act(act_name);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  const RowLayout v = row_layout(x, fmt);
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_cpu", [&] {
    bias_act_forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(),
                                      bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr,
                                      y.mutable_data_ptr<scalar_t>(), v, act, alpha);
  });
  return y;
}

at::Tensor bias_act_backward_cpu(const at::Tensor& grad_in, const at::Tensor& y_in, double alpha) {
  check_bias_act_args(y_in, c10::nullopt, alpha);
  check_same_shape(y_in, grad_in, "y", "grad");
  const auto fmt = layout_of(y_in);
  const at::Tensor y = y_in.contiguous(fmt), g = grad_in.contiguous(fmt);
  at::Tensor gx = at::empty(y.sizes(), y.options().memory_format(fmt));
  if (y.numel() == 0) return gx;
  const RowLayout v = row_layout(y, fmt);
  PROGAN_DISPATCH_FLOATING_TYPES(y.scalar_type(), "bias_act_backward_cpu", [&] {
    bias_act_backward_kernel<scalar_t>(g.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                                       gx.mutable_data_ptr<scalar_t>(), v, alpha);
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_backward", &bias_act_backward_cpu);
}

}  // namespace progan_ext
