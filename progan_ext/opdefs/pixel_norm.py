"""pixel_norm: fake kernels (shapes and memory format for torch.compile) of pixel_norm,
pixel_norm_backward and pixel_norm_backward_from_output. The autograd formulas are C++, registered
by the compiled module (csrc/autograd/pixel_norm.cpp)."""

import torch

from ._common import empty_like_layout


def _pixel_norm_fake(x, eps):
    return empty_like_layout(x)


def _pixel_norm_backward_fake(grad, x, eps):
    return empty_like_layout(x)


def _pixel_norm_backward_from_output_fake(grad, y, r):
    return empty_like_layout(y)


def register(ns: str) -> None:
    """Fake kernels of ``{ns}::pixel_norm``, ``{ns}::pixel_norm_backward`` and
    ``{ns}::pixel_norm_backward_from_output``."""
    torch.library.register_fake(f"{ns}::pixel_norm", _pixel_norm_fake)
    torch.library.register_fake(f"{ns}::pixel_norm_backward", _pixel_norm_backward_fake)
    torch.library.register_fake(f"{ns}::pixel_norm_backward_from_output", _pixel_norm_backward_from_output_fake)
