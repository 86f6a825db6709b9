// Host side of the CUDA equalized-LR convolutions: argument checks, effective-kernel building
// (the 4-phase / summed-kernel algebra, scale folded in), path selection and launches. Included
// by eq_conv2d.cu, upsample_conv2d.cu, conv2d_downsample.cu and conv2d_resample.cu; the kernels
// themselves are in conv_igemm.cuh (design note there).
#pragma once

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/stack.h>
#include <torch/library.h>
#include <torch/version.h>

#include <cmath>
#include <string>

#include "../common.h"
#include "conv_igemm.cuh"
#include "conv_pack.cuh"
#include "conv_pointwise.cuh"
#include "launch.cuh"

namespace progan_ext {
namespace cuda {

// The device-side mode enum mirrors the host-side Resample of csrc/common.h, whose checks and
// parsing (shared with the CPU kernels) are used here too.
static_assert(int(ConvMode::Same) == int(Resample::Same) && int(ConvMode::Up) == int(Resample::Up) &&
              int(ConvMode::Down) == int(Resample::Down));
inline Resample to_resample(ConvMode m) { return static_cast<Resample>(static_cast<int>(m)); }
inline ConvMode parse_mode(c10::string_view mode) { return static_cast<ConvMode>(static_cast<int>(parse_resample(mode))); }
inline int64_t resampled(int64_t in, ConvMode m) { return resampled_size(in, to_resample(m)); }


// ---- effective kernels ----------------------------------------------------------------------------
// Per axis (dim d of size 3) the linear maps of the design note in conv_igemm.cuh.
inline at::Tensor up_fold(const at::Tensor& w, int64_t d, int parity) {
  const at::Tensor w0 = w.select(d, 0), w1 = w.select(d, 1), w2 = w.select(d, 2);
  return parity == 0 ? at::stack({w0, w1.add(w2)}, d) : at::stack({w0.add(w1), w2}, d);
}
inline at::Tensor down_fold(const at::Tensor& w, int64_t d) {
  const at::Tensor w0 = w.select(d, 0), w1 = w.select(d, 1), w2 = w.select(d, 2);
  return at::stack({w0, w0.add(w1), w1.add(w2), w2}, d);
}

// W_eff [P][Cout][Cin][kt][kt] in dtype `acc` (contiguous), scale folded in.
inline at::Tensor effective_weight(const at::Tensor& w, double scale, ConvMode mode, at::ScalarType acc) {
  const at::Tensor ws = w.to(acc).mul(scale);
  if (mode == ConvMode::Same) return ws.unsqueeze(0).contiguous();
  if (mode == ConvMode::Down) return down_fold(down_fold(ws, 2), 3).mul(0.25).unsqueeze(0).contiguous();
  std::vector<at::Tensor> phases;
  for (int py = 0; py < 2; ++py)
    for (int px = 0; px < 2; ++px) phases.push_back(up_fold(up_fold(ws, 2, py), 3, px));  // phase = 2py+px
  return at::stack(phases, 0).contiguous();
}

// The igemm conv's weight operand [P][kt*kt][CinP][CoutP] in w's dtype (that of x), Cin and Cout
// zero-padded to cinp / coutp, scale folded in: one launch of pack_weight_kernel (conv_pack.cuh).
template <ConvMode M>
at::Tensor pack_weight(const at::Tensor& w, double scale, const ConvGeom& g, int64_t cinp, int64_t coutp,
                       cudaStream_t stream) {
  at::Tensor wt = at::empty({g.phases, int64_t(g.kt) * g.kt, cinp, coutp}, w.options());
  PackGeom p;
  p.cout = w.size(0); p.cin = w.size(1); p.coutp = coutp; p.cinp = cinp;
  p.s0 = w.stride(0); p.s1 = w.stride(1); p.s2 = w.stride(2); p.s3 = w.stride(3);
  p.k = int(w.size(2));
  p.scale = float(scale);  // what the ATen chain did: fp32 taps times the scale rounded to fp32
  const dim3 grid{unsigned(ceil_div(coutp, kPackTile)), unsigned(ceil_div(cinp, kPackTile))};
  auto launch = [&](auto tag) {  // the igemm dtypes only (no float64 instantiation)
    using T = decltype(tag);
    static_assert(kPackThreads == 256, "the launch below spells the block size out");
    PROGAN_LAUNCH((pack_weight_kernel<T, M>), grid, 256, 0, stream, w.const_data_ptr<T>(),
                  wt.mutable_data_ptr<T>(), p);
  };
  const at::ScalarType dt = w.scalar_type();
  TORCH_INTERNAL_ASSERT(dt == at::kHalf || dt == at::kBFloat16 || dt == at::kFloat, "pack_weight: dtype ", dt);
  if (dt == at::kHalf) launch(c10::Half());
  else if (dt == at::kBFloat16) launch(c10::BFloat16());
  else launch(float());
  return wt;
}

inline ConvGeom make_geom(const at::Tensor& x, int64_t cout, int k, ConvMode mode) {
  ConvGeom g;
  g.N = x.size(0); g.Cin = x.size(1); g.H = x.size(2); g.W = x.size(3); g.Cout = cout;
  g.Ho = resampled(g.H, mode); g.Wo = resampled(g.W, mode);
  g.kt = mode == ConvMode::Same ? k : mode == ConvMode::Up ? 2 : 4;
  g.pad = k / 2;
  g.phases = mode == ConvMode::Up ? 4 : 1;
  return g;
}

// x as a contiguous NHWC tensor with `channels` >= x.size(1) channels, the extra ones zero (one
// copy, which an NCHW input needs anyway; none for an NHWC input that needs no padding).
inline at::Tensor nhwc_channels_padded(const at::Tensor& x, int64_t channels) {
  if (channels == x.size(1)) return x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({x.size(0), channels, x.size(2), x.size(3)},
                             x.options().memory_format(at::MemoryFormat::ChannelsLast));
  out.narrow(1, x.size(1), channels - x.size(1)).zero_();
  out.narrow(1, 0, x.size(1)).copy_(x);
  return out;
}

inline unsigned blocks_for(int64_t n, int threads) { return grid_for(n, threads, 65535LL * 32); }

// ---- fast path selection ----------------------------------------------------------------------
// Preconditions of igemm::conv_igemm_kernel (checked by conv_forward_impl): device sm_80+ (cp.async,
// bf16 / TF32 WMMA) and the kernel built for it (tensor_core_kernel_usable); half or bfloat16, or
// float32 when TF32 is allowed for convolutions (conv_tf32_allowed, as PyTorch's own convs);
// for an NHWC x: Cin % (16 B / element size) == 0 (a 16-byte chunk along Cin never straddles the
// end of a pixel's channels; other Cin are zero-padded up to it) and x 16-byte aligned (an NCHW x
// is read in place, element-wise, with neither); the packed weights 16-byte aligned (checked on
// the actual pointers); ceil(Cout/BN) <= 65535 (grid.y), ceil(M/BM) < 2^31 (grid.x).

// Whether float32 convolutions may use TF32: torch.backends.cudnn.conv.fp32_precision (or the
// older allow_tf32). Recent PyTorch keys the setting per op, and the query without an op throws
// when a user has set only some ops' precision.
inline bool conv_tf32_allowed() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
  return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV);
#elif TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 8
  return at::globalContext().allowTF32CuDNN("conv");
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

// A tensor-core kernel may run when the device is sm_80+ and the kernel's code was generated for
// sm_80+ (an arch list with only older PTX would JIT its __trap() body on the newer GPU).
template <typename K>
inline bool tensor_core_kernel_usable(const at::Tensor& x, K kernel) {
  return device_sm(x) >= 80 && kernel_ptx_arch(kernel) >= 80;
}

// Split-K (conv_igemm.cuh's design note): the number of K ranges for a conv of `blocks` tiles
// (x phases) and `ksteps` K steps. Splits when the tiles fill fewer than two blocks per SM of a
// 132-SM H100 (the igemm kernels' occupancy), into at most 8 ranges of at least 16 steps (shorter
// loops would not pay for the workspace pass and the extra launch). A function of the shapes
// only: the same split on every GPU and every run (deterministic sums).
constexpr int64_t kSplitFillBlocks = 264, kSplitMinSteps = 16, kSplitMax = 8;
inline int split_k_count(int64_t blocks, int64_t ksteps) {
  if (blocks >= kSplitFillBlocks) return 1;
  const int64_t s = std::min({ceil_div(kSplitFillBlocks, blocks), ksteps / kSplitMinSteps, kSplitMax});
  return int(std::max<int64_t>(1, s));
}

template <typename T>
void launch_split_k_finish(const at::Tensor& partial, const at::Tensor& bias_f, at::Tensor& y, float* pre,
                           int splits, const ConvGeom& g, bool cl, bool lrelu, double alpha, cudaStream_t stream) {
  TORCH_CHECK(partial.numel() < (int64_t(1) << 31), "split-K workspace past 32-bit indexing: ", partial.numel());
  PROGAN_LAUNCH(split_k_finish_kernel<T>, blocks_for(y.numel(), 256), 256, 0, stream, partial.const_data_ptr<float>(),
                bias_f.defined() ? bias_f.const_data_ptr<float>() : nullptr, y.mutable_data_ptr<T>(), pre,
                unsigned(y.numel()), splits, unsigned(g.Cout), unsigned(g.Ho * g.Wo), cl, lrelu, float(alpha));
}

template <typename T, ConvMode M, bool kInCl>
bool try_launch_igemm(const dim3& grid, cudaStream_t stream, const at::Tensor& x, const at::Tensor& wt,
                      const at::Tensor& bias_f, at::Tensor& y, at::Tensor& pre, float* rnorm,
                      const igemm::FastParams& p) {
  if (!tensor_core_kernel_usable(x, &igemm::conv_igemm_kernel<T, M, kInCl>)) return false;
  const T* xp = x.const_data_ptr<T>();
  const T* wp = wt.const_data_ptr<T>();
  const float* bp = bias_f.defined() ? bias_f.const_data_ptr<float>() : nullptr;
  T* yp = y.mutable_data_ptr<T>();
  float* pp = pre.defined() ? pre.mutable_data_ptr<float>() : nullptr;
  // One launch site per input layout: the emulator's memory tracer names kernels by the launch's
  // text, and the two loaders have their own floors (tools/memory_report.py).
  if constexpr (kInCl)
    PROGAN_LAUNCH((igemm::conv_igemm_kernel<T, M, true>), grid, igemm::kThreads, 0, stream, xp, wp, bp, yp, pp, rnorm, p);
  else
    PROGAN_LAUNCH((igemm::conv_igemm_kernel<T, M, false>), grid, igemm::kThreads, 0, stream, xp, wp, bp, yp, pp, rnorm, p);
  return true;
}

// The forward computation y = epilogue(conv_M(x, W_eff)), scale folded into W_eff; bias may be
// undefined. Returns y in x's memory format. With pixel norm and `inv_norm` given, *inv_norm is
// set to the per-pixel inverse norms r ([N, 1, Ho, Wo], acc_t: float, double for double x).
// Instantiated once per mode, in the mode's own .cu file (conv_forward_same/up/down below), to
// keep compile units small.
template <ConvMode M>
at::Tensor conv_forward_impl(const at::Tensor& x_in, const at::Tensor& weight, const at::Tensor& bias,
                             double scale, bool lrelu, double alpha, bool pixel_norm, at::Tensor* inv_norm) {
  const DeviceGuard guard(x_in);
  const auto fmt = layout_of(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const int k = int(weight.size(2));
  const ConvGeom g = make_geom(x_in, weight.size(0), k, M);
  at::Tensor y = at::empty({g.N, g.Cout, g.Ho, g.Wo}, x_in.options().memory_format(fmt));
  const at::ScalarType acc_type = x_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_INTERNAL_ASSERT(inv_norm == nullptr || pixel_norm, "conv_forward: inverse norms without pixel norm");
  if (inv_norm != nullptr) *inv_norm = at::empty({g.N, 1, g.Ho, g.Wo}, x_in.options().dtype(acc_type));
  if (y.numel() == 0) return y;
  const cudaStream_t stream = current_stream();

  // Pixel norm that cannot be done in the tile goes through an acc_t workspace laid out like y.
  auto norm_pass = [&](const at::Tensor& pre) {
    PROGAN_DISPATCH_FLOATING_TYPES(y.scalar_type(), "conv_pixel_norm_cuda", [&] {
      const int64_t pixels = g.N * g.Ho * g.Wo;
      const auto* pp = pre.const_data_ptr<acc_t<scalar_t>>();
      auto* yp = y.mutable_data_ptr<scalar_t>();
      auto* rp = inv_norm != nullptr ? inv_norm->mutable_data_ptr<acc_t<scalar_t>>() : nullptr;
      record_kernel_path("conv.norm_pass");
      if (cl) {
        const int lanes = lanes_per_row(g.Cout);
        PROGAN_LAUNCH(norm_pass_rows_kernel<scalar_t>, blocks_for(ceil_div(pixels, 32 / lanes), 256 / 32), 256, 0,
                      stream, pp, yp, rp, pixels, g.Cout, lanes);
      } else {
        PROGAN_LAUNCH(norm_pass_planes_kernel<scalar_t>, blocks_for(pixels, 256), 256, 0, stream, pp, yp, rp, g.N,
                      g.Cout, g.Ho * g.Wo);
      }
    });
  };

  // 1x1 with <= kPointwiseFew channels on one side (toRGB, fromRGB, their input gradients):
  // memory-bound, read in place (conv_pointwise.cuh), any dtype, either layout. Same mode only;
  // `if constexpr` keeps its kernels out of the up / down instantiations (eq_conv2d.cu builds them).
  if constexpr (M == ConvMode::Same) {
    if (k == 1 && std::min(g.Cin, g.Cout) <= kPointwiseFew) {
      const at::Tensor x = x_in.contiguous(fmt);
      const at::Tensor b = bias.defined() ? bias.contiguous() : at::Tensor();
      PointwiseParams p{g.N, g.H * g.W, g.Cin, g.Cout, weight.stride(0), weight.stride(1), lrelu, pixel_norm};
      const bool few_out = g.Cout <= kPointwiseFew;
      const int64_t pixels = g.N * g.H * g.W, longs = few_out ? g.Cin : g.Cout;
      const void* long_rows = few_out ? x.const_data_ptr() : y.const_data_ptr();
      // NHWC: 16-byte accesses along the long rows when they are whole vectors and aligned.
      const bool vec = cl && longs % (16 / int64_t(x.element_size())) == 0 && aligned16(long_rows);
      const int lanes = cl ? lanes_per_row(vec ? ceil_div(longs, 16 / int64_t(x.element_size())) : longs) : 1;
      // NHWC: kRowsPixels pixels per thread where a pixel per thread would take 512 blocks or more
      // (256 or more remain, 2 per SM of an H100), else 1. Depends only on the shapes.
      const int64_t blocks1 = ceil_div(pixels * lanes, kPointwiseThreads);
      const int pix = cl && blocks1 >= 256 * kRowsPixels ? kRowsPixels : 1;
      const int64_t blocks = ceil_div(pixels, int64_t(kPointwiseThreads / lanes) * pix);
      if (blocks < (int64_t(1) << 31)) {
        record_kernel_path(cl ? "conv.pointwise_rows" : "conv.pointwise");
        PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_pointwise_cuda", [&] {
          using acc = acc_t<scalar_t>;
          constexpr int V = kVec<scalar_t>;
          auto* rn = inv_norm != nullptr ? inv_norm->mutable_data_ptr<acc>() : nullptr;
          const scalar_t* xp = x.const_data_ptr<scalar_t>();
          const scalar_t* wp = weight.const_data_ptr<scalar_t>();
          const scalar_t* bp = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
          scalar_t* yp = y.mutable_data_ptr<scalar_t>();
          const acc sc = static_cast<acc>(scale), al = static_cast<acc>(alpha);
          if (!cl && few_out)
            PROGAN_LAUNCH(conv_pointwise_few_out_kernel<scalar_t>, unsigned(blocks), 256, 0, stream, xp, wp, bp, yp, rn,
                          p, sc, al);
          else if (!cl)
            PROGAN_LAUNCH(conv_pointwise_few_in_kernel<scalar_t>, unsigned(blocks), 256, 0, stream, xp, wp, bp, yp, rn,
                          p, sc, al);
          else if (few_out && vec)
            PROGAN_LAUNCH((conv_pointwise_rows_few_out_kernel<scalar_t, V>), unsigned(blocks), 256, 0, stream, xp, wp, bp,
                          yp, rn, p, lanes, pix, sc, al);
          else if (few_out)
            PROGAN_LAUNCH((conv_pointwise_rows_few_out_kernel<scalar_t, 1>), unsigned(blocks), 256, 0, stream, xp, wp, bp,
                          yp, rn, p, lanes, pix, sc, al);
          else if (vec)
            PROGAN_LAUNCH((conv_pointwise_rows_few_in_kernel<scalar_t, V>), unsigned(blocks), 256, 0, stream, xp, wp, bp,
                          yp, rn, p, lanes, pix, sc, al);
          else
            PROGAN_LAUNCH((conv_pointwise_rows_few_in_kernel<scalar_t, 1>), unsigned(blocks), 256, 0, stream, xp, wp, bp,
                          yp, rn, p, lanes, pix, sc, al);
        });
        return y;
      }
    }
  }

