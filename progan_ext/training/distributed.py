"""torch.distributed for torchrun: process group setup and data-parallel gradient averaging.

Gradients are averaged with one flat all-reduce per network after each backward. This is what
DDP does, written out because the WGAN-GP step runs D three times plus a double backward before
the single optimizer step, and the progressive networks leave most parameters unused at low
resolution; both are awkward for the DDP wrapper and trivial here. Every rank starts from rank
0's parameters and applies identical updates, so the networks stay in sync.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init", "is_main", "rank", "world_size", "average_gradients", "broadcast_module", "all_reduce_flags", "barrier"]


def init(device: torch.device) -> None:
    """Initialises the default group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_module(module: torch.nn.Module) -> None:
    if active():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(module: torch.nn.Module) -> None:
    if not active():
        return
    # Parameters unused at the current resolution have no gradient on any rank (same graph
    # everywhere); leaving them None keeps Adam's per-parameter step counts as in one process.
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
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
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(obj):
    """List of ``obj`` from every rank (on every rank)."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
