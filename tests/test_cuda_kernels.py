"""The CUDA kernels path by path: real CUDA where a GPU exists, else the emulated build
(docs/emulated_cuda.md), else skipped. Each case names the kernel paths it must take (the host code
reports them), so a change in the path choice is a test failure, not a silent loss of coverage.

The per-op test files run the public API's "cuda" cases through the same kernels; this file covers
the matrix of issue 10: igemm and simple paths, norm in the tile (Cout <= 64) and the norm pass,
grad-weight fast and simple, the three modes, fp16 / bf16 / fp32 with TF32 on and off / fp64, NCHW,
channels_last, non-contiguous and misaligned inputs, odd sizes, Cin 3..513 and Cout 3..520.
"""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from progan_ext import _ext, emulated
from progan_ext import reference as ref


@dataclass
class CudaKernels:
    ops: object  # torch.ops.progan_ext (GPU) or torch.ops.progan_ext_emu (emulated)
    device: str
    emulated: bool

    def paths(self, reset=True) -> dict:
        text = self.ops.kernel_path_counts(reset)
        return {k: int(v) for k, v in (item.split("=") for item in text.split(";") if item)}


@pytest.fixture
def cuda(monkeypatch):
    if torch.cuda.is_available() and _ext.cuda_compiled():
        k = CudaKernels(torch.ops.progan_ext, "cuda", False)
    elif emulated.available:
        k = CudaKernels(emulated.ops(), "cpu", True)
    else:
        pytest.skip("no GPU and no emulated CUDA module (PROGAN_EXT_EMULATE=1)")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    k.paths(reset=True)
    return k


def needs_emulator(cuda):
    if not cuda.emulated:
        pytest.skip("drives the emulated device's knobs")


def rand(shape, dtype, device, layout="nchw", seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=gen, dtype=torch.float64)
    if layout == "noncontig":
        t = torch.cat([t, t], dim=3)[..., ::2]
    t = t.to(device=device, dtype=dtype)
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    if layout == "misaligned":  # contiguous, but the data pointer is one element past 16-byte alignment
        flat = torch.empty(t.numel() + 1, dtype=dtype, device=device)
        t = flat[1:].view(t.shape).copy_(t)
        assert t.data_ptr() % 16 != 0
    if layout == "cl_misaligned":  # channels_last, the data pointer one element past 16-byte alignment
        flat = torch.empty(t.numel() + 1, dtype=dtype, device=device)
        n, c, h, w = t.shape
        t = flat[1:].view(n, h, w, c).permute(0, 3, 1, 2).copy_(t)
        assert t.is_contiguous(memory_format=torch.channels_last) and t.data_ptr() % 16 != 0
    return t


TOL = {torch.float64: 1e-9, torch.float32: 2e-5, "tf32": 5e-3, torch.float16: 5e-3, torch.bfloat16: 4e-2}


def assert_close_scaled(out, want, tol):
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(out.double().cpu(), want.double().cpu(), rtol=tol, atol=tol * scale)


def conv_dtype(dtype, monkeypatch):
    """(torch dtype, tolerance) of a conv case: "tf32" is float32 with TF32 allowed; any other
    float32 case runs with TF32 off (the simple or pointwise paths, full fp32 accuracy)."""
    if dtype == "tf32":
        return torch.float32, TOL["tf32"]
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    return dtype, TOL[dtype]


OP_OF_MODE = {"same": "eq_conv2d", "up": "upsample_conv2d", "down": "conv2d_downsample"}

# mode, dtype ("tf32": float32 with TF32 on), layout, N, H, W, Cin, Cout, pixel_norm, expected paths
CONV_CASES = [
    ("same", torch.float16, "nchw", 1, 3, 5, 8, 16, True, {"conv.igemm", "conv.norm_in_tile"}),
    ("same", torch.bfloat16, "channels_last", 3, 17, 9, 24, 65, True, {"conv.igemm", "conv.norm_pass"}),
    ("same", "tf32", "nchw", 1, 1, 1, 16, 64, True, {"conv.igemm_tf32", "conv.norm_in_tile"}),
    ("same", torch.float32, "channels_last", 3, 3, 5, 8, 16, True, {"conv.simple", "conv.norm_pass"}),
    ("same", torch.float64, "noncontig", 1, 17, 9, 3, 3, False, {"conv.simple"}),
    # Cin % 8 != 0 (fromRGB's 3, the D 4x4 block's 513): zero-padded to the vector width
    ("same", torch.bfloat16, "nchw", 1, 3, 5, 3, 16, False, {"conv.igemm", "conv.cin_padded"}),
    ("same", torch.bfloat16, "nchw", 1, 3, 3, 513, 16, True,  # 153 K steps on 1 tile: split-K, norm after it
     {"conv.igemm", "conv.cin_padded", "conv.split_k", "conv.norm_pass"}),
    ("same", torch.bfloat16, "nchw", 2, 5, 6, 64, 16, True, {"conv.igemm", "conv.norm_in_tile"}),  # 2 steps/tap
    ("same", "tf32", "channels_last", 2, 5, 7, 3, 16, False, {"conv.igemm_tf32", "conv.cin_padded"}),
    ("same", torch.float16, "nchw", 1, 3, 5, 16, 520, True, {"conv.igemm", "conv.norm_pass"}),
    ("same", torch.float16, "misaligned", 1, 3, 5, 16, 16, False, {"conv.igemm"}),  # NCHW: copied to NHWC
    # narrow blocks (<= 32 live channels: warps on 16-row slices): 24 = 1.5 fragments; 96 = 64 + 32
    ("same", torch.bfloat16, "channels_last", 2, 9, 9, 16, 24, True, {"conv.igemm", "conv.norm_in_tile"}),
    ("same", "tf32", "nchw", 2, 9, 8, 8, 96, False, {"conv.igemm_tf32"}),
    ("up", torch.float16, "channels_last", 3, 1, 1, 8, 3, False, {"conv.igemm"}),   # Cout padded to the vector
    ("up", torch.bfloat16, "nchw", 1, 3, 5, 16, 65, True, {"conv.igemm", "conv.norm_pass"}),
    ("up", "tf32", "channels_last", 1, 17, 9, 24, 16, True, {"conv.igemm_tf32", "conv.norm_in_tile"}),
    ("up", torch.float32, "nchw", 3, 3, 5, 8, 64, True, {"conv.simple", "conv.norm_pass"}),
    ("up", torch.float64, "channels_last", 1, 1, 1, 3, 3, True, {"conv.simple", "conv.norm_pass"}),
    ("up", torch.float16, "nchw", 1, 3, 3, 513, 8, False, {"conv.igemm", "conv.cin_padded", "conv.split_k"}),
    ("down", torch.bfloat16, "nchw", 3, 4, 6, 16, 520, False, {"conv.igemm"}),
    ("down", torch.float16, "channels_last", 1, 18, 10, 24, 3, False, {"conv.igemm"}),
    ("down", "tf32", "noncontig", 1, 4, 6, 8, 65, False, {"conv.igemm_tf32"}),
    ("down", torch.float32, "nchw", 1, 2, 2, 3, 16, False, {"conv.simple"}),  # fp32 without TF32
    ("down", "tf32", "nchw", 1, 4, 6, 513, 16, False, {"conv.igemm_tf32", "conv.cin_padded", "conv.split_k"}),
    ("down", torch.float64, "channels_last", 3, 4, 6, 16, 16, False, {"conv.simple"}),
    ("down", torch.bfloat16, "misaligned", 1, 4, 6, 8, 16, False, {"conv.igemm"}),
]


