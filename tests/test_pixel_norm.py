"""pixel_norm: kernels vs reference, derivatives, opcheck, validation."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from conftest import DEVICES, compiled_ops, FLOAT_DTYPES, LAYOUTS, assert_close, randn, requires_compiled, skip_without_kernel
from progan_ext import ops, reference

SHAPES = [(4, 16, 8, 8), (1, 3, 5, 7), (2, 512, 4, 4), (3, 24, 1, 1), (6, 10)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference(device, dtype, layout, shape):
    skip_without_kernel("pixel_norm", device)
    x = randn(shape, dtype=dtype, device=device, layout=layout) * 3
    y = ops.pixel_norm(x)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, reference.pixel_norm(x), dtype)
    if layout == "channels_last" and x.dim() == 4:
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_matches_reference(device, dtype, layout):
    skip_without_kernel("pixel_norm", device)
    x = randn((3, 20, 6, 5), dtype=dtype, device=device, layout=layout, requires_grad=True)
    g = randn((3, 20, 6, 5), dtype=dtype, device=device, seed=1)
    (gx,) = torch.autograd.grad(ops.pixel_norm(x, 1e-3), x, g)
    (gr,) = torch.autograd.grad(reference.pixel_norm(x, 1e-3), x, g)
    assert_close(gx, gr, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 7)], ids=str)
def test_gradcheck_and_gradgradcheck(device, layout, shape):
    skip_without_kernel("pixel_norm", device)
    x = randn(shape, dtype=torch.float64, device=device, layout=layout, requires_grad=True)
    fn = lambda t: ops.pixel_norm(t, 1e-2)  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@requires_compiled
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    kernels = compiled_ops(device)
    skip_without_kernel("pixel_norm", device)
    x = randn((2, 6, 3, 5), device=device, requires_grad=requires_grad)
    torch.library.opcheck(kernels.pixel_norm.default, (x, 1e-8))
    xc = randn((2, 6, 3, 5), device=device, layout="channels_last", requires_grad=requires_grad)
    torch.library.opcheck(kernels.pixel_norm.default, (xc, 1e-8))
    g = randn((2, 6, 3, 5), device=device, seed=3, requires_grad=requires_grad)
    torch.library.opcheck(kernels.pixel_norm_backward.default, (g, x.detach().requires_grad_(requires_grad), 1e-8))


@requires_compiled
def test_compiled_kernel_is_used(monkeypatch):
    skip_without_kernel("pixel_norm", "cpu")

    def boom(*args, **kwargs):
        raise AssertionError("reference path used although a compiled kernel exists")

    monkeypatch.setattr(reference, "pixel_norm", boom)
    x = randn((2, 4, 3, 3))
    ops.pixel_norm(x)


def test_keeps_dtype_under_autocast():
    x = randn((2, 8, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.pixel_norm(x).dtype == torch.float32
        assert ops.pixel_norm(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((torch.randn(2, 3, 4),), ValueError, "rank 2 or 4"),
        ((torch.randn(2, 3, 4, 4, 1),), ValueError, "rank 2 or 4"),
        ((torch.randint(0, 5, (2, 3)),), TypeError, "float16, bfloat16, float32 or float64"),
        ((torch.randn(2, 3), 0.0), ValueError, "eps must be a positive"),
        ((torch.randn(2, 3), -1.0), ValueError, "eps must be a positive"),
        ((torch.randn(2, 3), float("nan")), ValueError, "eps must be a positive"),
        (([1.0, 2.0],), TypeError, "must be a torch.Tensor"),
    ],
)
def test_invalid_inputs(args, exc, match):
    with pytest.raises(exc, match=match):
        ops.pixel_norm(*args)


@requires_compiled
def test_direct_op_call_validates():
    with pytest.raises(ValueError, match="rank 2 or 4"):
        torch.ops.progan_ext.pixel_norm(torch.randn(3), 1e-8)
    with pytest.raises(ValueError, match="eps must be a positive"):
        torch.ops.progan_ext.pixel_norm(torch.randn(3, 4), -1.0)
    with pytest.raises(ValueError, match="shape"):
        torch.ops.progan_ext.pixel_norm_backward(torch.randn(3, 5), torch.randn(3, 4), 1e-8)


@pytest.mark.parametrize("device", DEVICES)
def test_compiles_with_torch_compile(device):
    skip_without_kernel("pixel_norm", device)
    x = randn((2, 6, 4, 4), device=device, requires_grad=True)
    w = randn((2, 6, 4, 4), device=device, seed=5)
    fn = torch.compile(lambda t: (ops.pixel_norm(t) * w).sum(), backend="aot_eager", fullgraph=True)
    (g1,) = torch.autograd.grad(fn(x), x)
    (g2,) = torch.autograd.grad((reference.pixel_norm(x) * w).sum(), x)
    assert_close(g1, g2, torch.float32)


@pytest.mark.parametrize("device", [pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_past_int32_indexing(device):
    skip_without_kernel("pixel_norm", device)
    n, c, h, w = 2, 16, 8192, 8200  # 2.1e9 elements > 2^31
    x = torch.randn(n, c, h, w, device=device, dtype=torch.bfloat16)
    y = ops.pixel_norm(x)
    for sl in [(slice(None), slice(None), slice(0, 2)), (slice(1, 2), slice(None), slice(h - 2, h))]:
        assert_close(y[sl], reference.pixel_norm(x[sl].contiguous()), torch.bfloat16)


# ---- pixel_norm_backward_from_output: the pixel-normed convs' backward from y and the saved r ----
def _y_and_r(x):
    """y = pixel_norm(x) in x's dtype and r = rsqrt(mean_c(x^2) + 1e-8) in the accumulation dtype."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    r = torch.rsqrt(x.to(acc).square().mean(1, keepdim=True) + 1e-8)
    return (x.to(acc) * r).to(x.dtype), r.contiguous()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(4, 16, 8, 8), (1, 3, 5, 7), (2, 512, 4, 4), (6, 10)], ids=str)
