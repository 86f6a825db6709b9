// Autocast rules of the convolution ops: like PyTorch's own conv2d, they run in the autocast dtype
// (every floating tensor argument is cast with the autocast weight cache). pixel_norm,
// minibatch_stddev and bias_act have no autocast kernel: they keep their input dtype.
//
// Compiled in CPU-only and CUDA builds alike (the AutocastCUDA kernels only cast and redispatch).

#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace progan_ext {
namespace {

using OptTensor = c10::optional<at::Tensor>;

template <c10::DeviceType D>
struct Autocast {
  // Excludes this device's autocast key for the redispatch and gives the target dtype.
  struct Guard {
    c10::impl::ExcludeDispatchKeyGuard guard{c10::DispatchKeySet(at::autocast::get_autocast_dispatch_key_from_device_type(D))};
  };
  static at::ScalarType dtype() { return at::autocast::get_autocast_dtype(D); }
  static at::Tensor cast(const at::Tensor& t) { return at::autocast::cached_cast(dtype(), t, D); }
  static OptTensor cast(const OptTensor& t) { return t.has_value() ? OptTensor(cast(*t)) : t; }

  template <typename Sig>
  static c10::TypedOperatorHandle<Sig> op(const char* name) {
    return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").template typed<Sig>();
  }

  static at::Tensor eq_conv2d(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, double gain,
                              c10::string_view act, double alpha, bool pn) {
    Guard g;
    static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double, c10::string_view,
                                  double, bool)>("progan_ext::eq_conv2d");
    return h.call(cast(x), cast(w), cast(b), gain, act, alpha, pn);
  }
  static at::Tensor upsample_conv2d(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, double gain,
                                    c10::string_view act, double alpha, bool pn) {
    Guard g;
    static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double, c10::string_view,
                                  double, bool)>("progan_ext::upsample_conv2d");
    return h.call(cast(x), cast(w), cast(b), gain, act, alpha, pn);
  }
  static at::Tensor conv2d_downsample(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, double gain,
                                      c10::string_view act, double alpha) {
    Guard g;
    static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double, c10::string_view,
                                  double)>("progan_ext::conv2d_downsample");
    return h.call(cast(x), cast(w), cast(b), gain, act, alpha);
  }
  static at::Tensor conv2d_resample(const at::Tensor& x, const at::Tensor& w, double scale, c10::string_view mode) {
    Guard g;
    static auto h =
        op<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::string_view)>("progan_ext::conv2d_resample");
    return h.call(cast(x), cast(w), scale, mode);
  }
  static at::Tensor conv2d_resample_grad_weight(const at::Tensor& x, const at::Tensor& grad_out, double scale,
                                                c10::string_view mode, int64_t k) {
    Guard g;
    static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::string_view, int64_t)>(
        "progan_ext::conv2d_resample_grad_weight");
    return h.call(cast(x), cast(grad_out), scale, mode, k);
  }

  static void register_all(torch::Library& m) {
    m.impl("eq_conv2d", &eq_conv2d);
    m.impl("upsample_conv2d", &upsample_conv2d);
    m.impl("conv2d_downsample", &conv2d_downsample);
    m.impl("conv2d_resample", &conv2d_resample);
    m.impl("conv2d_resample_grad_weight", &conv2d_resample_grad_weight);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, AutocastCPU, m) { Autocast<c10::DeviceType::CPU>::register_all(m); }
TORCH_LIBRARY_IMPL(progan_ext, AutocastCUDA, m) { Autocast<c10::DeviceType::CUDA>::register_all(m); }

}  // namespace progan_ext