def with_counts(paths, *tensors):
    """{path: 1} for a call on these tensors, with_nchw_loads."""
    return {p: 1 for p in with_nchw_loads(paths, *tensors)}


def with_nchw_loads(paths, *tensors):
    """The paths of a conv (or a weight gradient) on these tensors, where the cases list the paths
    with the NHWC copy: the tensor-core kernels read NCHW inputs in place ("conv.nchw_loads",
    "grad_weight.nchw_loads"; the weight gradient then pads no channels). NCHW: contiguous (also
    where the layouts coincide: 1x1 images) or contiguous in neither format (copied to NCHW)."""
    nchw = all(t.is_contiguous() or not t.is_contiguous(memory_format=torch.channels_last) for t in tensors)
    out = set(paths)
    if nchw and out & {"conv.igemm", "conv.igemm_tf32"}:
        out.add("conv.nchw_loads")
    if nchw and out & {"grad_weight.igemm", "grad_weight.igemm_tf32"}:
        out = (out - {"grad_weight.channels_padded"}) | {"grad_weight.nchw_loads"}
    return out


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, [c[0], str(c[1]).split(".")[-1], *c[2:9]])))
def test_conv_paths_and_values(cuda, monkeypatch, case):
    mode, dtype, layout, n, h, w, cin, cout, pn, paths = case
    dtype, tol = conv_dtype(dtype, monkeypatch)
    x = rand((n, cin, h, w), dtype, cuda.device, layout)
    wt = rand((cout, cin, 3, 3), dtype, cuda.device, seed=1)
    b = rand((cout,), dtype, cuda.device, seed=2)
    op = OP_OF_MODE[mode]
    extra = () if mode == "down" else (pn,)
    out = getattr(cuda.ops, op)(x, wt, b, math.sqrt(2), "lrelu", 0.2, *extra)
    assert cuda.paths() == {p: 1 for p in with_nchw_loads(paths, x)}
    kw = dict(gain=math.sqrt(2), act="lrelu", alpha=0.2, **({} if mode == "down" else {"pixel_norm": pn}))
    want = getattr(ref, op)(x.double().cpu(), wt.double().cpu(), b.double().cpu(), **kw)
    assert out.dtype == dtype and out.shape == want.shape
    assert_close_scaled(out, want, tol)
    assert out.is_contiguous(memory_format=suggest_memory_format(x))  # the input's layout


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[2] in ("nchw", "misaligned", "noncontig")
                                  and c[9] & {"conv.igemm", "conv.igemm_tf32"}],
                         ids=lambda c: "-".join(map(str, [c[0], str(c[1]).split(".")[-1], *c[2:9]])))
def test_conv_nchw_in_place_equals_the_nhwc_copy(cuda, monkeypatch, case):
    """A tensor-core conv of an NCHW input reads it in place (AColsNchw, column-major A tiles) or,
    with set_conv_nchw_loads(False) (autotuning's other candidate), from an NHWC copy with the
    channels padded (ARowsNhwc): the same A values in the same K order, so the same bits."""
    mode, dtype, layout, n, h, w, cin, cout, pn, paths = case
    dtype, _ = conv_dtype(dtype, monkeypatch)
    x = rand((n, cin, h, w), dtype, cuda.device, layout)
    wt = rand((cout, cin, 3, 3), dtype, cuda.device, seed=1)
    b = rand((cout,), dtype, cuda.device, seed=2)
    extra = () if mode == "down" else (pn,)
    run = lambda: getattr(cuda.ops, OP_OF_MODE[mode])(x, wt, b, math.sqrt(2), "lrelu", 0.2, *extra)
    in_place = run()
    assert cuda.paths() == with_counts(paths, x)
    assert cuda.ops.set_conv_nchw_loads(False) is True
    try:
        copied = run()
    finally:
        assert cuda.ops.set_conv_nchw_loads(True) is False
    assert cuda.paths() == {p: 1 for p in paths}
    assert torch.equal(in_place, copied)
    # conv2d_resample (the input gradient's conv of grad_out) reads NCHW in place too, and equals
    # the conv of the channels_last input
    lin = cuda.ops.conv2d_resample(x, wt, 0.5, mode)
    assert "conv.nchw_loads" in cuda.paths()
    lin_cl = cuda.ops.conv2d_resample(x.contiguous(memory_format=torch.channels_last), wt, 0.5, mode)
    assert torch.equal(lin, lin_cl.contiguous())


