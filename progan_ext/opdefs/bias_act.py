"""bias_act: fake kernels and autograd.

    y  = act(x + b)
    gx = bias_act_backward(g, y, alpha) = g * (y > 0 or y is +0 ? 1 : alpha)   (lrelu; g for linear)

(the kernels write -0 for an input of exactly 0, so the slope is 1 exactly when the input was > 0,
also after a 16-bit output rounded a tiny input to zero)
    gb = sum of gx over every dim but 1

``bias_act_backward`` is linear in g and piecewise constant in y, so its own derivative is
``bias_act_backward`` of the incoming gradient (and zero with respect to y).
"""

from functools import partial

import torch

from ._common import empty_like_layout

def _bias_act_fake(x, bias, act, alpha):
    return empty_like_layout(x)


def _bias_act_backward_fake(grad, y, alpha):
    return empty_like_layout(y)


def _setup(ctx, inputs, output):
    x, bias, act, alpha = inputs
    ctx.save_for_backward(output if act == "lrelu" else None)
    ctx.act, ctx.alpha = act, alpha


def _bias_act_grad(ops, ctx, grad):
    (y,) = ctx.saved_tensors
    gx = ops.bias_act_backward(grad, y, ctx.alpha) if ctx.act == "lrelu" else grad
    gb = None
    if ctx.needs_input_grad[1]:
        gb = gx.sum(dim=[d for d in range(gx.dim()) if d != 1])
    return gx, gb, None, None


def _setup_backward(ctx, inputs, output):
    grad, y, alpha = inputs
    ctx.save_for_backward(y)
    ctx.alpha = alpha


def _bias_act_backward_grad(ops, ctx, u):
    (y,) = ctx.saved_tensors
    grad_g = ops.bias_act_backward(u, y, ctx.alpha) if ctx.needs_input_grad[0] else None
    return grad_g, None, None


def register(ns: str) -> None:
    """Fake kernels and autograd of ``{ns}::bias_act`` and ``{ns}::bias_act_backward``."""
    ops = getattr(torch.ops, ns)
    torch.library.register_fake(f"{ns}::bias_act", _bias_act_fake)
    torch.library.register_fake(f"{ns}::bias_act_backward", _bias_act_backward_fake)
    torch.library.register_autograd(f"{ns}::bias_act", partial(_bias_act_grad, ops), setup_context=_setup)
    torch.library.register_autograd(
        f"{ns}::bias_act_backward", partial(_bias_act_backward_grad, ops), setup_context=_setup_backward
    )
