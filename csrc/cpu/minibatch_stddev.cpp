// minibatch_stddev on the CPU, with the official ProGAN grouping.
//
// With G = min(group_size, N), M = N / G and F features, sample n = g*M + m belongs to group
// column m; channel c = f*Cf + k (Cf = C/F). For each (m, f) the statistic is
//   S[m, f] = mean over j = (k, h, w) of s_j,  s_j = sqrt(var_g(x[g*M + m, f*Cf + k, h, w]) + eps)
// with the biased variance over g. The output is x followed by F channels, channel C + f of
// sample n filled with S[n % M, f]. Its gradient (d S / d x_gj = (x_gj - mean_g) / (J G s_j))
// is what minibatch_stddev_backward computes.
//
// The G members of a group column are M samples apart, so the kernels walk G equally spaced
// rows in lockstep. Within a sample, the j of one feature are `count` runs of `length` adjacent
// elements (NCHW: Cf channels of H*W pixels; channels_last: H*W pixels of Cf channels), walked in
// tiles of kTile so the per-j mean and s_j stay in L1 and the loops over j vectorise. The
// forward copies x into the output in the same pass. Work items are (m, f, a chunk of runs);
// each item's partial sum of s_j is kept and the partials are added in a fixed order, so the
// statistic does not depend on the thread count.

#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../common.h"
#include "cpu_utils.h"

