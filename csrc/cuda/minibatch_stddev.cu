// minibatch_stddev on CUDA (official ProGAN grouping; see csrc/cpu/minibatch_stddev.cpp for the
// math). With G = min(group_size, N), M = N/G, F features, Cf = C/F and J = Cf*H*W:
//   forward:  s_j = sqrt(var_g(x[g*M+m, f*Cf+k, p]) + eps) for j = (k, p); S[m, f] = mean_j s_j
//             out = [x, S[n % M, f] broadcast over the map]
//   backward: gS[m, f] = sum over g and pixels of grad[g*M+m, C+f]
//             gx = grad[:, :C] + gS/(J*G) * (x - mean_g x) / s_j
// Deterministic: both sums (over j forward, over the group's gradient pixels backward) are
// block reductions into a per-block partial buffer whose entries one thread per (m, f) adds in a
// fixed order; no atomics. Both are split over up to 1024 blocks along j / the pixels, so a few
// groups with large maps (N = 4 at 1024^2: one (m, f)) still fill the GPU. Reduction blocks are
// sized to their work (threads_for: one warp when a group's J or HW is small).
//
// Index j enumerates the (k, p) of one (m, f) in memory order: in NCHW the J values of a
// sample are contiguous (j = k*HW + p); in channels_last j = p*Cf + k. The (m, f) pairs are
// walked with a grid-stride loop over gridDim.y (at most 65535 in CUDA), so any M*F works. With
// no channels (J = 0) the statistic is 0/0 = NaN, as in the CPU kernel and the reference.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "../common.h"
#include "device_utils.cuh"
#include "launch.cuh"

namespace progan_ext {
namespace cuda {
namespace {

constexpr int kThreads = 256;

struct Grouping {
  int64_t C, HW, G, M, F, Cf, J;
  bool channels_last;
  // Offset of element (n, channel c, pixel p) in a tensor with `channels` channels.
  __device__ __forceinline__ int64_t offset(int64_t n, int64_t c, int64_t p, int64_t channels) const {
    return channels_last ? (n * HW + p) * channels + c : (n * channels + c) * HW + p;
  }
  // (channel, pixel) of index j within feature f.
  __device__ __forceinline__ void split_j(int64_t j, int64_t f, int64_t& c, int64_t& p) const {
    if (channels_last) {
      p = j / Cf;
      c = f * Cf + j % Cf;
    } else {
      p = j % HW;
      c = f * Cf + j / HW;
    }
  }
};

Grouping make_grouping(const at::Tensor& x, int64_t group_size, int64_t num_features) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), G = std::min(group_size, N);
  const int64_t Cf = C / num_features;
  return {C, HW, G, N / G, num_features, Cf, Cf * HW, layout_of(x) == at::MemoryFormat::ChannelsLast};
}

// Mean over the group and s_j = sqrt(biased var + eps) of one j; G values are read twice
// (the second read hits L1) so that any group size works without a register array.
template <typename scalar_t>
__device__ __forceinline__ void group_moments(const scalar_t* __restrict__ x, const Grouping& q, int64_t m,
                                              int64_t c, int64_t p, acc_t<scalar_t> eps, acc_t<scalar_t>& mean,
                                              acc_t<scalar_t>& s) {
  using T = acc_t<scalar_t>;
  T sum = 0;
  for (int64_t g = 0; g < q.G; ++g) sum += static_cast<T>(x[q.offset(g * q.M + m, c, p, q.C)]);
  mean = sum / T(q.G);
  T var = 0;
  for (int64_t g = 0; g < q.G; ++g) {
    const T d = static_cast<T>(x[q.offset(g * q.M + m, c, p, q.C)]) - mean;
    var += d * d;
  }
  s = sqrt(var / T(q.G) + eps);
}

// grid (j_blocks, <= 65535): partial[mf * j_blocks + blockIdx.x] = sum of s_j over this block's j,
// for mf = blockIdx.y, blockIdx.y + gridDim.y, ... (uniform per block: block_sum is safe).
template <typename scalar_t>
__global__ void stddev_partial_kernel(const scalar_t* __restrict__ x, Grouping q, acc_t<scalar_t> eps,
                                      acc_t<scalar_t>* __restrict__ partial) {
  using T = acc_t<scalar_t>;
  PROGAN_SHARED(T, scratch, 32);
  for (int64_t mf = blockIdx.y; mf < q.M * q.F; mf += gridDim.y) {
    const int64_t m = mf / q.F, f = mf % q.F;
    T local = 0;
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < q.J; j += int64_t(gridDim.x) * blockDim.x) {
      int64_t c, p;
      q.split_j(j, f, c, p);
      T mean, s;
      group_moments(x, q, m, c, p, eps, mean, s);
      local += s;
    }
    const T total = block_sum(local, scratch);
    if (threadIdx.x == 0) partial[mf * gridDim.x + blockIdx.x] = total;
  }
}