# 1x1 convs with <= 4 channels on one side (toRGB, fromRGB, their input gradients) read their input
# in place (conv_pointwise.cuh): a thread per pixel on NCHW ("conv.pointwise"), a group of lanes per
# pixel over the long rows on channels_last ("conv.pointwise_rows": 16-byte vectors when the rows
# allow, else one element per lane); the rest of the 1x1 convs stay on the tensor cores.
# dtype, layout, N, H, W, Cin, Cout, act, bias, pixel_norm, weight transposed, expected paths
POINTWISE_CASES = [
    (torch.bfloat16, "nchw", 2, 17, 9, 16, 3, "linear", True, False, False, {"conv.pointwise"}),  # toRGB
    (torch.float16, "nchw", 3, 5, 7, 3, 16, "lrelu", True, False, False, {"conv.pointwise"}),  # fromRGB
    ("tf32", "noncontig", 1, 4, 6, 300, 3, "lrelu", False, True, False, {"conv.pointwise"}),  # 2 Cin chunks
    (torch.float64, "nchw", 2, 3, 5, 3, 300, "lrelu", True, True, False, {"conv.pointwise"}),  # 2 Cout chunks
    (torch.float32, "misaligned", 1, 16, 17, 4, 4, "lrelu", True, True, True, {"conv.pointwise"}),
    (torch.float64, "nchw", 2, 3, 3, 40, 1, "lrelu", True, True, True, {"conv.pointwise"}),  # pn of one channel
    (torch.float16, "nchw", 1, 3, 5, 8, 8, "lrelu", True, False, False, {"conv.igemm"}),
    # channels_last. toRGB: 2 lanes of 8 bf16 per pixel; the weight gradient in 2 pixel chunks
    (torch.bfloat16, "channels_last", 2, 33, 20, 16, 3, "linear", True, False, False, {"conv.pointwise_rows"}),
    (torch.float16, "channels_last", 3, 5, 7, 3, 16, "lrelu", True, False, False, {"conv.pointwise_rows"}),
    # 32 lanes of 4 floats, 2 Cin chunks (256 + 44 channels)
    ("tf32", "channels_last", 1, 4, 6, 300, 3, "lrelu", False, True, False, {"conv.pointwise_rows"}),
    # 32 lanes of 2 doubles, 2 Cout chunks; the weight gradient in 5 channel slices x 3 pixel chunks
    (torch.float64, "channels_last", 2, 9, 8, 3, 300, "lrelu", True, True, False, {"conv.pointwise_rows"}),
    # misaligned rows: one element per lane, 16 lanes for 12 channels (4 idle)
    (torch.float32, "cl_misaligned", 1, 16, 17, 12, 4, "lrelu", True, True, True, {"conv.pointwise_rows"}),
    # Cout = 20 halves is not whole 16-byte vectors: one element per lane, 32 lanes
    (torch.float16, "channels_last", 2, 5, 3, 3, 20, "lrelu", True, True, False, {"conv.pointwise_rows"}),
    # 5 vectors of 8 bf16 on 8 lanes (3 idle), pixel norm over a row split between lanes
    (torch.bfloat16, "cl_misaligned", 2, 3, 5, 3, 40, "lrelu", True, True, True, {"conv.pointwise_rows"}),
    # (Cout = 2: a 1-channel gradient would be NCHW as much as channels_last, and take the NCHW path)
    (torch.float64, "channels_last", 2, 3, 3, 40, 2, "lrelu", True, True, True, {"conv.pointwise_rows"}),
    (torch.float16, "channels_last", 1, 3, 5, 8, 8, "lrelu", True, False, False, {"conv.igemm"}),
    # grids of >= 512 blocks at a pixel per thread: 2 pixels per thread, the last block ragged
    (torch.bfloat16, "channels_last", 1, 257, 511, 16, 3, "linear", True, True, False, {"conv.pointwise_rows"}),
    (torch.float32, "channels_last", 1, 200, 330, 3, 8, "lrelu", True, True, True, {"conv.pointwise_rows"}),
]
POINTWISE_WEIGHT_PATH = {"conv.pointwise": "grad_weight.pointwise", "conv.pointwise_rows": "grad_weight.pointwise_rows"}


@pytest.mark.parametrize("case", POINTWISE_CASES,
                         ids=lambda c: "-".join(map(str, [str(c[0]).split(".")[-1], *c[1:10]])))
def test_pointwise_conv_paths_and_values(cuda, monkeypatch, case):
    dtype, layout, n, h, w, cin, cout, act, has_bias, pn, transposed, paths = case
    dtype, tol = conv_dtype(dtype, monkeypatch)
    x = rand((n, cin, h, w), dtype, cuda.device, layout)
    wt = rand((cout, cin, 1, 1), dtype, cuda.device, seed=1)
    if transposed:  # a strided weight, as the input gradient's transposed weight
        wt = rand((cin, cout, 1, 1), dtype, cuda.device, seed=1).transpose(0, 1)
    b = rand((cout,), dtype, cuda.device, seed=2) if has_bias else None
    out = cuda.ops.eq_conv2d(x, wt, b, math.sqrt(2), act, 0.2, pn)
    assert cuda.paths() == {p: 1 for p in with_nchw_loads(paths, x)}
    bd = b.double().cpu() if has_bias else None
    want = ref.eq_conv2d(x.double().cpu(), wt.double().cpu(), bd, gain=math.sqrt(2), act=act, alpha=0.2,
                         pixel_norm=pn)
    assert out.dtype == dtype and out.shape == want.shape
    assert_close_scaled(out, want, tol)
    assert out.is_contiguous(memory_format=suggest_memory_format(x))
    if pn:  # the saved per-pixel scale r of the pixel-normed form
        y2, r = cuda.ops.eq_conv2d_pn(x, wt, b, math.sqrt(2), act, 0.2)
        assert cuda.paths() == {p: 1 for p in with_nchw_loads(paths, x)}
        assert torch.equal(y2, out)
        v = ref.eq_conv2d(x.double().cpu(), wt.double().cpu(), bd, gain=math.sqrt(2), act=act, alpha=0.2)
        want_r = v.square().mean(1, keepdim=True).add(1e-8).rsqrt()
        torch.testing.assert_close(r.double().cpu(), want_r, rtol=max(tol, 1e-6), atol=0)
    # The linear building blocks of the backward: input gradient (the transposed weight) and weight
    # gradient, on the same paths.
    g = rand(out.shape, dtype, cuda.device, layout, seed=3)
    gx = cuda.ops.conv2d_resample(g, wt.transpose(0, 1), 0.7, "same")
    gw = cuda.ops.conv2d_resample_grad_weight(x, g, 0.7, "same", 1)
    ran = cuda.paths()
    (fwd,) = paths if len(paths) == 1 else (None,)
    if fwd in POINTWISE_WEIGHT_PATH:
        assert ran == {fwd: 1, POINTWISE_WEIGHT_PATH[fwd]: 1}
    else:
        assert not {*POINTWISE_WEIGHT_PATH, *POINTWISE_WEIGHT_PATH.values()} & set(ran), ran
    xd, wd = x.double().cpu().requires_grad_(), wt.double().cpu().requires_grad_()
    want_gx, want_gw = torch.autograd.grad(F.conv2d(xd, wd * 0.7), (xd, wd), g.double().cpu())
    assert_close_scaled(gx, want_gx, tol)
    assert_close_scaled(gw, want_gw, tol)
    assert gw.shape == wt.shape and gw.dtype == dtype


