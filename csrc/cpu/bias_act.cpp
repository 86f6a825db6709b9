// bias_act on the CPU: y = act(x + bias[c]) and the leaky-ReLU gradient grad * (y > 0 or +0 ? 1 : alpha).
//
// A contiguous tensor is walked in one of two ways, both over adjacent memory:
//  * channels outermost (NCHW-like) with maps of at least kMinRow elements: N*C rows of S = H*W (*D)
//    elements; a row has one channel, whose bias is read once per row (the channel index advances
//    with the row, no division);
//  * otherwise (channels_last, rank 2, or small maps such as 4x4): the flat array in runs of a whole
//    number of bias periods (C elements, or C*S for a small NCHW map), added to a bias vector tiled
//    to the same length (a row loop over 16 elements spends more on loop overhead than on work).
// The backward does not depend on the channel and is one flat loop.

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "../common.h"
#include "cpu_utils.h"

namespace progan_ext {
namespace {

using cpu::acc_t;
using cpu::load;
using cpu::store;

// y[i] = act(x[i] + b[i % bias_period]) for i < n; slope 1 is the identity.
template <typename T>
PROGAN_CPU_MULTIVERSION void bias_act_run(const T* __restrict x, const acc_t<T>* __restrict b, T* __restrict y,
                                          int64_t n, acc_t<T> slope) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) {
    const A z = load(x + i) + b[i];
    store(y + i, cpu::leaky(z, slope));
  }
}

// Rows [r0, r1) of N*C rows of S elements; row r has channel r % C.
template <typename T>
PROGAN_CPU_MULTIVERSION void bias_act_rows(const T* __restrict x, const acc_t<T>* __restrict bias, T* __restrict y,
                                           int64_t C, int64_t S, int64_t r0, int64_t r1, acc_t<T> slope) {
  using A = acc_t<T>;
  int64_t c = r0 % C;
  for (int64_t r = r0; r < r1; ++r) {
    const A b = bias[c];
    const T* __restrict xr = x + r * S;
    T* __restrict yr = y + r * S;
    for (int64_t i = 0; i < S; ++i) {
      const A z = load(xr + i) + b;
      store(yr + i, cpu::leaky(z, slope));
    }
    if (++c == C) c = 0;
  }
}

template <typename T>
PROGAN_CPU_MULTIVERSION void lrelu_grad_run(const T* __restrict g, const T* __restrict y, T* __restrict gx, int64_t n,
                                            acc_t<T> alpha) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) store(gx + i, load(g + i) * (cpu::leaky_positive(load(y + i)) ? A(1) : alpha));
}

// NCHW maps smaller than this go through the tiled flat loop (bias period C * S).
constexpr int64_t kMinRow = 64;
// Largest bias period tiled for a small NCHW map (elements; 128 KiB of fp32).
constexpr int64_t kMaxTile = 32768;

// tile[i] = bias[(i / rep) % C] (0 without bias) for i < len, len a multiple of C * rep; no division.
template <typename T>
std::vector<acc_t<T>> bias_tile(const at::Tensor& bias, int64_t C, int64_t rep, int64_t len) {
  using A = acc_t<T>;
  std::vector<A> tile(len, A(0));
  if (!bias.defined()) return tile;
  const T* b = bias.const_data_ptr<T>();
  for (int64_t i = 0; i < len;)
    for (int64_t c = 0; c < C; ++c) {
      const A v = load(b + c);
      for (int64_t r = 0; r < rep; ++r) tile[i++] = v;
    }
  return tile;
}

template <typename T>
void bias_act_kernel(const at::Tensor& x, const at::Tensor& bias, at::Tensor& y, bool channels_inner, Act act,
                     double alpha) {
  using A = acc_t<T>;
  const int64_t C = x.size(1), numel = x.numel(), S = numel / (x.size(0) * C);
  const A slope = act == Act::LRelu ? static_cast<A>(alpha) : A(1);
  const T* xp = x.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  if (!channels_inner && (S >= kMinRow || C * S > kMaxTile)) {
    std::vector<A> b(C, A(0));
    if (bias.defined())
      for (int64_t c = 0; c < C; ++c) b[c] = load(bias.const_data_ptr<T>() + c);
    const int64_t rows = x.size(0) * C;
    cpu::parallel_for(0, rows, cpu::grain_for(S),
                      [&](int64_t r0, int64_t r1) { bias_act_rows<T>(xp, b.data(), yp, C, S, r0, r1, slope); });
    return;
  }
  // Runs of whole bias periods share one tiled bias vector: several pixels of C channels
  // (channels innermost), or one image of C maps of S elements (small NCHW maps).
  const int64_t period = channels_inner ? C : C * S;
  const int64_t run = std::max<int64_t>(1, 1024 / period) * period;
  const std::vector<A> tile = bias_tile<T>(bias, C, channels_inner ? 1 : S, run);
  const int64_t runs = (numel + run - 1) / run;
  cpu::parallel_for(0, runs, cpu::grain_for(run), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t off = r * run;
      bias_act_run<T>(xp + off, tile.data(), yp + off, std::min(run, numel - off), slope);
    }
  });
}

bool channels_innermost(const at::Tensor& x, at::MemoryFormat fmt) {
  return x.dim() == 2 || fmt == at::MemoryFormat::ChannelsLast || fmt == at::MemoryFormat::ChannelsLast3d;
}

at::Tensor bias_act_cpu(const at::Tensor& x_in, const c10::optional<at::Tensor>& bias_in, c10::string_view act_name,
                        double alpha) {
  check_bias_act_args(x_in, bias_in, alpha);
  const Act act = parse_act(act_name);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_cpu", [&] {
    bias_act_kernel<scalar_t>(x, bias, y, channels_innermost(x, fmt), act, alpha);
  });
  return y;
}

at::Tensor bias_act_backward_cpu(const at::Tensor& grad_in, const at::Tensor& y_in, double alpha) {
  check_bias_act_args(y_in, c10::nullopt, alpha);
  check_same_shape(y_in, grad_in, "y", "grad");
  const auto fmt = layout_of(y_in);
  const at::Tensor y = y_in.contiguous(fmt), g = grad_in.contiguous(fmt);
  at::Tensor gx = at::empty(y.sizes(), y.options().memory_format(fmt));
  const int64_t n = y.numel();
  if (n == 0) return gx;
  PROGAN_DISPATCH_FLOATING_TYPES(y.scalar_type(), "bias_act_backward_cpu", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    const auto a = static_cast<acc_t<scalar_t>>(alpha);
    constexpr int64_t kChunk = 4096;
    cpu::parallel_for(0, (n + kChunk - 1) / kChunk, cpu::grain_for(kChunk), [&](int64_t c0, int64_t c1) {
      const int64_t b = c0 * kChunk, e = std::min(n, c1 * kChunk);
      lrelu_grad_run<scalar_t>(gp + b, yp + b, gxp + b, e - b, a);
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) {
  m.impl("bias_act", &bias_act_cpu);
  m.impl("bias_act_backward", &bias_act_backward_cpu);
}

}  // namespace progan_ext
