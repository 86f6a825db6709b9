"""ProGAN losses: WGAN-GP critic loss with drift term, and the WGAN generator loss.

D loss = D(fake) - D(real) + gp_lambda * (||grad_x D(x_hat)||_2 - 1)^2 + drift * D(real)^2, with x_hat a
random per-sample lerp between real and fake images. The penalty differentiates through D with
``create_graph=True``, so the backward pass needs the second derivative of every op in D.
"""

from __future__ import annotations

import torch

__all__ = ["d_loss_wgangp", "g_loss_wgan"]


def d_loss_wgangp(
    D,
    reals: torch.Tensor,
    fakes: torch.Tensor,
    resolution: int,
    alpha: float = 1.0,
    gp_lambda: float = 10.0,
    drift: float = 1e-3,
    gp_target: float = 1.0,
):
    """Critic loss of WGAN-GP (Gulrajani et al.) with ProGAN's drift penalty.

    Args:
        D: the discriminator, called as ``D(img, resolution=..., alpha=...)``.
        reals, fakes: [N, 3, r, r]; ``fakes`` must be detached from G by the caller.
        resolution, alpha: the current progressive position.
        gp_lambda: gradient-penalty weight (10 in the paper); drift: weight of D(real)^2 (1e-3).
    Returns:
        ``(loss, stats)``: the scalar loss (mean over the batch) and a dict of 0-dim detached tensors
        (``d_real``, ``d_fake``, ``gp``, ``wdist``).
    """
    if reals.shape != fakes.shape:
        raise ValueError(f"reals {tuple(reals.shape)} and fakes {tuple(fakes.shape)} must have the same shape")
    real_scores = D(reals, resolution=resolution, alpha=alpha).float()
    fake_scores = D(fakes, resolution=resolution, alpha=alpha).float()
    mix = torch.rand(reals.shape[0], 1, 1, 1, device=reals.device, dtype=reals.dtype)
    x_hat = torch.lerp(reals.detach(), fakes.detach(), mix).requires_grad_(True)
    mixed_scores = D(x_hat, resolution=resolution, alpha=alpha).float()
    (grad,) = torch.autograd.grad(mixed_scores.sum(), x_hat, create_graph=True)
    grad_norm = grad.float().flatten(1).norm(dim=1)
    gp = (grad_norm - gp_target).square()
    loss = fake_scores[:, 0] - real_scores[:, 0] + gp_lambda * gp + drift * real_scores[:, 0].square()
    stats = {
        "d_real": real_scores.detach().mean(),
        "d_fake": fake_scores.detach().mean(),
        "gp": gp.detach().mean(),
        "wdist": (real_scores.detach() - fake_scores.detach()).mean(),
    }
    return loss.mean(), stats


def g_loss_wgan(D, fakes: torch.Tensor, resolution: int, alpha: float = 1.0) -> torch.Tensor:
    """Generator loss ``-D(fake)``, averaged over the batch."""
    return -D(fakes, resolution=resolution, alpha=alpha).float().mean()
