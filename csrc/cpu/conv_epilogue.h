// The epilogue shared by the fused CPU conv ops: y = act(z + bias[c]), then, if asked, pixel norm
// over channels (eps 1e-8). It reads the conv result z in the accumulation dtype (float32;
// float64 for float64 input) and writes the output once, in the output dtype and layout.
//
// The output is walked in blocks of pixels of one image, so that a pixel's channels are all
// visited by one thread (the pixel norm needs every channel of a pixel). Where a pixel's
// value lives in z is the caller's business (a SourceMap): the plain map reads z laid out like
// the output; upsample_conv2d's map gathers from its four phase convolutions, so interleaving
// the phases costs no separate pass.

#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common.h"

namespace progan_ext {

// float64 stays float64; every other dtype computes in float32 on the CPU.
inline at::ScalarType conv_compute_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Contiguous [N, C, H, W] memory in NCHW or channels_last: offsets of (image, pixel, channel).
struct NchwView {
  int64_t c, s;         // channels, pixels per image
  bool channels_inner;  // channels_last
  int64_t image_stride() const { return c * s; }
  int64_t channel_stride() const { return channels_inner ? 1 : s; }
  int64_t pixel_stride() const { return channels_inner ? c : 1; }
};

inline NchwView nchw_view(const at::Tensor& t, at::MemoryFormat fmt) {
  return {t.size(1), t.size(2) * t.size(3), fmt == at::MemoryFormat::ChannelsLast};
}

// z laid out exactly like the output: offset of channel 0 of (image, pixel); channel stride.
struct PlainSource {
  NchwView v;
  int64_t offset(int64_t img, int64_t pixel) const { return img * v.image_stride() + pixel * v.pixel_stride(); }
  int64_t channel_stride() const { return v.channel_stride(); }
};

struct EpilogueArgs {
  const void* bias;  // [C] in the accumulation dtype, or nullptr
  Act act;
  double alpha;
  bool pixel_norm;
};

namespace detail {

constexpr int64_t kEpilogueBlock = 64;  // output pixels per block

template <typename acc_t, typename out_t, typename Source>
void conv_epilogue_kernel(const acc_t* z, const Source& src, out_t* y, const NchwView& out, int64_t n,
                          const EpilogueArgs& args) {
  constexpr int64_t B = kEpilogueBlock;
  const int64_t C = out.c, S = out.s;
  const int64_t blocks_per_image = (S + B - 1) / B;
  const int64_t ocs = out.channel_stride(), ops = out.pixel_stride(), zcs = src.channel_stride();
  const acc_t alpha = static_cast<acc_t>(args.alpha);
  const acc_t* bias = static_cast<const acc_t*>(args.bias);
  const bool lrelu = args.act == Act::LRelu;
  const acc_t inv_c = acc_t(1) / acc_t(C);
  // The block's values go through a buffer laid out like the output block (channel-major for
  // NCHW, pixel-major for channels_last), so each pass reads or writes adjacent memory: the
  // first pass walks z in its own order (pixel-major when z's channels are adjacent).
  const int64_t bcs = out.channels_inner ? 1 : B, bps = out.channels_inner ? C : 1;
  const bool z_pixel_major = zcs == 1;
  const int64_t grain = std::max<int64_t>(1, 16384 / (B * std::max<int64_t>(C, 1)));
  std::vector<acc_t> bias_or_zero(C, acc_t(0));
  if (bias) std::copy(bias, bias + C, bias_or_zero.begin());
  const acc_t* __restrict bv = bias_or_zero.data();
  at::parallel_for(0, n * blocks_per_image, grain, [&](int64_t b0, int64_t b1) {
    std::vector<acc_t> storage(B * C);
    acc_t* __restrict buf = storage.data();
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t img = b / blocks_per_image, s0 = (b % blocks_per_image) * B;
      const int64_t len = std::min(B, S - s0);
      int64_t zoff[B];
      for (int64_t i = 0; i < len; ++i) zoff[i] = src.offset(img, s0 + i);
      acc_t ss[B];
      if (z_pixel_major) {
        for (int64_t i = 0; i < len; ++i) {
          const acc_t* __restrict zi = z + zoff[i];
          acc_t* __restrict bi = buf + i * bps;
          acc_t sum = 0;
          for (int64_t ch = 0; ch < C; ++ch) {
            acc_t v = zi[ch] + bv[ch];
            v = (lrelu && v < acc_t(0)) ? v * alpha : v;
            sum += v * v;
            bi[ch * bcs] = v;
          }
          ss[i] = sum;
        }
      } else {
        for (int64_t i = 0; i < len; ++i) ss[i] = 0;
        for (int64_t ch = 0; ch < C; ++ch) {
          const acc_t* __restrict zc = z + ch * zcs;
          acc_t* __restrict bc = buf + ch * bcs;
          for (int64_t i = 0; i < len; ++i) {
            acc_t v = zc[zoff[i]] + bv[ch];
            v = (lrelu && v < acc_t(0)) ? v * alpha : v;
            ss[i] += v * v;
            bc[i * bps] = v;
          }
        }
      }
      for (int64_t i = 0; i < len; ++i)
        ss[i] = args.pixel_norm ? acc_t(1) / std::sqrt(ss[i] * inv_c + acc_t(1e-8)) : acc_t(1);
      out_t* __restrict base = y + img * out.image_stride() + s0 * ops;
      if (out.channels_inner) {
        for (int64_t i = 0; i < len; ++i)
          for (int64_t ch = 0; ch < C; ++ch) base[i * ops + ch] = static_cast<out_t>(buf[i * bps + ch] * ss[i]);
      } else {
        for (int64_t ch = 0; ch < C; ++ch)
          for (int64_t i = 0; i < len; ++i) base[ch * ocs + i] = static_cast<out_t>(buf[ch * bcs + i] * ss[i]);
      }
    }
  });
}

}  // namespace detail

