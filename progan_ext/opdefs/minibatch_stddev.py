"""minibatch_stddev: fake kernels and autograd.

With the group view x[g, m, f, j] (G group members, M groups, F features, j over Cf*H*W = J),
d_gj = x_gj - mean_g x_gj, s_j = sqrt(mean_g d_gj^2 + eps) and S[m, f] = mean_j s_j:

    dS/dx_gj = d_gj / (J G s_j)
    gx = g[:, :C] + gS * d / (J G s)        gS[m, f] = sum of g over channel C+f of the group

``minibatch_stddev_backward`` is linear in g; its derivatives (below, plain torch ops) are, for an
incoming gradient u shaped like x:
    d/dg: u on the first C channels, K[m, f] = sum_gj u_gj d_gj / (J G s_j) on channel C+f
    d/dx: gS/(J G) * ((u - mean_g u)/s - A_j d/(G s^3)),  A_j = sum_g u_gj d_gj
"""

from functools import partial

import torch

from ._common import acc, empty_like_layout

def _minibatch_stddev_fake(x, group_size, num_features, eps):
    n, c, h, w = x.shape
    return empty_like_layout(x, (n, c + num_features, h, w))


def _minibatch_stddev_backward_fake(grad, x, group_size, num_features, eps):
    return empty_like_layout(x)


def _setup(ctx, inputs, output):
    x, group_size, num_features, eps = inputs
    ctx.save_for_backward(x)
    ctx.args = (group_size, num_features, eps)


def _minibatch_stddev_grad(ops, ctx, grad):
    (x,) = ctx.saved_tensors
    return ops.minibatch_stddev_backward(grad, x, *ctx.args), None, None, None


def _group_stats(x, group_size, num_features, eps):
    """x as [G, M, F, J] in the accumulation dtype, with d = x - mean_g and s = sqrt(var_g + eps)."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    xg = acc(x).reshape(g, n // g, num_features, (c // num_features) * h * w)
    d = xg - xg.mean(0, keepdim=True)
    s = torch.sqrt(d.square().mean(0, keepdim=True) + eps)
    return g, d, s


def _setup_backward(ctx, inputs, output):
    grad, x, group_size, num_features, eps = inputs
    ctx.save_for_backward(grad, x)
    ctx.args = (group_size, num_features, eps)


def _minibatch_stddev_backward_grad(ctx, u):
    grad, x = ctx.saved_tensors
    group_size, num_features, eps = ctx.args
    n, c, h, w = x.shape
    g, d, s = _group_stats(x, group_size, num_features, eps)
    big_j = d.shape[-1]
    uf = acc(u).reshape(d.shape)
    grad_g = grad_x = None
    if ctx.needs_input_grad[0]:
        k = (uf * d / s).sum(dim=(0, 3)) / (big_j * g)  # [M, F]
        stat = k.reshape(1, n // g, num_features, 1, 1).expand(g, -1, -1, h, w).reshape(n, num_features, h, w)
        grad_g = torch.cat([u, stat.to(u.dtype)], dim=1)
    if ctx.needs_input_grad[1]:
        gs = acc(grad[:, c:]).reshape(g, n // g, num_features, h * w).sum(dim=(0, 3))  # [M, F]
        gs = gs.reshape(1, n // g, num_features, 1) / (big_j * g)
        a = (uf * d).sum(0, keepdim=True)
        gx = gs * ((uf - uf.mean(0, keepdim=True)) / s - a * d / (g * s * s * s))
        grad_x = gx.reshape(n, c, h, w).to(x.dtype)
    return grad_g, grad_x, None, None, None


def register(ns: str) -> None:
    """Fake kernels and autograd of ``{ns}::minibatch_stddev`` and its backward."""
    ops = getattr(torch.ops, ns)
    torch.library.register_fake(f"{ns}::minibatch_stddev", _minibatch_stddev_fake)
    torch.library.register_fake(f"{ns}::minibatch_stddev_backward", _minibatch_stddev_backward_fake)
    torch.library.register_autograd(f"{ns}::minibatch_stddev", partial(_minibatch_stddev_grad, ops), setup_context=_setup)
    torch.library.register_autograd(
        f"{ns}::minibatch_stddev_backward", _minibatch_stddev_backward_grad, setup_context=_setup_backward
    )
