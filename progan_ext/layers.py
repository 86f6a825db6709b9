"""nn.Modules over the progan_ext ops: the building blocks of the ProGAN networks.

Every module takes ``impl="ext"`` (the fused ops of ``progan_ext.ops``: compiled kernels where
available) or ``impl="reference"`` (the plain-PyTorch definitions of ``progan_ext.reference``).
Both build the same parameters with the same names, so state_dicts are interchangeable.
Weights are initialised N(0, 1) and scaled at run time by ``gain / sqrt(fan_in)``: the equalized
learning rate of ProGAN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from . import reference

__all__ = ["PixelNorm", "MinibatchStdDev", "EqualizedConv2d", "EqualizedLinear", "IMPLS"]

IMPLS = ("ext", "reference")


def _backend(impl: str):
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return ops if impl == "ext" else reference


class _OpsModule(nn.Module):
    """Resolves the op namespace from ``self.impl`` on use (a module attribute would stop
    ``copy.deepcopy`` of the layer, which EMA copies of a generator need)."""

    impl: str

    @property
    def _f(self):
        return _backend(self.impl)


class PixelNorm(_OpsModule):
    """Normalises each pixel's feature vector to unit mean square (dim 1)."""

    def __init__(self, eps: float = 1e-8, *, impl: str = "ext"):
        super().__init__()
        reference.check_eps(eps)
        self.eps = eps
        self.impl = impl
        _backend(impl)  # validates impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._f.pixel_norm(x, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, impl={self.impl!r}"


class MinibatchStdDev(_OpsModule):
    """Appends ``num_features`` channels of minibatch standard deviation (official ProGAN layer)."""

    def __init__(self, group_size: int = 4, num_features: int = 1, eps: float = 1e-8, *, impl: str = "ext"):
        super().__init__()
        self.group_size, self.num_features, self.eps = group_size, num_features, eps
        self.impl = impl
        _backend(impl)  # validates impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._f.minibatch_stddev(x, self.group_size, self.num_features, self.eps)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_features={self.num_features}, impl={self.impl!r}"


class EqualizedConv2d(_OpsModule):
    """Equalized-LR 2-D convolution with a fused bias / activation / pixel-norm epilogue.

    Args:
        in_channels, out_channels, kernel_size: as nn.Conv2d (kernel odd, 'same' padding).
        gain: equalized-LR gain (sqrt(2) for hidden layers, 1 for toRGB).
        act: ``"lrelu"`` or ``"linear"``; alpha: leaky ReLU slope.
        pixel_norm: normalise the output per pixel (not with ``resample="down"``).
        resample: None, ``"up"`` (nearest 2x upsample before a 3x3 conv, fused) or ``"down"``
            (2x2 average pooling after a 3x3 conv, fused).
        bias: learnable bias, initialised to zero.
        impl: ``"ext"`` or ``"reference"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        gain: float = math.sqrt(2),
        act: str = "lrelu",
        alpha: float = 0.2,
        pixel_norm: bool = False,
        resample: str | None = None,
        bias: bool = True,
        impl: str = "ext",
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if resample not in (None, "up", "down"):
            raise ValueError(f"resample must be None, 'up' or 'down', got {resample!r}")
        if resample is not None and kernel_size != 3:
            raise ValueError(f"resample={resample!r} needs kernel_size 3, got {kernel_size}")
        if resample == "down" and pixel_norm:
            raise ValueError("pixel_norm is not supported with resample='down'")
        reference.check_act(act, alpha)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.gain, self.act, self.alpha = gain, act, alpha
        self.pixel_norm, self.resample, self.impl = pixel_norm, resample, impl
        _backend(impl)  # validates impl
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kw = dict(gain=self.gain, act=self.act, alpha=self.alpha)
        if self.resample == "down":
            return self._f.conv2d_downsample(x, self.weight, self.bias, **kw)
        fn = self._f.upsample_conv2d if self.resample == "up" else self._f.eq_conv2d
        return fn(x, self.weight, self.bias, pixel_norm=self.pixel_norm, **kw)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"gain={self.gain:.4g}, act={self.act!r}, pixel_norm={self.pixel_norm}, "
            f"resample={self.resample!r}, impl={self.impl!r}"
        )


class EqualizedLinear(_OpsModule):
    """Equalized-LR dense layer: ``x @ (weight * gain/sqrt(in_features)).T``, then bias_act.

    Args:
        in_features, out_features: as nn.Linear.
        gain: equalized-LR gain; act, alpha: as bias_act; bias: learnable bias (zero init).
        impl: ``"ext"`` or ``"reference"`` (for the bias/activation epilogue).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        gain: float = math.sqrt(2),
        act: str = "lrelu",
        alpha: float = 0.2,
        bias: bool = True,
        impl: str = "ext",
    ):
        super().__init__()
        reference.check_act(act, alpha)
        self.in_features, self.out_features = in_features, out_features
        self.gain, self.act, self.alpha, self.impl = gain, act, alpha, impl
        _backend(impl)  # validates impl
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * (self.gain / math.sqrt(self.in_features)))
        if self.bias is None and self.act == "linear":
            return y
        return self._f.bias_act(y, self.bias, self.act, self.alpha)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, gain={self.gain:.4g}, act={self.act!r}, "
            f"impl={self.impl!r}"
        )