def test_pointwise_weight_gradient_past_its_grid_falls_back(cuda):
    # 70000 images of one pixel: one chunk per image would need grid.y = 70000 > 65535, so the
    # weight gradient takes the general path; the forward has no such limit.
    x = rand((70000, 4, 1, 1), torch.float64, cuda.device)
    g = rand((70000, 3, 1, 1), torch.float64, cuda.device, seed=1)
    gw = cuda.ops.conv2d_resample_grad_weight(x, g, 0.5, "same", 1)
    assert cuda.paths() == {"grad_weight.simple": 1}
    want = 0.5 * torch.einsum("nchw,ndhw->dc", x.cpu(), g.cpu())
    torch.testing.assert_close(gw.cpu().view(3, 4), want)
    w = rand((3, 4, 1, 1), torch.float64, cuda.device, seed=2)
    y = cuda.ops.conv2d_resample(x, w, 0.5, "same")
    assert cuda.paths() == {"conv.pointwise": 1}
    torch.testing.assert_close(y.cpu(), F.conv2d(x.cpu(), w.cpu() * 0.5))


# mode, dtype, layout, Cin, Cout, expected paths
PADDED = {"grad_weight.igemm", "grad_weight.channels_padded"}
GRAD_WEIGHT_CASES = [
    ("same", torch.float16, "nchw", 8, 16, {"grad_weight.igemm"}),
    ("up", torch.bfloat16, "channels_last", 16, 8, {"grad_weight.igemm"}),
    ("down", torch.float16, "nchw", 24, 72, {"grad_weight.igemm"}),
    ("same", torch.bfloat16, "nchw", 3, 16, PADDED),          # Cin % 8: fromRGB
    ("up", torch.float16, "channels_last", 8, 3, PADDED),     # Cout % 8: toRGB
    ("same", torch.bfloat16, "channels_last", 513, 12, PADDED),  # the D 4x4 block's 513, ragged Cout
    ("down", torch.float32, "nchw", 8, 8, {"grad_weight.simple"}),  # TF32 off
    ("down", "tf32", "nchw", 8, 8, {"grad_weight.igemm_tf32"}),
    ("up", "tf32", "channels_last", 24, 72, {"grad_weight.igemm_tf32"}),
    ("same", "tf32", "nchw", 3, 16, {"grad_weight.igemm_tf32", "grad_weight.channels_padded"}),  # fromRGB
    ("same", "tf32", "channels_last", 16, 3, {"grad_weight.igemm_tf32", "grad_weight.channels_padded"}),  # toRGB
    # NCHW read in place: the up mode, Cout 3 (toRGB), 2 Cin tiles (64 + 8) with a ragged Cout, misaligned
    ("up", torch.bfloat16, "nchw", 16, 3, PADDED),
    ("up", "tf32", "nchw", 72, 20, {"grad_weight.igemm_tf32"}),
    ("same", torch.float16, "misaligned", 8, 16, {"grad_weight.igemm"}),
    ("same", torch.float64, "channels_last", 5, 7, {"grad_weight.simple"}),
    # the simple path's channels_last kernel: lanes on 32 input channels (40, 33: a ragged 2nd block)
    ("up", torch.float32, "channels_last", 40, 6, {"grad_weight.simple"}),  # TF32 off
    ("down", torch.float64, "channels_last", 33, 5, {"grad_weight.simple"}),
]


@pytest.mark.parametrize("case", GRAD_WEIGHT_CASES, ids=lambda c: "-".join(map(str, [c[0], str(c[1]).split(".")[-1], *c[2:5]])))
def test_grad_weight_paths_and_values(cuda, monkeypatch, case):
    check_grad_weight(cuda, monkeypatch, *case, 3, 6, 4)


# Larger pixel counts: the reduction split into several chunks (a chunk starting inside an image
# row), and the igemm kernel's pixel cursor (a mixed-radix add of 32 pixels per K step) in each
# regime: a row longer than the step, several rows per step, several images per step.
# mode, dtype, layout, Cin, Cout, expected paths, N, H, W
GRAD_WEIGHT_CHUNK_CASES = [
    ("same", torch.float16, "nchw", 8, 8, {"grad_weight.igemm"}, 2, 40, 40),      # 13 chunks, Wp 40
    ("up", "tf32", "channels_last", 8, 8, {"grad_weight.igemm_tf32"}, 5, 3, 3),   # 9 pixels per phase image
    ("down", torch.bfloat16, "nchw", 8, 16, {"grad_weight.igemm"}, 3, 10, 14),    # 5 x 7 outputs
    ("up", torch.float16, "nchw", 8, 8, {"grad_weight.igemm"}, 2, 9, 11),         # 4 phases of 9 x 11
    ("down", torch.float64, "nchw", 2, 3, {"grad_weight.simple"}, 2, 32, 32),     # 2 chunks of 256
    ("same", torch.float64, "channels_last", 16, 16, {"grad_weight.simple"}, 3, 64, 48),  # 2304 weights:
                                                                        # 2 chunks (at most 8192 pixels)
    ("up", torch.float64, "channels_last", 4, 3, {"grad_weight.simple"}, 2, 40, 40),  # 19 chunks of 674
]


