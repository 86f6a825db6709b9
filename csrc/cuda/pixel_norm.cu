// pixel_norm on CUDA: y = x * rsqrt(mean_c(x^2) + eps), and its gradient
//   gx = r*g - r^3 * x * mean_c(g*x),
// also from the output y and the saved r (the pixel-normed convs): gx = r * (g - y * mean_c(g*y)).
//
// Two memory layouts, two kernels:
//  * channels inner (channels_last or rank 2): a pixel's C values are contiguous. A group of
//    lanes per pixel (a whole warp for C >= 32 VECs, fewer for small C so that a warp covers
//    several pixels): lanes stride over the channels (16-byte vectors when C and the base are
//    aligned), the sums are shuffle reductions in the group, then the group rescales the same row
//    (an L1/L2 hit).
//  * NCHW: channel c of a pixel sits S = H*W elements after channel c-1. One thread owns VEC
//    adjacent pixels of one image and walks the channels, so a warp reads 32*VEC adjacent
//    elements per channel (coalesced); the rescale pass walks the channels again.
//    With few pixels (the 4^2..16^2 maps: N*S/VEC below kSplitBelow) that leaves most of the GPU
//    idle while each thread walks C = 512 channels; there the warps of a block split the channels
//    of the same 32 pixel groups (pixel_norm_planes_split_kernel).
// All accumulation is in acc_t (fp32, fp64 for double); indices are int64.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "../common.h"
#include "../pixel_norm_checks.h"
#include "device_utils.cuh"
#include "launch.cuh"

namespace progan_ext {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// What a kernel computes. x is the op's input, or the output y for kFromOutput, whose inverse
// norms r come saved (rin) instead of from x.
enum Mode : int { kForward = 0, kBackward = 1, kFromOutput = 2 };

// Per-pixel coefficients: forward y = a*x; backward gx = a*g - b*x (a = r, b = r^3 mean_c(g x));
// from the output gx = a*g - b*y (a = r saved, b = r mean_c(g y)).
template <typename T, int kMode>
struct Coeffs {
  T a, b;
  __device__ static Coeffs make(T sxx, T sgx, int64_t C, T eps, T r_saved) {
    if constexpr (kMode == kFromOutput) return {r_saved, r_saved * sgx / T(C)};
    const T r = T(1) / sqrt(sxx / T(C) + eps);
    return {r, kMode == kBackward ? r * r * r * sgx / T(C) : T(0)};
  }
};

// The VEC saved inverse norms of a lane's VEC adjacent pixels, in 16-byte loads when VEC > 1 (the
// host takes the vector kernels only when r is 16-byte aligned; the run starts at a multiple of VEC):
// a warp's loads are then one contiguous run, not VEC strided scalar loads.
template <typename T, int VEC>
__device__ __forceinline__ void load_run(const T* __restrict__ p, T (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = *p;
  } else {
    constexpr int kPer = 16 / int(sizeof(T));
    static_assert(VEC % kPer == 0, "whole 16-byte vectors");
#pragma unroll
    for (int j = 0; j < VEC / kPer; ++j) {
      const auto v = load_vec<T, kPer>(p + j * kPer);
#pragma unroll
      for (int t = 0; t < kPer; ++t) out[j * kPer + t] = v.v[t];
    }
  }
}

// ---- channels innermost: a group of L lanes per pixel ---------------------------------------------
// L (a power of two, 1..32) is the fewest lanes that cover a row of C/VEC vectors in one step,
// capped at a warp, so a warp normalizes 32/L adjacent pixels at once: at C = 16 (fp32, VEC 4)
// four lanes per pixel and eight pixels per warp keep every lane busy and make each warp-wide
// access one contiguous run. The sums are xor-shuffle reductions inside each group (fixed order:
// deterministic). The loop bound is uniform over the warp (pixels past the end take part in the
// shuffles with zeros), so the full-mask shuffles always find all 32 lanes.
template <typename scalar_t, int VEC, int kMode>
__global__ void pixel_norm_rows_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                       const acc_t<scalar_t>* __restrict__ rin, scalar_t* __restrict__ out,
                                       int64_t pixels, int64_t C, int lanes, acc_t<scalar_t> eps) {
  using T = acc_t<scalar_t>;
  const int lane = threadIdx.x % 32;
  const int sub = lane % lanes;                      // lane within its pixel's group
  const int per_warp = 32 / lanes;                   // pixels per warp and step
  const int64_t warps_total = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t p0 = (int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32) * per_warp; p0 < pixels;
       p0 += warps_total * per_warp) {
    const int64_t p = p0 + lane / lanes;
    const bool valid = p < pixels;
    const int64_t base = p * C;  // VEC > 1 only when C % VEC == 0 and x is 16-byte aligned
    T sxx = 0, sgx = 0;
    for (int64_t c = int64_t(sub) * VEC; valid && c < C; c += int64_t(lanes) * VEC) {
      const auto xv = load_vec<scalar_t, VEC>(x + base + c);
      if constexpr (kMode != kFromOutput) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          const T xf = static_cast<T>(xv.v[k]);
          sxx += xf * xf;
        }
      }
      if constexpr (kMode != kForward) {
        const auto gv = load_vec<scalar_t, VEC>(g + base + c);
#pragma unroll
        for (int k = 0; k < VEC; ++k) sgx += static_cast<T>(gv.v[k]) * static_cast<T>(xv.v[k]);
      }
    }
    if constexpr (kMode != kFromOutput) sxx = group_sum(sxx, lanes);
    if constexpr (kMode != kForward) sgx = group_sum(sgx, lanes);
    const T r_saved = kMode == kFromOutput && valid ? rin[p] : T(0);
    const auto co = Coeffs<T, kMode>::make(sxx, sgx, C, eps, r_saved);
    for (int64_t c = int64_t(sub) * VEC; valid && c < C; c += int64_t(lanes) * VEC) {
      const auto xv = load_vec<scalar_t, VEC>(x + base + c);
      Vec<scalar_t, VEC> ov;
      if constexpr (kMode != kForward) {
        const auto gv = load_vec<scalar_t, VEC>(g + base + c);
#pragma unroll
        for (int k = 0; k < VEC; ++k)
          ov.v[k] = static_cast<scalar_t>(co.a * static_cast<T>(gv.v[k]) - co.b * static_cast<T>(xv.v[k]));
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) ov.v[k] = static_cast<scalar_t>(co.a * static_cast<T>(xv.v[k]));
      }
      store_vec(out + base + c, ov);
    }
  }
}

