"""pixel_norm: fake kernels and autograd.

    y  = x * r,  r = rsqrt(mean_c(x^2) + eps)
    gx = pixel_norm_backward(g, x) = r*g - r^3 * x * mean_c(g*x)
       = pixel_norm_backward_from_output(g, y, r) = r * (g - y * mean_c(g*y))   (r saved by the convs)

The Jacobian dy/dx is symmetric, so the derivative of ``pixel_norm_backward`` with respect to g
is ``pixel_norm_backward`` again; its derivative with respect to x is written below with plain
differentiable torch ops (so any higher order works too).
"""

from functools import partial

import torch

from ._common import acc, empty_like_layout

def _pixel_norm_fake(x, eps):
    return empty_like_layout(x)


def _pixel_norm_backward_fake(grad, x, eps):
    return empty_like_layout(x)


def _pixel_norm_backward_from_output_fake(grad, y, r):
    return empty_like_layout(y)


def _setup(ctx, inputs, output):
    x, eps = inputs
    ctx.save_for_backward(x)
    ctx.eps = eps


def _pixel_norm_grad(ops, ctx, grad):
    (x,) = ctx.saved_tensors
    return ops.pixel_norm_backward(grad, x, ctx.eps), None


def _setup_backward(ctx, inputs, output):
    grad, x, eps = inputs
    ctx.save_for_backward(grad, x)
    ctx.eps = eps


def _pixel_norm_backward_grad(ops, ctx, u):
    g, x = ctx.saved_tensors
    grad_g = grad_x = None
    if ctx.needs_input_grad[0]:
        grad_g = ops.pixel_norm_backward(u, x, ctx.eps)
    if ctx.needs_input_grad[1]:
        # d/dx <u, r*g - r^3 x p>, p = mean(g x):
        #   = -r^3 x mean(u g) + 3 r^5 x p mean(u x) - r^3 p u - r^3 mean(u x) g
        xf, gf, uf = acc(x), acc(g), acc(u)
        r = torch.rsqrt(xf.square().mean(1, keepdim=True) + ctx.eps)
        r3 = r * r * r
        p = (gf * xf).mean(1, keepdim=True)
        ux = (uf * xf).mean(1, keepdim=True)
        ug = (uf * gf).mean(1, keepdim=True)
        grad_x = (xf * (3 * r3 * r * r * p * ux - r3 * ug) - r3 * (p * uf + ux * gf)).to(x.dtype)
    return grad_g, grad_x, None


def _setup_from_output(ctx, inputs, output):
    grad, y, r = inputs
    ctx.save_for_backward(grad, y, r)


def _from_output_grad(ops, ctx, h):
    # gx = r * (g - y m), m = mean_c(g y). With upstream h:
    #   d/dg = r * (h - y mean_c(h y))        (the op itself: its Jacobian in g is symmetric)
    #   d/dy = -r * (h m + g mean_c(h y))
    #   d/dr = sum_c h * (g - y m)
    g, y, r = ctx.saved_tensors
    grad_g = grad_y = grad_r = None
    if ctx.needs_input_grad[0]:
        grad_g = ops.pixel_norm_backward_from_output(h, y, r)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        gf, yf, hf, rf = acc(g), acc(y), acc(h), r
        m = (gf * yf).mean(1, keepdim=True)
        if ctx.needs_input_grad[1]:
            grad_y = (-rf * (hf * m + gf * (hf * yf).mean(1, keepdim=True))).to(y.dtype)
        if ctx.needs_input_grad[2]:
            grad_r = (hf * (gf - yf * m)).sum(1, keepdim=True).to(r.dtype)
    return grad_g, grad_y, grad_r


def register(ns: str) -> None:
    """Fake kernels and autograd of ``{ns}::pixel_norm``, ``{ns}::pixel_norm_backward`` and
    ``{ns}::pixel_norm_backward_from_output``."""
    ops = getattr(torch.ops, ns)
    torch.library.register_fake(f"{ns}::pixel_norm", _pixel_norm_fake)
    torch.library.register_fake(f"{ns}::pixel_norm_backward", _pixel_norm_backward_fake)
    torch.library.register_autograd(f"{ns}::pixel_norm", partial(_pixel_norm_grad, ops), setup_context=_setup)
    torch.library.register_autograd(
        f"{ns}::pixel_norm_backward", partial(_pixel_norm_backward_grad, ops), setup_context=_setup_backward
    )
    torch.library.register_fake(f"{ns}::pixel_norm_backward_from_output", _pixel_norm_backward_from_output_fake)
    torch.library.register_autograd(
        f"{ns}::pixel_norm_backward_from_output", partial(_from_output_grad, ops), setup_context=_setup_from_output
    )