// One thread per (m, f): stat[mf] = (sum of its partials, in order) / denom. There are at most
// 1024 / (M*F) partials per (m, f) (split_grid), so a thread's loop is short when M*F is large.
template <typename T>
__global__ void stddev_finish_kernel(const T* __restrict__ partial, int64_t parts, int64_t mfs, T denom,
                                     T* __restrict__ stat) {
  for (int64_t mf = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; mf < mfs; mf += int64_t(gridDim.x) * blockDim.x) {
    T total = 0;
    for (int64_t i = 0; i < parts; ++i) total += partial[mf * parts + i];
    stat[mf] = total / denom;  // forward: denom = J, and J = 0 (no channels) gives NaN, as on the CPU
  }
}

// Writes channel C+f of every sample: out[n, C+f, p] = stat[(n % M) * F + f].
template <typename scalar_t>
__global__ void stddev_fill_kernel(scalar_t* __restrict__ out, Grouping q, int64_t N,
                                   const acc_t<scalar_t>* __restrict__ stat) {
  const int64_t items = N * q.F * q.HW;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < items; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = i % q.HW, f = (i / q.HW) % q.F, n = i / (q.HW * q.F);
    out[q.offset(n, q.C + f, p, q.C + q.F)] = static_cast<scalar_t>(stat[(n % q.M) * q.F + f]);
  }
}

// grid (p_blocks, <= 65535): partial[mf * p_blocks + blockIdx.x] = this block's share of the sum
// of grad over channel C+f of the group's G samples (its pixels p = blockIdx.x*blockDim.x +
// threadIdx.x + k*gridDim.x*blockDim.x of every member); uniform per block, so block_sum is safe.
template <typename scalar_t>
__global__ void stddev_grad_stat_kernel(const scalar_t* __restrict__ grad, Grouping q,
                                        acc_t<scalar_t>* __restrict__ partial) {
  using T = acc_t<scalar_t>;
  PROGAN_SHARED(T, scratch, 32);
  for (int64_t mf = blockIdx.y; mf < q.M * q.F; mf += gridDim.y) {
    const int64_t m = mf / q.F, f = mf % q.F;
    T local = 0;
    for (int64_t g = 0; g < q.G; ++g)
      for (int64_t p = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < q.HW; p += int64_t(gridDim.x) * blockDim.x)
        local += static_cast<T>(grad[q.offset(g * q.M + m, q.C + f, p, q.C + q.F)]);
    const T total = block_sum(local, scratch);
    if (threadIdx.x == 0) partial[mf * gridDim.x + blockIdx.x] = total;
  }
}

// grid (j_blocks, <= 65535) over (j, mf): each thread one j, writing the G group members'
// gradients; gs[mf] = gS[m, f] / (J*G) (the finish kernel divides).
template <typename scalar_t>
__global__ void stddev_grad_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x, Grouping q,
                                   acc_t<scalar_t> eps, const acc_t<scalar_t>* __restrict__ gs,
                                   scalar_t* __restrict__ gx) {
  using T = acc_t<scalar_t>;
  for (int64_t mf = blockIdx.y; mf < q.M * q.F; mf += gridDim.y) {
    const int64_t m = mf / q.F, f = mf % q.F;
    const T scale = gs[mf];
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < q.J; j += int64_t(gridDim.x) * blockDim.x) {
      int64_t c, p;
      q.split_j(j, f, c, p);
      T mean, s;
      group_moments(x, q, m, c, p, eps, mean, s);
      for (int64_t g = 0; g < q.G; ++g) {
        const int64_t n = g * q.M + m;
        const int64_t o = q.offset(n, c, p, q.C);
        const T up = static_cast<T>(grad[q.offset(n, c, p, q.C + q.F)]);
        gx[o] = static_cast<scalar_t>(up + scale * (static_cast<T>(x[o]) - mean) / s);
      }
    }
  }
}

