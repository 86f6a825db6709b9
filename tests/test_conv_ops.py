"""Equalized-LR convolution ops: compiled kernels vs progan_ext.reference, autograd to second
order, opcheck, argument validation, autocast and memory formats."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import DEVICES, compiled_ops, is_emulated

import progan_ext
from progan_ext import _ext, ops
from progan_ext import reference as ref

compiled = _ext.available
needs_ext = pytest.mark.skipif(not compiled, reason="progan_ext._C is not compiled")
device_param = pytest.mark.parametrize("device", DEVICES)  # "cuda": a GPU, or the emulated CUDA build
OPS = ("eq_conv2d", "upsample_conv2d", "conv2d_downsample")
BUILDING_BLOCKS = ("conv2d_resample", "conv2d_resample_grad_weight")

# (rtol, atol) relative to the output's magnitude; 16-bit: the reference convolves in 16-bit.
TOL = {
    torch.float64: (1e-9, 1e-9),
    torch.float32: (1e-4, 1e-4),
    torch.bfloat16: (4e-2, 4e-2),
    torch.float16: (5e-3, 5e-3),
}


def _cuda_ok(device):
    if device == "cuda" and not _ext.cuda_compiled():
        pytest.skip("no CUDA kernels in this build")


def _call(op, x, w, b=None, **kw):
    return getattr(ops, op)(x, w, b, **kw)


def _ref(op, x, w, b=None, **kw):
    return getattr(ref, op)(x, w, b, **kw)


def _inputs(op, n, cin, cout, h, w, k, dtype, device, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h, w, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    wt = torch.randn(cout, cin, k, k, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    b = torch.randn(cout, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype) if bias else None
    return x, wt, b


def _assert_close(out, want, dtype, device=None):
    _assert_close_tol(out, want, _tol(dtype, device))


def _tol(dtype, device):
    """TOL, except float32 on the CUDA kernels with TF32 allowed (PyTorch's default for convs): every
    conv then runs on TF32 tensor cores (10-bit mantissa), odd channel counts zero-padded."""
    cuda_kernels = device is not None and (str(device) == "cuda" or is_emulated(device))
    if cuda_kernels and dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return (5e-3, 5e-3)
    return TOL[dtype]


def _assert_close_tol(out, want, tol):
    rtol, atol = tol
    scale = max(1.0, want.double().abs().max().item())
    torch.testing.assert_close(out.double().cpu(), want.double().cpu(), rtol=rtol, atol=atol * scale)


def _ref64(op, x, w, b, **kw):
    """The reference in float64 (the truth the 16-bit kernels approximate)."""
    return _ref(op, x.double(), w.double(), None if b is None else b.double(), **kw)


# ----------------------------------------------------------------------------------------------
# Registration: the compiled op is the one that runs.


@needs_ext
@pytest.mark.parametrize("op", OPS + BUILDING_BLOCKS)
def test_compiled_cpu_kernel_registered(op):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"progan_ext::{op}", "CPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"progan_ext::{op}", "AutocastCPU")
    if op in OPS:
        assert ops.backend_info()["ops"][op]["cpu"] == "compiled C++ kernel"


# ----------------------------------------------------------------------------------------------
# Values against the reference.

CASES = [
    # op, n, cin, cout, h, w, k
    ("eq_conv2d", 2, 5, 7, 9, 6, 3),
    ("eq_conv2d", 1, 3, 13, 7, 11, 1),
    ("eq_conv2d", 2, 6, 4, 8, 5, 5),
    ("upsample_conv2d", 2, 5, 7, 5, 7, 3),
    ("upsample_conv2d", 1, 17, 3, 4, 4, 3),
    ("upsample_conv2d", 2, 3, 9, 1, 3, 3),
    ("conv2d_downsample", 2, 5, 7, 8, 6, 3),
    ("conv2d_downsample", 1, 9, 17, 2, 10, 3),
]


@device_param
@pytest.mark.parametrize("dtype", list(TOL), ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1:]))}")
def test_values_vs_reference(device, dtype, case):
    _cuda_ok(device)
    op, n, cin, cout, h, w, k = case
    x, wt, b = _inputs(op, n, cin, cout, h, w, k, dtype, device)
    for bias in (b, None):
        for act in ("lrelu", "linear"):
            for pn in ((False, True) if op != "conv2d_downsample" else (False,)):
                kw = dict(gain=math.sqrt(2), act=act, alpha=0.2)
                if op != "conv2d_downsample":
                    kw["pixel_norm"] = pn
                out = _call(op, x, wt, bias, **kw)
                assert out.dtype == dtype and out.device == x.device
                want = _ref(op, x, wt, bias, **kw) if dtype in (torch.float64, torch.float32) else _ref64(op, x, wt, bias, **kw)
                _assert_close(out, want, dtype, device)


@device_param
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "noncontig"])
def test_layouts(device, op, layout):
    _cuda_ok(device)
    x, wt, b = _inputs(op, 2, 6, 5, 6, 8, 3, torch.float32, device)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "noncontig":
        x = torch.cat([x, x], dim=3)[:, :, :, ::2]
        wt = torch.cat([wt, wt], dim=0)[::2]
        assert not x.is_contiguous() and not wt.is_contiguous()
    kw = dict(pixel_norm=True) if op != "conv2d_downsample" else {}
    out = _call(op, x, wt, b, **kw)
    _assert_close(out, _ref(op, x, wt, b, **kw), torch.float32, device)
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    else:
        assert out.is_contiguous()


@needs_ext
@pytest.mark.parametrize("mode,k", [("same", 1), ("same", 3), ("same", 5), ("up", 3), ("down", 3)])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
def test_building_blocks_vs_reference(mode, k, fmt):
    x, w, _ = _inputs("", 2, 4, 3, 6, 4, k, torch.float64, "cpu")
    x = x.to(memory_format=fmt)
    s = 0.37
    out = torch.ops.progan_ext.conv2d_resample(x, w, s, mode)
    if mode == "up":
        want = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w * s, padding=1)
    elif mode == "down":
        want = F.avg_pool2d(F.conv2d(x, w * s, padding=1), 2)
    else:
        want = F.conv2d(x, w * s, padding=k // 2)
    torch.testing.assert_close(out, want)
    assert out.is_contiguous(memory_format=fmt)
    g = torch.randn_like(want)
    w_ = w.clone().requires_grad_()
    (want_gw,) = torch.autograd.grad(
        {"up": lambda: F.conv2d(F.interpolate(x, scale_factor=2), w_ * s, padding=1),
         "down": lambda: F.avg_pool2d(F.conv2d(x, w_ * s, padding=1), 2),
         "same": lambda: F.conv2d(x, w_ * s, padding=k // 2)}[mode](), w_, g)
    gw = torch.ops.progan_ext.conv2d_resample_grad_weight(x, g, s, mode, k)
    torch.testing.assert_close(gw, want_gw)


@needs_ext
@pytest.mark.parametrize("cin,cout", [(3, 8), (16, 3)], ids=["narrow_in", "narrow_out"])
@pytest.mark.parametrize("hw", [8, 56], ids=["small", "large"])  # N*H*W around csrc kSmallGemmPixels (8192)
def test_1x1_paths_channels_last_fp32(cin, cout, hw):
    """The channels_last fp32 1x1 conv runs as a GEMM or through oneDNN depending on Cin and the
    pixel count (csrc/cpu/conv2d_resample.cpp, gemm_1x1): every branch against float64 conv2d."""
    g = torch.Generator().manual_seed(cin * 100 + hw)
    x = torch.randn(3, cin, hw, hw, generator=g).to(memory_format=torch.channels_last)
    w = torch.randn(cout, cin, 1, 1, generator=g)
    b = torch.randn(cout, generator=g)
    out = torch.ops.progan_ext.conv2d_resample(x, w, 0.5, "same")
    torch.testing.assert_close(out.double(), F.conv2d(x.double(), w.double() * 0.5), rtol=1e-4, atol=1e-4)
    assert out.is_contiguous(memory_format=torch.channels_last)
    y = ops.eq_conv2d(x, w, b, gain=1.0, act="linear")
    want = F.conv2d(x.double(), w.double() / math.sqrt(cin), b.double())
    torch.testing.assert_close(y.double(), want, rtol=1e-4, atol=1e-4)


@needs_ext
@pytest.mark.parametrize("k,flips", [(1, False), (3, True)])
def test_input_gradient_flips_only_kernels_with_more_than_one_tap(k, flips):
    """The adjoint of a 1x1 kernel is its transposed view: its backward makes no flip copy (a 3x3
    kernel's backward does, which shows the probe sees the op)."""
    x, w, b = _inputs("eq_conv2d", 2, 5, 3, 6, 6, k, torch.float32, "cpu")
    x.requires_grad_(True)
    y = ops.eq_conv2d(x, w, b, gain=1.0, act="linear")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert ("aten::flip" in {e.key for e in prof.key_averages()}) == flips
    xd = x.detach().double().requires_grad_(True)
    (want,) = torch.autograd.grad(F.conv2d(xd, w.double() / math.sqrt(5 * k * k), b.double(), padding=k // 2), xd,
                                  torch.ones_like(y, dtype=torch.float64))
    torch.testing.assert_close(gx.double(), want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Autograd: first and second derivatives in float64 through the compiled ops.

GRAD_CASES = [
    ("eq_conv2d", 3, dict(act="lrelu", pixel_norm=False)),
    ("eq_conv2d", 1, dict(act="linear", pixel_norm=True)),
    ("eq_conv2d", 3, dict(act="lrelu", pixel_norm=True)),
    ("upsample_conv2d", 3, dict(act="lrelu", pixel_norm=False)),
    ("upsample_conv2d", 3, dict(act="lrelu", pixel_norm=True)),
    ("conv2d_downsample", 3, dict(act="lrelu")),
    ("conv2d_downsample", 3, dict(act="linear")),
]


@device_param
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: f"{c[0]}-k{c[1]}-{c[2]['act']}-pn{c[2].get('pixel_norm', 0)}")
def test_gradcheck(device, case):
    _cuda_ok(device)
    op, k, kw = case
    x, w, b = _inputs(op, 1, 2, 3, 4, 4, k, torch.float64, device)
    args = [t.requires_grad_() for t in (x, w, b)]
    fn = lambda x, w, b: _call(op, x, w, b, gain=1.3, alpha=0.2, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    # fast mode (random projections of the Jacobian) keeps the second-order check quick
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@device_param
@pytest.mark.parametrize("mode,k", [("same", 3), ("same", 1), ("up", 3), ("down", 3)])
def test_gradcheck_building_blocks(device, mode, k):
    _cuda_ok(device)
    if not compiled:
        pytest.skip("building blocks exist only in the compiled extension")
    s = 3 if mode == "up" else 4  # up: a 3x3 map (6x6 output) keeps the numerical Jacobian small
    x, w, _ = _inputs("", 2, 3, 2, s, s, k, torch.float64, device)
    n, h = 2, {"up": 2 * s, "down": s // 2, "same": s}[mode]
    g = torch.randn(n, 2, h, h, dtype=torch.float64, device=device)
    kernels = compiled_ops(device)
    R = lambda x, w: kernels.conv2d_resample(x, w, 0.7, mode)  # noqa: E731
    GW = lambda x, g: kernels.conv2d_resample_grad_weight(x, g, 0.7, mode, k)  # noqa: E731
    for fn, args in ((R, (x, w)), (GW, (x, g))):
        args = [a.clone().requires_grad_() for a in args]
        assert torch.autograd.gradcheck(fn, args)
        assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@needs_ext
def test_gradient_penalty_matches_reference():
    """WGAN-GP style: differentiate the input gradient's norm with respect to the weights."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w1, w2 = (torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True),
              torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True))
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)

    def penalty(f):
        y = f.conv2d_downsample(f.eq_conv2d(x, w1, b, pixel_norm=True), w2, None).sum()
        (gx,) = torch.autograd.grad(y, x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (w1, w2, b))

    for got, want in zip(penalty(ops), penalty(ref)):
        torch.testing.assert_close(got, want)


# ----------------------------------------------------------------------------------------------
# opcheck (schema, fake kernel, autograd registration, torch.compile compatibility).


@needs_ext
@device_param
@pytest.mark.parametrize("requires_grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("op", OPS + BUILDING_BLOCKS)
def test_opcheck(device, requires_grad, op):
    _cuda_ok(device)
    x, w, b = _inputs(op, 2, 3, 4, 4, 6, 3, torch.float32, device)
    if op == "eq_conv2d":
        args = (x, w, b, 1.4, "lrelu", 0.2, True)
    elif op == "upsample_conv2d":
        args = (x.to(memory_format=torch.channels_last), w, b, 1.4, "lrelu", 0.2, True)
    elif op == "conv2d_downsample":
        args = (x, w, None, 1.4, "linear", 0.2)
    elif op == "conv2d_resample":
        args = (x, w, 0.5, "up")
    else:
        args = (x, torch.randn(2, 4, 2, 3, device=device), 0.5, "down", 3)
    args = tuple(a.requires_grad_(requires_grad) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(getattr(compiled_ops(device), op).default, args)


# ----------------------------------------------------------------------------------------------
# Bad inputs raise clear errors (through ops.* and straight into the compiled kernels).


def _bad_cases():
    x, w = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3)
    return [
        ("eq_conv2d", (x, torch.randn(5, 3, 3, 3)), {}, ValueError, "x has 4 channels but weight expects 3"),
        ("eq_conv2d", (x, torch.randn(5, 4, 2, 2)), {}, ValueError, "odd size"),
        ("eq_conv2d", (x, torch.randn(5, 4, 3)), {}, ValueError, "weight must have rank 4"),
        ("eq_conv2d", (x[0], w), {}, ValueError, "x must have rank 4"),
        ("eq_conv2d", (x, w.double()), {}, TypeError, "dtype"),
        ("eq_conv2d", (x, w, torch.randn(4)), {}, ValueError, r"bias must have shape \[5\]"),
        ("eq_conv2d", (x, w), {"act": "relu"}, ValueError, "act"),
        ("eq_conv2d", (x, w), {"alpha": -1.0}, ValueError, "alpha"),
        ("eq_conv2d", (x, w), {"gain": math.inf}, ValueError, "gain must be a finite number"),
        ("upsample_conv2d", (x, torch.randn(5, 4, 1, 1)), {}, ValueError, "kernel size must be one of"),
        ("conv2d_downsample", (torch.randn(2, 4, 5, 6), w), {}, ValueError, "height and width must be even"),
        ("conv2d_downsample", (x.int(), w), {}, TypeError, "float16, bfloat16, float32 or float64"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: f"{c[0]}-{c[4] or c[3].__name__}")
def test_bad_inputs(case):
    op, args, kw, exc, msg = case
    with pytest.raises(exc, match=msg):
        getattr(ops, op)(*args, **kw)


@needs_ext
@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: f"{c[0]}-{c[4] or c[3].__name__}")
def test_bad_inputs_compiled(case):
    op, args, kw, exc, msg = case
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    kw = {"gain": math.sqrt(2), "act": "lrelu", "alpha": 0.2, **kw}
    extra = () if op == "conv2d_downsample" else (False,)
    with pytest.raises(exc, match=msg):
        getattr(torch.ops.progan_ext, op)(x, w, b, kw["gain"], kw["act"], kw["alpha"], *extra)


@needs_ext
def test_bad_building_block_args():
    x, w = torch.randn(2, 4, 6, 6), torch.randn(5, 4, 3, 3)
    with pytest.raises(ValueError, match="mode must be 'same', 'up' or 'down'"):
        torch.ops.progan_ext.conv2d_resample(x, w, 1.0, "sideways")
    with pytest.raises(ValueError, match="does not match x"):
        torch.ops.progan_ext.conv2d_resample_grad_weight(x, torch.randn(2, 5, 6, 6), 1.0, "up", 3)
    with pytest.raises(ValueError, match="kernel_size must be a positive odd number"):
        torch.ops.progan_ext.conv2d_resample_grad_weight(x, torch.randn(2, 5, 6, 6), 1.0, "same", 2)
    with pytest.raises(TypeError, match="dtype"):
        torch.ops.progan_ext.conv2d_resample_grad_weight(x, torch.randn(2, 5, 6, 6).double(), 1.0, "same", 3)


# ----------------------------------------------------------------------------------------------
# Autocast: the conv ops follow PyTorch's conv policy.


@device_param
@pytest.mark.parametrize("op", OPS)
def test_autocast(device, op):
    _cuda_ok(device)
    dt = torch.bfloat16 if device == "cpu" else torch.float16
    x, w, b = _inputs(op, 2, 4, 6, 6, 6, 3, torch.float32, device)
    with torch.autocast(device, dtype=dt):
        out = _call(op, x, w, b)
        want = _ref(op, x, w, b)
        assert want.dtype == dt  # what PyTorch's own conv2d does
        assert out.dtype == dt
        # mixed inputs (a previous autocast layer's output and fp32 weights) are fine too
        out2 = _call(op, x.to(dt), w, b)
        assert out2.dtype == dt
        if compiled:
            extra = () if op == "conv2d_downsample" else (False,)
            direct = getattr(compiled_ops(device), op)(x, w, b, math.sqrt(2), "lrelu", 0.2, *extra)
            assert direct.dtype == dt
            pn = ops.pixel_norm(x)
            assert pn.dtype == torch.float32  # element-wise ops keep their dtype
    _assert_close(out, _ref64(op, x.to(dt), w.to(dt), b.to(dt)), dt)


@needs_ext
def test_autocast_backward():
    x, w, b = _inputs("eq_conv2d", 2, 4, 6, 6, 6, 3, torch.float32, "cpu")
    w.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.eq_conv2d(x, w, b, pixel_norm=True)
    y.float().square().sum().backward()
    assert w.grad.dtype == torch.float32 and torch.isfinite(w.grad).all()


# ----------------------------------------------------------------------------------------------
# CUDA only: every ProGAN layer shape and a tensor past 2^31 elements.


def _ch(res):
    """Channels of the ProGAN block at resolution res (SPEC: 512 up to 32x32, then halving)."""
    return min(512, 16384 // res)


PROGAN_LAYERS = [8, 16, 32, 64, 128, 256, 512, 1024]


@pytest.mark.parametrize("device", DEVICES[1:])
@pytest.mark.parametrize("res", PROGAN_LAYERS)
def test_progan_layer_shapes_cuda(device, res):
    """Every layer shape of the official networks. Emulated: the official channel counts at a 4x4
    (8x8) map and one sample, since the kernels' access pattern does not change with the map size,
    and only the resolutions whose channels differ."""
    _cuda_ok(device)
    if is_emulated(device) and res in (16, 32, 128, 512):
        pytest.skip("same channel counts as a neighbouring resolution; emulation is slow")
    cin, cout = _ch(res // 2), _ch(res)  # G: upsample_conv2d cin -> cout; D: conv2d_downsample cout -> cin
    size = min(res, 8) if is_emulated(device) else res
    n = 1 if is_emulated(device) else 2  # one sample takes the same paths (tiles, split-K) as two
    for dtype in (torch.float32, torch.float16):
        # float32 convolutions take TF32 tensor cores when PyTorch's conv setting allows (the default)
        tol = (5e-3, 5e-3) if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 else TOL[dtype]
        x, w, b = _inputs("", n, cin, cout, size // 2, size // 2, 3, dtype, device)
        got, want = ops.upsample_conv2d(x, w, b, pixel_norm=True), _ref64("upsample_conv2d", x, w, b, pixel_norm=True)
        _assert_close_tol(got, want, tol)
        x, w, b = _inputs("", n, cout, cout, size, size, 3, dtype, device)
        _assert_close_tol(ops.eq_conv2d(x, w, b, pixel_norm=True), _ref64("eq_conv2d", x, w, b, pixel_norm=True), tol)
        x, w, b = _inputs("", n, cout, cin, size, size, 3, dtype, device)
        _assert_close_tol(ops.conv2d_downsample(x, w, b), _ref64("conv2d_downsample", x, w, b), tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_past_2_31_elements_cuda():
    _cuda_ok("cuda")
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:
        pytest.skip("needs a GPU with 40 GiB")
    x = torch.randn(1, 8, 1024, 1024, device="cuda", dtype=torch.float16)
    w = torch.randn(520, 8, 3, 3, device="cuda", dtype=torch.float16)  # output 520*2048^2 > 2^31
    out = ops.upsample_conv2d(x, w, None, act="linear")
    assert out.numel() > 2**31
    idx = [0, 260, 519]
    want = ref.upsample_conv2d(x, w[idx], None, act="linear")
    _assert_close(out[:, idx], want, torch.float16)