namespace progan_ext {
namespace {

using cpu::acc_t;
using cpu::load;
using cpu::store;

constexpr int64_t kTile = 64;

// Mean and s_j = sqrt(biased var + eps) over the G rows x + g*gstride, for j < len <= kTile.
template <typename T>
PROGAN_CPU_INLINE void group_stats(const T* __restrict x, int64_t gstride, int64_t G, int64_t len, acc_t<T> eps,
                        acc_t<T>* __restrict mean, acc_t<T>* __restrict s) {
  using A = acc_t<T>;
  const A inv_g = A(1) / A(G);
  for (int64_t j = 0; j < len; ++j) mean[j] = 0, s[j] = 0;
  for (int64_t g = 0; g < G; ++g)
    for (int64_t j = 0; j < len; ++j) mean[j] += load(x + g * gstride + j);
  for (int64_t j = 0; j < len; ++j) mean[j] *= inv_g;
  for (int64_t g = 0; g < G; ++g)
    for (int64_t j = 0; j < len; ++j) {
      const A d = load(x + g * gstride + j) - mean[j];
      s[j] += d * d;
    }
  for (int64_t j = 0; j < len; ++j) s[j] = std::sqrt(s[j] * inv_g + eps);
}

// Forward over `runs` runs of `len` elements (run r at offset r*xrs in x, r*yrs in y): copies the
// G rows to y and returns sum_j s_j. The lanes are added up once, at the end.
template <typename T>
PROGAN_CPU_MULTIVERSION double stddev_runs(const T* __restrict x, int64_t xgs, int64_t xrs, T* __restrict y,
                                           int64_t ygs, int64_t yrs, int64_t G, int64_t len, int64_t runs,
                                           acc_t<T> eps) {
  using A = acc_t<T>;
  A mean[kTile], s[kTile];
  double total[kTile] = {};  // J can be large: the mean of s_j is accumulated in double
  for (int64_t r = 0; r < runs; ++r) {
    const T* xr = x + r * xrs;
    T* yr = y + r * yrs;
    for (int64_t j0 = 0; j0 < len; j0 += kTile) {
      const int64_t n = std::min(kTile, len - j0);
      for (int64_t g = 0; g < G; ++g)
        for (int64_t j = 0; j < n; ++j) yr[g * ygs + j0 + j] = xr[g * xgs + j0 + j];
      group_stats(xr + j0, xgs, G, n, eps, mean, s);
      for (int64_t j = 0; j < n; ++j) total[j] += s[j];
    }
  }
  double sum = 0;
  for (int64_t j = 0; j < kTile; ++j) sum += total[j];
  return sum;
}

// Backward over `runs` runs: gx = up + scale * (x - mean_g) / s_j for each of the G rows.
template <typename T>
PROGAN_CPU_MULTIVERSION void stddev_grad_runs(const T* __restrict x, int64_t xgs, int64_t xrs, const T* __restrict up,
                                              int64_t ugs, int64_t urs, T* __restrict gx, int64_t G, int64_t len,
                                              int64_t runs, acc_t<T> eps, acc_t<T> scale) {
  using A = acc_t<T>;
  A mean[kTile], s[kTile];
  for (int64_t r = 0; r < runs; ++r) {
    const T* xr = x + r * xrs;
    const T* ur = up + r * urs;
    T* gr = gx + r * xrs;
    for (int64_t j0 = 0; j0 < len; j0 += kTile) {
      const int64_t n = std::min(kTile, len - j0);
      group_stats(xr + j0, xgs, G, n, eps, mean, s);
      for (int64_t j = 0; j < n; ++j) s[j] = scale / s[j];
      for (int64_t g = 0; g < G; ++g)
        for (int64_t j = 0; j < n; ++j)
          store(gr + g * xgs + j0 + j, load(ur + g * ugs + j0 + j) + s[j] * (load(xr + g * xgs + j0 + j) - mean[j]));
    }
  }
}

// Where the elements of (sample, feature f) live in a tensor of `channels` channels, contiguous
// in NCHW or channels_last: `count` runs of `length` adjacent elements, `stride` apart, starting
// at sample * sample_stride + f * feature_offset.
struct Runs {
  int64_t count, length, stride, sample_stride, feature_offset;
};

Runs feature_runs(bool channels_last, int64_t channels, int64_t cf, int64_t hw) {
  if (channels_last) return {hw, cf, channels, hw * channels, cf};
  return {cf, hw, hw, hw * channels, cf * hw};
}

struct Grouping {
  int64_t N, C, HW, G, M, F, Cf;
  bool channels_last;
  int64_t runs_per_item;  // runs of one (m, f) handled by one work item
  int64_t items_per_mf;
};

Grouping grouping(const at::Tensor& x, int64_t group_size, int64_t num_features) {
  Grouping v;
  v.N = x.size(0), v.C = x.size(1), v.HW = x.size(2) * x.size(3);
  v.G = std::min(group_size, v.N), v.M = v.N / v.G, v.F = num_features, v.Cf = v.C / num_features;
  v.channels_last = layout_of(x) == at::MemoryFormat::ChannelsLast;
  const Runs r = feature_runs(v.channels_last, v.C, v.Cf, v.HW);
  v.runs_per_item = std::max<int64_t>(1, 4096 / r.length);
  v.items_per_mf = (r.count + v.runs_per_item - 1) / v.runs_per_item;
  return v;
}

// fn(m, f, first run, end run) over every work item, in parallel.
template <typename Fn>
void for_items(const Grouping& v, int64_t run_length, const Fn& fn) {
  const int64_t items = v.M * v.F * v.items_per_mf;
  const int64_t runs = v.channels_last ? v.HW : v.Cf;
  cpu::parallel_for(0, items, cpu::grain_for(v.G * v.runs_per_item * run_length), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t mf = i / v.items_per_mf, r0 = (i % v.items_per_mf) * v.runs_per_item;
      fn(i, mf / v.F, mf % v.F, r0, std::min(runs, r0 + v.runs_per_item));
    }
  });
}

