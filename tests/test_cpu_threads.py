"""The C++ CPU kernels split their work over torch's intra-op threads in chunks: results must be
the same bits for any thread count, and match the reference, also when a chunk starts in the
middle of an image, a channel cycle or a group (shapes here are large enough to be split)."""

import pytest
import torch

from progan_ext import reference as ref

from conftest import TOL, requires_compiled, skip_without_kernel

P = torch.ops.progan_ext if hasattr(torch.ops, "progan_ext") else None


def _rand(shape, dtype, layout, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def _with_threads(n, fn):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def _cases(dtype, layout):
    # Odd channel counts and pixel counts that are not multiples of the kernels' block sizes.
    x = _rand((8, 13, 37, 29), dtype, layout, 0)
    b = _rand((13,), dtype, "nchw", 1)
    g = _rand((8, 13, 37, 29), dtype, layout, 2)
    g1 = _rand((8, 14, 37, 29), dtype, layout, 3)
    xc = _rand((3, 19, 22, 18), dtype, layout, 4)
    w = _rand((21, 19, 3, 3), dtype, "nchw", 5)
    wb = _rand((21,), dtype, "nchw", 6)
    return {
        "bias_act": (lambda: P.bias_act(x, b, "lrelu", 0.2), lambda: ref.bias_act(x, b, "lrelu", 0.2)),
        "bias_act_backward": (lambda: P.bias_act_backward(g, x, 0.2),
                              lambda: (g.double() * torch.where(x.double() > 0, 1.0, 0.2)).to(dtype)),
        "pixel_norm": (lambda: P.pixel_norm(x, 1e-8), lambda: ref.pixel_norm(x, 1e-8)),
        "pixel_norm_backward": (lambda: P.pixel_norm_backward(g, x, 1e-8), None),
        "minibatch_stddev": (lambda: P.minibatch_stddev(x, 4, 1, 1e-8), lambda: ref.minibatch_stddev(x, 4, 1, 1e-8)),
        "minibatch_stddev_backward": (lambda: P.minibatch_stddev_backward(g1, x, 2, 1, 1e-8), None),
        "eq_conv2d": (lambda: P.eq_conv2d(xc, w, wb, 1.4, "lrelu", 0.2, True),
                      lambda: ref.eq_conv2d(xc, w, wb, gain=1.4, pixel_norm=True)),
        "upsample_conv2d": (lambda: P.upsample_conv2d(xc, w, wb, 1.4, "lrelu", 0.2, True),
                            lambda: ref.upsample_conv2d(xc, w, wb, gain=1.4, pixel_norm=True)),
        "conv2d_downsample": (lambda: P.conv2d_downsample(xc, w, wb, 1.4, "lrelu", 0.2),
                              lambda: ref.conv2d_downsample(xc, w, wb, gain=1.4)),
    }


CONVS = ("eq_conv2d", "upsample_conv2d", "conv2d_downsample")


@requires_compiled
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_same_bits_for_any_thread_count(dtype, layout):
    skip_without_kernel("pixel_norm", "cpu")
    for name, (fn, want_fn) in _cases(dtype, layout).items():
        outs = {n: _with_threads(n, fn) for n in (1, 2, 3)}
        if name not in CONVS:  # oneDNN's own convolutions may round differently per thread count
            for n in (2, 3):
                assert torch.equal(outs[n], outs[1]), f"{name}: {n} threads differ from 1"
        if want_fn is None:
            continue
        want = want_fn()
        for n, out in outs.items():
            if name in CONVS:  # the reference convolves in the input dtype
                err = (out.double() - want.double()).abs().max().item() / max(1.0, want.double().abs().max().item())
                assert err < (1e-4 if dtype == torch.float32 else 4e-2), f"{name}, {n} threads: relative error {err}"
            else:
                rtol, atol = TOL[dtype]
                torch.testing.assert_close(out, want, rtol=rtol, atol=atol, msg=lambda m: f"{name}, {n} threads: {m}")