// The (blocks along the reduction, mf_blocks) grids of a sum of `work` items per (m, f): blocks
// along the reduction to fill the GPU when M*F is small (at least one, also when work = 0), and
// along mf at most CUDA's 65535.
dim3 split_grid(const Grouping& q, int64_t work) {
  const int64_t mf = q.M * q.F;
  const int64_t want = std::max<int64_t>(1, 1024 / std::max<int64_t>(1, mf));
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(want, ceil_div(work, kThreads)));
  return dim3(unsigned(blocks), unsigned(std::min<int64_t>(mf, 65535)));
}

at::Tensor minibatch_stddev_cuda(const at::Tensor& x_in, int64_t group_size, int64_t num_features, double eps) {
  check_minibatch_stddev_args(x_in, group_size, num_features, eps);
  const DeviceGuard guard(x_in);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = at::empty({N, C + num_features, H, W}, x.options().memory_format(fmt));
  out.narrow(1, 0, C).copy_(x);
  if (H * W == 0) return out;
  const Grouping q = make_grouping(x, group_size, num_features);
  const auto acc_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const dim3 grid = split_grid(q, q.J);
  at::Tensor partial = at::empty({q.M * q.F, int64_t(grid.x)}, x.options().dtype(acc_dtype));
  at::Tensor stat = at::empty({q.M * q.F}, x.options().dtype(acc_dtype));
  const cudaStream_t stream = current_stream();
  record_kernel_path("minibatch_stddev");
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "minibatch_stddev_cuda", [&] {
    using T = acc_t<scalar_t>;
    const T e = static_cast<T>(eps);
    PROGAN_LAUNCH(stddev_partial_kernel<scalar_t>, grid, threads_for(ceil_div(q.J, grid.x)), 0, stream,
                  x.const_data_ptr<scalar_t>(), q, e, partial.mutable_data_ptr<T>());
    PROGAN_LAUNCH(stddev_finish_kernel<T>, grid_for(q.M * q.F, kThreads), kThreads, 0, stream,
                  partial.const_data_ptr<T>(), int64_t(grid.x), q.M * q.F, T(q.J), stat.mutable_data_ptr<T>());
    PROGAN_LAUNCH(stddev_fill_kernel<scalar_t>, grid_for(N * q.F * q.HW, kThreads), kThreads, 0, stream,
                  out.mutable_data_ptr<scalar_t>(), q, N, stat.const_data_ptr<T>());
  });
  return out;
}

at::Tensor minibatch_stddev_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in, int64_t group_size,
                                          int64_t num_features, double eps) {
  check_minibatch_stddev_backward_args(grad_in, x_in, group_size, num_features, eps);
  const DeviceGuard guard(x_in);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt), g = grad_in.contiguous(fmt);
  at::Tensor gx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return gx;
  const Grouping q = make_grouping(x, group_size, num_features);
  const auto acc_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const dim3 stat_grid = split_grid(q, q.HW), grid = split_grid(q, q.J);
  at::Tensor partial = at::empty({q.M * q.F, int64_t(stat_grid.x)}, x.options().dtype(acc_dtype));
  at::Tensor gs = at::empty({q.M * q.F}, x.options().dtype(acc_dtype));
  const cudaStream_t stream = current_stream();
  record_kernel_path(stat_grid.x > 1 ? "minibatch_stddev_backward.split" : "minibatch_stddev_backward");
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "minibatch_stddev_backward_cuda", [&] {
    using T = acc_t<scalar_t>;
    PROGAN_LAUNCH(stddev_grad_stat_kernel<scalar_t>, stat_grid, threads_for(ceil_div(q.HW, stat_grid.x)), 0,
                  stream, g.const_data_ptr<scalar_t>(), q, partial.mutable_data_ptr<T>());
    PROGAN_LAUNCH(stddev_finish_kernel<T>, grid_for(q.M * q.F, kThreads), kThreads, 0, stream,
                  partial.const_data_ptr<T>(), int64_t(stat_grid.x), q.M * q.F, T(q.J) * T(q.G),
                  gs.mutable_data_ptr<T>());
    PROGAN_LAUNCH(stddev_grad_kernel<scalar_t>, grid, threads_for(ceil_div(q.J, grid.x)), 0, stream,
                  g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), q, static_cast<T>(eps),
                  gs.const_data_ptr<T>(), gx.mutable_data_ptr<scalar_t>());
  });
  return gx;
}

}  // namespace
}  // namespace cuda

PROGAN_CUDA_KERNELS(m) {
  m.impl("minibatch_stddev", &cuda::minibatch_stddev_cuda);
  m.impl("minibatch_stddev_backward", &cuda::minibatch_stddev_backward_cuda);
}

}  // namespace progan_ext