// ---- NCHW: one thread per VEC adjacent pixels of an image -----------------------------------------
template <typename scalar_t, int VEC, int kMode>
__global__ void pixel_norm_planes_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                         const acc_t<scalar_t>* __restrict__ rin, scalar_t* __restrict__ out,
                                         int64_t N, int64_t C, int64_t S, acc_t<scalar_t> eps) {
  using T = acc_t<scalar_t>;
  const int64_t groups_per_image = S / VEC;  // VEC > 1 only when S % VEC == 0 and x is aligned
  const int64_t items = N * groups_per_image;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < items; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / groups_per_image;
    const int64_t s0 = (i % groups_per_image) * VEC;  // first of the VEC pixels in the image
    const int64_t base = n * C * S + s0;               // channel 0 of the VEC pixels
    T sxx[VEC] = {}, sgx[VEC] = {};
    for (int64_t c = 0; c < C; ++c) {
      const auto xv = load_vec<scalar_t, VEC>(x + base + c * S);
      if constexpr (kMode != kFromOutput) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) sxx[k] += static_cast<T>(xv.v[k]) * static_cast<T>(xv.v[k]);
      }
      if constexpr (kMode != kForward) {
        const auto gv = load_vec<scalar_t, VEC>(g + base + c * S);
#pragma unroll
        for (int k = 0; k < VEC; ++k) sgx[k] += static_cast<T>(gv.v[k]) * static_cast<T>(xv.v[k]);
      }
    }
    T rs[VEC] = {};
    if constexpr (kMode == kFromOutput) load_run<T, VEC>(rin + n * S + s0, rs);
    Coeffs<T, kMode> co[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) co[k] = Coeffs<T, kMode>::make(sxx[k], sgx[k], C, eps, rs[k]);
    for (int64_t c = 0; c < C; ++c) {
      const auto xv = load_vec<scalar_t, VEC>(x + base + c * S);
      Vec<scalar_t, VEC> ov;
      if constexpr (kMode != kForward) {
        const auto gv = load_vec<scalar_t, VEC>(g + base + c * S);
#pragma unroll
        for (int k = 0; k < VEC; ++k)
          ov.v[k] = static_cast<scalar_t>(co[k].a * static_cast<T>(gv.v[k]) - co[k].b * static_cast<T>(xv.v[k]));
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) ov.v[k] = static_cast<scalar_t>(co[k].a * static_cast<T>(xv.v[k]));
      }
      store_vec(out + base + c * S, ov);
    }
  }
}

// ---- NCHW with few pixels: the channels split over the warps of a block ---------------------------
// A block owns 32 pixel groups (lane i: VEC adjacent pixels of one image, as in the planes kernel);
// warp w sums channels w, w + kSplit, ... of them (each access still 32 lanes x VEC adjacent pixels),
// the kSplit partial sums per pixel meet in shared memory ([sum][warp][k][lane]: lanes on
// consecutive words) and every warp adds them in warp order (a fixed order: deterministic), then
// rescales its own channels. The loop over pixel blocks is uniform over the block (barriers).
constexpr int kSplit = kThreads / 32;
constexpr int64_t kSplitBelow = 32768;  // pixel groups (threads of the planes kernel): split below this

