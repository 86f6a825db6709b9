"""Training images: the embedded procedural dataset, image folders and prepared pyramids.

Every source gives uint8 images [3, r, r] at any resolution r of the progressive schedule (a power
of two up to its final resolution), box-downsampled from the final resolution:

- ``ProceduralImages``: coloured shapes on gradient backgrounds, rendered from (seed, index); the
  no-download default. Kept in memory (one array per level).
- ``FolderImages``: a recursive folder of jpg/png/webp/bmp; RGBA/grayscale are converted to RGB,
  then center-cropped and resized to the final resolution. Files whose header cannot be read are
  skipped (and counted) up front; a file that fails to decode later is replaced by another image
  with a warning, never a crash.
- ``PyramidImages``: the output of ``python -m progan_ext.prepare``: one memory-mapped uint8 .npy
  per level, so reading a batch at resolution r touches only r*r*3 bytes per image.

``BatchStream`` is the resumable, rank-aware order of samples; ``make_loader`` turns a source into
an iterator of uint8 batches for one resolution.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "IMAGE_EXTENSIONS",
    "ProceduralImages",
    "FolderImages",
    "PyramidImages",
    "open_source",
    "list_image_files",
    "load_image",
    "box_downsample",
    "BatchStream",
    "make_loader",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
IN_MEMORY_LIMIT = 1 << 30  # bytes of uint8 pixels a source may keep in memory


def box_downsample(img: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [..., 3, R, R] -> uint8 [..., 3, r, r] by averaging R/r x R/r boxes (rounded)."""
    big = img.shape[-1]
    if resolution == big:
        return img
    f = big // resolution
    if f * resolution != big:
        raise ValueError(f"cannot box-downsample {big} to {resolution}")
    shape = img.shape[:-2] + (resolution, f, resolution, f)
    return np.rint(img.reshape(shape).mean(axis=(-3, -1), dtype=np.float32)).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Embedded procedural dataset.


class ProceduralImages:
    """Deterministic synthetic images: a two-colour gradient background with 1-3 shapes (disc,
    square, ring) of random colour, size and position. Image ``i`` depends only on (seed, i), and
    lower resolutions are box-downsampled from the final one.
    """

    def __init__(self, num_images: int, resolution: int, seed: int = 0):
        if num_images < 1:
            raise ValueError(f"the procedural dataset needs at least one image, got {num_images}")
        self.num_images, self.resolution, self.seed = num_images, resolution, seed
        self.skipped = 0
        self._levels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_images

    def describe(self) -> str:
        return f"procedural(num={self.num_images}, resolution={self.resolution}, seed={self.seed})"

    def render(self, index: int) -> np.ndarray:
        """uint8 [3, R, R] image number ``index``."""
        rng = np.random.default_rng([self.seed, index])
        r = self.resolution
        t = (np.arange(r, dtype=np.float32) + 0.5) / r
        yy, xx = np.meshgrid(t, t, indexing="ij")
        c0, c1 = rng.uniform(0.0, 1.0, size=(2, 3, 1, 1)).astype(np.float32) * 0.6
        direction = rng.uniform(0, 2 * math.pi)
        ramp = np.clip(0.5 + (xx - 0.5) * math.cos(direction) + (yy - 0.5) * math.sin(direction), 0, 1)
        img = c0 + (c1 - c0) * ramp[None]
        for _ in range(rng.integers(1, 4)):
            kind = rng.integers(0, 3)
            cx, cy = rng.uniform(0.2, 0.8, size=2)
            size = rng.uniform(0.12, 0.3)
            colour = rng.uniform(0.3, 1.0, size=(3, 1, 1)).astype(np.float32)
            if kind == 0:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= size**2
            elif kind == 1:
                mask = (np.abs(xx - cx) <= size * 0.8) & (np.abs(yy - cy) <= size * 0.8)
            else:
                d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
                mask = (d <= size) & (d >= size * 0.55)
            img = np.where(mask[None], colour, img)
        return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)

    def level(self, resolution: int) -> np.ndarray:
        """All images at ``resolution`` as one uint8 array [N, 3, r, r] (cached)."""
        if self.resolution not in self._levels:
            self._levels[self.resolution] = np.stack([self.render(i) for i in range(self.num_images)])
        if resolution not in self._levels:
            self._levels[resolution] = box_downsample(self._levels[self.resolution], resolution)
        return self._levels[resolution]

    def get(self, index: int, resolution: int) -> np.ndarray:
        return self.level(resolution)[index]


# ----------------------------------------------------------------------------------------------
# Image folders.


def list_image_files(root) -> list[Path]:
    """All files under ``root`` (recursively) with an image extension, sorted."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data directory {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"--data must be a directory, got the file {str(root)!r}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_image(path, resolution: int) -> np.ndarray:
    """Reads an image file as uint8 [3, R, R]: converted to RGB (RGBA composited on black by
    dropping alpha after premultiplying, grayscale replicated), center-cropped to a square and
    resized to R. Raises OSError/ValueError for unreadable files."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            rgba = np.asarray(im, dtype=np.float32)
            rgb = rgba[..., :3] * (rgba[..., 3:] / 255.0)
            im = Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")
        else:
            im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
        if s != resolution:
            im = im.resize((resolution, resolution), Image.LANCZOS)
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))


