// The linear part of the CPU conv ops (defined in conv2d_resample.cpp), shared by the fused ops.
#pragma once

#include <ATen/core/Tensor.h>

#include "../common.h"
#include "conv_epilogue.h"

namespace progan_ext {

// conv2d_resample(x, weight, scale, mode) for mode "same" or "down", computed in x's dtype (the
// caller casts x and weight to the compute dtype), contiguous in layout_of(x). Not checked.
at::Tensor conv_resample_compute(const at::Tensor& x, const at::Tensor& weight, double scale, Resample mode);

// "up": the four phase convolutions of x (2x2 kernels, see conv2d_resample.cpp) as one
// [N*(H+2)*(W+2), 4*Cout] matrix: row r is the 2x2 window whose top-left corner is pixel r of the
// zero-padded input (flattened over the batch; rows of windows that leave the padded image are
// never read), columns q*Cout..(q+1)*Cout are phase q = 2*py + px. Output pixel (2i+py, 2j+px)
// is phase q's window at padded pixel (i+py, j+px). Computed as four GEMMs (one per tap) on
// row-shifted views of the padded input: no patch matrix, no upsampled tensor.
at::Tensor conv_up_phases(const at::Tensor& x, const at::Tensor& weight, double scale);

// Reads conv_up_phases' result in output-pixel order for conv_epilogue.
struct UpPhaseSource {
  int64_t cout, height, width;  // output channels; low-res H, W
  int64_t offset(int64_t img, int64_t pixel) const {
    const int64_t oy = pixel / (2 * width), ox = pixel % (2 * width);
    const int64_t py = oy & 1, px = ox & 1;
    const int64_t row = (img * (height + 2) + (oy >> 1) + py) * (width + 2) + (ox >> 1) + px;
    return row * 4 * cout + (2 * py + px) * cout;
  }
  int64_t channel_stride() const { return 1; }
};

}  // namespace progan_ext