template <typename scalar_t, int VEC, int kMode>
__global__ void pixel_norm_planes_split_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                               const acc_t<scalar_t>* __restrict__ rin,
                                               scalar_t* __restrict__ out, int64_t N, int64_t C, int64_t S,
                                               acc_t<scalar_t> eps) {
  using T = acc_t<scalar_t>;
  // the forward shares sum(x^2) only and the from-output backward sum(g*y) only: one sum each
  constexpr int kSums = kMode == kBackward ? 2 : 1, kGxSum = kMode == kBackward ? 1 : 0;
  PROGAN_SHARED(T, part, kSums * kSplit * VEC * 32);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const auto slot = [&](int sum, int w, int k) { return ((sum * kSplit + w) * VEC + k) * 32 + lane; };
  const int64_t groups_per_image = S / VEC;  // VEC > 1 only when S % VEC == 0 and x is aligned
  const int64_t items = N * groups_per_image;
  for (int64_t i0 = int64_t(blockIdx.x) * 32; i0 < items; i0 += int64_t(gridDim.x) * 32) {
    const int64_t i = i0 + lane;
    const bool valid = i < items;
    const int64_t n = valid ? i / groups_per_image : 0;
    const int64_t s0 = valid ? (i % groups_per_image) * VEC : 0;
    const int64_t base = n * C * S + s0;
    T sxx[VEC] = {}, sgx[VEC] = {};
    for (int64_t c = warp; valid && c < C; c += kSplit) {
      const auto xv = load_vec<scalar_t, VEC>(x + base + c * S);
      if constexpr (kMode != kFromOutput) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) sxx[k] += static_cast<T>(xv.v[k]) * static_cast<T>(xv.v[k]);
      }
      if constexpr (kMode != kForward) {
        const auto gv = load_vec<scalar_t, VEC>(g + base + c * S);
#pragma unroll
        for (int k = 0; k < VEC; ++k) sgx[k] += static_cast<T>(gv.v[k]) * static_cast<T>(xv.v[k]);
      }
    }
    __syncthreads();  // the previous pixel block's sums have been read
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      if constexpr (kMode != kFromOutput) part[slot(0, warp, k)] = sxx[k];
      if constexpr (kMode != kForward) part[slot(kGxSum, warp, k)] = sgx[k];
    }
    __syncthreads();
    if (!valid) continue;  // no barrier before the next iteration's first one
    T rs[VEC] = {};
    if constexpr (kMode == kFromOutput) load_run<T, VEC>(rin + n * S + s0, rs);
    Coeffs<T, kMode> co[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      T txx = 0, tgx = 0;
      for (int w = 0; w < kSplit; ++w) {
        if constexpr (kMode != kFromOutput) txx += part[slot(0, w, k)];
        if constexpr (kMode != kForward) tgx += part[slot(kGxSum, w, k)];
      }
      co[k] = Coeffs<T, kMode>::make(txx, tgx, C, eps, rs[k]);
    }
    for (int64_t c = warp; c < C; c += kSplit) {
      const auto xv = load_vec<scalar_t, VEC>(x + base + c * S);
      Vec<scalar_t, VEC> ov;
      if constexpr (kMode != kForward) {
        const auto gv = load_vec<scalar_t, VEC>(g + base + c * S);
#pragma unroll
        for (int k = 0; k < VEC; ++k)
          ov.v[k] = static_cast<scalar_t>(co[k].a * static_cast<T>(gv.v[k]) - co[k].b * static_cast<T>(xv.v[k]));
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) ov.v[k] = static_cast<scalar_t>(co[k].a * static_cast<T>(xv.v[k]));
      }
      store_vec(out + base + c * S, ov);
    }
  }
}