  const int64_t vec = 16 / int64_t(x_in.element_size());  // elements per 16-byte copy
  const at::ScalarType dt = x_in.scalar_type();
  const bool fast_dtype = dt == at::kHalf || dt == at::kBFloat16 || (dt == at::kFloat && conv_tf32_allowed());
  if (fast_dtype && ceil_div(g.Cout, igemm::kBN) <= 65535) {
    // Cin not a multiple of `vec` (fromRGB's 3, the D 4x4 block's 512 + 1 stddev channel): x and
    // the weight get zero channels up to the next multiple, which add nothing to any sum.
    const int64_t cinp = ceil_div(g.Cin, vec) * vec;
    // An NCHW x is read in place (AColsNchw: no copy, its channels not padded), unless autotuning
    // measured the NHWC copy faster (set_conv_nchw_loads); otherwise made NHWC, Cin padded.
    const bool nchw_in = !cl && conv_nchw_loads_enabled();
    const at::Tensor x = nchw_in ? x_in.contiguous() : nhwc_channels_padded(x_in, cinp);
    // wt [P][kt*kt][CinP][CoutP] in the input dtype, Cin and Cout zero-padded to multiples of `vec`.
    const int64_t coutp = ceil_div(g.Cout, vec) * vec;
    const at::Tensor wt = pack_weight<M>(weight, scale, g, cinp, coutp, stream);
    if (cinp != g.Cin) record_kernel_path("conv.cin_padded");
    igemm::FastParams p;
    p.g = g;
    p.g.Cin = cinp;
    p.Hp = M == ConvMode::Up ? g.H : g.Ho;  // UP: each phase is an H x W grid of outputs
    p.Wp = M == ConvMode::Up ? g.W : g.Wo;
    p.Mp = g.N * p.Hp * p.Wp;
    p.CoutP = coutp;
    p.x_cin = nchw_in ? g.Cin : cinp;
    p.out_cl = cl;
    p.lrelu = lrelu;
    p.alpha = float(alpha);
    const int64_t gx = ceil_div(p.Mp, igemm::kBM), gy = ceil_div(g.Cout, igemm::kBN);
    const int64_t ksteps = int64_t(g.kt) * g.kt * ceil_div(cinp * x_in.element_size(), 64);  // 64 B per step
    int splits = conv_split_k_enabled() ? split_k_count(gx * gy * g.phases, ksteps) : 1;  // autotuning's knob
    p.split_steps = ceil_div(ksteps, splits);
    splits = int(ceil_div(ksteps, p.split_steps));  // no empty range
    p.splits = splits;
    p.split_stride = splits > 1 ? y.numel() : 0;
    // With split-K the blocks write raw sums; bias, activation and norm come after the reduction.
    p.lrelu = lrelu && splits == 1;
    p.norm_in_tile = pixel_norm && g.Cout <= igemm::kBN && splits == 1;
    // 32-bit grid.x, and the kernel's channel cursor is an int.
    if ((nchw_in || aligned16(x.const_data_ptr())) && aligned16(wt.const_data_ptr()) && gx < (int64_t(1) << 31) &&
        cinp < (int64_t(1) << 31)) {
      const at::Tensor bias_f = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
      at::Tensor pre, partial;
      if (splits > 1) partial = at::empty({splits * y.numel()}, y.options().dtype(at::kFloat));
      else if (pixel_norm && !p.norm_in_tile) pre = at::empty({y.numel()}, y.options().dtype(at::kFloat));
      const dim3 grid{unsigned(gx), unsigned(gy), unsigned(splits * g.phases)};
      // In-tile norm: the kernel writes r; otherwise the norm pass does.
      float* rn = p.norm_in_tile && inv_norm != nullptr ? inv_norm->mutable_data_ptr<float>() : nullptr;
      const at::Tensor& kbias = splits > 1 ? at::Tensor() : bias_f;
      at::Tensor& kout = splits > 1 ? partial : pre;
      const auto launch = [&](auto tag) {
        using T = decltype(tag);
        return nchw_in ? try_launch_igemm<T, M, false>(grid, stream, x, wt, kbias, y, kout, rn, p)
                       : try_launch_igemm<T, M, true>(grid, stream, x, wt, kbias, y, kout, rn, p);
      };
      const bool ran = dt == at::kHalf       ? launch(c10::Half())
                       : dt == at::kBFloat16 ? launch(c10::BFloat16())
                                             : launch(float());
      if (ran) {
        record_kernel_path(dt == at::kFloat ? "conv.igemm_tf32" : "conv.igemm");
        if (nchw_in) record_kernel_path("conv.nchw_loads");
        if (p.norm_in_tile) record_kernel_path("conv.norm_in_tile");
        if (splits > 1) {
          record_kernel_path("conv.split_k");
          if (pixel_norm) pre = partial.narrow(0, 0, y.numel());  // reduced in place into slice 0
          float* pp = pre.defined() ? pre.mutable_data_ptr<float>() : nullptr;
          auto finish = [&](auto tag) {
            launch_split_k_finish<decltype(tag)>(partial, bias_f, y, pp, splits, g, cl, lrelu, alpha, stream);
          };
          if (dt == at::kHalf) finish(c10::Half());
          else if (dt == at::kBFloat16) finish(c10::BFloat16());
          else finish(float());
        }
        if (pre.defined()) norm_pass(pre);
        return y;
      }
    }
  }

