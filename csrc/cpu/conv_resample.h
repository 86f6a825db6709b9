// The linear part of every CPU conv op (defined in conv2d_resample.cpp), shared by the fused ops.
#pragma once

#include <ATen/core/Tensor.h>

#include "../common.h"

namespace progan_ext {

// conv2d_resample(x, weight, scale, mode) computed in x's dtype (the caller casts x and weight
// to the compute dtype first), returned contiguous in layout_of(x). Arguments are not checked.
at::Tensor conv_resample_compute(const at::Tensor& x, const at::Tensor& weight, double scale, Resample mode);

}  // namespace progan_ext
