"""Checkpoints: written atomically (temp file + fsync + rename), the last few kept, and found
again from a run directory for ``--resume``, ``python -m progan_ext.generate`` and ``metrics``.

A checkpoint holds everything needed to continue bit for bit: the config, G, D, G_ema, both
Adam states, the image counter and step, the data-stream position, the fixed grid latents and the
RNG states of every rank. All of it is tensors and plain Python types, so it is read with
``torch.load(weights_only=True)``: opening a checkpoint someone sent you cannot run code.

A file that cannot be read (truncated by a full disk or a failed copy, not a checkpoint at all,
a pickle that needs code to load) raises ``CheckpointError`` with one line saying which file and
why. Given a run directory, ``load_newest`` skips unreadable checkpoints with a warning and takes
the newest readable one.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import torch

__all__ = ["CheckpointError", "save_atomic", "list_checkpoints", "find_checkpoint", "load", "load_newest",
           "prune", "remove_stale_temp_files"]

NAME = "checkpoint-{nimg:09d}.pt"
PATTERN = re.compile(r"checkpoint-(\d{9})\.pt$")
REQUIRED_KEYS = ("config", "G", "D", "G_ema", "nimg", "resolution", "alpha")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a progan_ext checkpoint (one-line message)."""


def save_atomic(state: dict, run_dir, nimg: int, keep: int) -> Path:
    run_dir = Path(run_dir)
    path = run_dir / NAME.format(nimg=nimg)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(run_dir)  # the rename itself survives a power cut
    prune(run_dir, keep)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(run_dir) -> list[Path]:
    """``checkpoint-*.pt`` of a run directory, oldest first (by image count)."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob("checkpoint-*.pt") if PATTERN.search(p.name)]
    return sorted(found, key=lambda p: int(PATTERN.search(p.name).group(1)))


def prune(run_dir, keep: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)


def remove_stale_temp_files(run_dir) -> list[Path]:
    """Deletes ``checkpoint-*.pt.tmpPID`` left by a process killed while writing (the finished
    checkpoints beside them are complete: a temp file is renamed only once fully written)."""
    removed = []
    for tmp in Path(run_dir).glob("checkpoint-*.pt.tmp*"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def find_checkpoint(path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run directory."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"no checkpoint-*.pt in run directory {str(path)!r}")
        return found[-1]
    if path.exists():
        return path
    raise CheckpointError(f"checkpoint or run directory {str(path)!r} does not exist")


def _read(path: Path, map_location) -> dict:
    """One checkpoint file, or CheckpointError with the reason in one line."""
    try:
        with warnings.catch_warnings():  # torch's warnings about odd files: our error says it in one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises RuntimeError, UnpicklingError, EOFError, OSError, ...
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {_reason(exc)}") from None
    missing = [k for k in REQUIRED_KEYS if k not in state] if isinstance(state, dict) else list(REQUIRED_KEYS)
    if missing:
        raise CheckpointError(f"{str(path)!r} is not a progan_ext training checkpoint (no {', '.join(missing)})")
    state["path"] = str(path)
    return state


def _reason(exc: BaseException) -> str:
    """torch.load's error (often pages long) as a short reason."""
    full = str(exc)
    first = full.strip().splitlines()[0] if full.strip() else ""
    if "Unsupported global" in full:
        what = re.search(r"GLOBAL ([\w.]+)", full)
        return (f"it holds Python objects ({what.group(1) if what else 'a pickled class'}) that only an unsafe "
                "load could build; refused, since unpickling them could run code")
    if "Weights only load failed" in full:
        return "not a progan_ext checkpoint (pickle data that torch.load(weights_only=True) does not accept)"
    if "zip archive" in full or "central directory" in full or isinstance(exc, EOFError):
        return "truncated or corrupt (the file ends before its zip directory)"
    if isinstance(exc, (KeyError, ValueError)) or "invalid load key" in full or "magic number" in full:
        return f"not a PyTorch file ({type(exc).__name__}: {first[:80]})"
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def load(path, map_location="cpu") -> dict:
    """The checkpoint at ``path``: a file, or the newest readable checkpoint of a run directory
    (older ones are tried when the newest cannot be read; a warning names each one skipped)."""
    path = Path(path)
    if path.is_dir():
        return load_newest(path, map_location)
    return _read(find_checkpoint(path), map_location)


def load_newest(run_dir, map_location="cpu", on_skip=None) -> dict:
    """The newest readable checkpoint of ``run_dir``. Each unreadable one, newest first, is
    reported as ``on_skip(path, message)`` (default: a warning on stderr) and skipped."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no checkpoint-*.pt in run directory {str(run_dir)!r}")
    if on_skip is None:
        def on_skip(bad, reason):
            print(f"warning: {reason}; skipping it", file=sys.stderr, flush=True)
    reasons = []
    for path in reversed(found):
        try:
            return _read(path, map_location)
        except CheckpointError as exc:
            reasons.append(str(exc))
            on_skip(path, str(exc))
    raise CheckpointError(f"none of the {len(found)} checkpoints in {str(run_dir)!r} can be read "
                          f"(newest: {reasons[0]})")