@pytest.mark.parametrize("case", GRAD_WEIGHT_CHUNK_CASES,
                         ids=lambda c: "-".join(map(str, [c[0], str(c[1]).split(".")[-1], *c[2:5], *c[6:]])))
def test_grad_weight_chunks_and_pixel_cursor(cuda, monkeypatch, case):
    check_grad_weight(cuda, monkeypatch, *case)


def check_grad_weight(cuda, monkeypatch, mode, dtype, layout, cin, cout, paths, n, h, w):
    dtype, tol = conv_dtype(dtype, monkeypatch)
    ho, wo = {"same": (h, w), "up": (2 * h, 2 * w), "down": (h // 2, w // 2)}[mode]
    x = rand((n, cin, h, w), dtype, cuda.device, layout)
    g = rand((n, cout, ho, wo), dtype, cuda.device, layout, seed=1)
    out = cuda.ops.conv2d_resample_grad_weight(x, g, 0.7, mode, 3)
    assert cuda.paths() == with_counts(paths, x, g)
    if "grad_weight.nchw_loads" in with_nchw_loads(paths, x, g):
        # read in place or from NHWC copies (set_conv_nchw_loads(False), channels padded): the same
        # values in the same pixel order, so the same bits
        assert cuda.ops.set_conv_nchw_loads(False) is True
        try:
            copied = cuda.ops.conv2d_resample_grad_weight(x, g, 0.7, mode, 3)
        finally:
            assert cuda.ops.set_conv_nchw_loads(True) is False
        assert cuda.paths() == {p: 1 for p in paths}
        assert torch.equal(out, copied)
    w0 = torch.zeros(cout, cin, 3, 3, dtype=torch.float64, requires_grad=True)
    xd = x.double().cpu()
    y = {"same": lambda: F.conv2d(xd, w0 * 0.7, padding=1),
         "up": lambda: F.conv2d(F.interpolate(xd, scale_factor=2), w0 * 0.7, padding=1),
         "down": lambda: F.avg_pool2d(F.conv2d(xd, w0 * 0.7, padding=1), 2)}[mode]()
    (want,) = torch.autograd.grad(y, w0, g.double().cpu())
    assert_close_scaled(out, want, tol)


# The input gradient runs the conv with the adjoint kernel w.flip(2, 3).transpose(0, 1), a view whose
# co dimension is the contiguous one: the other loading order of pack_weight_kernel (conv_pack.cuh).
# mode, dtype, layout, Cin, Cout (tiles of 32 channels: 40 and 33 straddle one)
INPUT_GRAD_CASES = [
    ("same", "tf32", "nchw", 40, 33),
    ("up", torch.bfloat16, "channels_last", 16, 40),
    ("down", torch.float16, "nchw", 33, 8),
    ("same", torch.bfloat16, "channels_last", 3, 16),  # fromRGB-like: padded Cin
]


@pytest.mark.parametrize("case", INPUT_GRAD_CASES, ids=lambda c: "-".join(map(str, [c[0], str(c[1]).split(".")[-1], *c[2:]])))
def test_input_gradient_through_tensor_cores(cuda, monkeypatch, case):
    mode, dtype, layout, cin, cout = case
    tol = TOL[dtype]
    dtype = torch.float32 if dtype == "tf32" else dtype
    n, h, w = 2, 4, 6
    ho, wo = {"same": (h, w), "up": (2 * h, 2 * w), "down": (h // 2, w // 2)}[mode]
    x = rand((n, cin, h, w), dtype, cuda.device, layout).requires_grad_()
    wt = rand((cout, cin, 3, 3), dtype, cuda.device, seed=1)
    g = rand((n, cout, ho, wo), dtype, cuda.device, layout, seed=2)
    (gx,) = torch.autograd.grad(cuda.ops.conv2d_resample(x, wt, 0.7, mode), x, g)
    assert {"conv.igemm", "conv.igemm_tf32"} & set(cuda.paths())  # forward and input gradient
    xd = x.detach().double().cpu().requires_grad_()
    wd = wt.double().cpu() * 0.7
    y = {"same": lambda: F.conv2d(xd, wd, padding=1),
         "up": lambda: F.conv2d(F.interpolate(xd, scale_factor=2), wd, padding=1),
         "down": lambda: F.avg_pool2d(F.conv2d(xd, wd, padding=1), 2)}[mode]()
    (want,) = torch.autograd.grad(y, xd, g.double().cpu())
    assert_close_scaled(gx, want, tol)


@pytest.mark.parametrize("mode", ["same", "up", "down"])
def test_tensor_core_weight_operand_is_one_kernel(cuda, mode):
    """The igemm conv's weight operand (scale, per-phase folds, transpose, channel padding, cast) is
    built by pack_weight_kernel, not by a chain of small ATen ops (10-30 launches per call); the
    NCHW input is read in place (no copy)."""
    x = rand((1, 8, 4, 4), torch.bfloat16, cuda.device)
    w = rand((16, 8, 3, 3), torch.bfloat16, cuda.device, seed=1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        cuda.ops.conv2d_resample(x, w, 0.7, mode)
    names = {e.name for e in prof.events()}
    assert cuda.paths() == {"conv.igemm": 1, "conv.nchw_loads": 1}
    chain = {"aten::stack", "aten::select", "aten::permute", "aten::constant_pad_nd", "aten::mul", "aten::add",
             "aten::copy_"}
    assert not names & chain, sorted(names & chain)


@pytest.mark.parametrize("op", ["eq_conv2d", "upsample_conv2d", "conv2d_downsample"])
def test_gradcheck_through_cuda_kernels(cuda, op):
    x = rand((1, 2, 4, 4), torch.float64, cuda.device).requires_grad_()
    w = rand((3, 2, 3, 3), torch.float64, cuda.device, seed=1).requires_grad_()
    b = rand((3,), torch.float64, cuda.device, seed=2).requires_grad_()
    extra = () if op == "conv2d_downsample" else (True,)
    fn = lambda x, w, b: getattr(cuda.ops, op)(x, w, b, 1.3, "lrelu", 0.2, *extra)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b), fast_mode=True)


# ----------------------------------------------------------------------------------------------
# Defects found by reading (issue 10), each with its test.


def test_fp32_conv_respects_the_per_op_tf32_setting(cuda):
    x, w = rand((1, 8, 3, 3), torch.float32, cuda.device), rand((8, 8, 3, 3), torch.float32, cuda.device, seed=1)
    cudnn = torch.backends.cudnn
    if not hasattr(cudnn.conv, "fp32_precision"):
        pytest.skip("this PyTorch has no per-op fp32 precision")
    before = cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision
    try:
        for precision, paths in (("ieee", {"conv.simple"}), ("tf32", {"conv.igemm_tf32", "conv.nchw_loads"})):
            cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = precision, "tf32"
            # With conv IEEE and RNN TF32 the query without an op throws (it used to, for every fp32 conv).
            cuda.ops.eq_conv2d(x, w, None, 1.0, "linear", 0.2, False)
            assert cuda.paths() == {p: 1 for p in paths}
    finally:
        cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = before


def test_minibatch_stddev_without_channels_agrees_with_cpu_and_reference(cuda):
    x = torch.randn(4, 0, 3, 3, dtype=torch.float32)
    want = ref.minibatch_stddev(x, 4, 1, 1e-8)
    got = cuda.ops.minibatch_stddev(x.to(cuda.device), 4, 1, 1e-8).cpu()
    assert got.shape == want.shape == (4, 1, 3, 3)
    assert torch.isnan(got).all() and torch.isnan(want).all()
    if _ext.available:
        assert torch.isnan(torch.ops.progan_ext.minibatch_stddev(x, 4, 1, 1e-8)).all()


def test_minibatch_stddev_more_groups_than_a_grid_dimension(cuda):
    # M*F = 65540 > 65535 (CUDA's gridDim.y limit): group size 1, so every sample is a group
    x = rand((32770, 2, 1, 1), torch.float32, cuda.device)
    out = cuda.ops.minibatch_stddev(x, 1, 2, 1e-8)
    torch.testing.assert_close(out.cpu(), ref.minibatch_stddev(x.cpu(), 1, 2, 1e-8))
    g = rand(out.shape, torch.float32, cuda.device, seed=1)
    gx = cuda.ops.minibatch_stddev_backward(g, x, 1, 2, 1e-8)
    xr = x.cpu().requires_grad_()
    (want,) = torch.autograd.grad(ref.minibatch_stddev(xr, 1, 2, 1e-8), xr, g.cpu())
    torch.testing.assert_close(gx.cpu(), want)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_minibatch_stddev_backward_splits_a_long_group_sum(cuda, dtype, layout):
    # One group (N = G = 4, F = 1) on a 48x40 map: the sum of the stddev channel's gradient over the
    # group is split over blocks along the pixels (on the H200, one block summed the 4 x 1024^2
    # values of the 1024^2 layer: 0.17x eager), then added in a fixed order.
    x = rand((4, 3, 48, 40), dtype, cuda.device, layout)
    g = rand((4, 4, 48, 40), dtype, cuda.device, layout, seed=1)
    g[:, 3] *= 100  # the stddev channel's share of gx about 0.4 of the pass-through, visible in bf16
    gx = cuda.ops.minibatch_stddev_backward(g, x, 4, 1, 1e-8)
    assert cuda.paths() == {"minibatch_stddev_backward.split": 1}
    xr = x.cpu().double().requires_grad_()
    (want,) = torch.autograd.grad(ref.minibatch_stddev(xr, 4, 1, 1e-8), xr, g.cpu().double())
    assert_close_scaled(gx, want, TOL[dtype])
    assert torch.equal(gx, cuda.ops.minibatch_stddev_backward(g, x, 4, 1, 1e-8))  # deterministic
    cuda.paths(reset=True)
    # a small map keeps one block per group
    cuda.ops.minibatch_stddev_backward(g[..., :4, :4], x[..., :4, :4], 4, 1, 1e-8)
    assert cuda.paths() == {"minibatch_stddev_backward": 1}


def test_kernel_size_out_of_range_is_rejected(cuda):
    x, g = rand((1, 2, 4, 4), torch.float32, cuda.device), rand((1, 3, 4, 4), torch.float32, cuda.device)
    for k in (2**32 + 3, 4097):
        with pytest.raises(ValueError, match="kernel_size must be at most 4095"):
            cuda.ops.conv2d_resample_grad_weight(x, g, 1.0, "same", k)
        if _ext.available:
            with pytest.raises(ValueError, match="kernel_size must be at most 4095"):
                torch.ops.progan_ext.conv2d_resample_grad_weight(x.cpu(), g.cpu(), 1.0, "same", k)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lrelu_gradient_of_an_output_rounded_to_zero(cuda, dtype):
    # A 16-bit output rounds a tiny positive pre-activation to +0 (slope 1) and alpha times a tiny
    # negative one to -0 (slope alpha): the sign of the zero carries the branch.
    y = torch.tensor([[0.0, -0.0, 1.0, -1.0]], dtype=dtype)
    gx = cuda.ops.bias_act_backward(torch.ones_like(y).to(cuda.device), y.to(cuda.device), 0.25).cpu()
    assert gx.tolist() == [[1.0, 0.25, 1.0, 0.25]]
    # The fused conv produces such zeros: z = +-small^2 is below the dtype's smallest subnormal.
    small = {torch.float16: 1e-4, torch.bfloat16: 1e-21}[dtype]
    x = torch.tensor([small, -small]).view(1, 2, 1, 1).to(device=cuda.device, dtype=dtype)
    w = (torch.eye(2) * small).view(2, 2, 1, 1).to(device=cuda.device, dtype=dtype)  # scale sqrt(2)/sqrt(2) = 1
    out = cuda.ops.eq_conv2d(x, w, None, math.sqrt(2), "lrelu", 0.25, False).cpu().flatten()
    assert out.tolist() == [0.0, 0.0] and not torch.signbit(out[0]) and torch.signbit(out[1])
    gx = cuda.ops.bias_act_backward(torch.ones(1, 2, dtype=dtype).to(cuda.device), out.view(1, 2).to(cuda.device),
                                    0.25).cpu()
    assert gx.tolist() == [[1.0, 0.25]]
    # An input of exactly 0 gives -0, hence slope alpha, as PyTorch's leaky_relu at 0.
    zero = cuda.ops.bias_act(torch.zeros(1, 2, dtype=dtype).to(cuda.device), None, "lrelu", 0.25)
    assert torch.signbit(zero.cpu()).all()
    gx = cuda.ops.bias_act_backward(torch.ones(1, 2, dtype=dtype).to(cuda.device), zero, 0.25).cpu()
    assert gx.tolist() == [[0.25, 0.25]]


def test_tensor_core_paths_need_an_sm80_build(cuda, monkeypatch):
    needs_emulator(cuda)
    x, w = rand((1, 8, 3, 3), torch.float16, "cpu"), rand((8, 8, 3, 3), torch.float16, "cpu", seed=1)
    g = rand((1, 8, 3, 3), torch.float16, "cpu", seed=2)
    for sm, kernel_arch, conv_path, gw_path in ((90, 90, "conv.igemm", "grad_weight.igemm"),
                                                (75, 75, "conv.simple", "grad_weight.simple"),
                                                (90, 75, "conv.simple", "grad_weight.simple")):  # PTX for sm_75 only
        monkeypatch.setenv("PROGAN_EMU_SM", str(sm))
        monkeypatch.setenv("PROGAN_EMU_KERNEL_ARCH", str(kernel_arch))
        cuda.ops.eq_conv2d(x, w, None, 1.0, "linear", 0.2, False)
        cuda.ops.conv2d_resample_grad_weight(x, g, 1.0, "same", 3)
        assert cuda.paths() == with_counts({conv_path, gw_path}, x), (sm, kernel_arch)


def test_progan_g_and_d_block_through_cuda_kernels_only(cuda, recwarn):
    """One ProGAN growth step (the 8x8 block during fade-in, 16 channels): G forward, D forward, the
    WGAN-GP critic loss with its gradient penalty (a double backward through every op) and both
    networks' parameter gradients, all on the CUDA kernels, against the pure-PyTorch reference in
    float64. No op may fall back to the reference."""
    from progan_ext import ops
    from progan_ext.loss import d_loss_wgangp, g_loss_wgan
    from progan_ext.networks import Discriminator, Generator

    def nets(impl):
        torch.manual_seed(0)
        G = Generator(8, latent_size=16, fmap_max=16, impl=impl).double().to(cuda.device)
        D = Discriminator(8, fmap_max=16, impl=impl).double().to(cuda.device)
        return G, D

    def step(G, D):
        gen = torch.Generator().manual_seed(1)
        z = torch.randn(4, 16, generator=gen, dtype=torch.float64).to(cuda.device)
        reals = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64).to(cuda.device)
        torch.manual_seed(2)  # the penalty's interpolation weights
        fakes = G(z, resolution=8, alpha=0.5)
        d_loss, _ = d_loss_wgangp(D, reals, fakes.detach(), resolution=8, alpha=0.5, gp_lambda=10.0)
        d_grads = torch.autograd.grad(d_loss, list(D.parameters()))
        g_loss = g_loss_wgan(D, fakes, resolution=8, alpha=0.5)
        g_grads = torch.autograd.grad(g_loss, list(G.parameters()))
        return [fakes, d_loss, g_loss, *d_grads, *g_grads]

    want = step(*nets("reference"))
    before = ops.use_kernels("cpu", emulated.NAMESPACE) if cuda.emulated else None
    try:
        got = step(*nets("ext"))
    finally:
        if cuda.emulated:
            ops.use_kernels("cpu", before)
    assert not [w for w in recwarn if "reference" in str(w.message)], [str(w.message) for w in recwarn]
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=1e-9, atol=1e-9, msg=lambda m: f"output {i}: {m}")
    ran = {name.split(".")[0] for name in cuda.paths()}
    assert {"conv", "grad_weight", "pixel_norm", "bias_act", "minibatch_stddev"} <= ran, ran


# pixel_norm on NCHW: one thread per pixel group, or, with few pixels (fewer than 32768 groups) and
# C >= 16, the channels split over the 8 warps of a block (the 4^2..16^2 maps at C = 512).
# dtype, shape, expected path (the same for the forward and both backwards)
PIXEL_NORM_PLANES_CASES = [
    (torch.float32, (2, 512, 4, 4), "pixel_norm.planes_split_vec"),   # the G's 4x4 block
    (torch.float16, (3, 24, 5, 5), "pixel_norm.planes_split"),        # S % 8: scalar; 75 groups: a ragged block
    (torch.bfloat16, (2, 16, 16, 16), "pixel_norm.planes_split_vec"),
    (torch.float64, (5, 40, 3, 3), "pixel_norm.planes_split"),
    (torch.float32, (2, 16, 256, 256), "pixel_norm.planes_vec"),      # 32768 groups: one thread each
    (torch.float64, (4, 8, 8, 8), "pixel_norm.planes_vec"),           # C < 16: one thread per group
]


@pytest.mark.parametrize("case", PIXEL_NORM_PLANES_CASES, ids=lambda c: f"{str(c[0]).split('.')[-1]}-{c[1]}")
def test_pixel_norm_planes_paths_and_values(cuda, case):
    dtype, shape, path = case
    x = rand(shape, dtype, cuda.device) * 3
    g = rand(shape, dtype, cuda.device, seed=1)
    tol = TOL[dtype]
    y = cuda.ops.pixel_norm(x, 1e-8)
    assert cuda.paths() == {path: 1}
    x64, g64 = x.double().cpu(), g.double().cpu()
    assert_close_scaled(y, ref.pixel_norm(x64, 1e-8), tol)
    gx = cuda.ops.pixel_norm_backward(g, x, 1e-8)
    assert cuda.paths() == {path: 1}
    x64.requires_grad_(True)
    (want,) = torch.autograd.grad(ref.pixel_norm(x64, 1e-8), x64, g64)
    assert_close_scaled(gx, want, tol)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    r = torch.rsqrt(x.to(acc).square().mean(1, keepdim=True) + 1e-8).contiguous()
    yr = (x.to(acc) * r).to(dtype)
    gy = cuda.ops.pixel_norm_backward_from_output(g, yr, r)
    assert cuda.paths() == {path: 1}
    y64, r64 = yr.double().cpu(), r.double().cpu()
    assert_close_scaled(gy, r64 * (g64 - y64 * (g64 * y64).mean(1, keepdim=True)), tol)


@pytest.mark.parametrize("layout, aligned_path, misaligned_path", [
    ("channels_last", "pixel_norm.rows_vec", "pixel_norm.rows_vec"),  # rows read one r per pixel
    ("nchw", "pixel_norm.planes_split_vec", "pixel_norm.planes_split"),  # planes read r in 16-byte runs
])
def test_pixel_norm_from_output_needs_an_aligned_r_only_on_planes(cuda, layout, aligned_path, misaligned_path):
    x = rand((2, 16, 4, 4), torch.float32, cuda.device, layout) * 3
    g = rand((2, 16, 4, 4), torch.float32, cuda.device, layout, seed=1)
    r = torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8).contiguous()
    y = x * r
    y64, r64, g64 = y.double().cpu(), r.double().cpu(), g.double().cpu()
    want = r64 * (g64 - y64 * (g64 * y64).mean(1, keepdim=True))
    flat = torch.empty(r.numel() + 1, dtype=r.dtype, device=r.device)
    r_off = flat[1:].view(r.shape).copy_(r)  # contiguous, one element past 16-byte alignment
    assert r.data_ptr() % 16 == 0 and r_off.data_ptr() % 16 != 0
    for rr, path in ((r, aligned_path), (r_off, misaligned_path)):
        gy = cuda.ops.pixel_norm_backward_from_output(g, y, rr)
        assert cuda.paths() == {path: 1}
        assert_close_scaled(gy, want, TOL[torch.float32])


