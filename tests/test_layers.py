"""progan_ext.layers: EqualizedConv2d / EqualizedLinear on the compiled ops vs the reference."""

import math

import pytest
import torch

from progan_ext import layers

CONV_CONFIGS = [
    dict(in_channels=5, out_channels=7, kernel_size=3, pixel_norm=True),
    dict(in_channels=3, out_channels=6, kernel_size=1, act="lrelu"),
    dict(in_channels=6, out_channels=3, kernel_size=1, gain=1.0, act="linear"),  # toRGB
    dict(in_channels=5, out_channels=4, kernel_size=3, resample="up", pixel_norm=True),
    dict(in_channels=4, out_channels=9, kernel_size=3, resample="down"),
]


def _pair(cls, **kw):
    torch.manual_seed(0)
    ext = cls(**kw, impl="ext").double()
    reference = cls(**kw, impl="reference").double()
    reference.load_state_dict(ext.state_dict())
    with torch.no_grad():
        if ext.bias is not None:
            ext.bias.normal_()
            reference.bias.copy_(ext.bias)
    return ext, reference


@pytest.mark.parametrize("kw", CONV_CONFIGS, ids=lambda kw: f"{kw['kernel_size']}-{kw.get('resample')}-{kw.get('act', 'lrelu')}")
def test_equalized_conv2d_matches_reference(kw):
    ext, reference = _pair(layers.EqualizedConv2d, **kw)
    x = torch.randn(2, kw["in_channels"], 6, 8, dtype=torch.float64, requires_grad=True)
    y, y_ref = ext(x), reference(x)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, *ext.parameters()], g)
    grads_ref = torch.autograd.grad(y_ref, [x, *reference.parameters()], g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_equalized_conv2d_init_and_scale():
    layer = layers.EqualizedConv2d(64, 32, 3)
    assert layer.weight.shape == (32, 64, 3, 3)
    assert abs(layer.weight.std().item() - 1.0) < 0.05  # N(0, 1), scaled at run time
    assert torch.count_nonzero(layer.bias) == 0


def test_equalized_conv2d_channels_last_fp32():
    layer = layers.EqualizedConv2d(8, 8, 3, pixel_norm=True, resample="up")
    x = torch.randn(2, 8, 5, 5).to(memory_format=torch.channels_last)
    y = layer(x)
    assert y.shape == (2, 8, 10, 10) and y.is_contiguous(memory_format=torch.channels_last)


def test_equalized_conv2d_autocast_chain():
    conv1 = layers.EqualizedConv2d(4, 6, 3, pixel_norm=True)
    conv2 = layers.EqualizedConv2d(6, 5, 3, resample="down")
    x = torch.randn(2, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv2(conv1(x))
    assert y.dtype == torch.bfloat16 and y.shape == (2, 5, 4, 4)
    y.float().sum().backward()
    assert conv1.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("act,gain", [("lrelu", math.sqrt(2)), ("linear", 1.0)])
def test_equalized_linear_matches_reference(act, gain):
    ext, reference = _pair(layers.EqualizedLinear, in_features=7, out_features=5, act=act, gain=gain)
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(ext(x), reference(x))
    assert torch.autograd.gradcheck(ext, (x,))
    assert torch.autograd.gradgradcheck(ext, (x,))
