"""Plain-PyTorch definitions of every progan_ext op.

These functions are the ground truth: tests compare the compiled kernels against them, and
``progan_ext.ops`` falls back to them when the compiled extension is missing. They are written for
clarity, not speed, but they are ordinary eager PyTorch, so they run on any device, support
autograd to any order and follow autocast like any PyTorch code.

Numerics: element-wise math and reductions run in float32 (float64 for float64 inputs) and the
result is cast back to the input dtype. The convolutions run in the input dtype, as PyTorch's own
``conv2d`` does (it accumulates in float32 internally).

Input validation lives here too (``check_*``), so the reference path and the compiled path raise
the same clear messages: ``progan_ext.ops`` calls these checks before dispatching.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "pixel_norm",
    "minibatch_stddev",
    "bias_act",
    "eq_conv2d",
    "upsample_conv2d",
    "conv2d_downsample",
    "ACTIVATIONS",
]

ACTIVATIONS = ("lrelu", "linear")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------------------------
# Validation shared with the compiled path.


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_tensor(x, name: str, ranks=(4,)) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have rank {want}, got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}"
        )


def check_same(x: torch.Tensor, other: torch.Tensor, xname: str, oname: str) -> None:
    if other.device != x.device:
        raise ValueError(f"{oname} is on {other.device} but {xname} is on {x.device}")
    if other.dtype != x.dtype:
        raise TypeError(f"{oname} has dtype {other.dtype} but {xname} has dtype {x.dtype}")


def _finite(v) -> bool:
    """math.isfinite as comparisons, which torch.compile also traces for a symbolic float (a layer
    hyperparameter that differs between two compiled calls)."""
    return -math.inf < v < math.inf


def check_eps(eps) -> None:
    if not (isinstance(eps, (int, float)) and _finite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")


def check_act(act, alpha) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
    if not (isinstance(alpha, (int, float)) and _finite(alpha) and alpha >= 0):
        raise ValueError(f"alpha (leaky ReLU slope) must be a finite number >= 0, got {alpha!r}")


def check_bias(x: torch.Tensor, bias, channels: int) -> None:
    if bias is None:
        return
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    if bias.dim() != 1 or bias.shape[0] != channels:
        raise ValueError(f"bias must have shape [{channels}], got {tuple(bias.shape)}")
    check_same(x, bias, "x", "bias")


def check_pixel_norm(x, eps) -> None:
    check_tensor(x, "x", ranks=(2, 4))
    check_eps(eps)


def check_minibatch_stddev(x, group_size, num_features, eps) -> None:
    check_tensor(x, "x", ranks=(4,))
    check_eps(eps)
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    if not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
    n, c = x.shape[0], x.shape[1]
    if n < 1:
        raise ValueError("minibatch_stddev needs a non-empty batch")
    g = min(group_size, n)
    if n % g != 0:
        raise ValueError(
            f"minibatch_stddev: batch size {n} is not divisible by the group size {g}; "
            f"use a batch that is a multiple of {g} or a group_size that divides {n}"
        )
    if c % num_features != 0:
        raise ValueError(f"minibatch_stddev: channels {c} are not divisible by num_features {num_features}")


def autocast_bias(x, bias):
    """Inside an autocast region a float32 bias parameter meets lower-precision activations;
    bias_act keeps x's dtype, so the bias follows x there (outside autocast a mismatch is an error)."""
    if (
        isinstance(x, torch.Tensor)
        and isinstance(bias, torch.Tensor)
        and bias.dtype != x.dtype
        and x.device.type in ("cpu", "cuda")
        and torch.is_autocast_enabled(x.device.type)
        and x.is_floating_point()
        and bias.is_floating_point()
    ):
        return bias.to(x.dtype)
    return bias


def check_bias_act(x, bias, act, alpha) -> None:
    check_tensor(x, "x", ranks=(2, 3, 4, 5))
    check_act(act, alpha)
    check_bias(x, bias, x.shape[1])


def check_conv(x, weight, bias, gain, act, alpha, *, kernel_sizes=None, op="eq_conv2d") -> None:
    check_tensor(x, "x", ranks=(4,))
    check_tensor(weight, "weight", ranks=(4,))
    check_same(x, weight, "x", "weight")
    cout, cin, kh, kw = weight.shape
    if cin != x.shape[1]:
        raise ValueError(
            f"{op}: x has {x.shape[1]} channels but weight expects {cin} (weight shape {tuple(weight.shape)})"
        )
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"{op}: the kernel must be square with an odd size, got {kh}x{kw}")
    if kernel_sizes is not None and kh not in kernel_sizes:
        raise ValueError(f"{op}: kernel size must be one of {kernel_sizes}, got {kh}")
    if cout < 1 or cin < 1:
        raise ValueError(f"{op}: weight has an empty dimension: {tuple(weight.shape)}")
    if not (isinstance(gain, (int, float)) and _finite(gain)):
        raise ValueError(f"{op}: gain must be a finite number, got {gain!r}")
    check_act(act, alpha)
    check_bias(x, bias, cout)


