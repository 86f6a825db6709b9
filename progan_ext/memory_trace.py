"""Memory efficiency of the CUDA kernels without a GPU: coalescing and shared-memory bank conflicts,
measured exactly from the addresses each lane of the emulated kernels computes.

The memory-tracing build ``progan_ext._emu_trace`` (``PROGAN_EXT_EMULATE=trace``; opt-in, like the
emulated module) holds the kernels of csrc/cuda compiled against the emulator with every load and
store reported to a tracer, registered as ``torch.ops.progan_ext_emu_trace.<op>``. Tracing is off
until asked for::

    from progan_ext import memory_trace
    with memory_trace.trace() as t:
        memory_trace.ops().pixel_norm(x, 1e-8)
    k = t.kernels["pixel_norm_rows_kernel<scalar_t, VEC>"]
    k.global_load.efficiency, k.shared_load.conflict, k.global_bytes

Each warp-wide request (the k-th execution of an instruction by the lanes of a warp between two
of its synchronisation points) is measured as the GPU serves it: global requests in 32-byte
sectors against the fewest sectors that hold the bytes asked for; shared requests in wavefronts
(32 banks of 4 bytes; 8- and 16-byte accesses by half and quarter warp) against one wavefront
per 128 bytes. docs/memory_access.md has the details and the limits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import torch

from . import _ext

__all__ = ["available", "error", "NAMESPACE", "ops", "trace", "Trace", "KernelTrace", "Totals"]

NAMESPACE = "progan_ext_emu_trace"
available = False
error: str | None = None


def _load() -> None:
    global available, error
    error = _ext.load_variant("progan_ext._emu_trace", NAMESPACE,
                              "`PROGAN_EXT_CPU_ONLY=1 PROGAN_EXT_EMULATE=trace python setup.py build_ext --inplace`")
    available = error is None


def ops():
    """``torch.ops.progan_ext_emu_trace`` (raises when the memory-tracing build is absent)."""
    if not available:
        raise RuntimeError(error)
    return getattr(torch.ops, NAMESPACE)


@dataclasses.dataclass
class Totals:
    """One kind of request (global or shared, load or store) of one kernel or instruction.

    ``units`` are 32-byte sectors (global) or wavefronts (shared); ``ideal`` the fewest that could
    serve the ``bytes`` distinct bytes the lanes asked for; ``max_degree`` the worst bank conflict
    of any one shared request (1: none, 32: 32-way)."""

    requests: int = 0
    lanes: int = 0  # active lanes summed over the requests
    bytes: int = 0
    units: int = 0
    ideal: int = 0
    max_degree: int = 0

    @property
    def efficiency(self) -> float:
        """Global: ideal / touched sectors (1.0 = perfectly coalesced); shared: ideal / wavefronts."""
        return self.ideal / self.units if self.units else 1.0

    @property
    def conflict(self) -> float:
        """Shared: wavefronts per ideal wavefront, the average conflict degree (1.0 = none)."""
        return self.units / self.ideal if self.ideal else 1.0

    @property
    def sectors_per_request(self) -> float:
        return self.units / self.requests if self.requests else 0.0

    @property
    def active_lanes(self) -> float:
        """Lanes taking part per request (of 32): idle lanes waste issue slots, not sectors."""
        return self.lanes / self.requests if self.requests else 0.0


@dataclasses.dataclass
class KernelTrace:
    name: str
    launches: int
    blocks: int
    global_load: Totals
    global_store: Totals
    shared_load: Totals
    shared_store: Totals
    sites: list  # [(offset in the module, kind, Totals)]

    @property
    def global_bytes(self) -> int:
        """Bytes moved between the SMs and L2: every sector touched, 32 bytes each."""
        return 32 * (self.global_load.units + self.global_store.units)

    @property
    def global_efficiency(self) -> float:
        """Loads and stores together: ideal / touched sectors."""
        units = self.global_load.units + self.global_store.units
        return (self.global_load.ideal + self.global_store.ideal) / units if units else 1.0

    @property
    def shared(self) -> Totals:
        """Shared loads and stores together (max_degree: the worst of either)."""
        a, b = self.shared_load, self.shared_store
        return Totals(a.requests + b.requests, a.lanes + b.lanes, a.bytes + b.bytes, a.units + b.units,
                      a.ideal + b.ideal, max(a.max_degree, b.max_degree))


@dataclasses.dataclass
class Trace:
    """What a ``trace()`` block recorded, per kernel (name as written at its launch)."""

    kernels: dict = dataclasses.field(default_factory=dict)
    module: str = ""
    local_accesses: int = 0  # lane-stack accesses (registers / local memory on a GPU): not counted
    host_accesses: int = 0   # kernel parameters and emulator frames: not counted

    def kernel(self, prefix: str) -> KernelTrace:
        """The one kernel whose name starts with ``prefix``."""
        found = [k for name, k in self.kernels.items() if name.startswith(prefix)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} traced kernels start with {prefix!r}: {sorted(self.kernels)}")
        return found[0]


def _parse(text: str) -> Trace:
    raw = json.loads(text)
    out = Trace(module=raw["module"], local_accesses=raw["local_accesses"], host_accesses=raw["host_accesses"])
    for name, k in raw["kernels"].items():
        clean = name[1:-1] if name.startswith("(") and name.endswith(")") else name
        out.kernels[clean] = KernelTrace(
            clean, k["launches"], k["blocks"],
            *(Totals(**k[kind]) for kind in ("global_load", "global_store", "shared_load", "shared_store")),
            sites=[(s["offset"], s["kind"], Totals(**s["totals"])) for s in k["sites"]],
        )
    return out


@contextlib.contextmanager
def trace():
    """Traces every emulated kernel launched through ``ops()`` inside the block; the yielded
    ``Trace`` is filled when the block exits."""
    o = ops()
    result = Trace()
    o.trace_reset()
    o.trace_enable(True)
    try:
        yield result
    finally:
        o.trace_enable(False)
        parsed = _parse(o.trace_report())
        result.__dict__.update(parsed.__dict__)


_load()
