"""Fast-path coverage of the official networks (issue 15): every convolution of the official
1024x1024 generator and discriminator (official channel counts: 512 down to 16, toRGB's 3 outputs,
fromRGB's 3 inputs, the D 4x4 block's 512 + 1 stddev channels), forward, input gradient, weight
gradient and the gradient penalty's double backward, in fp32 (TF32 on, as PyTorch's convs default
to), bf16 and fp16, NCHW and channels_last, takes a tensor-core kernel, by the paths the host code
reports (conv.igemm, conv.igemm_tf32, grad_weight.igemm, grad_weight.igemm_tf32; never
conv.simple or grad_weight.simple). The exception by design: toRGB and fromRGB (1x1, 3 channels on
one side) are memory-bound and take the pointwise kernels, which read their input in place
(csrc/cuda/conv_pointwise.cuh): conv.pointwise / grad_weight.pointwise on NCHW (a thread per pixel
over the planes), conv.pointwise_rows / grad_weight.pointwise_rows on channels_last (a group of
lanes per pixel over the rows).

Spatial size and batch do not enter the path choice, so each layer runs at 8x8 with batch 2. On
the emulator the kernels are not executed (PROGAN_EMU_DRY_RUN=1: the host code, its path choice,
workspaces and grids run and every launch is checked, no block runs), which makes 512-channel
layers affordable; on a GPU they run for real.

"""

import copy

import pytest
import torch

from conftest import DEVICES, is_emulated
from progan_ext import emulated
from progan_ext.layers import EqualizedConv2d
from progan_ext.networks import Discriminator, Generator

CUDA = [d for d in DEVICES if d.id == "cuda"]
DTYPES = [pytest.param(torch.float32, id="tf32"), pytest.param(torch.bfloat16, id="bf16"),
          pytest.param(torch.float16, id="f16")]


def official_convs() -> dict[str, EqualizedConv2d]:
    """One module per distinct conv configuration of the official G and D, named by where it is."""
    torch.manual_seed(0)
    found = {}
    for net in (Generator(1024), Discriminator(1024)):
        for name, m in net.named_modules():
            if isinstance(m, EqualizedConv2d):
                found.setdefault(repr(m), (f"{type(net).__name__}.{name}", m))
    return dict(found.values())


CONVS = official_convs()


def test_the_walk_covers_every_kind_of_official_conv():
    cfg = {(m.in_channels, m.out_channels, m.kernel_size, m.resample) for m in CONVS.values()}
    assert (513, 512, 3, None) in cfg                    # D 4x4 block, after minibatch stddev
    assert (3, 16, 1, None) in cfg and (16, 3, 1, None) in cfg  # fromRGB / toRGB at 1024
    assert (32, 16, 3, "up") in cfg and (16, 32, 3, "down") in cfg
    assert (512, 512, 3, "up") in cfg and (512, 512, 3, "down") in cfg


def paths(device) -> dict:
    ns = emulated.ops() if is_emulated(device) else torch.ops.progan_ext
    text = ns.kernel_path_counts(True)
    return {k: int(v) for k, v in (item.split("=") for item in text.split(";") if item)}


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", CUDA)
def test_every_official_conv_takes_tensor_cores_cuda(device, dtype, layout, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    if is_emulated(device):
        monkeypatch.setenv("PROGAN_EMU_DRY_RUN", "1")
    paths(device)  # reset the counts
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    simple, fast = {}, set()
    for where, module in CONVS.items():
        m = copy.deepcopy(module).to(device=device, dtype=dtype)
        x = torch.randn(2, m.in_channels, 8, 8, device=device).to(dtype).contiguous(memory_format=fmt)
        x.requires_grad_(True)
        y = m(x)
        gx, gw, gb = torch.autograd.grad(y, (x, m.weight, m.bias), torch.randn_like(y), create_graph=True)
        # the gradient penalty differentiates the input gradient again (and the weight gradient with it)
        (gx.float().square().sum() + gw.float().square().sum() + gb.float().sum()).backward()
        ran = paths(device)
        conv = {p for p in ran if p.startswith(("conv.", "grad_weight."))}
        fast |= conv
        slow = {p for p in conv if p.endswith(".simple")}
        pointwise = m.kernel_size == 1 and min(m.in_channels, m.out_channels) <= 4
        rows = "_rows" if layout == "channels_last" else ""
        if pointwise != (conv == {f"conv.pointwise{rows}", f"grad_weight.pointwise{rows}"}):
            slow |= conv  # a pointwise conv off its path, or another conv on it
        if slow:
            simple[f"{where} ({m.extra_repr()})"] = sorted(slow)
    assert not simple, f"convs on the simple path or the wrong fast path: {simple}"
    # ... and the tensor-core paths did run.
    tf32 = "_tf32" if dtype == torch.float32 else ""
    assert {f"conv.igemm{tf32}", f"grad_weight.igemm{tf32}"} <= fast, fast
