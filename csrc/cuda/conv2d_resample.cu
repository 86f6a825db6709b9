// conv2d_resample and conv2d_resample_grad_weight on CUDA: the linear building blocks of the
// convolution backward passes. conv2d_resample reuses the forward kernels of the three modes with
// a linear epilogue (no bias, no activation); the weight gradient is a deterministic two-pass
// reduction (conv_igemm.cuh, grad_weight_*_kernel).

#include <ATen/ops/empty.h>

#include <algorithm>

#include "conv_common.cuh"
#include "launch.cuh"

namespace progan_ext {
namespace cuda {
namespace {

at::Tensor conv2d_resample_cuda(const at::Tensor& x, const at::Tensor& weight, double scale,
                                c10::string_view mode_str) {
  const ConvMode mode = parse_mode(mode_str);
  check_conv_input(x, weight, to_resample(mode), "conv2d_resample");
  check_finite(scale, "scale", "conv2d_resample");
  check_on_device(x, "conv2d_resample");
  return conv_forward(mode, x, weight, at::Tensor(), scale, /*lrelu=*/false, 0.0, /*pixel_norm=*/false);
}

// Transposes of up_fold / down_fold (conv_common.cuh) along dim d: map a gradient w.r.t. the
// folded kernel back to the 3 taps.
at::Tensor up_fold_t(const at::Tensor& G, int64_t d, int parity) {
  const at::Tensor g0 = G.select(d, 0), g1 = G.select(d, 1);
  return parity == 0 ? at::stack({g0, g1, g1}, d) : at::stack({g0, g0, g1}, d);
}
at::Tensor down_fold_t(const at::Tensor& G, int64_t d) {
  const at::Tensor g0 = G.select(d, 0), g1 = G.select(d, 1), g2 = G.select(d, 2), g3 = G.select(d, 3);
  return at::stack({g0.add(g1), g1.add(g2), g2.add(g3)}, d);
}

// Launches grad_weight_igemm_kernel<T, M, kInCl> unless it was not built for this device (then
// false). One launch site per input layout (the memory tracer names kernels by the launch's text).
template <typename T, ConvMode M, bool kInCl>
bool try_launch_grad_weight(const dim3& grid, cudaStream_t stream, const at::Tensor& x, const at::Tensor& g,
                            at::Tensor& partial, const igemm::GradWeightParams& p) {
  if (!tensor_core_kernel_usable(x, &igemm::grad_weight_igemm_kernel<T, M, kInCl>)) return false;
  const T* xp = x.const_data_ptr<T>();
  const T* gp = g.const_data_ptr<T>();
  float* pp = partial.mutable_data_ptr<float>();
  if constexpr (kInCl)
    PROGAN_LAUNCH((igemm::grad_weight_igemm_kernel<T, M, true>), grid, igemm::kThreads, 0, stream, xp, gp, pp, p);
  else
    PROGAN_LAUNCH((igemm::grad_weight_igemm_kernel<T, M, false>), grid, igemm::kThreads, 0, stream, xp, gp, pp, p);
  return true;
}

// Tensor-core weight gradient (grad_weight_igemm_kernel: half, bfloat16, float as TF32). Returns an
// undefined tensor when its preconditions do not hold; the caller then takes the simple path.
at::Tensor grad_weight_fast(const at::Tensor& x_in, const at::Tensor& g_in, double scale, ConvMode mode, int k) {
  const at::ScalarType dt = x_in.scalar_type();
  // float32 only when TF32 is allowed for convolutions (as the forward, and as cuDNN's backward).
  if (dt != at::kHalf && dt != at::kBFloat16 && !(dt == at::kFloat && conv_tf32_allowed())) return at::Tensor();
  // NCHW x and grad_out are read in place (unless set_conv_nchw_loads(false)), any channel counts.
  // Otherwise both are made NHWC, and Cin and Cout not multiples of the 16-byte vector (8 halves,
  // 4 floats; fromRGB's 3 input channels, toRGB's 3 outputs, the D 4x4 block's 513) get zero
  // channels up to the next multiple: their gradient rows and columns are computed and dropped.
  const bool nchw_in = layout_of(x_in) != at::MemoryFormat::ChannelsLast &&
                       layout_of(g_in) != at::MemoryFormat::ChannelsLast && conv_nchw_loads_enabled();
  const int64_t vec = nchw_in ? 1 : 16 / int64_t(x_in.element_size());
  const ConvGeom orig = make_geom(x_in, g_in.size(1), k, mode);
  ConvGeom geom = orig;
  geom.Cin = ceil_div(orig.Cin, vec) * vec;
  geom.Cout = ceil_div(orig.Cout, vec) * vec;
  const at::Tensor x = nchw_in ? x_in.contiguous() : nhwc_channels_padded(x_in, geom.Cin);
  const at::Tensor g = nchw_in ? g_in.contiguous() : nhwc_channels_padded(g_in, geom.Cout);
  if (!nchw_in && (!aligned16(x.const_data_ptr()) || !aligned16(g.const_data_ptr()))) return at::Tensor();
  igemm::GradWeightParams p;
  p.g = geom;
  p.Hp = mode == ConvMode::Up ? geom.H : geom.Ho;
  p.Wp = mode == ConvMode::Up ? geom.W : geom.Wo;
  p.Mp = geom.N * p.Hp * p.Wp;
  const int taps = geom.kt * geom.kt;
  p.cin_tiles = int(ceil_div(geom.Cin, igemm::kGwTile));
  const int64_t gx = int64_t(taps) * p.cin_tiles, gy = ceil_div(geom.Cout, igemm::kGwTile);
  // Grid limits; the kernel keeps image indices in ints.
  if (gx >= (int64_t(1) << 31) || gy > 65535 || p.Mp == 0 || geom.N >= (int64_t(1) << 31)) return at::Tensor();
  // Chunks per phase: enough blocks to fill the GPU (~1024 in all), each chunk >= 8 K-steps,
  // grid.z = phases * chunks <= 65535. Depends only on the shapes: reproducible results.
  int64_t chunks = ceil_div(1024, gx * gy * geom.phases);
  chunks = std::min<int64_t>(chunks, ceil_div(p.Mp, 8 * igemm::kGwBK));
  chunks = std::max<int64_t>(1, std::min<int64_t>(chunks, 65535 / geom.phases));
  p.chunk_len = ceil_div(ceil_div(p.Mp, chunks), igemm::kGwBK) * igemm::kGwBK;
  chunks = ceil_div(p.Mp, p.chunk_len);  // every chunk non-empty: chunk * chunk_len < Mp
  p.chunks = int(chunks);
  const int64_t neff = int64_t(geom.phases) * taps * geom.Cin * geom.Cout;
  at::Tensor partial = at::empty({chunks, neff}, x.options().dtype(at::kFloat));
  at::Tensor geff = at::empty({neff}, x.options().dtype(at::kFloat));
  const cudaStream_t stream = current_stream();
  const dim3 grid{unsigned(gx), unsigned(gy), unsigned(geom.phases * chunks)};
  auto launch_layout = [&](auto tag, auto in_cl) {
    using T = decltype(tag);
    constexpr bool kInCl = decltype(in_cl)::value;
    switch (mode) {
      case ConvMode::Same: return try_launch_grad_weight<T, ConvMode::Same, kInCl>(grid, stream, x, g, partial, p);
      case ConvMode::Up: return try_launch_grad_weight<T, ConvMode::Up, kInCl>(grid, stream, x, g, partial, p);
      default: return try_launch_grad_weight<T, ConvMode::Down, kInCl>(grid, stream, x, g, partial, p);
    }
  };
  auto launch = [&](auto tag) {
    return nchw_in ? launch_layout(tag, std::false_type{}) : launch_layout(tag, std::true_type{});
  };
  const bool ran = dt == at::kHalf       ? launch(c10::Half())
                   : dt == at::kBFloat16 ? launch(c10::BFloat16())
                                         : launch(float());
  if (!ran) return at::Tensor();
  record_kernel_path(dt == at::kFloat ? "grad_weight.igemm_tf32" : "grad_weight.igemm");
  if (nchw_in) record_kernel_path("grad_weight.nchw_loads");
  PROGAN_LAUNCH(grad_weight_finish_kernel<float>, blocks_for(neff, 256), 256, 0, stream,
                partial.const_data_ptr<float>(), geff.mutable_data_ptr<float>(), neff, chunks, float(scale));
  // [P][ky][kx][Cin][Cout] -> [P][Cout][Cin][ky][kx], then back through the transposed folds.
  if (geom.Cin != orig.Cin || geom.Cout != orig.Cout) record_kernel_path("grad_weight.channels_padded");
  const at::Tensor G = geff.view({geom.phases, geom.kt, geom.kt, geom.Cin, geom.Cout})
                           .narrow(3, 0, orig.Cin)
                           .narrow(4, 0, orig.Cout)
                           .permute({0, 4, 3, 1, 2});
  at::Tensor gw;
  if (mode == ConvMode::Same) {
    gw = G.select(0, 0);
  } else if (mode == ConvMode::Down) {
    gw = down_fold_t(down_fold_t(G.select(0, 0), 2), 3).mul(0.25);
  } else {
    for (int ph = 0; ph < 4; ++ph) {
      const at::Tensor t = up_fold_t(up_fold_t(G.select(0, ph), 2, ph >> 1), 3, ph & 1);
      gw = gw.defined() ? gw.add(t) : t;
    }
  }
  return gw.to(x_in.scalar_type()).contiguous();
}

// Weight gradient of a 1x1 conv on NCHW with <= kPointwiseFew channels on one side (toRGB,
// fromRGB): grad_weight_pointwise_kernel reads both planes in place (conv_pointwise.cuh). Any
// dtype. Undefined when a grid limit is exceeded (the caller then takes another path).
at::Tensor grad_weight_pointwise(const at::Tensor& x_in, const at::Tensor& g_in, double scale) {
  const at::Tensor x = x_in.contiguous(), g = g_in.contiguous();
  const int64_t N = x.size(0), Cin = x.size(1), Cout = g.size(1), S = x.size(2) * x.size(3);
  PointwiseGradParams p;
  p.long_is_cout = Cout > kPointwiseFew;  // fromRGB; otherwise the long side (if any) is Cin
  p.N = N; p.S = S; p.L = p.long_is_cout ? Cout : Cin; p.F = p.long_is_cout ? Cin : Cout;
  const int64_t gx = ceil_div(p.L, kPointwiseThreads / 32);
  // Chunks inside images: about 2048 blocks in all, a chunk at least 256 pixels (8 per lane) unless
  // the image is smaller, grid.y = N * chunks_per_image <= 65535. Depends only on the shapes.
  int64_t len = std::min(S, std::max<int64_t>(256, ceil_div(N * S * gx, 2048)));
  int64_t cpi = ceil_div(S, len);
  if (N * cpi > 65535) {
    if (N > 65535) return at::Tensor();
    cpi = 65535 / N;
    len = ceil_div(S, cpi);
    cpi = ceil_div(S, len);
  }
  p.chunk_len = len;
  p.chunks_per_image = cpi;
  const int64_t chunks = N * cpi, nw = Cout * Cin;
  const at::ScalarType acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor partial = at::empty({chunks, nw}, x.options().dtype(acc_type));
  at::Tensor gw = at::empty({Cout, Cin, 1, 1}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const cudaStream_t stream = current_stream();
  record_kernel_path("grad_weight.pointwise");
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grad_weight_pointwise_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    PROGAN_LAUNCH(grad_weight_pointwise_kernel<scalar_t>, dim3(unsigned(gx), unsigned(chunks)), 256, 0,
                  stream, p.long_is_cout ? gp : xp, p.long_is_cout ? xp : gp, partial.mutable_data_ptr<acc>(), p);
    PROGAN_LAUNCH(grad_weight_finish_kernel<scalar_t>, blocks_for(nw, 256), 256, 0, stream,
                  partial.const_data_ptr<acc>(), gw.mutable_data_ptr<scalar_t>(), nw, chunks, acc(scale));
  });
  return gw;
}

// The same on NHWC (channels_last): grad_weight_pointwise_rows_kernel, lanes over the long rows.
at::Tensor grad_weight_pointwise_rows(const at::Tensor& x_in, const at::Tensor& g_in, double scale) {
  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor x = x_in.contiguous(cl), g = g_in.contiguous(cl);
  const int64_t Cin = x.size(1), Cout = g.size(1);
  PointwiseRowsGradParams p;
  p.long_is_cout = Cout > kPointwiseFew;  // fromRGB; otherwise the long side (if any) is Cin
  p.P = x.size(0) * x.size(2) * x.size(3);
  p.L = p.long_is_cout ? Cout : Cin;
  p.F = p.long_is_cout ? Cin : Cout;
  const at::Tensor& lng = p.long_is_cout ? g : x;
  const int64_t vec = 16 / int64_t(x.element_size());
  const bool use_vec = p.L % vec == 0 && aligned16(lng.const_data_ptr());
  const int64_t step = use_vec ? vec : 1;  // channels per lane
  p.lanes = lanes_per_row(ceil_div(p.L, step));
  const int64_t slices = ceil_div(p.L, p.lanes * step), groups = kPointwiseThreads / p.lanes;
  // Chunks of the pixels: about 2048 blocks in all, at least 8 pixels per group; grid.x < 2^31
  // always holds (P < 2^63 / 8 pixels), grid.y = slices <= 65535. Depends only on the shapes.
  const int64_t len = std::max(groups * 8, ceil_div(p.P * slices, 2048));
  const int64_t chunks = ceil_div(p.P, len), nw = Cout * Cin;
  if (slices > 65535 || chunks >= (int64_t(1) << 31) || chunks * nw > (int64_t(1) << 26)) return at::Tensor();
  p.chunk_len = len;
  const at::ScalarType acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor partial = at::empty({chunks, nw}, x.options().dtype(acc_type).memory_format(at::MemoryFormat::Contiguous));
  at::Tensor gw = at::empty({Cout, Cin, 1, 1}, x.options().memory_format(at::MemoryFormat::Contiguous));
  const cudaStream_t stream = current_stream();
  record_kernel_path("grad_weight.pointwise_rows");
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grad_weight_pointwise_rows_cuda", [&] {
    using acc = acc_t<scalar_t>;
    constexpr int V = kVec<scalar_t>;
    const scalar_t* lp = lng.const_data_ptr<scalar_t>();
    const scalar_t* fp = (p.long_is_cout ? x : g).const_data_ptr<scalar_t>();
    const dim3 grid{unsigned(chunks), unsigned(slices)};
    if (use_vec)
      PROGAN_LAUNCH((grad_weight_pointwise_rows_kernel<scalar_t, V>), grid, 256, 0, stream, lp, fp,
                    partial.mutable_data_ptr<acc>(), p);
    else
      PROGAN_LAUNCH((grad_weight_pointwise_rows_kernel<scalar_t, 1>), grid, 256, 0, stream, lp, fp,
                    partial.mutable_data_ptr<acc>(), p);
    PROGAN_LAUNCH(grad_weight_finish_kernel<scalar_t>, blocks_for(nw, 256), 256, 0, stream,
                  partial.const_data_ptr<acc>(), gw.mutable_data_ptr<scalar_t>(), nw, chunks, acc(scale));
  });
  return gw;
}

