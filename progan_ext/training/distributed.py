"""torch.distributed for torchrun: process group setup, data-parallel gradient averaging, and the one
way every rank leaves a run.

Gradients are averaged with one flat all-reduce per network after each backward. This is what
DDP does, written out because the WGAN-GP step runs D three times plus a double backward before
the single optimizer step, and the progressive networks leave most parameters unused at low
resolution; both are awkward for the DDP wrapper and trivial here. Every rank starts from rank
0's parameters and applies identical updates, so the networks stay in sync.

Leaving a run (``shutdown`` and ``abort``). Gloo runs every collective on worker threads of the
process group; a worker drops its reference to a finished collective (and to the tensors in it)
a moment after the collective has returned to Python. If Python has already dropped those tensors,
the worker's drop frees their Python objects and has to take the GIL; if the interpreter is
finalising by then, the thread is torn down inside C++ and the process aborts ("terminate called
without an active exception", SIGABRT after a finished run, issue 9). ``destroy_process_group``
joins the workers, but only if nothing else holds the process group: importing
``torch.distributed.nn`` after ``init_process_group`` (torch.optim does it, through torch._dynamo)
binds the group as default arguments of its functions, so the workers used to outlive the
interpreter. Hence:
  * ``init`` imports ``torch.distributed.nn`` before creating the group, so nothing binds it;
  * every collective here keeps its tensors referenced from Python (``_hold``) until the group is
    destroyed, so a worker never frees a Python object; objects are gathered through tensors held
    that way (not ``all_gather_object``, whose temporaries we cannot hold);
  * every rank leaves through the same sequence: collectives matched (the loop decides to stop on
    an all-reduced flag), a barrier, ``destroy_process_group`` (which joins the workers), then the
    held tensors are released.
A rank that fails on its own (an exception, a second Ctrl-C) cannot take part in that sequence:
``abort`` records "rank R failed: ..." in the rendezvous store and closes its connections, so the
other ranks' next collective fails at once; they raise ``PeerFailed`` naming that rank and exit
non-zero instead of waiting for the collective timeout.
"""

from __future__ import annotations

import collections
import os
import pickle
import time
import warnings

import torch
import torch.distributed as dist

__all__ = [
    "init", "active", "is_main", "rank", "world_size", "barrier", "broadcast_module", "average_gradients",
    "all_reduce_flags", "gather_objects", "shutdown", "abort", "PeerFailed", "gloo_threads_alive",
]

_FAILED_KEY = "progan_ext/failed/rank{}"
# Tensors of the latest collectives, referenced until the process group is destroyed (see above).
# Older ones are released: their workers finished with them many collectives ago.
_held: collections.deque = collections.deque(maxlen=64)
_device = torch.device("cpu")


class PeerFailed(RuntimeError):
    """Another rank failed (its message is included); this rank stopped without a barrier."""


def init(device: torch.device) -> None:
    """Initialises the default group when launched by torchrun (WORLD_SIZE > 1)."""
    global _device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        import torch.distributed.nn  # noqa: F401  (before the group exists: see the module note)

        backend = "nccl" if device.type == "cuda" else "gloo"
        _device = device
        dist.init_process_group(backend)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def _hold(*tensors: torch.Tensor) -> None:
    _held.extend(tensors)


def _collective(fn, *args, **kwargs):
    """Runs one collective; a failure caused by another rank's abort becomes ``PeerFailed``."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:  # DistBackendError and friends; gloo: "Connection closed by peer"
        failed = _failed_peers(wait_s=2.0)
        if failed:
            raise PeerFailed(f"rank {dist.get_rank()} stopped because " + "; ".join(failed)) from exc
        raise


def barrier() -> None:
    if active():
        _collective(dist.barrier)


def broadcast_module(module: torch.nn.Module) -> None:
    if active():
        for t in list(module.parameters()) + list(module.buffers()):
            _collective(dist.broadcast, t.data, src=0)  # held by the module


def average_gradients(module: torch.nn.Module) -> None:
    if not active():
        return
    # Parameters unused at the current resolution have no gradient on any rank (same graph
    # everywhere); leaving them None keeps Adam's per-parameter step counts as in one process.
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    _hold(flat)
    _collective(dist.all_reduce, flat)
    flat /= world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def all_reduce_flags(*flags: bool, device) -> list[bool]:
    """Logical OR of per-rank flags (stop requests, non-finite losses), one collective."""
    if not active():
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    _hold(t)
    _collective(dist.all_reduce, t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(obj) -> list:
    """List of ``obj`` (any picklable value) from every rank, on every rank.

    Two all-gathers (sizes, then the padded pickles) over tensors that stay held; the data comes
    from the ranks of this run only."""
    if not active():
        return [obj]
    world = world_size()
    payload = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
    size = torch.tensor([payload.numel()], dtype=torch.int64, device=_device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    _hold(size, *sizes)
    _collective(dist.all_gather, sizes, size)
    lengths = [int(s) for s in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=_device)
    padded[: payload.numel()] = payload.to(_device)
    outs = [torch.empty_like(padded) for _ in range(world)]
    _hold(padded, *outs)
    _collective(dist.all_gather, outs, padded)
    return [pickle.loads(o[:n].cpu().numpy().tobytes()) for o, n in zip(outs, lengths)]


def gloo_threads_alive() -> int:
    """How many gloo worker threads this process has (Linux; 0 where it cannot tell)."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return 0
    alive = 0
    for tid in os.listdir(tasks):
        try:
            with open(os.path.join(tasks, tid, "comm")) as f:
                alive += f.read().strip() == "pt_gloo_runloop"
        except OSError:
            pass
    return alive


def _destroy() -> None:
    dist.destroy_process_group()
    if gloo_threads_alive():
        # Something outside progan_ext still holds the group: keep the held tensors (a worker must
        # never be the one that frees them) and say so, since the exit may then be unclean.
        warnings.warn("progan_ext: the gloo process group outlived destroy_process_group (another module "
                      "holds a reference to it); its worker threads are still running", RuntimeWarning)
    else:
        _held.clear()


def shutdown() -> None:
    """The normal end of a run, the same on every rank: a barrier (every rank has finished its
    collectives), then ``destroy_process_group``, which joins the gloo workers."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        barrier()
    finally:
        _destroy()


def abort(exc: BaseException) -> None:
    """The end of a run that failed in this rank alone: record why for the other ranks, then
    destroy the group without a barrier (its closed connections make their collectives fail)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if active() and not isinstance(exc, PeerFailed):
        text = f"rank {rank()} failed: {type(exc).__name__}: {exc}".strip().rstrip(":")
        try:
            dist.distributed_c10d._get_default_store().set(_FAILED_KEY.format(rank()), text)
        except Exception:  # noqa: BLE001  (the store may be gone already; the exit code still says it)
            pass
    _destroy()


def _failed_peers(wait_s: float) -> list[str]:
    """The failure records of other ranks (see ``abort``), waiting up to ``wait_s`` for one."""
    try:
        store = dist.distributed_c10d._get_default_store()
        me, world = dist.get_rank(), dist.get_world_size()
    except Exception:  # noqa: BLE001
        return []
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for r in range(world):
            key = _FAILED_KEY.format(r)
            try:
                if r != me and store.check([key]):
                    found.append(store.get(key).decode(errors="replace"))
            except Exception:  # noqa: BLE001
                return found
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)
