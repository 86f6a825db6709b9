// Argument checks of pixel_norm_backward_from_output, shared by its CPU and CUDA kernels (the
// other ops' checks are in common.h; this one lives apart so that only the pixel-norm kernels
// depend on it).
#pragma once

#include <vector>

#include "common.h"

namespace progan_ext {

// pixel_norm_backward_from_output(grad, y, r): grad like y; r the per-pixel inverse norms of y
// ([N, 1, H, W] / [N, 1], contiguous after .contiguous(), float32, or float64 for float64 y).
inline void check_pixel_norm_from_output_args(const at::Tensor& grad, const at::Tensor& y, const at::Tensor& r) {
  check_pixel_norm_args(y, 1.0);
  check_same_shape(y, grad, "y", "grad");
  const auto want = y.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK_TYPE(r.scalar_type() == want, "pixel_norm_backward_from_output: r must be ", want, " for ",
                   y.scalar_type(), " y, got ", r.scalar_type());
  TORCH_CHECK_VALUE(r.device() == y.device(), "r is on ", r.device(), " but y is on ", y.device());
  std::vector<int64_t> shape = y.sizes().vec();
  shape[1] = 1;
  TORCH_CHECK_VALUE(r.sizes() == at::IntArrayRef(shape), "pixel_norm_backward_from_output: r must have shape ",
                    at::IntArrayRef(shape), ", got ", r.sizes());
}

}  // namespace progan_ext
