"""Writes a multi-resolution uint8 pyramid of an image folder, loaded fast by ``--data OUT``.

    python -m progan_ext.prepare SRC OUT --resolution 256 [--workers 8] [--max-images N]

Every image is converted to RGB, center-cropped and resized to R (LANCZOS); each lower level is
box-downsampled from the one above (like the official dataset_tool). OUT gets one memory-mapped
``level_RRRR.npy`` [N, 3, r, r] per resolution 4..R and ``progan_pyramid.json`` (counts, skipped
files). Unreadable files are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .data import PYRAMID_META, box_downsample, list_image_files, load_image, pyramid_level_name
from .networks import check_resolution, resolutions_up_to
from .training.config import cli_name

__all__ = ["prepare", "main"]


def _load(job):
    path, resolution = job
    try:
        return load_image(path, resolution)
    except Exception:
        return None


def prepare(src, out, resolution: int, *, workers: int = 0, max_images: int | None = None, progress: bool = True) -> dict:
    check_resolution(resolution)
    files = list_image_files(src)
    if max_images:
        files = files[:max_images]
    if not files:
        raise ValueError(f"no images found in {str(src)!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    top_tmp = out / "level_top.tmp.npy"
    top = np.lib.format.open_memmap(top_tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, resolution, resolution))
    count, skipped = 0, []
    jobs = [(str(f), resolution) for f in files]
    pool = Pool(workers) if workers > 0 else None
    results = pool.imap(_load, jobs, chunksize=16) if pool else map(_load, jobs)
    for path, img in tqdm(zip(files, results), total=len(files), disable=not progress, desc="decode", unit="img"):
        if img is None:
            skipped.append(str(path))
            continue
        top[count] = img
        count += 1
    if pool:
        pool.close()
        pool.join()
    if count == 0:
        del top
        top_tmp.unlink()
        raise ValueError(f"none of the {len(files)} image files in {str(src)!r} could be read")
    chunk = max(1, (64 << 20) // (3 * resolution * resolution))
    for r in resolutions_up_to(resolution):
        level = np.lib.format.open_memmap(out / (pyramid_level_name(r) + ".tmp.npy"), mode="w+", dtype=np.uint8,
                                          shape=(count, 3, r, r))
        for i in range(0, count, chunk):
            j = min(i + chunk, count)
            level[i:j] = box_downsample(np.asarray(top[i:j]), r)
        level.flush()
        del level
        os.replace(out / (pyramid_level_name(r) + ".tmp.npy"), out / pyramid_level_name(r))
    del top
    top_tmp.unlink()
    meta = {"resolution": resolution, "num_images": count, "skipped": len(skipped), "skipped_files": skipped[:1000],
            "source": str(src)}
    with open(out / PYRAMID_META, "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=cli_name("prepare"), description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="folder of images (searched recursively)")
    p.add_argument("out", help="output directory")
    p.add_argument("--resolution", type=int, required=True, help="final resolution, power of two 8..1024")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--max-images", type=int)
    args = p.parse_args(argv)
    try:
        check_resolution(args.resolution)
    except ValueError as exc:
        p.error(str(exc))
    try:
        meta = prepare(args.src, args.out, args.resolution, workers=args.workers, max_images=args.max_images)
    except (OSError, ValueError) as exc:  # missing/unreadable source or unwritable output: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {meta['num_images']} images at 4..{args.resolution} to {args.out} ({meta['skipped']} unreadable skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