// Picks the layout kernel and the widest vector width the sizes and pointers allow.
template <typename scalar_t, int kMode>
void launch_pixel_norm(const at::Tensor& x, const at::Tensor* g, const at::Tensor* r, at::Tensor& out, double eps) {
  constexpr int V = kVec<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = g ? g->const_data_ptr<scalar_t>() : nullptr;
  const acc_t<scalar_t>* rp = r ? r->const_data_ptr<acc_t<scalar_t>>() : nullptr;
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  // r (from-output mode) is read in 16-byte runs by the planes kernels only; the rows kernels read
  // one r per pixel, so an unaligned r does not cost them their vector loads.
  const bool io_aligned = aligned16(xp) && aligned16(op) && (!gp || aligned16(gp));
  const bool r_aligned = !rp || aligned16(rp);
  const int64_t N = x.size(0), C = x.size(1), S = x.dim() == 4 ? x.size(2) * x.size(3) : 1;
  const auto e = static_cast<acc_t<scalar_t>>(eps);
  const cudaStream_t stream = current_stream();
  const bool rows = x.dim() == 2 || layout_of(x) == at::MemoryFormat::ChannelsLast;
  if (rows) {
    const int64_t pixels = N * S;
    const bool vec = io_aligned && C % V == 0;
    const int lanes = lanes_per_row(vec ? C / V : C);
    const unsigned blocks = grid_for(ceil_div(pixels, 32 / lanes), kThreads / 32);
    if (vec) {
      record_kernel_path("pixel_norm.rows_vec");
      PROGAN_LAUNCH((pixel_norm_rows_kernel<scalar_t, V, kMode>), blocks, kThreads, 0, stream, xp, gp, rp, op,
                    pixels, C, lanes, e);
    } else {
      record_kernel_path("pixel_norm.rows");
      PROGAN_LAUNCH((pixel_norm_rows_kernel<scalar_t, 1, kMode>), blocks, kThreads, 0, stream, xp, gp, rp, op,
                    pixels, C, lanes, e);
    }
  } else {
    const bool vec = io_aligned && r_aligned && S % V == 0;
    const int64_t items = N * S / (vec ? V : 1);  // pixel groups
    // Split the channels when one thread per group would leave the GPU mostly idle and each
    // warp still gets at least two channels. Depends only on the shapes: reproducible.
    const bool split = items < kSplitBelow && C >= 2 * kSplit;
    if (split && vec) {
      record_kernel_path("pixel_norm.planes_split_vec");
      PROGAN_LAUNCH((pixel_norm_planes_split_kernel<scalar_t, V, kMode>), grid_for(items, 32), kThreads, 0, stream,
                    xp, gp, rp, op, N, C, S, e);
    } else if (split) {
      record_kernel_path("pixel_norm.planes_split");
      PROGAN_LAUNCH((pixel_norm_planes_split_kernel<scalar_t, 1, kMode>), grid_for(items, 32), kThreads, 0, stream,
                    xp, gp, rp, op, N, C, S, e);
    } else if (vec) {
      record_kernel_path("pixel_norm.planes_vec");
      PROGAN_LAUNCH((pixel_norm_planes_kernel<scalar_t, V, kMode>), grid_for(items, kThreads), kThreads, 0,
                    stream, xp, gp, rp, op, N, C, S, e);
    } else {
      record_kernel_path("pixel_norm.planes");
      PROGAN_LAUNCH((pixel_norm_planes_kernel<scalar_t, 1, kMode>), grid_for(items, kThreads), kThreads, 0,
                    stream, xp, gp, rp, op, N, C, S, e);
    }
  }
}

at::Tensor pixel_norm_cuda(const at::Tensor& x_in, double eps) {
  check_pixel_norm_args(x_in, eps);
  const DeviceGuard guard(x_in);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt);
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pixel_norm_cuda",
                                 [&] { launch_pixel_norm<scalar_t, kForward>(x, nullptr, nullptr, y, eps); });
  return y;
}

at::Tensor pixel_norm_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in, double eps) {
  check_pixel_norm_args(x_in, eps);
  check_same_shape(x_in, grad_in, "x", "grad");
  const DeviceGuard guard(x_in);
  const auto fmt = layout_of(x_in);
  const at::Tensor x = x_in.contiguous(fmt), g = grad_in.contiguous(fmt);
  at::Tensor gx = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return gx;
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "pixel_norm_backward_cuda",
                                 [&] { launch_pixel_norm<scalar_t, kBackward>(x, &g, nullptr, gx, eps); });
  return gx;
}

at::Tensor pixel_norm_backward_from_output_cuda(const at::Tensor& grad_in, const at::Tensor& y_in,
                                                const at::Tensor& r_in) {
  check_pixel_norm_from_output_args(grad_in, y_in, r_in);
  const DeviceGuard guard(y_in);
  const auto fmt = layout_of(y_in);
  const at::Tensor y = y_in.contiguous(fmt), g = grad_in.contiguous(fmt), r = r_in.contiguous();
  at::Tensor gx = at::empty(y.sizes(), y.options().memory_format(fmt));
  if (y.numel() == 0) return gx;
  PROGAN_DISPATCH_FLOATING_TYPES(y.scalar_type(), "pixel_norm_backward_from_output_cuda",
                                 [&] { launch_pixel_norm<scalar_t, kFromOutput>(y, &g, &r, gx, 1.0); });
  return gx;
}

}  // namespace
}  // namespace cuda

PROGAN_CUDA_KERNELS(m) {
  m.impl("pixel_norm", &cuda::pixel_norm_cuda);
  m.impl("pixel_norm_backward", &cuda::pixel_norm_backward_cuda);
  m.impl("pixel_norm_backward_from_output", &cuda::pixel_norm_backward_from_output_cuda);
}

}  // namespace progan_ext
