// conv2d_downsample on the CPU: 3x3 eq conv then 2x2 average pool as one 4x4 stride-2 conv with
// the summed kernel, bias included (conv2d_resample.cpp, "down"), then the activation in one pass
// (conv_epilogue.h).

#include <torch/library.h>

#include "conv_epilogue.h"
#include "conv_resample.h"

namespace progan_ext {
namespace {

at::Tensor conv2d_downsample_cpu(const at::Tensor& x, const at::Tensor& weight,
                                 const c10::optional<at::Tensor>& bias, double gain, c10::string_view act,
                                 double alpha) {
  check_conv_args(x, weight, bias, gain, act, alpha, Resample::Down, "conv2d_downsample");
  const at::Tensor z = conv_resample_compute(x, weight, bias, eq_scale(weight, gain), Resample::Down);
  return conv_epilogue(z, parse_act(act), alpha, false, layout_of(x), x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) { m.impl("conv2d_downsample", &conv2d_downsample_cpu); }

}  // namespace progan_ext
