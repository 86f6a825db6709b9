// Every operator's schema, in one place. The compiled module defines them in the namespace
// progan_ext (csrc/progan_ext.cpp); the emulated CUDA module (csrc/emu/module.cpp) defines the
// same schemas in progan_ext_emu, so that each op exists once per implementation with one schema.
//
// Kernels register themselves next to their code: TORCH_LIBRARY_IMPL(progan_ext, CPU, m) in
// csrc/cpu/<op>.cpp and PROGAN_CUDA_KERNELS(m) in csrc/cuda/<op>.cu; autograd formulas in
// csrc/autograd/<op>.cpp and autocast rules in csrc/autocast.cpp (both C++, for every namespace);
// fake kernels for torch.compile from Python (progan_ext/opdefs/<op>.py). Each `*_backward` op is
// the gradient of its forward op and is itself differentiable, so second derivatives (the WGAN-GP
// penalty) flow through compiled kernels too.
#pragma once

#include <torch/library.h>

#include "kernel_paths.h"

namespace progan_ext {

inline void define_schemas(torch::Library& m) {
  // ---- pixel norm: y = x * rsqrt(mean(x^2, dim=1) + eps) --------------------------------------
  m.def("pixel_norm(Tensor x, float eps) -> Tensor");
  m.def("pixel_norm_backward(Tensor grad, Tensor x, float eps) -> Tensor");
  // The same gradient from the output y = x * r and the saved inverse norm r ([N, 1, H, W] or
  // [N, 1], float32, float64 for float64 y): grad_x = r * (grad - y * mean_c(grad * y)), one pass.
  m.def("pixel_norm_backward_from_output(Tensor grad, Tensor y, Tensor r) -> Tensor");

  // ---- minibatch standard deviation (official ProGAN grouping) --------------------------------
  m.def("minibatch_stddev(Tensor x, int group_size, int num_features, float eps) -> Tensor");
  m.def("minibatch_stddev_backward(Tensor grad, Tensor x, int group_size, int num_features, float eps) -> Tensor");

  // ---- bias + activation: y = act(x + bias[c]); act is "lrelu" or "linear" ----------------------
  m.def("bias_act(Tensor x, Tensor? bias, str act, float alpha) -> Tensor");
  // grad * (input > 0 ? 1 : alpha): the leaky-ReLU gradient read off the output y (alpha >= 0).
  // bias_act and the fused convs write -0 for an input of exactly 0, so the slope is "y > 0 or
  // y is +0", which a 16-bit output keeps when it rounds a tiny input to zero.
  m.def("bias_act_backward(Tensor grad, Tensor y, float alpha) -> Tensor");

  // ---- equalized-LR convolutions ----------------------------------------------------------------
  // Fused public ops: conv with weight * gain/sqrt(Cin*k*k), then bias + act (+ pixel norm, eps
  // 1e-8), the output written once. upsample_conv2d: nearest 2x upsample then 3x3 conv (4-phase,
  // the upsampled tensor is never stored); conv2d_downsample: 3x3 conv then 2x2 average pool
  // (a 4x4 stride-2 conv with the summed kernel) then bias + act.
  m.def("eq_conv2d(Tensor x, Tensor weight, Tensor? bias, float gain, str act, float alpha, bool pixel_norm) -> Tensor");
  m.def("upsample_conv2d(Tensor x, Tensor weight, Tensor? bias, float gain, str act, float alpha, bool pixel_norm) -> Tensor");
  m.def("conv2d_downsample(Tensor x, Tensor weight, Tensor? bias, float gain, str act, float alpha) -> Tensor");
  // The pixel-normed forms with the per-pixel inverse norm r = rsqrt(mean_c(a^2) + 1e-8) of the
  // pre-norm activation a as a second output, [N, 1, H, W] in float32 (float64 for float64 x):
  // y = a * r. progan_ext.ops calls these when pixel_norm=True, so that backward needs only y and r
  // (a = y / r) instead of running the convolution a second time.
  m.def("eq_conv2d_pn(Tensor x, Tensor weight, Tensor? bias, float gain, str act, float alpha) -> (Tensor, Tensor)");
  m.def("upsample_conv2d_pn(Tensor x, Tensor weight, Tensor? bias, float gain, str act, float alpha) -> (Tensor, Tensor)");
  // Linear building blocks of the backward passes (each one's derivatives are expressed with the
  // two of them, so every order of derivative stays on compiled kernels). mode is
  //   "same": conv2d(x, w*scale, padding=k//2)
  //   "up":   conv2d(upsample_nearest2x(x), w*scale, padding=1)      (k = 3)
  //   "down": avg_pool2d(conv2d(x, w*scale, padding=1), 2)           (k = 3)
  // The input gradient of "up" is 4 * "down" with the flipped, transposed kernel and vice versa.
  m.def("conv2d_resample(Tensor x, Tensor weight, float scale, str mode) -> Tensor");
  // d<grad_out, conv2d_resample(x, w, scale, mode)>/dw, shape [Cout, Cin, k, k].
  m.def("conv2d_resample_grad_weight(Tensor x, Tensor grad_out, float scale, str mode, int kernel_size) -> Tensor");

  // ---- introspection (no tensors): which kernel paths ran, "name=count;..." ---------------------
  m.def("kernel_path_counts(bool reset=False) -> str", &kernel_path_counts);
  // ---- path knob (no tensors): may the tensor-core conv split K? (this thread; returns the old) ---
  m.def("set_conv_split_k(bool enabled) -> bool", &set_conv_split_k);
  // ---- path knob: may the tensor-core conv read an NCHW input in place (else from an NHWC copy)? --
  m.def("set_conv_nchw_loads(bool enabled) -> bool", &set_conv_nchw_loads);
}

}  // namespace progan_ext
