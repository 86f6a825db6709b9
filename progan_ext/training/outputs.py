"""Run directory outputs: resolved config, JSONL log (+ TensorBoard when installed), image grids."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["make_run_dir", "RunLog", "save_grid", "to_uint8"]


def make_run_dir(outdir, desc: str) -> Path:
    """``OUTDIR/NNNNN-desc`` with the next free id."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"(\d{5})-", p.name))]
    run_id = max(ids, default=-1) + 1
    while True:
        path = outdir / f"{run_id:05d}-{desc}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            run_id += 1


class RunLog:
    """Appends one JSON object per line to ``log.jsonl``; mirrors scalars to TensorBoard if available."""

    def __init__(self, run_dir, tensorboard: bool = True):
        self.path = Path(run_dir) / "log.jsonl"
        self.tb = None
        self.note = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception as exc:  # tensorboard is optional
                self.note = f"TensorBoard scalars off ({type(exc).__name__}: {exc})"

    def write(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "kimg" in record:
            step = int(record["kimg"] * 1000)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("time", "kimg"):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    x = (img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def save_grid(images: torch.Tensor, path, min_size: int = 256) -> None:
    """Saves a square-ish grid of images (nearest-upscaled so each tile is >= min_size/cols px)."""
    from PIL import Image

    x = to_uint8(images)
    n, h, w, _ = x.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = x[i]
    im = Image.fromarray(grid)
    scale = max(1, min_size // (cols * w))
    if scale > 1:
        im = im.resize((cols * w * scale, rows * h * scale), Image.NEAREST)
    tmp = Path(str(path) + ".tmp.png")
    im.save(tmp)
    tmp.replace(path)
