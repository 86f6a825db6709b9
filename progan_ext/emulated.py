"""The emulated CUDA kernels: the CUDA sources of csrc/cuda compiled a second time as host C++ against
an emulator of CUDA's execution model (csrc/emu), registered for CPU tensors as
``torch.ops.progan_ext_emu.<op>`` with the same schemas as ``torch.ops.progan_ext.<op>``.

Built only on request (``PROGAN_EXT_EMULATE=1 pip install --no-build-isolation .``); it lets the
CUDA kernels run, and be tested, on machines without a GPU. It is slow (every CUDA thread is a
fiber) and meant for tests and kernel development, not for training. Knobs (environment, read at
every launch): ``PROGAN_EMU_BLOCK_ORDER`` = forward | reverse | shuffle,
``PROGAN_EMU_THREAD_ORDER`` = the same or warps | warps-reverse (one warp at a time, each up to its
next ``__syncthreads``: exposes missing barriers between warps), ``PROGAN_EMU_ASYNC_LAND`` = wait |
issue (when a cp.async copy lands: at its wait, the default, or as it is issued),
``PROGAN_EMU_SEED``, ``PROGAN_EMU_TF32`` = rna | truncate, ``PROGAN_EMU_SM`` (the compute capability
the host code sees, default 90), ``PROGAN_EMU_STACK_KB``, ``PROGAN_EMU_DRY_RUN`` = 1
(launches are checked and counted but run no block: the host code's path choices at any shape,
outputs left as allocated).
"""

from __future__ import annotations


import torch

from . import _ext

__all__ = ["available", "error", "NAMESPACE", "ops", "kernel_paths", "stats"]

NAMESPACE = "progan_ext_emu"
available = False
error: str | None = None


def _load() -> None:
    global available, error
    error = _ext.load_variant("progan_ext._emu", NAMESPACE,
                              "`PROGAN_EXT_EMULATE=1 pip install --no-build-isolation .`")
    available = error is None


def ops():
    """``torch.ops.progan_ext_emu`` (raises when the emulated module is not built)."""
    if not available:
        raise RuntimeError(error)
    return getattr(torch.ops, NAMESPACE)


def kernel_paths(reset: bool = False) -> dict[str, int]:
    """How often each kernel path ran in the emulated module ({"conv.igemm": 3, ...})."""
    return _ext.parse_counts(ops().kernel_path_counts(reset))


def stats() -> dict[str, int]:
    """Emulator counters since load: launches, blocks, threads, fiber switches."""
    return _ext.parse_counts(ops().emu_stats())


_load()
