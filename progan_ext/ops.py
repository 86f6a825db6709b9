"""Public entry points of progan_ext: one function per op.

Each function validates its arguments (the same checks and messages as ``progan_ext.reference``),
then calls the compiled ``torch.ops.progan_ext.<op>`` when the extension has a kernel for the
input's device, and the plain-PyTorch reference otherwise. ``backend_info()`` says which is which.
Autograd, fake kernels and autocast rules of the compiled ops live in ``progan_ext/opdefs/``.
"""

from __future__ import annotations

import math
import warnings

import torch

from . import _ext
from . import reference as ref

__all__ = [
    "pixel_norm",
    "minibatch_stddev",
    "bias_act",
    "eq_conv2d",
    "upsample_conv2d",
    "conv2d_downsample",
    "backend_info",
    "OPS",
]

OPS = ("pixel_norm", "minibatch_stddev", "bias_act", "eq_conv2d", "upsample_conv2d", "conv2d_downsample")

if _ext.available:
    from . import opdefs  # noqa: F401  (registers fake kernels, autograd and autocast rules)

_DISPATCH_KEY = {"cpu": "CPU", "cuda": "CUDA"}
_has_kernel_cache: dict[tuple[str, str], bool] = {}
_warned: set[tuple[str, str]] = set()


def _has_kernel(op: str, device_type: str) -> bool:
    """Whether the compiled extension implements ``op`` for ``device_type``."""
    key = (op, device_type)
    if key not in _has_kernel_cache:
        found = _ext.available and hasattr(torch.ops.progan_ext, op)
        if found and device_type in _DISPATCH_KEY:
            found = torch._C._dispatch_has_kernel_for_dispatch_key(
                f"progan_ext::{op}", _DISPATCH_KEY[device_type]
            )
        _has_kernel_cache[key] = found
    return _has_kernel_cache[key]


