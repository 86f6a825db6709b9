// Device side of the equalized-LR convolutions (eq_conv2d, upsample_conv2d, conv2d_downsample,
// conv2d_resample, conv2d_resample_grad_weight): the geometry every conv kernel shares. The kernels
// are in conv_simple.cuh (any dtype) and conv_igemm.cuh (tensor cores); host code in
// conv_common.cuh. No ATen headers in these files.
//
// ---- Design note ---------------------------------------------------------------------------------
// Every forward op is ONE formula over an "effective" kernel W_eff[P][Cout][Cin][kt][kt] (the
// equalized scale gain/sqrt(Cin*k*k) folded in), built for the tensor-core path by one kernel,
// pack_weight_kernel (conv_pack.cuh), and for the simple path by small tensor ops on the host:
//   mode SAME (k odd):  P = 1, kt = k, input row  iy = oy - k/2 + ty
//   mode UP   (k = 3):  P = 4 phases (py,px) = output parity, kt = 2,
//                       iy = (oy>>1) + py - 1 + ty   (per axis: parity 0 taps x[i-1]*w0, x[i]*(w1+w2);
//                       parity 1 taps x[i]*(w0+w1), x[i+1]*w2). The upsampled tensor never exists.
//   mode DOWN (k = 3):  P = 1, kt = 4, iy = 2*oy - 1 + ty, W_eff = D w D^T / 4 with
//                       D = [[1,0,0],[1,1,0],[0,1,1],[0,0,1]] (3x3 conv + 2x2 average pool).
// (the same for columns). Out-of-image taps read zero (padding).
//
// Three forward paths, chosen on the host (conv_common.cuh, conv_forward_impl):
//  * pointwise path (conv_pointwise.cuh; any dtype): 1x1 `same` convs with <= 4 channels on one
//    side (toRGB, fromRGB, their input gradients), memory-bound: the input is read in place, no
//    NHWC copy, no padding; a thread per pixel over the NCHW planes, a group of lanes per pixel
//    over the NHWC rows (the `rows` kernels); the weight gradient likewise
//    (grad_weight_pointwise, grad_weight_pointwise_rows).
//  * simple path (any dtype incl. float64, any layout/shape): one thread per output element,
//    accumulating in acc_t over Cin x taps in a fixed order. Obviously correct, slow.
//  * implicit-GEMM fast path: conv_igemm.cuh, whose design note continues this one.
//
// --------------------------------------------------------------------------------------------------
#pragma once

#include "device_utils.cuh"

namespace progan_ext {
namespace cuda {

enum class ConvMode : int { Same = 0, Up = 1, Down = 2 };

// Geometry shared by every conv kernel. Output is [N, Cout, Ho, Wo]; input [N, Cin, H, W].
struct ConvGeom {
  int64_t N, Cin, H, W, Cout, Ho, Wo;
  int kt;       // taps per axis of the effective kernel
  int pad;      // SAME: k/2
  int phases;   // 4 for UP, else 1
};

// Input row (or column) of tap 0 for output row o, and the output's parity (UP).
template <ConvMode M>
__device__ __forceinline__ int64_t tap0(int64_t o, int pad) {
  if constexpr (M == ConvMode::Same) return o - pad;
  else if constexpr (M == ConvMode::Up) return (o >> 1) + (o & 1) - 1;
  else return 2 * o - 1;
}

// Element strides of a contiguous tensor in NCHW (cl = false) or NHWC (cl = true) memory.
struct Strides4 {
  int64_t n, c, h, w;
};

__host__ __device__ inline Strides4 strides_of(int64_t C, int64_t H, int64_t W, bool cl) {
  return cl ? Strides4{H * W * C, 1, W * C, C} : Strides4{C * H * W, H * W, W, 1};
}

template <typename acc>
__device__ __forceinline__ acc apply_act(acc v, bool lrelu, acc alpha) {
  return lrelu ? leaky_relu(v, alpha) : v;
}

}  // namespace cuda
}  // namespace progan_ext