# Split-K: small maps with long K loops (the 4^2..16^2 layers at 512 channels) split their K steps
# over up to 8 blocks per tile; the fp32 slices are added in order, then bias, activation and the
# norm pass. mode, dtype, layout, N, H, W, Cin, Cout, pixel_norm; every case splits.
SPLIT_K_CASES = [
    ("same", torch.float16, "channels_last", 2, 4, 4, 256, 32, True),   # 72 K steps -> 4 x 18
    ("same", "tf32", "nchw", 1, 5, 3, 96, 40, True),                    # 54 -> 3 x 18, ragged rows
    ("up", "tf32", "nchw", 1, 4, 4, 128, 16, True),                     # 4 phases x 32 -> 2 x 16
    ("up", torch.bfloat16, "channels_last", 1, 2, 3, 512, 64, False),   # 64 -> 4 x 16
    ("down", torch.bfloat16, "nchw", 2, 8, 8, 128, 72, False),          # 64 -> 4 x 16, 2 Cout tiles
    ("down", torch.float16, "channels_last", 1, 4, 4, 520, 3, False),   # 17 x 16 taps -> 8 x 34, toRGB-like Cout
]


@pytest.mark.parametrize("case", SPLIT_K_CASES, ids=lambda c: "-".join(map(str, [c[0], str(c[1]).split(".")[-1], *c[2:9]])))
def test_split_k_values_norms_and_determinism(cuda, monkeypatch, case):
    mode, dtype, layout, n, h, w, cin, cout, pn = case
    tol = TOL[dtype]
    dtype = torch.float32 if dtype == "tf32" else dtype
    x = rand((n, cin, h, w), dtype, cuda.device, layout)
    wt = rand((cout, cin, 3, 3), dtype, cuda.device, seed=1)
    b = rand((cout,), dtype, cuda.device, seed=2)
    kw = dict(gain=math.sqrt(2), act="lrelu", alpha=0.2)
    if pn:  # the pixel-normed form also returns r, written by the norm pass after the reduction
        out, r = getattr(cuda.ops, OP_OF_MODE[mode] + "_pn")(x, wt, b, kw["gain"], "lrelu", 0.2)
    else:
        out = getattr(cuda.ops, OP_OF_MODE[mode])(x, wt, b, kw["gain"], "lrelu", 0.2, *(() if mode == "down" else (False,)))
    paths = cuda.paths()
    assert paths.get("conv.split_k") == 1 and "conv.norm_in_tile" not in paths, paths
    assert paths.get("conv.norm_pass") == (1 if pn else None), paths
    ref_kw = kw if mode == "down" else dict(kw, pixel_norm=pn)
    want = getattr(ref, OP_OF_MODE[mode])(x.double().cpu(), wt.double().cpu(), b.double().cpu(), **ref_kw)
    assert_close_scaled(out, want, tol)
    if pn:
        pre = getattr(ref, OP_OF_MODE[mode])(x.double().cpu(), wt.double().cpu(), b.double().cpu(), **kw)
        want_r = torch.rsqrt(pre.square().mean(1, keepdim=True) + 1e-8)
        assert_close_scaled(r, want_r, tol)
    again = getattr(cuda.ops, OP_OF_MODE[mode] + ("_pn" if pn else ""))(
        x, wt, b, kw["gain"], "lrelu", 0.2, *(() if pn or mode == "down" else (False,)))
    assert torch.equal(again[0] if pn else again, out)  # the slices are added in a fixed order