at::Tensor conv2d_resample_grad_weight_cuda(const at::Tensor& x_in, const at::Tensor& grad_in, double scale,
                                            c10::string_view mode_str, int64_t kernel_size) {
  const char* op = "conv2d_resample_grad_weight";
  const ConvMode mode = parse_mode(mode_str);
  check_conv_grad_weight_args(x_in, grad_in, scale, to_resample(mode), kernel_size);
  check_on_device(x_in, op);

  const DeviceGuard guard(x_in);
  const int k = int(kernel_size);
  if (x_in.numel() > 0 && grad_in.numel() > 0) {
    if (mode == ConvMode::Same && k == 1 && std::min(x_in.size(1), grad_in.size(1)) <= kPointwiseFew) {
      at::Tensor gw = layout_of(x_in) == at::MemoryFormat::ChannelsLast ? grad_weight_pointwise_rows(x_in, grad_in, scale)
                                                                        : grad_weight_pointwise(x_in, grad_in, scale);
      if (gw.defined()) return gw;
    }
    at::Tensor fast = grad_weight_fast(x_in, grad_in, scale, mode, k);
    if (fast.defined()) return fast;
  }
  const int64_t cout = grad_in.size(1), cin = x_in.size(1);
  at::Tensor gw = at::empty({cout, cin, k, k}, x_in.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t nw = gw.numel();
  if (nw == 0) return gw;
  const auto fmt = layout_of(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = x_in.contiguous(fmt), g = grad_in.contiguous(fmt);  // same layout flag for both
  const ConvGeom geom = make_geom(x, cout, k, mode);
  const int64_t P = geom.N * geom.Ho * geom.Wo;
  TORCH_CHECK_VALUE(nw < (int64_t(1) << 31), op, ": too many weight elements (", nw, ")");
  // Chunks of the pixel reduction, sized by the work: a block reduces at most kMaxChunk pixels
  // (32 per thread), and small weights get chunks enough for about 2048 blocks in all; a chunk is
  // at least 256 pixels (one per thread) unless P is smaller, the workspace at most 2^26
  // elements, grid.y at most 65535. Depends only on the shapes, so the result is reproducible.
  constexpr int64_t kMaxChunk = 8192, kMinChunk = 256, kMaxPartial = int64_t(1) << 26;
  int64_t chunks = std::max(ceil_div(2048, nw), ceil_div(P, kMaxChunk));
  chunks = std::min({chunks, ceil_div(P, kMinChunk), std::max<int64_t>(1, kMaxPartial / nw), int64_t(65535)});
  chunks = std::max<int64_t>(1, chunks);
  const int64_t chunk_len = std::max<int64_t>(1, ceil_div(P, chunks));
  chunks = std::max<int64_t>(1, ceil_div(P, chunk_len));
  const at::ScalarType acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor partial = at::empty({chunks, nw}, x.options().dtype(acc_type));
  const cudaStream_t stream = current_stream();
  record_kernel_path("grad_weight.simple");
  PROGAN_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv2d_resample_grad_weight_cuda", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    acc* pp = partial.mutable_data_ptr<acc>();
    const int threads = threads_for(chunk_len);  // one warp for a 4x4 layer's 16 pixels per sample
    if (cl) {  // lanes on 32 adjacent input channels, warps on pixels: a block per 32 weight elements
      const dim3 grid{unsigned(nw / cin * ceil_div(cin, int64_t(32))), unsigned(chunks)};
      switch (mode) {
        case ConvMode::Same:
          PROGAN_LAUNCH((grad_weight_partial_rows_kernel<scalar_t, ConvMode::Same>), grid, threads, 0, stream, xp,
                        gp, pp, geom, k, chunk_len);
          break;
        case ConvMode::Up:
          PROGAN_LAUNCH((grad_weight_partial_rows_kernel<scalar_t, ConvMode::Up>), grid, threads, 0, stream, xp,
                        gp, pp, geom, k, chunk_len);
          break;
        case ConvMode::Down:
          PROGAN_LAUNCH((grad_weight_partial_rows_kernel<scalar_t, ConvMode::Down>), grid, threads, 0, stream, xp,
                        gp, pp, geom, k, chunk_len);
          break;
      }
    } else {  // a block per weight element, lanes on adjacent pixels
      const dim3 grid{unsigned(nw), unsigned(chunks)};
      switch (mode) {
        case ConvMode::Same:
          PROGAN_LAUNCH((grad_weight_partial_kernel<scalar_t, ConvMode::Same>), grid, threads, 0, stream, xp, gp,
                        pp, geom, k, chunk_len);
          break;
        case ConvMode::Up:
          PROGAN_LAUNCH((grad_weight_partial_kernel<scalar_t, ConvMode::Up>), grid, threads, 0, stream, xp, gp,
                        pp, geom, k, chunk_len);
          break;
        case ConvMode::Down:
          PROGAN_LAUNCH((grad_weight_partial_kernel<scalar_t, ConvMode::Down>), grid, threads, 0, stream, xp, gp,
                        pp, geom, k, chunk_len);
          break;
      }
    }
    PROGAN_LAUNCH(grad_weight_finish_kernel<scalar_t>, blocks_for(nw, 256), 256, 0, stream,
                  partial.const_data_ptr<acc>(), gw.mutable_data_ptr<scalar_t>(), nw, chunks, acc(scale));
  });
  return gw;
}

}  // namespace

PROGAN_CUDA_KERNELS(m) {
  m.impl("conv2d_resample", &conv2d_resample_cuda);
  m.impl("conv2d_resample_grad_weight", &conv2d_resample_grad_weight_cuda);
}

}  // namespace cuda
}  // namespace progan_ext
