"""Autotuned dispatch (progan_ext.autotune, issue 15): the choice logic, driven on the CUDA kernels
(the emulated build without a GPU) with an injected timer, so that which candidate is faster is
known: the faster one runs, the choice is cached per signature and stays fixed, a tie keeps the
kernel, a conv whose kernel splits K is also timed with the split off (the per-thread knob
set_conv_split_k), PROGAN_EXT_AUTOTUNE=0 turns it off, backend_info shows the choices, and
autograd runs through whichever candidate was chosen. Real timings need a GPU (benchmarks/run_gpu_suite.sh)."""

import math
import threading

import pytest
import torch

from conftest import DEVICES, is_emulated
from progan_ext import autotune, emulated, ops
from progan_ext import reference as ref

CUDA = [d for d in DEVICES if d.id == "cuda"]


class FakeTimer:
    """Seconds per candidate name; runs each candidate once (it must work) and counts calls."""

    def __init__(self, **seconds):
        self.seconds, self.calls = seconds, []

    def __call__(self, name, fn, warmup, reps):
        out = fn()
        assert isinstance(out, torch.Tensor)
        self.calls.append(name)
        return self.seconds[name]


@pytest.fixture
def tuned(device, monkeypatch):
    """Autotuning on for the device type the CUDA kernels take here, with a clean cache."""
    monkeypatch.delenv("PROGAN_EXT_AUTOTUNE", raising=False)
    before = autotune.enable({torch.device(device).type})
    autotune.clear()
    timer = autotune.set_timer(None)
    yield
    autotune.enable(before)
    autotune.set_timer(timer)
    autotune.clear()


def paths(device):
    ns = emulated.ops() if is_emulated(device) else torch.ops.progan_ext
    text = ns.kernel_path_counts(True)
    return {k: int(v) for k, v in (item.split("=") for item in text.split(";") if item)}


