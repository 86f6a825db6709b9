"""Equalized-LR convolutions: fake kernels and autograd of eq_conv2d, upsample_conv2d,
conv2d_downsample and their linear building blocks conv2d_resample / conv2d_resample_grad_weight.

Notation: R(x, w, s, mode) = conv2d_resample(x, w, s, mode) (mode "same", "up" or "down"), linear
in x and in w; GW(x, g, s, mode, k) = conv2d_resample_grad_weight, with <g, R(x, w)> = <GW(x, g), w>.
w' = w.flip(2, 3).transpose(0, 1) is the kernel of the adjoint conv. With U the nearest 2x
upsample and A the 2x2 average pool, U^T = 4 A and A^T = U / 4, hence

    dR/dx^T g:  same -> R(g, w', s, "same"),  up -> R(g, w', 4 s, "down"),  down -> R(g, w', s/4, "up")
    dR/dw^T g:  GW(x, g, s, mode, k)

GW is bilinear too: for an incoming gradient u (shaped like w),
    d<u, GW(x, g)>/dg = R(x, u, s, mode),   d<u, GW(x, g)>/dx = dR/dx^T g with kernel u,
so both building blocks are differentiable to any order through compiled kernels.

The fused ops y = act(R(x, w, scale, mode) + b) (scale = gain/sqrt(Cin*k*k)) then have
    gz = bias_act_backward(g, y, alpha) (lrelu; g for linear),  gb = sum_{n,h,w} gz,
    gx = dR/dx^T gz,  gw = GW(x, gz, scale, mode, k).
With pixel_norm, the pre-norm activation a is recomputed in backward with the same fused op
(pixel_norm=False, so it stays in the graph under create_graph) and gz = bias_act_backward(
pixel_norm_backward(g, a, 1e-8), a, alpha). Only inputs and outputs are saved.

The pixel-normed forms eq_conv2d_pn / upsample_conv2d_pn (what progan_ext.ops calls) also return
the per-pixel inverse norm r = rsqrt(mean_c(a^2) + 1e-8), so y = a * r and backward needs no second
convolution: with a = y / r, and for incoming gradients gy (of y) and gr (of r), with
dr/da_c = -r^3 a_c / C = -r^2 y_c / C,
    ga = pixel_norm_backward(gy, a, 1e-8) - (r^2 / C) * y * gr
       = pixel_norm_backward_from_output(gy, y, r) - (r^2 / C) * y * gr,
    gz = bias_act_backward(ga, y, alpha)
(pixel_norm_backward_from_output: r * (gy - y * mean_c(gy * y)), one pass, a never formed; y has
a's sign). Every step is a differentiable op of saved inputs and outputs, so the double
backward of the WGAN-GP penalty runs through the same formulas.
"""

import math
from functools import partial

import torch

from ._common import empty_like_layout

_PIXEL_NORM_EPS = 1e-8
_MIRROR = {"same": ("same", 1.0), "up": ("down", 4.0), "down": ("up", 0.25)}


def _out_size(size: int, mode: str) -> int:
    return size * 2 if mode == "up" else size // 2 if mode == "down" else size


def _scale(weight, gain) -> float:
    cout, cin, kh, kw = weight.shape
    return gain / math.sqrt(cin * kh * kw)


# ----------------------------------------------------------------------------------------------
# Fake kernels (shapes and memory format only; the checks are the compiled kernels' and ops.py's).


def _fake_conv(x, weight, mode):
    n, _, h, w = x.shape
    return empty_like_layout(x, (n, weight.shape[0], _out_size(h, mode), _out_size(w, mode)))


def _eq_conv2d_fake(x, weight, bias, gain, act, alpha, pixel_norm):
    return _fake_conv(x, weight, "same")


def _upsample_conv2d_fake(x, weight, bias, gain, act, alpha, pixel_norm):
    return _fake_conv(x, weight, "up")


