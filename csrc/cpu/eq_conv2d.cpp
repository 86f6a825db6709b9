// eq_conv2d on the CPU: conv2d(x, weight * gain/sqrt(Cin*k*k), padding=k//2) + bias in one oneDNN
// call (conv2d_resample.cpp, "same"), then act + optional pixel norm in one pass (conv_epilogue.h).

#include <torch/library.h>

#include <tuple>

#include "conv_epilogue.h"
#include "conv_resample.h"

namespace progan_ext {
namespace {

at::Tensor eq_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         double gain, c10::string_view act, double alpha, bool pixel_norm) {
  check_conv_args(x, weight, bias, gain, act, alpha, Resample::Same, "eq_conv2d");
  const at::Tensor z = conv_resample_compute(x, weight, bias, eq_scale(weight, gain), Resample::Same);
  return conv_epilogue(z, parse_act(act), alpha, pixel_norm, layout_of(x), x.scalar_type());
}

// The pixel-normed form: (y, r), r = the per-pixel inverse norms written by the same pass.
std::tuple<at::Tensor, at::Tensor> eq_conv2d_pn_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                    const c10::optional<at::Tensor>& bias, double gain,
                                                    c10::string_view act, double alpha) {
  check_conv_args(x, weight, bias, gain, act, alpha, Resample::Same, "eq_conv2d_pn");
  const at::Tensor z = conv_resample_compute(x, weight, bias, eq_scale(weight, gain), Resample::Same);
  at::Tensor r;
  at::Tensor y = conv_epilogue(z, parse_act(act), alpha, true, layout_of(x), x.scalar_type(), &r);
  return {std::move(y), std::move(r)};
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) {
  m.impl("eq_conv2d", &eq_conv2d_cpu);
  m.impl("eq_conv2d_pn", &eq_conv2d_pn_cpu);
}

}  // namespace progan_ext
