// minibatch_stddev on the CPU, with the official ProGAN grouping.
//
// With G = min(group_size, N), M = N / G and F features, sample n = g*M + m belongs to group
// column m; channel c = f*Cf + k (Cf = C/F). For each (m, f) the statistic is
//   S[m, f] = mean over j = (k, h, w) of sqrt(var_g(x[g*M + m, f*Cf + k, h, w]) + eps)
// with the biased variance over g. The output is x followed by F channels, channel C + f of
// sample n filled with S[n % M, f]. Its gradient (d S / d x_gj = (x_gj - mean_g) / (J G s_j))
// is what minibatch_stddev_backward computes.

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "../common.h"

namespace progan_ext {
namespace {

struct GroupLayout {
  int64_t N, C, HW, G, M, F, Cf;
  int64_t sN, sC, sP;  // element strides of sample, channel and pixel in the (contiguous) tensor
  int64_t offset(int64_t n, int64_t c, int64_t p) const { return n * sN + c * sC + p * sP; }
};

GroupLayout group_layout(const at::Tensor& t, int64_t channels, int64_t group_size, int64_t num_features) {
  // t is contiguous in layout_of(t); its strides give the offsets in either layout.
  const int64_t n = t.size(0), g = std::min(group_size, n);
  const bool cl = layout_of(t) == at::MemoryFormat::ChannelsLast;
  return {n, channels, t.size(2) * t.size(3), g, n / g, num_features, channels / num_features,
          t.stride(0), t.stride(1), cl ? t.stride(3) : 1};
}

// Runs fn(g, offset) ... over one j = (k, p) of group column (m, f): the per-j mean and
// s_j = sqrt(var + eps) are computed from x first.
template <typename scalar_t, typename Fn>
void for_each_j(const scalar_t* x, const GroupLayout& v, int64_t m, int64_t f, double eps, Fn&& fn) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<int64_t> offs(v.G);
  for (int64_t k = 0; k < v.Cf; ++k) {
    for (int64_t p = 0; p < v.HW; ++p) {
      acc_t mean = 0;
      for (int64_t g = 0; g < v.G; ++g) {
        offs[g] = v.offset(g * v.M + m, f * v.Cf + k, p);
        mean += static_cast<acc_t>(x[offs[g]]);
      }
      mean /= acc_t(v.G);
      acc_t var = 0;
      for (int64_t g = 0; g < v.G; ++g) {
        const acc_t d = static_cast<acc_t>(x[offs[g]]) - mean;
        var += d * d;
      }
      const acc_t s = std::sqrt(var / acc_t(v.G) + acc_t(eps));
      fn(offs.data(), mean, s, k, p);
    }
  }
}

template <typename scalar_t>
void stddev_stats(const scalar_t* x, const GroupLayout& v, double eps, std::vector<double>& stats) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, v.M * v.F, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t m = i / v.F, f = i % v.F;
      double sum = 0;  // J can be large: accumulate the mean of s_j in double
      for_each_j(x, v, m, f, eps, [&](const int64_t*, acc_t, acc_t s, int64_t, int64_t) { sum += s; });
      stats[i] = sum / double(v.Cf * v.HW);
    }
  });
}

at::Tensor minibatch_stddev_cpu(const at::Tensor& x_in, int64_t group_size, int64_t num_features, double eps) {
  check_minibatch_stddev_args(x_in, group_size, num_features, eps);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = at::empty({N, C + num_features, H, W}, x.options().memory_format(fmt));
  out.narrow(1, 0, C).copy_(x);
  if (H * W == 0) return out;
  const GroupLayout v = group_layout(x, C, group_size, num_features);
  const GroupLayout o = group_layout(out, C + num_features, group_size, 1);
  std::vector<double> stats(v.M * v.F, 0.0);
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "minibatch_stddev_cpu", [&] {
    stddev_stats<scalar_t>(x.const_data_ptr<scalar_t>(), v, eps, stats);
    scalar_t* y = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N * num_features, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t n = i / num_features, f = i % num_features;
        const auto s = static_cast<scalar_t>(stats[(n % v.M) * v.F + f]);
        for (int64_t p = 0; p < v.HW; ++p) y[o.offset(n, C + f, p)] = s;
      }
    });
  });
  return out;
}

at::Tensor minibatch_stddev_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t group_size,
                                         int64_t num_features, double eps) {
  check_minibatch_stddev_backward_args(grad_in, x_in, group_size, num_features, eps);
  const int64_t C = x_in.size(1);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt), g = grad_in.contiguous(fmt);
  at::Tensor gx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return gx;
  const GroupLayout v = group_layout(x, C, group_size, num_features);
  const GroupLayout go = group_layout(g, C + num_features, group_size, 1);
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "minibatch_stddev_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    const double J = double(v.Cf * v.HW);
    at::parallel_for(0, v.M * v.F, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t m = i / v.F, f = i % v.F;
        double gs = 0;  // upstream gradient of S[m, f]: every pixel of channel C+f of every group member
        for (int64_t gi = 0; gi < v.G; ++gi)
          for (int64_t p = 0; p < v.HW; ++p) gs += static_cast<double>(gp[go.offset(gi * v.M + m, C + f, p)]);
        const acc_t scale = static_cast<acc_t>(gs / (J * double(v.G)));
        for_each_j(xp, v, m, f, eps, [&](const int64_t* offs, acc_t mean, acc_t s, int64_t k, int64_t p) {
          for (int64_t gi = 0; gi < v.G; ++gi) {
            const acc_t d = static_cast<acc_t>(xp[offs[gi]]) - mean;
            const acc_t up = static_cast<acc_t>(gp[go.offset(gi * v.M + m, f * v.Cf + k, p)]);
            gxp[offs[gi]] = static_cast<scalar_t>(up + scale * d / s);
          }
        });
      }
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
