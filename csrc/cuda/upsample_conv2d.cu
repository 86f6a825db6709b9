// upsample_conv2d on CUDA: nearest 2x upsample then 3x3 equalized conv then bias + act (+ pixel
// norm), as one kernel over the 4 output phases (2x2 summed taps each); the upsampled tensor is
// never stored. Kernels: conv_igemm.cuh (design note); host: conv_common.cuh.

#include <tuple>

#include "conv_common.cuh"

namespace progan_ext {
namespace cuda {

at::Tensor conv_forward_up(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, double scale,
                           bool lrelu, double alpha, bool pixel_norm, at::Tensor* inv_norm) {
  return conv_forward_impl<ConvMode::Up>(x, w, bias, scale, lrelu, alpha, pixel_norm, inv_norm);
}

namespace {

at::Tensor upsample_conv2d_cuda(const at::Tensor& x, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias, double gain, c10::string_view act,
                                double alpha, bool pixel_norm) {
  check_conv_args(x, weight, bias, gain, act, alpha, Resample::Up, "upsample_conv2d");
  check_on_device(x, "upsample_conv2d");
  const bool lrelu = parse_act(act) == Act::LRelu;
  return conv_forward_up(x, weight, bias.has_value() ? *bias : at::Tensor(), eq_scale(weight, gain), lrelu, alpha,
                         pixel_norm);
}

std::tuple<at::Tensor, at::Tensor> upsample_conv2d_pn_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                     const c10::optional<at::Tensor>& bias, double gain,
                                                     c10::string_view act, double alpha) {
  check_conv_args(x, weight, bias, gain, act, alpha, Resample::Up, "upsample_conv2d_pn");
  check_on_device(x, "upsample_conv2d_pn");
  at::Tensor r;
  at::Tensor y = conv_forward_up(x, weight, bias.has_value() ? *bias : at::Tensor(), eq_scale(weight, gain),
                                  parse_act(act) == Act::LRelu, alpha, true, &r);
  return {std::move(y), std::move(r)};
}

}  // namespace

PROGAN_CUDA_KERNELS(m) {
  m.impl("upsample_conv2d", &upsample_conv2d_cuda);
  m.impl("upsample_conv2d_pn", &upsample_conv2d_pn_cuda);
}

}  // namespace cuda
}  // namespace progan_ext