// y = epilogue(z) with y of `shape`, `out_dtype` and layout `fmt`; z (float32 or float64) is read
// through `src`. y may be z itself when the dtypes match and z is laid out like the output.
template <typename Source>
at::Tensor conv_epilogue(const at::Tensor& z, const Source& src, at::IntArrayRef shape,
                         const c10::optional<at::Tensor>& bias, Act act, double alpha, bool pixel_norm,
                         at::MemoryFormat fmt, at::ScalarType out_dtype, bool in_place) {
  at::Tensor y = in_place ? z : at::empty(shape, z.options().dtype(out_dtype).memory_format(fmt));
  if (y.numel() == 0) return y;
  const at::Tensor b = bias.has_value() ? bias->to(z.scalar_type()).contiguous() : at::Tensor();
  const EpilogueArgs args{b.defined() ? b.const_data_ptr() : nullptr, act, alpha, pixel_norm};
  const NchwView out = nchw_view(y, fmt);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "conv_epilogue", [&] {
    using acc_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "conv_epilogue_out", [&] {
      detail::conv_epilogue_kernel<acc_t, scalar_t>(z.const_data_ptr<acc_t>(), src, y.mutable_data_ptr<scalar_t>(),
                                                    out, y.size(0), args);
    });
  });
  return y;
}

// The common case: z already has the output's shape and layout (eq_conv2d, conv2d_downsample);
// written in place when the output dtype is z's.
inline at::Tensor conv_epilogue(const at::Tensor& z, const c10::optional<at::Tensor>& bias, Act act, double alpha,
                                bool pixel_norm, at::MemoryFormat fmt, at::ScalarType out_dtype) {
  TORCH_INTERNAL_ASSERT(z.is_contiguous(fmt));
  const bool in_place = z.scalar_type() == out_dtype;
  if (in_place && !bias.has_value() && act == Act::Linear && !pixel_norm) return z;
  return conv_epilogue(z, PlainSource{nchw_view(z, fmt)}, z.sizes(), bias, act, alpha, pixel_norm, fmt, out_dtype,
                       in_place);
}

}  // namespace progan_ext
