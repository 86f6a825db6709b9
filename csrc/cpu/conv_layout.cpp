// Dtype and memory format of the CPU convolutions, and the NCHW -> channels_last conversion
// that feeds oneDNN its fastest layout.
//
// For NCHW input, oneDNN reorders input, weights and output to blocked formats inside every call;
// for the transposed convolution of "up" its channels_last (nhwc) kernel is faster even after
// converting the input (benchmarks/NOTES.md). ATen's own NCHW -> channels_last copy is slow
// (several times a memcpy of the same bytes), so the conversion here is a tiled transpose, cast
// included.

#include "conv_layout.h"

#include <ATen/Context.h>
#include <ATen/cpu/Utils.h>
#include <ATen/ops/empty.h>

#include "cpu_utils.h"

namespace progan_ext {
namespace {

using cpu::load;
using cpu::store;

constexpr int64_t kTile = 16;  // channels x pixels per transposed tile

// dst[s*C + c] = src[c*S + s] for c < nc, s < ns (one tile of one image). A full tile goes through
// two fixed-stride local tiles, which the compiler transposes in registers (with the runtime
// strides of src and dst in the same loop nest it falls back to scalar moves).
template <typename T, typename U>
PROGAN_CPU_MULTIVERSION void transpose_tile(const T* __restrict src, U* __restrict dst, int64_t C, int64_t S,
                                            int64_t nc, int64_t ns) {
  using A = cpu::acc_t<U>;
  if (nc == kTile && ns == kTile) {
    A t[kTile][kTile], u[kTile][kTile];
    for (int64_t c = 0; c < kTile; ++c)
      for (int64_t s = 0; s < kTile; ++s) t[c][s] = static_cast<A>(load(src + c * S + s));
    for (int64_t s = 0; s < kTile; ++s)
      for (int64_t c = 0; c < kTile; ++c) u[s][c] = t[c][s];
    for (int64_t s = 0; s < kTile; ++s)
      for (int64_t c = 0; c < kTile; ++c) store(dst + s * C + c, u[s][c]);
    return;
  }
  for (int64_t s = 0; s < ns; ++s)
    for (int64_t c = 0; c < nc; ++c) store(dst + s * C + c, static_cast<A>(load(src + c * S + s)));
}

template <typename T, typename U>
void nchw_to_channels_last(const at::Tensor& x, at::Tensor& y) {
  const int64_t N = x.size(0), C = x.size(1), S = x.size(2) * x.size(3);
  const int64_t s_tiles = (S + kTile - 1) / kTile;
  const T* xp = x.const_data_ptr<T>();
  U* yp = y.mutable_data_ptr<U>();
  // Work item: kTile pixels of one image, all channels.
  cpu::parallel_for(0, N * s_tiles, cpu::grain_for(C * kTile), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / s_tiles, s0 = (i % s_tiles) * kTile, ns = std::min(kTile, S - s0);
      for (int64_t c0 = 0; c0 < C; c0 += kTile)
        transpose_tile<T, U>(xp + (n * C + c0) * S + s0, yp + (n * S + s0) * C + c0, C, S, std::min(kTile, C - c0), ns);
    }
  });
}

bool native_bf16_convolutions() {
  static const bool avx512_core = [] {
    const auto caps = at::cpu::get_cpu_capabilities();
    auto has = [&](const char* k) {
      auto it = caps.find(k);
      return it != caps.end() && it->second.isBool() && it->second.toBool();
    };
    return has("avx512_bw") && has("avx512_vl") && has("avx512_dq");
  }();
  return avx512_core && at::hasMKLDNN() && at::globalContext().userEnabledMkldnn();
}

}  // namespace

at::ScalarType conv_compute_dtype(at::ScalarType t) {
  if (t == at::kDouble) return at::kDouble;
  if (t == at::kBFloat16 && native_bf16_convolutions()) return at::kBFloat16;
  return at::kFloat;
}

at::MemoryFormat conv_layout(Resample mode, int64_t k, at::MemoryFormat fmt) {
  // "up" reads a quarter of what it writes, so converting its input costs little, and oneDNN's
  // nhwc transposed convolution beats its NCHW one by 1.1-1.2x. For "same" and "down" the
  // conversion costs about what it saves. 1x1 kernels are GEMMs over the input as it lies.
  return mode == Resample::Up && k > 1 ? at::MemoryFormat::ChannelsLast : fmt;
}

at::Tensor to_conv_input(const at::Tensor& x, at::ScalarType dtype, at::MemoryFormat fmt) {
  const bool transpose = fmt == at::MemoryFormat::ChannelsLast && x.dim() == 4 && x.is_contiguous() &&
                         !x.is_contiguous(fmt) && x.scalar_type() != at::kDouble;
  if (!transpose) return x.to(dtype, false, false, fmt);
  at::Tensor y = at::empty(x.sizes(), x.options().dtype(dtype).memory_format(fmt));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "to_conv_input", [&] {
    using T = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "to_conv_input_out", [&] {
      nchw_to_channels_last<T, scalar_t>(x, y);
    });
  });
  return y;
}

}  // namespace progan_ext
