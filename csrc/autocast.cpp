// Autocast rules of the convolution ops: like PyTorch's own conv2d, they run in the autocast dtype
// (every floating tensor argument is cast with the autocast weight cache). pixel_norm,
// minibatch_stddev and bias_act have no autocast kernel: they keep their input dtype.
//
// Compiled in CPU-only and CUDA builds alike (the AutocastCUDA kernels only cast and redispatch),
// and a second time into the emulated CUDA module (csrc/emu/autocast.cpp) for the progan_ext_emu
// ops, which run on CPU tensors and so follow the AutocastCPU policy.

#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <tuple>

#include "ops_ns.h"  // PROGAN_OPS_NS: progan_ext, or progan_ext_emu in the emulated module

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
                                  double, bool)>(PROGAN_OP("eq_conv2d"));
    return h.call(cast(x), cast(w), cast(b), gain, act, alpha, pn);
  }
  static at::Tensor upsample_conv2d(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, double gain,
                                    c10::string_view act, double alpha, bool pn) {
    Guard g;
    static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double, c10::string_view,
                                  double, bool)>(PROGAN_OP("upsample_conv2d"));
    return h.call(cast(x), cast(w), cast(b), gain, act, alpha, pn);
  }
  using PnSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const OptTensor&, double,
                                                   c10::string_view, double);
  static std::tuple<at::Tensor, at::Tensor> eq_conv2d_pn(const at::Tensor& x, const at::Tensor& w, const OptTensor& b,
                                                         double gain, c10::string_view act, double alpha) {
    Guard g;
    static auto h = op<PnSig>(PROGAN_OP("eq_conv2d_pn"));
    return h.call(cast(x), cast(w), cast(b), gain, act, alpha);
  }
  static std::tuple<at::Tensor, at::Tensor> upsample_conv2d_pn(const at::Tensor& x, const at::Tensor& w,
                                                               const OptTensor& b, double gain, c10::string_view act,
                                                               double alpha) {
    Guard g;
    static auto h = op<PnSig>(PROGAN_OP("upsample_conv2d_pn"));
    return h.call(cast(x), cast(w), cast(b), gain, act, alpha);
  }
  static at::Tensor conv2d_downsample(const at::Tensor& x, const at::Tensor& w, const OptTensor& b, double gain,
                                      c10::string_view act, double alpha) {
    Guard g;
    static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&, double, c10::string_view,
                                  double)>(PROGAN_OP("conv2d_downsample"));
    return h.call(cast(x), cast(w), cast(b), gain, act, alpha);
  }
  static at::Tensor conv2d_resample(const at::Tensor& x, const at::Tensor& w, double scale, c10::string_view mode) {
    Guard g;
    static auto h =
        op<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::string_view)>(PROGAN_OP("conv2d_resample"));
    return h.call(cast(x), cast(w), scale, mode);
  }
  static at::Tensor conv2d_resample_grad_weight(const at::Tensor& x, const at::Tensor& grad_out, double scale,
                                                c10::string_view mode, int64_t k) {
    Guard g;
    static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::string_view, int64_t)>(
        PROGAN_OP("conv2d_resample_grad_weight"));
    return h.call(cast(x), cast(grad_out), scale, mode, k);
  }

  static void register_all(torch::Library& m) {
    m.impl("eq_conv2d", &eq_conv2d);
    m.impl("upsample_conv2d", &upsample_conv2d);
    m.impl("eq_conv2d_pn", &eq_conv2d_pn);
    m.impl("upsample_conv2d_pn", &upsample_conv2d_pn);
    m.impl("conv2d_downsample", &conv2d_downsample);
    m.impl("conv2d_resample", &conv2d_resample);
    m.impl("conv2d_resample_grad_weight", &conv2d_resample_grad_weight);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(PROGAN_OPS_NS, AutocastCPU, m) { Autocast<c10::DeviceType::CPU>::register_all(m); }
#if !defined(PROGAN_EXT_EMULATION)
TORCH_LIBRARY_IMPL(progan_ext, AutocastCUDA, m) { Autocast<c10::DeviceType::CUDA>::register_all(m); }
#endif

}  // namespace progan_ext
