"""Shared pytest configuration: devices, tolerances and random inputs.

CUDA cases are parametrized with the id "cuda" (select them with `pytest -k cuda`). They run the
CUDA kernels: on a GPU when there is one; otherwise, when the emulated CUDA module is built
(PROGAN_EXT_EMULATE=1, docs/emulated_cuda.md), on CPU tensors with the public ops routed to
torch.ops.progan_ext_emu; otherwise they skip. Cases that need the compiled extension skip when it
was not built.
"""

import os

import pytest
import torch

import progan_ext
from progan_ext import emulated, ops

HAS_CUDA = torch.cuda.is_available()
COMPILED = progan_ext._ext.available
EMULATED_CUDA = not HAS_CUDA and emulated.available


class EmulatedCuda(str):
    """The device of an emulated "cuda" case: "cpu" to torch (the emulated kernels take CPU
    tensors), recognisable to the fixtures below. Compares unequal to "cuda" and equal to "cpu"."""


CUDA_DEVICE = "cuda" if HAS_CUDA else EmulatedCuda("cpu")
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(CUDA_DEVICE, id="cuda", marks=pytest.mark.skipif(
        not (HAS_CUDA or EMULATED_CUDA), reason="no CUDA device and no emulated CUDA module")),
]


def is_emulated(device) -> bool:
    return isinstance(device, EmulatedCuda)


def compiled_ops(device):
    """The torch.ops namespace whose kernels serve `device` in these tests."""
    return emulated.ops() if is_emulated(device) else torch.ops.progan_ext


@pytest.fixture(autouse=True)
def _route_emulated_cuda(request):
    """For an emulated "cuda" case, the public ops on CPU tensors run the emulated CUDA kernels."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or not any(is_emulated(v) for v in callspec.params.values()):
        yield
        return
    before = ops.use_kernels("cpu", emulated.NAMESPACE)
    try:
        yield
    finally:
        ops.use_kernels("cpu", before)



@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global RNG state, whatever ran before it: layers and
    networks draw their weights from it, so a test's values do not depend on the test order or
    on which tests were selected (a CI run that failed only in a subset of the suite).
    PROGAN_EXT_TEST_SEED picks another state, to look for tests whose tolerance holds only by luck."""
    torch.manual_seed(int(os.environ.get("PROGAN_EXT_TEST_SEED", "0")))


@pytest.fixture(autouse=True)
def _kernels_not_autotuned(monkeypatch):
    """On a GPU the public ops autotune by default (progan_ext.autotune): the first call of a
    signature times the kernel against the eager composite and runs the faster. A test of the
    kernels must run the kernels whatever the timing, so autotuning is off here; the tests of the
    dispatcher (test_autotune.py) turn it back on with an injected timer."""
    monkeypatch.setenv("PROGAN_EXT_AUTOTUNE", "0")


FLOAT_DTYPES = [
    pytest.param(torch.float64, id="f64"),
    pytest.param(torch.float32, id="f32"),
    pytest.param(torch.float16, id="f16"),
    pytest.param(torch.bfloat16, id="bf16"),
]

# (rtol, atol) for comparing a kernel with the reference: both compute in fp32 (fp64) and round
# once to the output dtype, so the 16-bit types may differ by about one unit in the last place.
TOL = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
}

LAYOUTS = ["contiguous", "channels_last", "strided"]

requires_compiled = pytest.mark.skipif(not COMPILED, reason="compiled extension not built")


def has_compiled_kernel(op: str, device: str) -> bool:
    return ops._has_kernel(op, device)


def skip_without_kernel(op: str, device: str) -> None:
    if not has_compiled_kernel(op, device):
        pytest.skip(f"no compiled {op} kernel for {device} in this build")


def randn(shape, *, dtype=torch.float32, device="cpu", layout="contiguous", requires_grad=False, seed=0):
    """Random normal tensor in the requested layout: contiguous NCHW, channels_last, or a
    non-contiguous strided view (every other column of a wider tensor)."""
    gen = torch.Generator().manual_seed(seed)
    if layout == "strided":
        wide = list(shape)
        wide[-1] *= 2
        t = torch.randn(wide, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)[..., ::2]
    else:
        t = torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    if layout == "channels_last" and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        assert not t.is_contiguous()
    return t.requires_grad_(requires_grad)


def assert_close(actual, expected, dtype):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def expected_format(x: torch.Tensor) -> torch.memory_format:
    from progan_ext.opdefs._common import memory_format

    return memory_format(x)


def subprocess_env(**extra) -> dict:
    """Environment for a child `python -m progan_ext...`: it imports the same progan_ext as this
    test process (the installed package, or the checkout during development). Run the child with
    a cwd outside the checkout, since `python -m` puts the cwd first on sys.path."""
    import os

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(progan_ext.__file__)))
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)
