"""Equalized-LR convolutions: fake kernels (shapes and memory format for torch.compile) of
eq_conv2d, upsample_conv2d, conv2d_downsample, their pixel-normed forms eq_conv2d_pn /
upsample_conv2d_pn and their linear building blocks conv2d_resample / conv2d_resample_grad_weight.
The autograd formulas (and their derivation) are C++, registered by the compiled module
(csrc/autograd/conv.cpp)."""

import torch

from ._common import empty_like_layout

_MIRROR = {"same": ("same", 1.0), "up": ("down", 4.0), "down": ("up", 0.25)}


def _out_size(size: int, mode: str) -> int:
    return size * 2 if mode == "up" else size // 2 if mode == "down" else size


# ----------------------------------------------------------------------------------------------
# Fake kernels (shapes and memory format only; the checks are the compiled kernels' and ops.py's).


def _fake_conv(x, weight, mode):
    n, _, h, w = x.shape
    return empty_like_layout(x, (n, weight.shape[0], _out_size(h, mode), _out_size(w, mode)))


def _eq_conv2d_fake(x, weight, bias, gain, act, alpha, pixel_norm):
    return _fake_conv(x, weight, "same")


def _upsample_conv2d_fake(x, weight, bias, gain, act, alpha, pixel_norm):
    return _fake_conv(x, weight, "up")


def _inv_norm_fake(x, y):
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.new_empty((y.shape[0], 1, y.shape[2], y.shape[3]), dtype=acc)


def _eq_conv2d_pn_fake(x, weight, bias, gain, act, alpha):
    y = _fake_conv(x, weight, "same")
    return y, _inv_norm_fake(x, y)


def _upsample_conv2d_pn_fake(x, weight, bias, gain, act, alpha):
    y = _fake_conv(x, weight, "up")
    return y, _inv_norm_fake(x, y)


def _conv2d_downsample_fake(x, weight, bias, gain, act, alpha):
    torch._check(x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0, lambda: "conv2d_downsample: height and width must be even")
    return _fake_conv(x, weight, "down")


def _conv2d_resample_fake(x, weight, scale, mode):
    torch._check(mode in _MIRROR, lambda: f"mode must be 'same', 'up' or 'down', got {mode!r}")
    return _fake_conv(x, weight, mode)


def _conv2d_resample_grad_weight_fake(x, grad_out, scale, mode, kernel_size):
    return x.new_empty((grad_out.shape[1], x.shape[1], kernel_size, kernel_size))


def register(ns: str) -> None:
    """Fake kernels of the convolution ops of namespace ``ns``."""
    torch.library.register_fake(f"{ns}::eq_conv2d", _eq_conv2d_fake)
    torch.library.register_fake(f"{ns}::upsample_conv2d", _upsample_conv2d_fake)
    torch.library.register_fake(f"{ns}::conv2d_downsample", _conv2d_downsample_fake)
    torch.library.register_fake(f"{ns}::eq_conv2d_pn", _eq_conv2d_pn_fake)
    torch.library.register_fake(f"{ns}::upsample_conv2d_pn", _upsample_conv2d_pn_fake)
    torch.library.register_fake(f"{ns}::conv2d_resample", _conv2d_resample_fake)
    torch.library.register_fake(f"{ns}::conv2d_resample_grad_weight", _conv2d_resample_grad_weight_fake)