def test_backward_from_output_matches_formula_and_backward(device, dtype, layout, shape):
    kernels = compiled_ops(device)
    skip_without_kernel("pixel_norm", device)
    x = randn(shape, dtype=dtype, device=device, layout=layout) * 3
    g = randn(shape, dtype=dtype, device=device, layout=layout, seed=1)
    y, r = _y_and_r(x)
    gx = kernels.pixel_norm_backward_from_output(g, y, r)
    assert gx.dtype == dtype and gx.shape == x.shape
    if layout == "channels_last" and len(shape) == 4:
        assert gx.is_contiguous(memory_format=torch.channels_last)
    y64, g64, r64 = y.double(), g.double(), r.double()
    want = r64 * (g64 - y64 * (g64 * y64).mean(1, keepdim=True))
    assert_close(gx.double(), want, dtype)
    # the same gradient as pixel_norm_backward from the input (exactly so in float64)
    if dtype == torch.float64:
        assert_close(gx, kernels.pixel_norm_backward(g, x, 1e-8), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 7)], ids=str)
def test_backward_from_output_gradcheck_and_gradgradcheck(device, layout, shape):
    kernels = compiled_ops(device)
    skip_without_kernel("pixel_norm", device)
    g = randn(shape, dtype=torch.float64, device=device, layout=layout, requires_grad=True)
    y = randn(shape, dtype=torch.float64, device=device, layout=layout, seed=1, requires_grad=True)
    rshape = (shape[0], 1, *shape[2:])
    r = (randn(rshape, dtype=torch.float64, device=device, seed=2).abs() + 0.5).requires_grad_()
    fn = kernels.pixel_norm_backward_from_output
    assert gradcheck(fn, (g, y, r))
    assert gradgradcheck(fn, (g, y, r))


@requires_compiled
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_backward_from_output_opcheck(device, requires_grad):
    kernels = compiled_ops(device)
    skip_without_kernel("pixel_norm", device)
    for layout in ("contiguous", "channels_last"):
        y, r = _y_and_r(randn((2, 6, 3, 5), device=device, layout=layout))
        g = randn((2, 6, 3, 5), device=device, layout=layout, seed=3)
        args = tuple(t.detach().requires_grad_(requires_grad) for t in (g, y, r))
        torch.library.opcheck(kernels.pixel_norm_backward_from_output.default, args)


@requires_compiled
@pytest.mark.parametrize("device", DEVICES)
def test_backward_from_output_validates(device):
    kernels = compiled_ops(device)
    skip_without_kernel("pixel_norm", device)
    y, r = _y_and_r(randn((2, 6, 3, 5), device=device))
    g = randn((2, 6, 3, 5), device=device, seed=3)
    with pytest.raises(TypeError, match="r must be Float"):
        kernels.pixel_norm_backward_from_output(g, y, r.double())
    with pytest.raises(ValueError, match=r"r must have shape \[2, 1, 3, 5\]"):
        kernels.pixel_norm_backward_from_output(g, y, r[:, :, :2])
    with pytest.raises(ValueError, match="shape"):
        kernels.pixel_norm_backward_from_output(g[:, :5], y, r)
