"""Multi-scale sliced Wasserstein distance (SWD) of the ProGAN paper, and its CLI.

For each level of a Laplacian pyramid (16x16 up to the full resolution) we take 128 random 7x7
neighbourhoods per image, normalise each channel of the descriptors by the set's mean and std,
project them on random unit directions (4 repeats of 128), sort the projections of both sets and
average their absolute difference. Reported per level (x1e3, as in the paper) and averaged.

    python -m progan_ext.metrics RUN_DIR_or_CHECKPOINT [--data DIR] [--num 8192]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["laplacian_pyramid", "sliced_wasserstein", "swd", "swd_real_vs_generator"]

_GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = (_GAUSS[:, None] * _GAUSS[None, :]).to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, min_resolution: int = 16) -> list[torch.Tensor]:
    """Finest level first; the last entry is the Gaussian residual at ``min_resolution``."""
    levels = []
    while x.shape[-1] > min_resolution:
        low = F.avg_pool2d(_blur(x), 2)
        up = _blur(F.interpolate(low, scale_factor=2, mode="nearest"))
        levels.append(x - up)
        x = low
    levels.append(x)
    return levels


def _descriptors(level: torch.Tensor, per_image: int, gen: torch.Generator, patch: int = 7) -> torch.Tensor:
    n, c, h, w = level.shape
    s = patch // 2
    ys = torch.randint(s, h - s, (n, per_image), generator=gen)
    xs = torch.randint(s, w - s, (n, per_image), generator=gen)
    off = torch.arange(-s, s + 1)
    yy = (ys[..., None, None] + off[:, None]).expand(n, per_image, patch, patch)
    xx = (xs[..., None, None] + off[None, :]).expand(n, per_image, patch, patch)
    idx_n = torch.arange(n)[:, None, None, None].expand_as(yy)
    d = level.permute(0, 2, 3, 1)[idx_n, yy, xx]  # [n, per_image, 7, 7, c]
    return d.reshape(n * per_image, -1)


def _normalise(d: torch.Tensor) -> torch.Tensor:
    d = d.reshape(d.shape[0], -1, 3)  # per colour channel over all taps
    d = (d - d.mean(dim=(0, 1))) / d.std(dim=(0, 1)).clamp_min(1e-8)
    return d.reshape(d.shape[0], -1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, dirs_per_repeat: int, repeats: int, gen) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections."""
    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=gen, dtype=a.dtype)
        dirs /= dirs.norm(dim=0, keepdim=True)
        pa, _ = torch.sort(a @ dirs, dim=0)
        pb, _ = torch.sort(b @ dirs, dim=0)
        total += (pa - pb).abs().mean().item()
    return total / repeats


def swd(images_a: torch.Tensor, images_b: torch.Tensor, *, patches_per_image: int = 128, dirs: int = 128,
        repeats: int = 4, min_resolution: int = 16, seed: int = 0) -> dict:
    """SWD between two equal-size image sets [N, 3, r, r] in [-1, 1] (or any common scale).

    Returns ``{"<res>": swd x1e3 per level (finest first), "avg": mean over levels}``.
    """
    if images_a.shape != images_b.shape:
        raise ValueError(f"image sets must have the same shape, got {tuple(images_a.shape)} and {tuple(images_b.shape)}")
    if images_a.shape[-1] < min_resolution:
        raise ValueError(f"SWD needs images of at least {min_resolution}x{min_resolution}")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    pa = laplacian_pyramid(images_a.float().cpu(), min_resolution)
    pb = laplacian_pyramid(images_b.float().cpu(), min_resolution)
    for la, lb in zip(pa, pb):
        da = _normalise(_descriptors(la, patches_per_image, gen))
        db = _normalise(_descriptors(lb, patches_per_image, gen))
        out[str(la.shape[-1])] = 1e3 * sliced_wasserstein(da, db, dirs, repeats, gen)
    out["avg"] = float(np.mean([v for k, v in out.items()]))
    return out


def _reals(source, resolution: int, num: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    idx = torch.randint(0, len(source), (num,), generator=g).tolist()
    x = torch.from_numpy(np.stack([source.get(i, resolution) for i in idx]))
    return x.float() / 127.5 - 1


@torch.no_grad()
def _fakes(G, resolution: int, num: int, device, seed: int, batch: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 2)
    z = torch.randn(num, G.latent_size, generator=g)
    return torch.cat([G(c.to(device), resolution=resolution).float().cpu() for c in z.split(batch)]).clamp(-1, 1)


def swd_real_vs_generator(G, source, resolution: int, num: int, *, device="cpu", seed: int = 0) -> dict:
    return swd(_reals(source, resolution, num, seed), _fakes(G, resolution, num, device, seed), seed=seed)


def main(argv=None) -> int:
    from .data import open_source
    from .generate import load_generator

    from .training.config import cli_name

    p = argparse.ArgumentParser(prog=cli_name("metrics"), description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint file or run directory (its EMA generator is evaluated)")
    p.add_argument("--data", help="real images (folder or prepared dir); default: the run's data")
    p.add_argument("--num", type=int, default=2048, help="images per set (the paper used 16384)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the result to this JSON file")
    args = p.parse_args(argv)
    if args.num < 2:
        p.error("--num must be at least 2")
    try:
        G, info = load_generator(args.checkpoint, device=args.device)
        cfg = info["config"]
        data = args.data if args.data is not None else cfg.get("data")
        source = open_source(data, cfg["resolution"], seed=cfg["seed"], procedural_images=cfg["procedural_images"])
        res = info["resolution"]
        if res < 16:
            raise ValueError(f"the checkpoint is at {res}x{res}; SWD needs 16x16 or more")
        result = swd_real_vs_generator(G, source, res, args.num, device=args.device, seed=args.seed)
    except (OSError, ValueError, KeyError) as exc:  # missing/unreadable checkpoint or data: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"SWD x1e3 at {res}x{res}, {args.num} images:")
    for k, v in result.items():
        print(f"  {k:>5}: {v:8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