at::Tensor minibatch_stddev_cpu(const at::Tensor& x_in, int64_t group_size, int64_t num_features, double eps) {
  check_minibatch_stddev_args(x_in, group_size, num_features, eps);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), F = num_features;
  at::Tensor out = at::empty({N, C + F, x.size(2), x.size(3)}, x.options().memory_format(fmt));
  if (x.size(2) * x.size(3) == 0) return out;
  const Grouping v = grouping(x, group_size, F);
  const Runs xr = feature_runs(v.channels_last, C, v.Cf, v.HW), yr = feature_runs(v.channels_last, C + F, v.Cf, v.HW);
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "minibatch_stddev_cpu", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    std::vector<double> partial(v.M * v.F * v.items_per_mf);
    for_items(v, xr.length, [&](int64_t item, int64_t m, int64_t f, int64_t r0, int64_t r1) {
      const scalar_t* xs = xp + m * xr.sample_stride + f * xr.feature_offset + r0 * xr.stride;
      scalar_t* ys = yp + m * yr.sample_stride + f * yr.feature_offset + r0 * yr.stride;
      partial[item] = stddev_runs<scalar_t>(xs, v.M * xr.sample_stride, xr.stride, ys, v.M * yr.sample_stride,
                                            yr.stride, v.G, xr.length, r1 - r0, static_cast<A>(eps));
    });
    // S[m, f] (partials added in item order), then the F statistic channels of every sample.
    std::vector<scalar_t> stat(v.M * v.F);
    for (int64_t mf = 0; mf < v.M * v.F; ++mf) {
      double sum = 0;
      for (int64_t k = 0; k < v.items_per_mf; ++k) sum += partial[mf * v.items_per_mf + k];
      stat[mf] = static_cast<scalar_t>(sum / double(v.Cf * v.HW));
    }
    const int64_t ps = v.channels_last ? C + F : 1, cs = v.channels_last ? 1 : v.HW;
    cpu::parallel_for(0, N, cpu::grain_for(F * v.HW), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t f = 0; f < F; ++f) {
          scalar_t* dst = yp + n * yr.sample_stride + (C + f) * cs;
          const scalar_t val = stat[(n % v.M) * F + f];
          for (int64_t p = 0; p < v.HW; ++p) dst[p * ps] = val;
        }
    });
  });
  return out;
}

at::Tensor minibatch_stddev_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t group_size,
                                         int64_t num_features, double eps) {
  check_minibatch_stddev_backward_args(grad_in, x_in, group_size, num_features, eps);
  const auto fmt = layout_of(x_in);
  const int64_t C = x_in.size(1), F = num_features;
  const at::Tensor x = x_in.contiguous(fmt), g = grad_in.contiguous(fmt);
  at::Tensor gx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return gx;
  const Grouping v = grouping(x, group_size, F);
  const Runs xr = feature_runs(v.channels_last, C, v.Cf, v.HW), gr = feature_runs(v.channels_last, C + F, v.Cf, v.HW);
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "minibatch_stddev_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    // Upstream gradient of S[m, f]: every pixel of channel C + f of every member of the group.
    const int64_t ps = v.channels_last ? C + F : 1, cs = v.channels_last ? 1 : v.HW;
    std::vector<A> scale(v.M * F);
    for (int64_t m = 0; m < v.M; ++m)
      for (int64_t f = 0; f < F; ++f) {
        double sum = 0;
        for (int64_t gi = 0; gi < v.G; ++gi) {
          const scalar_t* src = gp + (gi * v.M + m) * gr.sample_stride + (C + f) * cs;
          for (int64_t p = 0; p < v.HW; ++p) sum += static_cast<double>(load(src + p * ps));
        }
        scale[m * F + f] = static_cast<A>(sum / (double(v.Cf * v.HW) * double(v.G)));
      }
    for_items(v, xr.length, [&](int64_t, int64_t m, int64_t f, int64_t r0, int64_t r1) {
      const int64_t xo = m * xr.sample_stride + f * xr.feature_offset + r0 * xr.stride;
      const int64_t go = m * gr.sample_stride + f * gr.feature_offset + r0 * gr.stride;
      stddev_grad_runs<scalar_t>(xp + xo, v.M * xr.sample_stride, xr.stride, gp + go, v.M * gr.sample_stride,
                                 gr.stride, gxp + xo, v.G, xr.length, r1 - r0, static_cast<A>(eps), scale[m * F + f]);
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(progan_ext, CPU, m) {
  m.impl("minibatch_stddev", &minibatch_stddev_cpu);
  m.impl("minibatch_stddev_backward", &minibatch_stddev_backward_cpu);
}

}  // namespace progan_ext
