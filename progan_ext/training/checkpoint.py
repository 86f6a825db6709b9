"""Checkpoints: written atomically (temp file + fsync + rename), the last few kept, and found
again from a run directory for ``--resume`` and ``python -m progan_ext.generate``.

A checkpoint holds everything needed to continue bit for bit: the config, G, D, G_ema, both
Adam states, the image counter and step, the data-stream position, the fixed grid latents and the
RNG states of every rank.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

__all__ = ["save_atomic", "list_checkpoints", "find_checkpoint", "load", "prune"]

NAME = "checkpoint-{nimg:09d}.pt"
PATTERN = re.compile(r"checkpoint-(\d{9})\.pt$")


def save_atomic(state: dict, run_dir, nimg: int, keep: int) -> Path:
    run_dir = Path(run_dir)
    path = run_dir / NAME.format(nimg=nimg)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    prune(run_dir, keep)
    return path


def list_checkpoints(run_dir) -> list[Path]:
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob("checkpoint-*.pt") if PATTERN.search(p.name)]
    return sorted(found, key=lambda p: int(PATTERN.search(p.name).group(1)))


def prune(run_dir, keep: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)


def find_checkpoint(path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run directory."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"no checkpoint-*.pt in run directory {str(path)!r}")
        return found[-1]
    raise FileNotFoundError(f"checkpoint or run directory {str(path)!r} does not exist")


def load(path, map_location="cpu") -> dict:
    path = find_checkpoint(path)
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or "G_ema" not in state or "config" not in state:
        raise ValueError(f"{path} is not a progan_ext training checkpoint")
    state["path"] = str(path)
    return state
