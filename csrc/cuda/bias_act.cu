// bias_act on CUDA: y = act(x + bias[c]) and the leaky-ReLU gradient g * (y > 0 ? 1 : alpha).
//
// Element-wise and memory-bound: each thread handles VEC adjacent elements with one 16-byte
// load/store. The channel of flat element i is (i / inner) % C in NCHW-like memory (inner =
// spatial size; a vector never straddles two channels because inner % VEC == 0 on the vector
// path) and i % C in channels-innermost memory.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "../common.h"
#include "device_utils.cuh"
#include "launch.cuh"

namespace progan_ext {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// bias_vec (channels innermost, VEC > 1): C % VEC == 0 and bias 16-byte aligned, so a vector's
// channels are the VEC adjacent bias values c..c+VEC-1, read with one 16-byte load (a warp's bias
// loads are then as wide as its x loads, instead of VEC scalar loads each touching a sector).
template <typename scalar_t, int VEC, bool kChannelsInner>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias,
                                scalar_t* __restrict__ y, int64_t numel, int64_t C, int64_t inner, bool bias_vec,
                                bool lrelu, acc_t<scalar_t> alpha) {
  using T = acc_t<scalar_t>;
  const int64_t vectors = numel / VEC;  // VEC divides numel on the vector path
  for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < vectors; v += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = v * VEC;
    auto xv = load_vec<scalar_t, VEC>(x + i);
    T b[VEC] = {};  // the bias of each element's channel
    if (bias) {
      int64_t c = kChannelsInner ? i % C : (i / inner) % C;
      if (kChannelsInner && VEC > 1 && bias_vec) {
        const auto bv = load_vec<scalar_t, VEC>(bias + c);
#pragma unroll
        for (int k = 0; k < VEC; ++k) b[k] = static_cast<T>(bv.v[k]);
      } else if (kChannelsInner) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          b[k] = static_cast<T>(bias[c]);
          if (++c == C) c = 0;  // channels repeat every C elements
        }
      } else {
        const T bc = static_cast<T>(bias[c]);  // NCHW: a vector lies in one channel
#pragma unroll
        for (int k = 0; k < VEC; ++k) b[k] = bc;
      }
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      T z = static_cast<T>(xv.v[k]);
      if (bias) z += b[k];  // no bias: x unchanged (keeps -0 for act="linear")
      if (lrelu) z = leaky_relu(z, alpha);
      xv.v[k] = static_cast<scalar_t>(z);
    }
    store_vec(y + i, xv);
  }
}

template <typename scalar_t, int VEC>
__global__ void lrelu_grad_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                                  scalar_t* __restrict__ gx, int64_t numel, acc_t<scalar_t> alpha) {
  using T = acc_t<scalar_t>;
  const int64_t vectors = numel / VEC;
  for (int64_t v = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; v < vectors; v += int64_t(gridDim.x) * blockDim.x) {
    auto gv = load_vec<scalar_t, VEC>(g + v * VEC);
    const auto yv = load_vec<scalar_t, VEC>(y + v * VEC);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const T gf = static_cast<T>(gv.v[k]);
      gv.v[k] = static_cast<scalar_t>(lrelu_positive(yv.v[k]) ? gf : gf * alpha);
    }
    store_vec(gx + v * VEC, gv);
  }
}

