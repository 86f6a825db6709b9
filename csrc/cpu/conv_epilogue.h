// The epilogue shared by the fused CPU conv ops: y = act(z + bias[c]), then, if asked, pixel norm
// over channels (eps 1e-8), applied in place on the conv result z held in the accumulation
// dtype (float32, float64 for float64 input), then cast to the output dtype.
//
// z is contiguous NCHW or channels_last. It is walked in blocks of pixels of one image so that
// the inner loop runs over adjacent memory in both layouts and a pixel's channels are all
// visited by one thread (the pixel norm needs every channel of a pixel).

#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <cmath>

#include "../common.h"

namespace progan_ext {

// float64 stays float64; every other dtype computes in float32 on the CPU.
inline at::ScalarType conv_compute_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

namespace detail {

constexpr int64_t kEpilogueBlock = 64;  // pixels per block

template <typename acc_t>
void conv_epilogue_kernel(acc_t* z, const acc_t* bias, int64_t n, int64_t c, int64_t s, bool channels_inner,
                          Act act, acc_t alpha, bool pixel_norm) {
  constexpr int64_t B = kEpilogueBlock;
  const int64_t blocks_per_image = (s + B - 1) / B;
  const int64_t cs = channels_inner ? 1 : s;  // channel stride
  const int64_t ps = channels_inner ? c : 1;  // pixel stride
  const acc_t inv_c = acc_t(1) / acc_t(c);
  const int64_t grain = std::max<int64_t>(1, 16384 / (B * std::max<int64_t>(c, 1)));
  at::parallel_for(0, n * blocks_per_image, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t img = b / blocks_per_image, s0 = (b % blocks_per_image) * B;
      const int64_t len = std::min(B, s - s0);
      acc_t* base = z + img * c * s + s0 * ps;
      acc_t ss[B] = {};
      for (int64_t ch = 0; ch < c; ++ch) {
        const acc_t bv = bias ? bias[ch] : acc_t(0);
        acc_t* row = base + ch * cs;
        for (int64_t i = 0; i < len; ++i) {
          acc_t v = row[i * ps] + bv;
          if (act == Act::LRelu && v < acc_t(0)) v *= alpha;
          row[i * ps] = v;
          ss[i] += v * v;
        }
      }
      if (!pixel_norm) continue;
      for (int64_t i = 0; i < len; ++i) ss[i] = acc_t(1) / std::sqrt(ss[i] * inv_c + acc_t(1e-8));
      for (int64_t ch = 0; ch < c; ++ch) {
        acc_t* row = base + ch * cs;
        for (int64_t i = 0; i < len; ++i) row[i * ps] *= ss[i];
      }
    }
  });
}

}  // namespace detail

// Applies bias + act (+ pixel norm) to z in place (z: [N, C, H, W], float32 or float64,
// contiguous in `fmt`) and returns it in out_dtype, still in `fmt`.
inline at::Tensor conv_epilogue(at::Tensor z, const c10::optional<at::Tensor>& bias, Act act, double alpha,
                                bool pixel_norm, at::MemoryFormat fmt, at::ScalarType out_dtype) {
  TORCH_INTERNAL_ASSERT(z.is_contiguous(fmt) && (z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble));
  const at::Tensor b = bias.has_value() ? bias->to(z.scalar_type()).contiguous() : at::Tensor();
  const bool inner = fmt == at::MemoryFormat::ChannelsLast;
  if (z.numel() > 0 && (b.defined() || act != Act::Linear || pixel_norm)) {
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "conv_epilogue", [&] {
      detail::conv_epilogue_kernel<scalar_t>(z.mutable_data_ptr<scalar_t>(),
                                             b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, z.size(0),
                                             z.size(1), z.size(2) * z.size(3), inner, act,
                                             static_cast<scalar_t>(alpha), pixel_norm);
    });
  }
  return z.scalar_type() == out_dtype ? z : z.to(out_dtype).contiguous(fmt);
}

}  // namespace progan_ext
