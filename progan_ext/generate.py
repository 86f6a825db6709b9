"""Images from a trained generator (the EMA weights of a checkpoint).

    python -m progan_ext.generate RUN_DIR_or_CHECKPOINT --grid out.png --num 64 --seed 0
    python -m progan_ext.generate RUN_DIR --interpolate 60 --outdir frames/   # PNG frames + GIF
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .networks import Generator
from .training.config import cli_name
from .training import checkpoint
from .training.outputs import save_grid, to_uint8

__all__ = ["load_generator", "main"]


def load_generator(path, device="cpu", impl: str | None = None):
    """(G_ema in eval mode, info) from a checkpoint file or run directory; info has the config,
    resolution and alpha reached. Raises ``checkpoint.CheckpointError`` (one line) for a missing,
    unreadable or foreign file."""
    state = checkpoint.load(path)
    cfg = state["config"]
    try:
        G = Generator(cfg["resolution"], cfg["latent_size"], cfg["fmap_base"], cfg["fmap_max"],
                      impl=impl or cfg["impl"])
        G.load_state_dict(state["G_ema"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise checkpoint.CheckpointError(
            f"{state['path']!r} does not hold a generator this version can build ({type(exc).__name__}: {reason})"
        ) from None
    G.requires_grad_(False).eval().to(device)
    return G, {"config": cfg, "resolution": state["resolution"], "alpha": state["alpha"], "nimg": state["nimg"],
               "path": state["path"]}


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    an, bn = a / a.norm(), b / b.norm()
    omega = torch.acos((an * bn).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return torch.lerp(a, b, t)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=cli_name("generate"), description="Sample a trained ProGAN generator.")
    p.add_argument("checkpoint", help="checkpoint file or run directory (newest checkpoint)")
    p.add_argument("--grid", help="write a grid of --num images to this PNG")
    p.add_argument("--num", type=int, default=64, help="images in the grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interpolate", type=int, metavar="FRAMES", help="spherical latent walk through --keyframes latents")
    p.add_argument("--keyframes", type=int, default=4, help="latents visited by --interpolate (loops back)")
    p.add_argument("--outdir", default="generated", help="where --interpolate writes frame-NNNN.png and walk.gif")
    p.add_argument("--fps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if not args.grid and not args.interpolate:
        p.error("nothing to do: give --grid OUT.png and/or --interpolate FRAMES")
    if args.num < 1:
        p.error("--num must be >= 1")
    if args.interpolate is not None and (args.interpolate < 2 or args.keyframes < 2):
        p.error("--interpolate needs >= 2 frames and --keyframes >= 2")
    try:
        G, info = load_generator(args.checkpoint, args.device)
    except (OSError, ValueError) as exc:  # missing, unreadable or foreign checkpoint: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res, alpha = info["resolution"], info["alpha"]
    print(f"{info['path']}: {res}x{res} (alpha {alpha:.2f}) after {info['nimg'] / 1000:g} kimg")
    gen = torch.Generator().manual_seed(args.seed)
    if args.grid:
        z = torch.randn(args.num, G.latent_size, generator=gen)
        imgs = torch.cat([G(c.to(args.device), resolution=res, alpha=alpha) for c in z.split(64)])
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        save_grid(imgs, args.grid)
        print(f"wrote {args.grid}")
    if args.interpolate:
        from PIL import Image

        out = Path(args.outdir)
        out.mkdir(parents=True, exist_ok=True)
        keys = torch.randn(args.keyframes, G.latent_size, generator=gen)
        frames = []
        for i in range(args.interpolate):
            t = i * args.keyframes / args.interpolate
            k = int(t)
            z = slerp(keys[k], keys[(k + 1) % args.keyframes], t - k)[None].to(args.device)
            img = Image.fromarray(to_uint8(G(z, resolution=res, alpha=alpha))[0])
            if res < 256:
                img = img.resize((256, 256), Image.NEAREST)
            img.save(out / f"frame-{i:04d}.png")
            frames.append(img)
        frames[0].save(out / "walk.gif", save_all=True, append_images=frames[1:], duration=1000 // args.fps, loop=0)
        print(f"wrote {len(frames)} frames and walk.gif to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