def _compiled(op: str, x: torch.Tensor) -> bool:
    device_type = x.device.type
    if _has_kernel(op, device_type):
        return True
    if _ext.available and (op, device_type) not in _warned:
        _warned.add((op, device_type))
        warnings.warn(
            f"progan_ext: no compiled {op} kernel for {device_type} tensors in this build; "
            "using the pure-PyTorch reference",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def backend_info() -> dict:
    """Which implementation each op uses, per device type.

    Returns:
        ``{"extension": "loaded" | <reason it is not>, "build": {...}, "ops": {op: {"cpu": backend,
        "cuda": backend}}}`` where backend is ``"compiled C++ kernel"``, ``"compiled CUDA kernel"``
        or ``"reference (PyTorch)"``.
    """
    names = {"cpu": "compiled C++ kernel", "cuda": "compiled CUDA kernel"}
    ops = {
        op: {dev: (names[dev] if _has_kernel(op, dev) else "reference (PyTorch)") for dev in ("cpu", "cuda")}
        for op in OPS
    }
    return {
        "extension": "loaded" if _ext.available else f"not loaded: {_ext.error}",
        "build": dict(_ext.build_info),
        "ops": ops,
    }


# ----------------------------------------------------------------------------------------------
# Element-wise and reduction ops.


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pixel-wise feature normalisation (ProGAN): ``x * rsqrt(mean(x**2, dim=1) + eps)``.

    Args:
        x: [N, C] or [N, C, H, W] tensor, float16/bfloat16/float32/float64, NCHW or channels_last.
        eps: positive constant added to the mean square.
    Returns:
        Tensor of x's shape, dtype and memory format.
    """
    ref.check_pixel_norm(x, eps)
    if _compiled("pixel_norm", x):
        return torch.ops.progan_ext.pixel_norm(x, float(eps))
    return ref.pixel_norm(x, eps)


def minibatch_stddev(
    x: torch.Tensor, group_size: int = 4, num_features: int = 1, eps: float = 1e-8
) -> torch.Tensor:
    """Minibatch standard deviation layer, exactly as the official ProGAN/StyleGAN code.

    Args:
        x: [N, C, H, W]; N must be divisible by G = min(group_size, N), C by num_features.
        group_size: samples per group (the samples m, m+M, m+2M, ... with M = N/G form a group).
        num_features: F, the number of statistics channels appended.
        eps: added to the biased variance before the square root.
    Returns:
        [N, C + F, H, W]: x followed by the F statistics channels.
    """
    ref.check_minibatch_stddev(x, group_size, num_features, eps)
    if _compiled("minibatch_stddev", x):
        return torch.ops.progan_ext.minibatch_stddev(x, int(group_size), int(num_features), float(eps))
    return ref.minibatch_stddev(x, group_size, num_features, eps)


def bias_act(
    x: torch.Tensor, bias: torch.Tensor | None = None, act: str = "lrelu", alpha: float = 0.2
) -> torch.Tensor:
    """Adds a per-channel bias (broadcast over dim 1), then leaky ReLU or identity.

    Args:
        x: tensor of rank 2 to 5, channels in dim 1.
        bias: [C] tensor of x's dtype and device, or None.
        act: ``"lrelu"`` or ``"linear"``.
        alpha: leaky ReLU slope for negative inputs (>= 0).
    Returns:
        Tensor of x's shape, dtype and memory format.
    """
    bias = ref.autocast_bias(x, bias)  # inside autocast the bias follows x's dtype
    ref.check_bias_act(x, bias, act, alpha)
    if _compiled("bias_act", x):
        return torch.ops.progan_ext.bias_act(x, bias, act, float(alpha))
    return ref.bias_act(x, bias, act, alpha)


# ----------------------------------------------------------------------------------------------
# Equalized-learning-rate convolutions.


def eq_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    gain: float = math.sqrt(2),
    act: str = "lrelu",
    alpha: float = 0.2,
    pixel_norm: bool = False,
) -> torch.Tensor:
    """Equalized-LR convolution with a fused bias / leaky-ReLU / pixel-norm epilogue.

    Computes ``conv2d(x, weight * gain / sqrt(Cin*k*k), padding=k//2)``, adds bias, applies the
    activation and, if ``pixel_norm``, normalises each pixel's feature vector (eps 1e-8). Inside
    ``torch.autocast`` all three convolution ops run in the autocast dtype, as ``conv2d`` does.

    Args:
        x: [N, Cin, H, W]. weight: raw parameter [Cout, Cin, k, k], k odd. bias: [Cout] or None.
    Returns:
        [N, Cout, H, W] in x's dtype and memory format.
    """
    x, weight, bias = ref.autocast_conv_inputs(x, weight, bias)  # conv autocast policy (also csrc/autocast.cpp)
    ref.check_conv(x, weight, bias, gain, act, alpha)
    if _compiled("eq_conv2d", x):
        return torch.ops.progan_ext.eq_conv2d(x, weight, bias, float(gain), act, float(alpha), bool(pixel_norm))
    return ref.eq_conv2d(x, weight, bias, gain=gain, act=act, alpha=alpha, pixel_norm=pixel_norm)


def upsample_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    gain: float = math.sqrt(2),
    act: str = "lrelu",
    alpha: float = 0.2,
    pixel_norm: bool = False,
) -> torch.Tensor:
    """Nearest 2x upsample followed by a 3x3 ``eq_conv2d`` and its epilogue, as one fused op
    (the upsampled tensor is never stored).

    Args:
        x: [N, Cin, H, W]. weight: [Cout, Cin, 3, 3]. bias: [Cout] or None.
    Returns:
        [N, Cout, 2H, 2W] in x's dtype and memory format.
    """
    x, weight, bias = ref.autocast_conv_inputs(x, weight, bias)  # conv autocast policy (also csrc/autocast.cpp)
    ref.check_conv(x, weight, bias, gain, act, alpha, kernel_sizes=(3,), op="upsample_conv2d")
    if _compiled("upsample_conv2d", x):
        return torch.ops.progan_ext.upsample_conv2d(
            x, weight, bias, float(gain), act, float(alpha), bool(pixel_norm)
        )
    return ref.upsample_conv2d(x, weight, bias, gain=gain, act=act, alpha=alpha, pixel_norm=pixel_norm)


def conv2d_downsample(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    gain: float = math.sqrt(2),
    act: str = "lrelu",
    alpha: float = 0.2,
) -> torch.Tensor:
    """3x3 equalized conv, 2x2 average pooling and bias_act as one fused op.

    Args:
        x: [N, Cin, H, W] with H and W even. weight: [Cout, Cin, 3, 3]. bias: [Cout] or None.
    Returns:
        [N, Cout, H/2, W/2] in x's dtype and memory format.
    """
    x, weight, bias = ref.autocast_conv_inputs(x, weight, bias)  # conv autocast policy (also csrc/autocast.cpp)
    ref.check_conv(x, weight, bias, gain, act, alpha, kernel_sizes=(3,), op="conv2d_downsample")
    if x.shape[2] % 2 or x.shape[3] % 2:
        return ref.conv2d_downsample(x, weight, bias, gain=gain, act=act, alpha=alpha)  # raises
    if _compiled("conv2d_downsample", x):
        return torch.ops.progan_ext.conv2d_downsample(x, weight, bias, float(gain), act, float(alpha))
    return ref.conv2d_downsample(x, weight, bias, gain=gain, act=act, alpha=alpha)