  // ---- simple path ---------------------------------------------------------------------------
  const at::Tensor x = x_in.contiguous(fmt);
  const at::Tensor weff = effective_weight(weight, scale, M, acc_type);
  const at::Tensor b = bias.defined() ? bias.contiguous() : at::Tensor();
  at::Tensor pre;
  if (pixel_norm) pre = at::empty({y.numel()}, y.options().dtype(acc_type));
  record_kernel_path("conv.simple");
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv_simple_cuda", [&] {
    using acc = acc_t<scalar_t>;
    PROGAN_LAUNCH((conv_simple_kernel<scalar_t, M>), blocks_for(y.numel(), 256), 256, 0, stream,
                  x.const_data_ptr<scalar_t>(), weff.const_data_ptr<acc>(),
                  b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(),
                  pre.defined() ? pre.mutable_data_ptr<acc>() : nullptr, g, cl, lrelu, acc(alpha));
  });
  if (pixel_norm) norm_pass(pre);
  return y;
}

// One instantiation per mode, each in its own .cu file.
at::Tensor conv_forward_same(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, double scale,
                             bool lrelu, double alpha, bool pixel_norm,
                             at::Tensor* inv_norm = nullptr);  // eq_conv2d.cu
at::Tensor conv_forward_up(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, double scale,
                           bool lrelu, double alpha, bool pixel_norm,
                           at::Tensor* inv_norm = nullptr);  // upsample_conv2d.cu
at::Tensor conv_forward_down(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, double scale,
                             bool lrelu, double alpha, bool pixel_norm);  // conv2d_downsample.cu

inline at::Tensor conv_forward(ConvMode mode, const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                               double scale, bool lrelu, double alpha, bool pixel_norm) {
  switch (mode) {
    case ConvMode::Up: return conv_forward_up(x, w, bias, scale, lrelu, alpha, pixel_norm);
    case ConvMode::Down: return conv_forward_down(x, w, bias, scale, lrelu, alpha, pixel_norm);
    default: return conv_forward_same(x, w, bias, scale, lrelu, alpha, pixel_norm);
  }
}

// Equalized scale gain / sqrt(Cin * k * k).
inline double eq_scale(const at::Tensor& w, double gain) {
  return gain / std::sqrt(double(w.size(1) * w.size(2) * w.size(3)));
}

}  // namespace cuda
}  // namespace progan_ext
