"""minibatch_stddev: fake kernels (shapes and memory format for torch.compile) of minibatch_stddev
and its backward. The autograd formulas are C++, registered by the compiled module
(csrc/autograd/minibatch_stddev.cpp)."""

import torch

from ._common import empty_like_layout


def _minibatch_stddev_fake(x, group_size, num_features, eps):
    n, c, h, w = x.shape
    return empty_like_layout(x, (n, c + num_features, h, w))


def _minibatch_stddev_backward_fake(grad, x, group_size, num_features, eps):
    return empty_like_layout(x)


def register(ns: str) -> None:
    """Fake kernels of ``{ns}::minibatch_stddev`` and ``{ns}::minibatch_stddev_backward``."""
    torch.library.register_fake(f"{ns}::minibatch_stddev", _minibatch_stddev_fake)
    torch.library.register_fake(f"{ns}::minibatch_stddev_backward", _minibatch_stddev_backward_fake)