def conv_inputs(device, n=2, h=6, w=4, seed=0):
    """channels_last: the candidates are then the kernel and the eager composite only (an NCHW input
    of a tensor-core conv, fp32 with TF32 allowed included, adds kernel_nhwc)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, h, w, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    wt = torch.randn(16, 8, 3, 3, generator=g).to(device)
    b = torch.randn(16, generator=g).to(device)
    return x, wt, b


@pytest.mark.parametrize("device", CUDA)
def test_the_faster_candidate_runs_and_the_choice_is_cached_cuda(device, tuned):
    timer = FakeTimer(kernel=2e-3, eager=1e-3)
    autotune.set_timer(timer)
    x, wt, b = conv_inputs(device)
    want = ref.eq_conv2d(x.double(), wt.double(), b.double(), pixel_norm=True)
    out = ops.eq_conv2d(x, wt, b, pixel_norm=True)
    assert sorted(timer.calls) == ["eager", "kernel"]
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-5)
    paths(device)  # forget the paths of the timing runs
    out2 = ops.eq_conv2d(x, wt, b, pixel_norm=True)
    assert len(timer.calls) == 2  # cached: nothing timed again
    assert not any(p.startswith("conv.") for p in paths(device))  # the eager composite ran
    torch.testing.assert_close(out2, out)
    (choice,) = autotune.choices()
    assert choice["op"] == "eq_conv2d" and choice["choice"] == "eager"
    assert choice["times_s"] == {"kernel": 2e-3, "eager": 1e-3}
    assert ops.backend_info()["autotune"]["choices"] == autotune.choices()
    # a new signature (another spatial size) is timed again; the old choice stays
    ops.eq_conv2d(*conv_inputs(device, h=4), pixel_norm=True)
    assert len(timer.calls) == 4 and len(autotune.choices()) == 2


@pytest.mark.parametrize("device", CUDA)
def test_the_kernel_wins_when_faster_or_tied_cuda(device, tuned):
    x, wt, b = conv_inputs(device)
    for seconds in (dict(kernel=1e-3, eager=2e-3), dict(kernel=1e-3, eager=1e-3)):
        autotune.clear()
        autotune.set_timer(FakeTimer(**seconds))
        ops.upsample_conv2d(x, wt, b)
        paths(device)
        ops.upsample_conv2d(x, wt, b)
        assert any(p.startswith("conv.") for p in paths(device)), seconds
        assert autotune.choices()[0]["choice"] == "kernel"


@pytest.mark.parametrize("device", CUDA)
def test_deterministic_algorithms_keep_the_kernels_cuda(device, tuned):
    """Under torch.use_deterministic_algorithms(True) nothing is timed and the kernels run (their
    backward is deterministic; the eager composite's is not on CUDA), even for a signature whose
    cached choice was the composite."""
    autotune.set_timer(FakeTimer(kernel=2e-3, eager=1e-3))
    x, wt, b = conv_inputs(device)
    ops.upsample_conv2d(x, wt, b)
    assert [c["choice"] for c in autotune.choices()] == ["eager"]
    timer = FakeTimer(kernel=2e-3, eager=1e-3)
    autotune.set_timer(timer)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for call in (lambda: ops.upsample_conv2d(x, wt, b),  # the signature cached as "eager"
                     lambda: ops.eq_conv2d(x, wt, b)):  # a new one
            paths(device)
            call()
            assert any(p.startswith("conv.") for p in paths(device))
    finally:
        torch.use_deterministic_algorithms(before)
    assert timer.calls == [] and len(autotune.choices()) == 1


@pytest.mark.parametrize("device", CUDA)
def test_autotune_off_times_nothing_cuda(device, tuned, monkeypatch):
    timer = FakeTimer(kernel=2e-3, eager=1e-3)
    autotune.set_timer(timer)
    monkeypatch.setenv("PROGAN_EXT_AUTOTUNE", "0")
    x, wt, b = conv_inputs(device)
    paths(device)
    ops.conv2d_downsample(x, wt, b)
    assert timer.calls == [] and autotune.choices() == []
    assert any(p.startswith("conv.") for p in paths(device))
    assert ops.backend_info()["autotune"]["enabled"] is False


@pytest.mark.parametrize("device", CUDA)
@pytest.mark.parametrize("winner", ["kernel", "eager"])
def test_gradients_through_the_chosen_candidate_cuda(device, tuned, winner):
    loser = "eager" if winner == "kernel" else "kernel"
    autotune.set_timer(FakeTimer(**{winner: 1e-3, loser: 2e-3}))
    x, wt, b = (t.double().requires_grad_() for t in conv_inputs(device))
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, wt, b))
    y, yr = ops.eq_conv2d(x, wt, b, pixel_norm=True), ref.eq_conv2d(xr, wr, br, pixel_norm=True)
    g = torch.randn_like(yr)
    (g * y).sum().backward()
    (g * yr).sum().backward()
    for a, r in ((x, xr), (wt, wr), (b, br)):
        torch.testing.assert_close(a.grad, r.grad, rtol=1e-9, atol=1e-10)
    assert autotune.choices()[0]["choice"] == winner


@pytest.mark.parametrize("device", CUDA)
def test_every_public_op_is_tuned_cuda(device, tuned):
    timer = FakeTimer(kernel=2e-3, eager=1e-3)
    autotune.set_timer(timer)
    x, wt, b = conv_inputs(device, n=4)
    ops.pixel_norm(x)
    ops.bias_act(x, torch.randn(8, device=x.device))
    ops.minibatch_stddev(x)
    ops.eq_conv2d(x, wt, b)
    ops.upsample_conv2d(x, wt, b)
    ops.conv2d_downsample(x, wt, b)
    assert sorted(c["op"] for c in autotune.choices()) == sorted(
        ["pixel_norm", "bias_act", "minibatch_stddev", "eq_conv2d", "upsample_conv2d", "conv2d_downsample"])
    assert all(c["choice"] == "eager" for c in autotune.choices())


def test_cpu_is_not_tuned_by_default(monkeypatch):
    monkeypatch.delenv("PROGAN_EXT_AUTOTUNE", raising=False)
    timer = FakeTimer(kernel=2e-3, eager=1e-3)
    before = autotune.set_timer(timer)
    try:
        ops.eq_conv2d(torch.randn(1, 4, 3, 3), torch.randn(4, 4, 3, 3), None, gain=math.sqrt(2))
    finally:
        autotune.set_timer(before)
    assert timer.calls == [] and "cuda" in ops.backend_info()["autotune"]["device_types"]


def split_inputs(device):
    """A 4x4 map with 256 input channels: the tensor-core conv splits its 72 K steps (4 x 18)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 256, 4, 4, generator=g).to(device=device, dtype=torch.float16)
    wt = torch.randn(32, 256, 3, 3, generator=g).to(device=device, dtype=torch.float16)
    b = torch.randn(32, generator=g).to(device=device, dtype=torch.float16)
    return x.to(memory_format=torch.channels_last), wt, b


