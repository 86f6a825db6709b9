// Dtype and memory format the CPU convolutions run in (conv_layout.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "../common.h"

namespace progan_ext {

// float64 stays float64; every other dtype computes in float32 on the CPU, except bfloat16
// where oneDNN has native bfloat16 kernels (they accumulate in float32).
at::ScalarType conv_compute_dtype(at::ScalarType t);

// The memory format a convolution of `mode` with a k x k kernel runs in, for input in `fmt`.
at::MemoryFormat conv_layout(Resample mode, int64_t k, at::MemoryFormat fmt);

// x in `dtype` and contiguous in `fmt`, in one pass at most (x itself when it already is).
at::Tensor to_conv_input(const at::Tensor& x, at::ScalarType dtype, at::MemoryFormat fmt);

}  // namespace progan_ext
