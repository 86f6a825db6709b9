// conv2d_downsample on CUDA: 3x3 equalized conv, 2x2 average pool, bias + act, as one 4x4
// stride-2 conv with the padded-and-summed kernel / 4. Kernels: conv_igemm.cuh (design note);
// host: conv_common.cuh.

#include "conv_common.cuh"

namespace progan_ext {
namespace cuda {

at::Tensor conv_forward_down(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, double scale,
                             bool lrelu, double alpha, bool pixel_norm) {
  return conv_forward_impl<ConvMode::Down>(x, w, bias, scale, lrelu, alpha, pixel_norm, nullptr);
}

namespace {

at::Tensor conv2d_downsample_cuda(const at::Tensor& x, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, double gain, c10::string_view act,
                                  double alpha) {
  check_conv_args(x, weight, bias, gain, act, alpha, Resample::Down, "conv2d_downsample");
  check_on_device(x, "conv2d_downsample");
  const bool lrelu = parse_act(act) == Act::LRelu;
  return conv_forward_down(x, weight, bias.has_value() ? *bias : at::Tensor(), eq_scale(weight, gain), lrelu,
                           alpha, /*pixel_norm=*/false);
}

}  // namespace

PROGAN_CUDA_KERNELS(m) { m.impl("conv2d_downsample", &conv2d_downsample_cuda); }

}  // namespace cuda
}  // namespace progan_ext
