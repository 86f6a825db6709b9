"""Autotuned dispatch: on a GPU, no progan_ext op is slower than the eager PyTorch composite.

The first call of an op with a new signature (op, input shapes, dtype, memory format, static
arguments, device) on a device type that is tuned (CUDA by default) times the candidates, the
compiled kernel and the eager composite of ``progan_ext.reference`` (cuDNN convolutions and
separate bias, activation and pixel-norm passes, as plain PyTorch would run them), and for a
convolution whose tensor-core kernel splits K (the small maps) also that kernel with the split off
(``kernel_unsplit``: one pass, no workspace, no reduction launch), and for a tensor-core
convolution of an NCHW input, which the kernel reads in place, also that kernel reading an NHWC
copy instead (``kernel_nhwc``), and caches the fastest; later
calls with that signature run the cached choice without timing anything, so the choice is
deterministic for the life of the process. The timing runs under ``torch.no_grad()``
on the call's own inputs (forward only), ``warmup`` + ``reps`` runs each, median of the reps, with
CUDA events. Under ``torch.compile`` nothing is timed: the compiled kernel runs (a choice cannot be
made inside a traced graph). Nor under ``torch.use_deterministic_algorithms(True)``: the kernels'
backward is deterministic, the composite's is not on CUDA (``upsample_nearest2d``'s backward
accumulates with atomics and raises in that mode; seen on an H200 as gradients that differ between
two backward passes), so the kernels run.

``PROGAN_EXT_AUTOTUNE=0`` turns it off (the compiled kernel always runs); ``choices()`` and
``progan_ext.ops.backend_info()["autotune"]`` list what was chosen, and the logger
``progan_ext.autotune`` says it at DEBUG level as each choice is made. ``set_timer`` swaps the
timer and ``enable`` the tuned device types (tests drive the logic on the emulated CUDA kernels,
which take CPU tensors, with an injected timer).
"""

from __future__ import annotations

import logging
import os
import statistics
from typing import Callable

import torch

__all__ = ["enabled", "enable", "device_types", "choose", "choices", "clear", "set_timer", "CANDIDATES"]

log = logging.getLogger("progan_ext.autotune")

CANDIDATES = ("kernel", "kernel_unsplit", "kernel_nhwc", "eager")  # in order of preference on a tie
device_types: set[str] = {"cuda"}  # tuned device types (mutated in place by enable)
_cache: dict[tuple, str] = {}
_times: dict[tuple, dict[str, float]] = {}


def enabled() -> bool:
    """False when PROGAN_EXT_AUTOTUNE=0 (read at every call, so a test or a user can flip it)."""
    return os.environ.get("PROGAN_EXT_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


def enable(types) -> set[str]:
    """Sets the device types whose calls are tuned (default {"cuda"}); returns the previous set."""
    before = set(device_types)
    device_types.clear()
    device_types.update(types)
    return before


def _cuda_timer(name: str, fn: Callable[[], object], warmup: int, reps: int) -> float:
    """Median seconds of fn() (the candidate ``name``) over reps runs after warmup runs, timed
    with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


Timer = Callable[[str, Callable[[], object], int, int], float]
_timer: Timer = _cuda_timer
WARMUP, REPS = 2, 5


def set_timer(timer: Timer | None) -> Timer:
    """Replaces the timer (``timer(candidate name, fn, warmup, reps) -> seconds``); None restores
    CUDA events. Returns the previous one."""
    global _timer
    before, _timer = _timer, timer or _cuda_timer
    return before


def _signature(t) -> object:
    if isinstance(t, torch.Tensor):
        fmt = "channels_last" if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
            and not t.is_contiguous() else "contiguous" if t.is_contiguous() else "strided"
        return (tuple(t.shape), str(t.dtype), fmt, str(t.device))
    return t


Candidates = dict[str, Callable[[], torch.Tensor]]


def choose(op: str, args: tuple, candidates: Candidates | Callable[[], Candidates]) -> str:
    """The candidate to run for this call of ``op`` (a key of ``candidates``, in CANDIDATES).

    ``args`` are the call's tensors and static arguments (they form the signature); each candidate
    is a no-argument callable computing the op on them. ``candidates`` may also be a no-argument
    callable returning that dict: it is called only when the signature is timed (to find out, for
    example, whether a variant differs from the kernel at all)."""
    if (torch.compiler.is_compiling() or args[0].device.type not in device_types or not enabled()
            or torch.are_deterministic_algorithms_enabled()):
        return "kernel"
    key = (op,) + tuple(_signature(a) for a in args)
    choice = _cache.get(key)
    if choice is not None:
        return choice
    with torch.no_grad():
        if callable(candidates):
            candidates = candidates()
        times = {name: _timer(name, fn, WARMUP, REPS) for name, fn in candidates.items()}
    choice = min(CANDIDATES, key=lambda name: (times.get(name, float("inf")), CANDIDATES.index(name)))
    _cache[key], _times[key] = choice, times
    log.debug("%s %s: %s (%s)", op, key[1:], choice,
              ", ".join(f"{n} {t * 1e3:.3f} ms" for n, t in times.items()))
    return choice


def choices() -> list[dict]:
    """Every choice made so far: op, signature, winner and the measured times (seconds)."""
    return [{"op": k[0], "signature": repr(k[1:]), "choice": c, "times_s": dict(_times[k])}
            for k, c in _cache.items()]


def clear() -> None:
    """Forgets every choice (the next call of each signature times again)."""
    _cache.clear()
    _times.clear()