def _inv_norm_fake(x, y):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.new_empty((y.shape[0], 1, y.shape[2], y.shape[3]), dtype=acc)


def _eq_conv2d_pn_fake(x, weight, bias, gain, act, alpha):
    y = _fake_conv(x, weight, "same")
    return y, _inv_norm_fake(x, y)


def _upsample_conv2d_pn_fake(x, weight, bias, gain, act, alpha):
    y = _fake_conv(x, weight, "up")
    return y, _inv_norm_fake(x, y)


def _conv2d_downsample_fake(x, weight, bias, gain, act, alpha):
    torch._check(x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0, lambda: "conv2d_downsample: height and width must be even")
    return _fake_conv(x, weight, "down")


def _conv2d_resample_fake(x, weight, scale, mode):
    torch._check(mode in _MIRROR, lambda: f"mode must be 'same', 'up' or 'down', got {mode!r}")
    return _fake_conv(x, weight, mode)


def _conv2d_resample_grad_weight_fake(x, grad_out, scale, mode, kernel_size):
    return x.new_empty((grad_out.shape[1], x.shape[1], kernel_size, kernel_size))


# ----------------------------------------------------------------------------------------------
# The linear building blocks.


def _adjoint_kernel(weight):
    return weight.flip(2, 3).transpose(0, 1)


def _grad_input(ops, grad, weight, scale, mode):
    """dR(x, weight, scale, mode)/dx^T grad."""
    mirror, factor = _MIRROR[mode]
    return ops.conv2d_resample(grad, _adjoint_kernel(weight), scale * factor, mirror)


def _setup_resample(ctx, inputs, output):
    x, weight, scale, mode = inputs
    ctx.save_for_backward(x, weight)
    ctx.scale, ctx.mode = scale, mode


def _conv2d_resample_grad(ops, ctx, grad):
    x, weight = ctx.saved_tensors
    gx = _grad_input(ops, grad, weight, ctx.scale, ctx.mode) if ctx.needs_input_grad[0] else None
    gw = None
    if ctx.needs_input_grad[1]:
        gw = ops.conv2d_resample_grad_weight(x, grad, ctx.scale, ctx.mode, weight.shape[-1])
    return gx, gw, None, None


def _setup_resample_grad_weight(ctx, inputs, output):
    x, grad_out, scale, mode, kernel_size = inputs
    ctx.save_for_backward(x, grad_out)
    ctx.scale, ctx.mode = scale, mode


def _conv2d_resample_grad_weight_grad(ops, ctx, u):
    x, grad_out = ctx.saved_tensors
    gx = _grad_input(ops, grad_out, u, ctx.scale, ctx.mode) if ctx.needs_input_grad[0] else None
    gg = ops.conv2d_resample(x, u, ctx.scale, ctx.mode) if ctx.needs_input_grad[1] else None
    return gx, gg, None, None, None


# ----------------------------------------------------------------------------------------------
# The fused public ops.


def _fused_grads(ops, ctx, gz, x, weight, bias):
    """Gradients of R(x, weight, scale, mode) + bias given gz, the gradient of the sum."""
    scale = _scale(weight, ctx.gain)
    gx = _grad_input(ops, gz, weight, scale, ctx.mode) if ctx.needs_input_grad[0] else None
    gw = None
    if ctx.needs_input_grad[1]:
        gw = ops.conv2d_resample_grad_weight(x, gz, scale, ctx.mode, weight.shape[-1])
    gb = gz.sum(dim=(0, 2, 3)) if bias is not None and ctx.needs_input_grad[2] else None
    return gx, gw, gb


def _act_grad(ops, ctx, g, y):
    return ops.bias_act_backward(g, y, ctx.alpha) if ctx.act == "lrelu" else g


