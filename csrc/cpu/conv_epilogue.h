// The epilogue shared by the fused CPU conv ops: y = act(z), then, if asked, pixel norm over
// channels (eps 1e-8), in one pass over z (conv_epilogue.cpp). The bias is already in z: the
// convolution adds it (oneDNN does so in its accumulator, at no cost).
#pragma once

#include <ATen/core/Tensor.h>

#include "../common.h"

namespace progan_ext {

// y = act(z) (+ pixel norm), y of z's sizes in layout `fmt` and dtype `out_dtype`, computed in
// float32 (float64 for float64). z is contiguous in NCHW or channels_last; when its layout and
// dtype are y's, y is z itself (overwritten). With act linear, no pixel norm and nothing to
// convert, z is returned as it is. With pixel norm and `inv_norm` given, *inv_norm is set to the
// per-pixel inverse norms r ([N, 1, H, W] contiguous, float32; float64 for float64 z), y = act(z) * r.
at::Tensor conv_epilogue(const at::Tensor& z, Act act, double alpha, bool pixel_norm, at::MemoryFormat fmt,
                         at::ScalarType out_dtype, at::Tensor* inv_norm = nullptr);

}  // namespace progan_ext
