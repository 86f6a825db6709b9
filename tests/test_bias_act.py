"""bias_act: kernels vs reference, derivatives, opcheck, validation."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from conftest import DEVICES, compiled_ops, FLOAT_DTYPES, LAYOUTS, assert_close, randn, requires_compiled, skip_without_kernel
from progan_ext import ops, reference

SHAPES = [(4, 16, 8, 8), (1, 3, 5, 7), (3, 24, 1, 1), (6, 10), (2, 5, 7), (2, 3, 2, 3, 4)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("act", ["lrelu", "linear"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_forward_matches_reference(device, dtype, layout, shape, act, with_bias):
    skip_without_kernel("bias_act", device)
    x = randn(shape, dtype=dtype, device=device, layout=layout)
    b = randn((shape[1],), dtype=dtype, device=device, seed=1) if with_bias else None
    y = ops.bias_act(x, b, act, 0.2)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, reference.bias_act(x, b, act, 0.2), dtype)
    if layout == "channels_last" and x.dim() == 4:
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ["lrelu", "linear"])
def test_backward_matches_reference(device, dtype, layout, act):
    skip_without_kernel("bias_act", device)
    x = randn((3, 8, 6, 5), dtype=dtype, device=device, layout=layout, requires_grad=True)
    b = randn((8,), dtype=dtype, device=device, seed=1, requires_grad=True)
    g = randn((3, 8, 6, 5), dtype=dtype, device=device, seed=2)
    got = torch.autograd.grad(ops.bias_act(x, b, act, 0.3), (x, b), g)
    want = torch.autograd.grad(reference.bias_act(x, b, act, 0.3), (x, b), g)
    assert_close(got[0], want[0], dtype)
    torch.testing.assert_close(got[1].float(), want[1].float(), rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("act", ["lrelu", "linear"])
def test_gradcheck_and_gradgradcheck(device, layout, act):
    skip_without_kernel("bias_act", device)
    x = randn((2, 4, 3, 3), dtype=torch.float64, device=device, layout=layout, requires_grad=True)
    b = randn((4,), dtype=torch.float64, device=device, seed=1, requires_grad=True)
    fn = lambda t, bb: ops.bias_act(t, bb, act, 0.2)  # noqa: E731
    assert gradcheck(fn, (x, b))
    assert gradgradcheck(fn, (x, b))


@requires_compiled
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_lrelu_slope_at_zero_is_pytorchs(device, dtype):
    """Every backend writes -0 for an input of exactly 0 and reads the slope off the output's sign:
    alpha at 0, as torch's leaky_relu; +0 (a tiny positive input rounded away) gets slope 1."""
    kernels = compiled_ops(device)
    skip_without_kernel("bias_act", device)
    x = torch.tensor([0.0, -0.0, 0.5, -0.5, 3.0], dtype=dtype, device=device).view(1, 5).requires_grad_()
    y = ops.bias_act(x, None, "lrelu", 0.25)
    assert torch.signbit(y[0, :2].cpu()).all() and y[0, :2].eq(0).all()
    got = torch.autograd.grad(y.sum(), x)[0]
    want = torch.autograd.grad(torch.nn.functional.leaky_relu(x, 0.25).sum(), x)[0]
    assert got.tolist() == want.tolist() == [[0.25, 0.25, 1.0, 0.25, 1.0]]
    y = torch.tensor([[0.0, -0.0, 1.0, -1.0]], dtype=dtype, device=device)
    gx = kernels.bias_act_backward(torch.ones_like(y), y, 0.25)
    assert gx.tolist() == [[1.0, 0.25, 1.0, 0.25]]


@requires_compiled
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    kernels = compiled_ops(device)
    skip_without_kernel("bias_act", device)
    for layout in ("contiguous", "channels_last"):
        x = randn((2, 6, 3, 5), device=device, layout=layout, requires_grad=requires_grad)
        b = randn((6,), device=device, seed=1, requires_grad=requires_grad)
        torch.library.opcheck(kernels.bias_act.default, (x, b, "lrelu", 0.2))
        torch.library.opcheck(kernels.bias_act.default, (x, None, "linear", 0.2))
        g = randn((2, 6, 3, 5), device=device, layout=layout, seed=3, requires_grad=requires_grad)
        y = kernels.bias_act(x.detach(), b.detach(), "lrelu", 0.2)
        torch.library.opcheck(kernels.bias_act_backward.default, (g, y, 0.2))


@requires_compiled
def test_compiled_kernel_is_used(monkeypatch):
    skip_without_kernel("bias_act", "cpu")
    monkeypatch.setattr(reference, "bias_act", None)
    ops.bias_act(randn((2, 4, 3, 3)), torch.randn(4))


@pytest.mark.parametrize(
    "x, bias, kwargs, exc, match",
    [
        (torch.randn(2, 4, 3, 3), torch.randn(5), {}, ValueError, r"bias must have shape \[4\]"),
        (torch.randn(2, 4, 3, 3), torch.randn(4, dtype=torch.float64), {}, TypeError, "bias has dtype"),
        (torch.randn(2, 4, 3, 3), None, dict(act="relu"), ValueError, "act must be one of"),
        (torch.randn(2, 4, 3, 3), None, dict(alpha=-0.1), ValueError, "alpha"),
        (torch.randn(5), None, {}, ValueError, "rank"),
        (torch.randint(0, 3, (2, 4)), None, {}, TypeError, "float16, bfloat16"),
    ],
)
def test_invalid_inputs(x, bias, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ops.bias_act(x, bias, **kwargs)


@requires_compiled
def test_direct_op_call_validates():
    with pytest.raises(ValueError, match="act must be 'lrelu' or 'linear'"):
        torch.ops.progan_ext.bias_act(torch.randn(2, 4), None, "gelu", 0.2)
    with pytest.raises(ValueError, match="bias must have shape"):
        torch.ops.progan_ext.bias_act(torch.randn(2, 4), torch.randn(3), "lrelu", 0.2)


def test_keeps_dtype_under_autocast():
    x = randn((2, 8, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.bias_act(x, torch.randn(8)).dtype == torch.float32


@pytest.mark.parametrize("device", [pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_past_int32_indexing(device):
    skip_without_kernel("bias_act", device)
    x = torch.randn(2, 16, 8192, 8200, device=device, dtype=torch.float16)  # > 2^31 elements
    b = torch.randn(16, device=device, dtype=torch.float16)
    y = ops.bias_act(x, b)
    sl = (slice(1, 2), slice(None), slice(8190, 8192))
    assert_close(y[sl], reference.bias_act(x[sl].contiguous(), b), torch.float16)
