// The linear part of the CPU conv ops (defined in conv2d_resample.cpp), shared by the fused ops.
#pragma once

#include <ATen/core/Tensor.h>

#include "../common.h"
#include "conv_epilogue.h"
#include "conv_layout.h"

namespace progan_ext {

// conv2d_resample(x, weight, scale, mode) + bias[c] (bias may be empty), one oneDNN call on
// transformed weights, in conv_compute_dtype(x) and contiguous in NCHW or channels_last
// (conv_epilogue takes either). Arguments are not checked.
at::Tensor conv_resample_compute(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                                 double scale, Resample mode);

// The equalized-LR runtime scale gain / sqrt(Cin * k * k).
inline double eq_scale(const at::Tensor& weight, double gain) {
  return gain / std::sqrt(static_cast<double>(weight.size(1) * weight.size(2) * weight.size(3)));
}

}  // namespace progan_ext
