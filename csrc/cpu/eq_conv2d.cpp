// eq_conv2d on the CPU: conv2d(x, weight * gain/sqrt(Cin*k*k), padding=k//2), then bias + act +
// optional pixel norm applied once on the conv result (conv_epilogue.h).

#include <torch/library.h>

#include "conv_epilogue.h"
#include "conv_resample.h"

namespace progan_ext {
namespace {

at::Tensor eq_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         double gain, c10::string_view act, double alpha, bool pixel_norm) {
  check_conv_args(x, weight, bias, gain, act, alpha, Resample::Same, "eq_conv2d");
  const auto fmt = layout_of(x);
  const auto ct = conv_compute_dtype(x.scalar_type());
  const double scale = gain / std::sqrt(static_cast<double>(weight.size(1) * weight.size(2) * weight.size(3)));
  at::Tensor z = conv_resample_compute(x.to(ct).contiguous(fmt), weight.to(ct), scale, Resample::Same);
  return conv_epilogue(z, bias, parse_act(act), alpha, pixel_norm, fmt, x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) { m.impl("eq_conv2d", &eq_conv2d_cpu); }

}  // namespace progan_ext
