// upsample_conv2d on the CPU: nearest 2x upsample then 3x3 eq conv as four 2x2 phase convs on the
// low-res input (conv2d_resample.cpp, "up"), then bias + act + optional pixel norm (conv_epilogue.h).

#include <torch/library.h>

#include "conv_epilogue.h"
#include "conv_resample.h"

namespace progan_ext {
namespace {

at::Tensor upsample_conv2d_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         double gain, c10::string_view act, double alpha, bool pixel_norm) {
  check_conv_args(x, weight, bias, gain, act, alpha, Resample::Up, "upsample_conv2d");
  const auto fmt = layout_of(x);
  const auto ct = conv_compute_dtype(x.scalar_type());
  const double scale = gain / std::sqrt(static_cast<double>(weight.size(1) * weight.size(2) * weight.size(3)));
  const at::Tensor phases = conv_up_phases(x.to(ct).contiguous(fmt), weight.to(ct), scale);
  const int64_t cout = weight.size(0);
  // The epilogue gathers each output pixel from its phase: the output is written once.
  return conv_epilogue(phases, UpPhaseSource{cout, x.size(2), x.size(3)},
                       {x.size(0), cout, 2 * x.size(2), 2 * x.size(3)}, bias, parse_act(act), alpha, pixel_norm, fmt,
                       x.scalar_type(), false);
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) { m.impl("upsample_conv2d", &upsample_conv2d_cpu); }

}  // namespace progan_ext
