"""bias_act: fake kernels (shapes and memory format for torch.compile). The autograd formulas are
C++, registered by the compiled module (csrc/autograd/bias_act.cpp)."""

import torch

from ._common import empty_like_layout


def _bias_act_fake(x, bias, act, alpha):
    return empty_like_layout(x)


def _bias_act_backward_fake(grad, y, alpha):
    return empty_like_layout(y)


def register(ns: str) -> None:
    """Fake kernels of ``{ns}::bias_act`` and ``{ns}::bias_act_backward``."""
    torch.library.register_fake(f"{ns}::bias_act", _bias_act_fake)
    torch.library.register_fake(f"{ns}::bias_act_backward", _bias_act_backward_fake)
