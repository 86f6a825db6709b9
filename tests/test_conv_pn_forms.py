"""The pixel-normed conv forms eq_conv2d_pn / upsample_conv2d_pn: (y, r) with r the per-pixel
inverse norm of the pre-norm activation, which progan_ext.ops calls for pixel_norm=True so that
backward needs no second convolution. Values of both outputs against the reference, first and
second derivatives through both outputs, opcheck, and that the public functions use them."""

import math

import pytest
import torch

from conftest import DEVICES, compiled_ops, is_emulated

from progan_ext import _ext, ops
from progan_ext import reference as ref

pytestmark = pytest.mark.skipif(not _ext.available, reason="progan_ext._C is not compiled")
device_param = pytest.mark.parametrize("device", DEVICES)  # "cuda": a GPU, or the emulated CUDA build
FORMS = {"eq_conv2d_pn": "eq_conv2d", "upsample_conv2d_pn": "upsample_conv2d"}
EPS = 1e-8
TOL = {torch.float64: (1e-9, 1e-9), torch.float32: (1e-4, 1e-4), torch.bfloat16: (4e-2, 4e-2)}


def _cuda_ok(device):
    if device == "cuda" and not _ext.cuda_compiled():
        pytest.skip("no CUDA kernels in this build")


def _inputs(n, cin, cout, h, w, k, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=gen, dtype=torch.float64)
    wt = torch.randn(cout, cin, k, k, generator=gen, dtype=torch.float64)
    b = torch.randn(cout, generator=gen, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, wt, b))


def _want(form, x, w, b, act):
    """(y, r) from the float64 reference: r = rsqrt(mean_c(a^2) + eps) of a = the op without norm."""
    op = getattr(ref, FORMS[form])
    x, w, b = (t.double() for t in (x, w, b))
    a = op(x, w, b, gain=math.sqrt(2), act=act, alpha=0.2, pixel_norm=False)
    r = torch.rsqrt(a.square().mean(dim=1, keepdim=True) + EPS)
    return a * r, r


@device_param
@pytest.mark.parametrize("dtype", list(TOL), ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("form, k, cout", [("eq_conv2d_pn", 3, 7), ("eq_conv2d_pn", 1, 80),
                                           ("upsample_conv2d_pn", 3, 5)])
def test_values_of_both_outputs(device, dtype, layout, form, k, cout):
    _cuda_ok(device)
    x, w, b = _inputs(2, 8, cout, 5, 6, k, dtype, device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    for act in ("lrelu", "linear"):
        y, r = getattr(compiled_ops(device), form)(x, w, b, math.sqrt(2), act, 0.2)
        want_y, want_r = _want(form, x, w, b, act)
        assert y.dtype == dtype and y.shape == want_y.shape
        assert r.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert r.shape == (y.shape[0], 1, y.shape[2], y.shape[3]) and r.is_contiguous()
        if layout == "channels_last":
            assert y.is_contiguous(memory_format=torch.channels_last)
        rtol, atol = TOL[dtype]
        r_tol = 1e-9 if dtype == torch.float64 else 1e-4 if dtype == torch.float32 else 2e-2
        cuda_kernels = device == "cuda" or is_emulated(device)
        if cuda_kernels and dtype == torch.float32:  # the CUDA fp32 fast path is TF32 (10-bit mantissa)
            rtol, atol, r_tol = 1e-2, 2e-3, 5e-3
        torch.testing.assert_close(y.double(), want_y, rtol=rtol, atol=atol * max(1.0, want_y.abs().max().item()))
        # r comes from the accumulator before rounding to the output dtype
        torch.testing.assert_close(r.double(), want_r, rtol=r_tol, atol=0.0)
        # the plain op with pixel_norm=True writes the same y
        plain = getattr(compiled_ops(device), FORMS[form])(x, w, b, math.sqrt(2), act, 0.2, True)
        torch.testing.assert_close(y, plain, rtol=0, atol=0)


@device_param
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("act", ["lrelu", "linear"])
def test_gradcheck_through_both_outputs(device, form, act):
    """First and second derivatives of (y, r) in float64: the r-gradient term is exercised too."""
    _cuda_ok(device)
    x, w, b = _inputs(1, 3, 4, 4, 4, 3, torch.float64, device, seed=3)
    args = [t.requires_grad_() for t in (x, w, b)]
    kernel = getattr(compiled_ops(device), form)
    fn = lambda x, w, b: kernel(x, w, b, 1.3, act, 0.2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)
    only_y = lambda x, w, b: kernel(x, w, b, 1.3, act, 0.2)[0]  # noqa: E731  (r's gradient None)
    assert torch.autograd.gradcheck(only_y, args)


@device_param
@pytest.mark.parametrize("op", list(FORMS.values()))
def test_plain_op_with_pixel_norm_still_differentiates(device, op):
    """torch.ops.<ns>.eq_conv2d(..., pixel_norm=True) called directly keeps its own backward
    (recomputing the pre-norm activation); progan_ext.ops no longer takes that path."""
    _cuda_ok(device)
    x, w, b = _inputs(1, 2, 3, 4, 4, 3, torch.float64, device, seed=5)
    args = [t.requires_grad_() for t in (x, w, b)]
    kernel = getattr(compiled_ops(device), op)
    fn = lambda x, w, b: kernel(x, w, b, 1.3, "lrelu", 0.2, True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@device_param
@pytest.mark.parametrize("form", list(FORMS))
def test_public_function_uses_the_pn_form(device, form, monkeypatch):
    """ops.eq_conv2d / ops.upsample_conv2d with pixel_norm=True run the (y, r) form, and without
    pixel norm the plain op; the gradients equal the reference's."""
    _cuda_ok(device)
    # an emulated "cuda" case runs on CPU tensors: conftest routes "cpu" to the emulated namespace
    table = ops.KERNELS["cuda" if device == "cuda" and not is_emulated(device) else "cpu"][1]
    assert form in table
    calls = []
    real = table[form]
    monkeypatch.setitem(table, form, lambda *a: calls.append(a) or real(*a))
    x, w, b = _inputs(2, 4, 6, 4, 4, 3, torch.float64, device, seed=7)
    args = [t.requires_grad_() for t in (x, w, b)]
    public = getattr(ops, FORMS[form])
    y = public(*args, pixel_norm=True)
    assert len(calls) == 1
    public(*args, pixel_norm=False)
    assert len(calls) == 1
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, args, g)
    want = torch.autograd.grad(getattr(ref, FORMS[form])(*args, pixel_norm=True), args, g)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


@device_param
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("form", list(FORMS))
def test_opcheck(device, requires_grad, form):
    _cuda_ok(device)
    x, w, b = _inputs(2, 3, 4, 4, 6, 3, torch.float32, device)
    if form == "upsample_conv2d_pn":
        x = x.to(memory_format=torch.channels_last)
    args = tuple(t.requires_grad_(requires_grad) for t in (x, w, b)) + (1.4, "lrelu", 0.2)
    torch.library.opcheck(getattr(compiled_ops(device), form).default, args)


def test_autocast_runs_the_form_in_the_autocast_dtype():
    x, w, b = _inputs(2, 4, 5, 4, 4, 3, torch.float32, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, r = torch.ops.progan_ext.eq_conv2d_pn(x, w, b, 1.4, "lrelu", 0.2)
    assert y.dtype == torch.bfloat16 and r.dtype == torch.float32