template <typename scalar_t>
void launch_bias_act(const at::Tensor& x, const at::Tensor& bias, at::Tensor& y, bool channels_inner, bool lrelu,
                     double alpha) {
  constexpr int V = kVec<scalar_t>;
  const int64_t numel = x.numel(), C = x.size(1), inner = numel / (x.size(0) * C);
  channels_inner = channels_inner || inner == 1;  // rank 2, or 1x1 maps: channels are innermost
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* bp = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  const auto a = static_cast<acc_t<scalar_t>>(alpha);
  const cudaStream_t stream = current_stream();
  // A vector must not straddle channels (NCHW) and numel must split into whole vectors.
  const bool vec_ok = aligned16(xp) && aligned16(yp) && numel % V == 0 && (channels_inner || inner % V == 0);
  const bool bias_vec = bp != nullptr && aligned16(bp) && C % V == 0;
  const auto launch = [&](auto vec_tag, auto inner_tag) {
    constexpr int VV = decltype(vec_tag)::value;
    constexpr bool CI = decltype(inner_tag)::value;
    PROGAN_LAUNCH((bias_act_kernel<scalar_t, VV, CI>), grid_for(numel / VV, kThreads), kThreads, 0, stream, xp, bp,
                  yp, numel, C, inner, bias_vec, lrelu, a);
  };
  using One = std::integral_constant<int, 1>;
  using Wide = std::integral_constant<int, V>;
  record_kernel_path(vec_ok ? "bias_act.vec" : "bias_act.scalar");
  if (channels_inner) {
    vec_ok ? launch(Wide{}, std::true_type{}) : launch(One{}, std::true_type{});
  } else {
    vec_ok ? launch(Wide{}, std::false_type{}) : launch(One{}, std::false_type{});
  }
}

template <typename scalar_t>
void launch_lrelu_grad(const at::Tensor& g, const at::Tensor& y, at::Tensor& gx, double alpha) {
  constexpr int V = kVec<scalar_t>;
  const int64_t numel = y.numel();
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  const scalar_t* yp = y.const_data_ptr<scalar_t>();
  scalar_t* op = gx.mutable_data_ptr<scalar_t>();
  const auto a = static_cast<acc_t<scalar_t>>(alpha);
  const cudaStream_t stream = current_stream();
  if (aligned16(gp) && aligned16(yp) && aligned16(op) && numel % V == 0) {
    record_kernel_path("bias_act_backward.vec");
    PROGAN_LAUNCH((lrelu_grad_kernel<scalar_t, V>), grid_for(numel / V, kThreads), kThreads, 0, stream, gp, yp, op,
                  numel, a);
  } else {
    record_kernel_path("bias_act_backward.scalar");
    PROGAN_LAUNCH((lrelu_grad_kernel<scalar_t, 1>), grid_for(numel, kThreads), kThreads, 0, stream, gp, yp, op, numel,
                  a);
  }
}

at::Tensor bias_act_cuda(const at::Tensor& x_in, const c10::optional<at::Tensor>& bias_in, c10::string_view act,
                         double alpha) {
  check_bias_act_args(x_in, bias_in, alpha);
  const bool lrelu = parse_act(act) == Act::LRelu;
  const DeviceGuard guard(x_in);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  const bool inner = fmt == at::MemoryFormat::ChannelsLast || fmt == at::MemoryFormat::ChannelsLast3d;
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_cuda",
                                 [&] { launch_bias_act<scalar_t>(x, bias, y, inner, lrelu, alpha); });
  return y;
}

at::Tensor bias_act_backward_cuda(const at::Tensor& grad_in, const at::Tensor& y_in, double alpha) {
  check_bias_act_args(y_in, c10::nullopt, alpha);
  check_same_shape(y_in, grad_in, "y", "grad");
  const DeviceGuard guard(y_in);
  const auto fmt = layout_of(y_in);
  const at::Tensor y = y_in.contiguous(fmt), g = grad_in.contiguous(fmt);
  at::Tensor gx = at::empty(y.sizes(), y.options().memory_format(fmt));
  if (y.numel() == 0) return gx;
  PROGAN_DISPATCH_FLOATING_TYPES(y.scalar_type(), "bias_act_backward_cuda",
                                 [&] { launch_lrelu_grad<scalar_t>(g, y, gx, alpha); });
  return gx;
}

}  // namespace
}  // namespace cuda

PROGAN_CUDA_KERNELS(m) {
  m.impl("bias_act", &cuda::bias_act_cuda);
  m.impl("bias_act_backward", &cuda::bias_act_backward_cuda);
}

}  // namespace progan_ext
