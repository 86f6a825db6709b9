"""minibatch_stddev: kernels vs reference (official grouping), derivatives, opcheck, validation."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from conftest import DEVICES, compiled_ops, FLOAT_DTYPES, LAYOUTS, assert_close, randn, requires_compiled, skip_without_kernel
from progan_ext import ops, reference

# (shape, group_size, num_features)
CASES = [
    ((8, 16, 4, 4), 4, 1),
    ((4, 512, 4, 4), 4, 1),
    ((6, 6, 3, 5), 3, 2),
    ((1, 5, 2, 3), 4, 1),  # G = min(4, 1) = 1
    ((2, 4, 7, 1), 4, 4),  # G = 2, every channel its own feature
    ((12, 9, 2, 2), 2, 3),
]


def test_reference_is_the_official_layer():
    """Independent check of the reference against the official TensorFlow code's steps."""
    x = randn((8, 6, 3, 3), dtype=torch.float64)
    g, f = 4, 2
    y = x.reshape(g, -1, f, 3, 3, 3)  # [G, M, F, C/F, H, W]: group = samples m, m+M, ...
    y = y - y.mean(dim=0, keepdim=True)
    y = (y**2).mean(dim=0)
    y = (y + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])  # [M, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, 3, 3)  # sample n <- row n % M
    torch.testing.assert_close(reference.minibatch_stddev(x, g, f), torch.cat([x, y], 1))
    # samples 0 and 2 share a group when M = 2; 0 and 1 do not
    out = reference.minibatch_stddev(x, g, f)
    assert torch.equal(out[0, 6:], out[2, 6:]) and not torch.equal(out[0, 6:], out[1, 6:])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference(device, dtype, layout, case):
    skip_without_kernel("minibatch_stddev", device)
    shape, g, f = case
    x = randn(shape, dtype=dtype, device=device, layout=layout)
    y = ops.minibatch_stddev(x, g, f)
    assert y.shape == (shape[0], shape[1] + f, shape[2], shape[3]) and y.dtype == dtype
    assert_close(y, reference.minibatch_stddev(x, g, f), dtype)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last) or y.is_contiguous()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_matches_reference(device, dtype, layout):
    skip_without_kernel("minibatch_stddev", device)
    x = randn((8, 12, 5, 3), dtype=dtype, device=device, layout=layout, requires_grad=True)
    g = randn((8, 14, 5, 3), dtype=dtype, device=device, seed=2)
    (gx,) = torch.autograd.grad(ops.minibatch_stddev(x, 4, 2), x, g)
    (gr,) = torch.autograd.grad(reference.minibatch_stddev(x, 4, 2), x, g)
    assert_close(gx, gr, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", [((4, 4, 2, 3), 2, 2), ((6, 3, 2, 2), 3, 1)], ids=str)
def test_gradcheck_and_gradgradcheck(device, layout, case):
    skip_without_kernel("minibatch_stddev", device)
    shape, g, f = case
    x = randn(shape, dtype=torch.float64, device=device, layout=layout, requires_grad=True)
    fn = lambda t: ops.minibatch_stddev(t, g, f, 1e-4)  # noqa: E731
    assert gradcheck(fn, (x,))
    assert gradgradcheck(fn, (x,))


@requires_compiled
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    kernels = compiled_ops(device)
    skip_without_kernel("minibatch_stddev", device)
    for layout in ("contiguous", "channels_last"):
        x = randn((4, 6, 3, 2), device=device, layout=layout, requires_grad=requires_grad)
        torch.library.opcheck(kernels.minibatch_stddev.default, (x, 2, 3, 1e-8))
        g = randn((4, 9, 3, 2), device=device, layout=layout, seed=4, requires_grad=requires_grad)
        x2 = x.detach().requires_grad_(requires_grad)
        torch.library.opcheck(kernels.minibatch_stddev_backward.default, (g, x2, 2, 3, 1e-8))


@requires_compiled
def test_compiled_kernel_is_used(monkeypatch):
    skip_without_kernel("minibatch_stddev", "cpu")
    monkeypatch.setattr(reference, "minibatch_stddev", None)
    ops.minibatch_stddev(randn((4, 4, 2, 2)))


@pytest.mark.parametrize(
    "shape, kwargs, exc, match",
    [
        ((6, 4, 2, 2), dict(group_size=4), ValueError, "batch size 6 is not divisible by the group size 4"),
        ((4, 5, 2, 2), dict(num_features=2), ValueError, "channels 5 are not divisible by num_features 2"),
        ((4, 4, 2), {}, ValueError, "rank 4"),
        ((4, 4, 2, 2), dict(group_size=0), ValueError, "group_size must be a positive integer"),
        ((4, 4, 2, 2), dict(num_features=0), ValueError, "num_features must be a positive integer"),
        ((4, 4, 2, 2), dict(eps=0.0), ValueError, "eps must be a positive"),
    ],
)
def test_invalid_inputs(shape, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ops.minibatch_stddev(torch.randn(shape), **kwargs)


@requires_compiled
def test_direct_op_call_validates():
    with pytest.raises(ValueError, match="not divisible by the group size"):
        torch.ops.progan_ext.minibatch_stddev(torch.randn(6, 4, 2, 2), 4, 1, 1e-8)
    with pytest.raises(ValueError, match="grad must have shape"):
        torch.ops.progan_ext.minibatch_stddev_backward(torch.randn(4, 4, 2, 2), torch.randn(4, 4, 2, 2), 4, 1, 1e-8)


def test_keeps_dtype_under_autocast():
    x = randn((4, 8, 4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.minibatch_stddev(x).dtype == torch.float32