# ----------------------------------------------------------------------------------------------
# Element-wise and reduction ops.


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x * rsqrt(mean(x**2, dim=1) + eps)``; x is [N, C] or [N, C, H, W]."""
    check_pixel_norm(x, eps)
    xf = x.to(_acc_dtype(x.dtype))
    y = xf * torch.rsqrt(xf.square().mean(dim=1, keepdim=True) + eps)
    return y.to(x.dtype)


def minibatch_stddev(
    x: torch.Tensor, group_size: int = 4, num_features: int = 1, eps: float = 1e-8
) -> torch.Tensor:
    """Official ProGAN minibatch standard deviation; returns [N, C + num_features, H, W].

    With G = min(group_size, N) and M = N // G, a group is the samples m, m+M, m+2M, ...; the biased
    variance over the group is taken per feature and pixel, then sqrt(var + eps) is averaged over
    [C/F, H, W] and broadcast back to every sample of the group as F extra channels.
    """
    check_minibatch_stddev(x, group_size, num_features, eps)
    n, c, h, w = x.shape
    g = min(group_size, n)
    f = num_features
    y = x.to(_acc_dtype(x.dtype)).reshape(g, n // g, f, c // f, h, w)
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = torch.sqrt(y + eps)
    y = y.mean(dim=(2, 3, 4))  # [M, F]
    y = y.reshape(n // g, f, 1, 1).repeat(g, 1, h, w)  # sample n gets row n % M
    return torch.cat([x, y.to(x.dtype)], dim=1)


def bias_act(
    x: torch.Tensor, bias: torch.Tensor | None = None, act: str = "lrelu", alpha: float = 0.2
) -> torch.Tensor:
    """``x + bias`` (broadcast over dim 1), then leaky ReLU with slope ``alpha`` or identity."""
    bias = autocast_bias(x, bias)
    check_bias_act(x, bias, act, alpha)
    return _bias_act(x.to(_acc_dtype(x.dtype)), bias, act, alpha).to(x.dtype)


def _bias_act(z, bias, act, alpha):
    if bias is not None:
        z = z + bias.to(z.dtype).reshape([1, -1] + [1] * (z.dim() - 2))
    if act == "lrelu":
        z = F.leaky_relu(z, alpha)
    return z


# ----------------------------------------------------------------------------------------------
# Equalized-learning-rate convolutions.


def autocast_conv_inputs(x, weight, bias):
    """PyTorch's autocast policy for convolutions: inside an autocast region for x's device, x,
    weight and bias run in the autocast dtype (float64 inputs are left alone, as autocast does)."""
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        return x, weight, bias
    device_type = x.device.type
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device_type)

    def cast(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64:
            return t.to(dtype)
        return t

    return cast(x), cast(weight), cast(bias)


def weight_scale(weight: torch.Tensor, gain: float) -> float:
    """The equalized-LR runtime scale ``gain / sqrt(fan_in)``, fan_in = Cin * k * k."""
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    return gain / math.sqrt(fan_in)


def _epilogue(z, x_dtype, bias, act, alpha, pixel_norm_):
    zf = z.to(_acc_dtype(x_dtype))
    zf = _bias_act(zf, bias, act, alpha)
    if pixel_norm_:
        zf = zf * torch.rsqrt(zf.square().mean(dim=1, keepdim=True) + 1e-8)
    return zf.to(z.dtype)


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
    """Equalized-LR conv ``conv2d(x, weight * gain/sqrt(fan_in), padding=k//2)``, then bias_act,
    then pixel norm (eps 1e-8) if asked."""
    x, weight, bias = autocast_conv_inputs(x, weight, bias)
    check_conv(x, weight, bias, gain, act, alpha)
    k = weight.shape[-1]
    z = F.conv2d(x, weight * weight_scale(weight, gain), padding=k // 2)
    return _epilogue(z, x.dtype, bias, act, alpha, pixel_norm)


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
    """Nearest 2x upsample, then the 3x3 ``eq_conv2d``; [N, Cin, H, W] -> [N, Cout, 2H, 2W]."""
    x, weight, bias = autocast_conv_inputs(x, weight, bias)
    check_conv(x, weight, bias, gain, act, alpha, kernel_sizes=(3,), op="upsample_conv2d")
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    z = F.conv2d(up, weight * weight_scale(weight, gain), padding=1)
    return _epilogue(z, x.dtype, bias, act, alpha, pixel_norm)


def conv2d_downsample(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    gain: float = math.sqrt(2),
    act: str = "lrelu",
    alpha: float = 0.2,
) -> torch.Tensor:
    """3x3 equalized conv (padding 1), then 2x2 average pooling, then bias_act;
    [N, Cin, H, W] -> [N, Cout, H/2, W/2] (H and W must be even)."""
    x, weight, bias = autocast_conv_inputs(x, weight, bias)
    check_conv(x, weight, bias, gain, act, alpha, kernel_sizes=(3,), op="conv2d_downsample")
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(
            f"conv2d_downsample: height and width must be even, got {x.shape[2]}x{x.shape[3]}"
        )
    z = F.conv2d(x, weight * weight_scale(weight, gain), padding=1)
    z = F.avg_pool2d(z, 2)
    return _epilogue(z, x.dtype, bias, act, alpha, False)