def _register_fused(ns, name, mode, has_pixel_norm):
    ops = getattr(torch.ops, ns)
    op = getattr(ops, name)

    def setup_context(ctx, inputs, output):
        x, weight, bias, gain, act, alpha = inputs[:6]
        ctx.pixel_norm = bool(inputs[6]) if has_pixel_norm else False
        ctx.gain, ctx.act, ctx.alpha, ctx.mode = gain, act, alpha, mode
        # The pixel-norm path recomputes its pre-norm activation from the inputs.
        ctx.save_for_backward(x, weight, bias, None if ctx.pixel_norm else output)

    def backward(ctx, grad):
        x, weight, bias, y = ctx.saved_tensors
        if ctx.pixel_norm:
            a = op(x, weight, bias, ctx.gain, ctx.act, ctx.alpha, False)
            gz = _act_grad(ops, ctx, ops.pixel_norm_backward(grad, a, _PIXEL_NORM_EPS), a)
        else:
            gz = _act_grad(ops, ctx, grad, y)
        return (*_fused_grads(ops, ctx, gz, x, weight, bias), None, None, None) + ((None,) if has_pixel_norm else ())

    torch.library.register_autograd(f"{ns}::{name}", backward, setup_context=setup_context)


def _register_fused_pn(ns, name, mode):
    """Autograd of the (y, r) form of a pixel-normed fused conv (module docstring)."""
    ops = getattr(torch.ops, ns)

    def setup_context(ctx, inputs, output):
        x, weight, bias, gain, act, alpha = inputs
        y, r = output
        ctx.gain, ctx.act, ctx.alpha, ctx.mode = gain, act, alpha, mode
        ctx.save_for_backward(x, weight, bias, y, r)
        ctx.set_materialize_grads(False)  # r is rarely used: its gradient then stays None

    def backward(ctx, gy, gr):
        x, weight, bias, y, r = ctx.saved_tensors
        ga = None
        if gy is not None:  # one pass over gy, y and r (no y / r tensor, no second rsqrt)
            ga = ops.pixel_norm_backward_from_output(gy, y, r)
        if gr is not None:
            t = ((r * r) * gr * (-1.0 / y.shape[1]) * y).to(y.dtype)
            ga = t if ga is None else ga + t
        if ga is None:
            return None, None, None, None, None, None
        gz = _act_grad(ops, ctx, ga, y)
        return (*_fused_grads(ops, ctx, gz, x, weight, bias), None, None, None)

    torch.library.register_autograd(f"{ns}::{name}", backward, setup_context=setup_context)


def register(ns: str) -> None:
    """Fake kernels and autograd of the convolution ops of namespace ``ns``."""
    ops = getattr(torch.ops, ns)
    torch.library.register_fake(f"{ns}::eq_conv2d", _eq_conv2d_fake)
    torch.library.register_fake(f"{ns}::upsample_conv2d", _upsample_conv2d_fake)
    torch.library.register_fake(f"{ns}::conv2d_downsample", _conv2d_downsample_fake)
    torch.library.register_fake(f"{ns}::eq_conv2d_pn", _eq_conv2d_pn_fake)
    torch.library.register_fake(f"{ns}::upsample_conv2d_pn", _upsample_conv2d_pn_fake)
    torch.library.register_fake(f"{ns}::conv2d_resample", _conv2d_resample_fake)
    torch.library.register_fake(f"{ns}::conv2d_resample_grad_weight", _conv2d_resample_grad_weight_fake)
    torch.library.register_autograd(
        f"{ns}::conv2d_resample", partial(_conv2d_resample_grad, ops), setup_context=_setup_resample
    )
    torch.library.register_autograd(
        f"{ns}::conv2d_resample_grad_weight",
        partial(_conv2d_resample_grad_weight_grad, ops),
        setup_context=_setup_resample_grad_weight,
    )
    _register_fused(ns, "eq_conv2d", "same", True)
    _register_fused(ns, "upsample_conv2d", "up", True)
    _register_fused(ns, "conv2d_downsample", "down", False)
    _register_fused_pn(ns, "eq_conv2d_pn", "same")
    _register_fused_pn(ns, "upsample_conv2d_pn", "up")