@pytest.mark.parametrize("device", CUDA)
def test_a_conv_that_splits_k_is_also_timed_unsplit_cuda(device, tuned):
    timer = FakeTimer(kernel=3e-3, kernel_unsplit=1e-3, eager=2e-3)
    autotune.set_timer(timer)
    x, wt, b = split_inputs(device)
    want = ref.eq_conv2d(x.double(), wt.double(), b.double(), pixel_norm=True)
    ops.eq_conv2d(x, wt, b, pixel_norm=True)
    assert sorted(timer.calls) == ["eager", "kernel", "kernel_unsplit"]
    assert autotune.choices()[0]["choice"] == "kernel_unsplit"
    paths(device)
    out = ops.eq_conv2d(x, wt, b, pixel_norm=True)  # cached: the kernel with the split off
    p = paths(device)
    assert p.get("conv.igemm") == 1 and "conv.split_k" not in p and len(timer.calls) == 3, p
    torch.testing.assert_close(out.double(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())
    # the knob is back on: the kernel called directly splits again
    ns = emulated.ops() if is_emulated(device) else torch.ops.progan_ext
    ns.eq_conv2d(x, wt, b, math.sqrt(2), "lrelu", 0.2, True)
    assert paths(device).get("conv.split_k") == 1
    # a conv that does not split (8 -> 16 channels) times only the kernel and the composite
    ops.eq_conv2d(*conv_inputs(device))
    assert sorted(timer.calls[3:]) == ["eager", "kernel"] and autotune.choices()[1]["choice"] == "eager"


@pytest.mark.parametrize("device", CUDA)
def test_the_split_knob_is_per_thread_cuda(device):
    ns = emulated.ops() if is_emulated(device) else torch.ops.progan_ext
    x, wt, b = split_inputs(device)
    seen = []
    assert ns.set_conv_split_k(False) is True
    try:
        worker = threading.Thread(target=lambda: seen.append(ns.set_conv_split_k(True)))
        worker.start()
        worker.join()
        paths(device)
        ns.eq_conv2d(x, wt, b, math.sqrt(2), "lrelu", 0.2, False)
        assert "conv.split_k" not in paths(device)
    finally:
        assert ns.set_conv_split_k(True) is False
    assert seen == [True]  # another thread's setting was its own default, untouched by this one


@pytest.mark.parametrize("device", CUDA)
def test_a_conv_reading_nchw_in_place_is_also_timed_on_an_nhwc_copy_cuda(device, tuned):
    """The tensor-core conv reads an NCHW input in place; autotuning also times it on an NHWC copy
    of the input (the set_conv_nchw_loads knob off), runs the winner with the knob set around the
    call, and leaves the knob on afterwards. Channels_last inputs have no such candidate."""
    timer = FakeTimer(kernel=3e-3, kernel_nhwc=1e-3, eager=2e-3)
    autotune.set_timer(timer)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 16, 5, 7, generator=g).to(device=device, dtype=torch.bfloat16)
    wt = torch.randn(24, 16, 3, 3, generator=g).to(device=device, dtype=torch.bfloat16)
    b = torch.randn(24, generator=g).to(device=device, dtype=torch.bfloat16)
    ops.upsample_conv2d(x, wt, b)
    assert sorted(timer.calls) == ["eager", "kernel", "kernel_nhwc"]
    assert autotune.choices()[0]["choice"] == "kernel_nhwc"
    paths(device)
    out = ops.upsample_conv2d(x, wt, b)  # cached: the kernel on an NHWC copy
    p = paths(device)
    assert p.get("conv.igemm") == 1 and "conv.nchw_loads" not in p and len(timer.calls) == 3, p
    want = ref.upsample_conv2d(x.double(), wt.double(), b.double())
    torch.testing.assert_close(out.double(), want, rtol=4e-2, atol=4e-2 * want.abs().max().item())
    ns = emulated.ops() if is_emulated(device) else torch.ops.progan_ext
    assert ns.set_conv_nchw_loads(True) is True  # back on after the call
    ops.upsample_conv2d(x.contiguous(memory_format=torch.channels_last), wt, b)  # a new signature
    assert sorted(timer.calls[3:]) == ["eager", "kernel"]