def _header_ok(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
        return w > 0 and h > 0
    except Exception:  # any decoder error means "skip this file"
        return False


class FolderImages:
    """A recursive folder of images, decoded on demand (use DataLoader workers)."""

    def __init__(self, root, resolution: int):
        files = list_image_files(root)
        if not files:
            raise ValueError(
                f"no images found in {str(root)!r} (looked recursively for {', '.join(IMAGE_EXTENSIONS)})"
            )
        self.files = [p for p in files if _header_ok(p)]
        self.skipped = len(files) - len(self.files)
        if not self.files:
            raise ValueError(f"none of the {len(files)} image files in {str(root)!r} could be read")
        self.root, self.resolution = str(root), resolution

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> str:
        return f"folder({self.root!r}, {len(self.files)} images, {self.skipped} unreadable skipped)"

    def get(self, index: int, resolution: int) -> np.ndarray:
        for attempt in range(len(self.files)):
            path = self.files[(index + attempt) % len(self.files)]
            try:
                return box_downsample(load_image(path, self.resolution), resolution)
            except Exception as exc:  # a file that passed the header check but does not decode
                warnings.warn(f"skipping unreadable image {path}: {exc}", RuntimeWarning)
        raise RuntimeError(f"no image in {self.root!r} could be decoded")


# ----------------------------------------------------------------------------------------------
# Prepared multi-resolution pyramids (written by progan_ext.prepare).

PYRAMID_META = "progan_pyramid.json"


def pyramid_level_name(resolution: int) -> str:
    return f"level_{resolution:04d}.npy"


class PyramidImages:
    """A prepared dataset directory: ``progan_pyramid.json`` and one uint8 [N, 3, r, r] .npy per level."""

    def __init__(self, root):
        root = Path(root)
        with open(root / PYRAMID_META) as f:
            self.meta = json.load(f)
        self.root, self.resolution = str(root), int(self.meta["resolution"])
        self.num_images, self.skipped = int(self.meta["num_images"]), int(self.meta.get("skipped", 0))
        self._levels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_images

    def describe(self) -> str:
        return f"pyramid({self.root!r}, {self.num_images} images at {self.resolution}, {self.skipped} skipped by prepare)"

    def level(self, resolution: int) -> np.ndarray:
        if resolution not in self._levels:
            path = Path(self.root) / pyramid_level_name(resolution)
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: the prepared dataset has no {resolution}x{resolution} level")
            self._levels[resolution] = np.load(path, mmap_mode="r")
        return self._levels[resolution]

    def get(self, index: int, resolution: int) -> np.ndarray:
        return np.asarray(self.level(resolution)[index])

    def __getstate__(self):  # workers re-open the memory maps themselves
        state = dict(self.__dict__)
        state["_levels"] = {}
        return state


def open_source(data: str | None, resolution: int, *, seed: int = 0, procedural_images: int = 2048):
    """The image source for ``--data``: None -> procedural; a prepared pyramid dir; or an image folder."""
    if data is None:
        return ProceduralImages(procedural_images, resolution, seed)
    path = Path(data)
    if (path / PYRAMID_META).exists():
        src = PyramidImages(path)
        if src.resolution < resolution:
            raise ValueError(
                f"{data!r} was prepared at {src.resolution}x{src.resolution}, below the training resolution {resolution}"
            )
        return src
    return FolderImages(path, resolution)


# ----------------------------------------------------------------------------------------------
# Sample order and loaders.


class BatchStream:
    """The endless, resumable sample order: concatenated random permutations of the dataset
    (permutation e drawn from ``seed + e``). The global batch at stream position ``pos`` is
    ``stream[pos : pos + batch * world]``; rank k takes the k-th slice of ``batch``."""

    def __init__(self, num_images: int, seed: int):
        self.n, self.seed = num_images, seed
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def indices(self, pos: int, count: int) -> list[int]:
        out = []
        while len(out) < count:
            epoch, offset = divmod(pos, self.n)
            take = min(count - len(out), self.n - offset)
            out.extend(self._permutation(epoch)[offset : offset + take].tolist())
            pos += take
        return out

    def batches(self, pos: int, batch: int, rank: int = 0, world: int = 1):
        while True:
            yield self.indices(pos + rank * batch, batch)
            pos += batch * world


class _LevelView(torch.utils.data.Dataset):
    def __init__(self, source, resolution: int):
        self.source, self.resolution = source, resolution

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        return torch.from_numpy(np.ascontiguousarray(self.source.get(index, self.resolution)))


def make_loader(source, resolution: int, batch: int, *, pos: int, seed: int, rank: int = 0, world: int = 1,
                workers: int = 0, pin_memory: bool = False):
    """Iterator of uint8 [batch, 3, r, r] tensors following ``BatchStream`` from position ``pos``."""
    stream = BatchStream(len(source), seed).batches(pos, batch, rank, world)
    if isinstance(source, ProceduralImages):  # in memory: indexing beats worker processes
        arr = torch.from_numpy(source.level(resolution))
        return (arr[torch.tensor(idx)] for idx in stream)
    loader = torch.utils.data.DataLoader(
        _LevelView(source, resolution),
        batch_sampler=stream,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
    return iter(loader)
