"""Trainer configuration: command-line flags, the two presets, and validation.

Presets (explicit flags always win):

- ``demo`` (the default, what ``python -m progan_ext.train`` runs with no arguments): the embedded
  procedural dataset at 16x16, i.e. 4x4 -> 8x8 -> 16x16 with two fade-ins; 2k images per phase and
  the last stable phase until 100k images, batch 64, lr 0.004, latent 128, channels capped at 16,
  generator EMA 0.99 per step (0.999 would average over more steps than the demo takes), no loader
  processes for the in-memory data. About 2.5 minutes on an idle 2-core machine (docs/demo/result.json);
  its EMA generator reaches SWD x1e3 about 34 at 16x16 (2048 images). Tuned for images per CPU-second: a narrow
  network at a large batch and lr learns the dataset's shapes in ~1100 steps, where the first demo
  (3k images per phase, batch 16, lr 0.001, 32 channels) still drew coloured noise.
- ``paper``: the official ProGAN configuration: 600k images per fade-in and per stable phase,
  latent 512, fmap_base 8192, fmap_max 512, batch {4..16: 128, 32: 64, 64: 32, 128: 16, 256: 8,
  512: 4, 1024: 4}, lr 0.001 (0.0015 at 1024), 12000k images in total at 1024 (the official
  single-GPU schedule); ``--resolution`` defaults to the data's resolution.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field

from ..networks import check_resolution, resolutions_up_to

__all__ = ["TrainConfig", "PRESETS", "build_parser", "parse_args", "parse_per_resolution", "cli_name"]


@dataclass
class TrainConfig:
    preset: str = "demo"
    data: str | None = None
    resolution: int = 16
    procedural_images: int = 2048
    mirror: bool = False
    latent_size: int = 128
    fmap_base: int = 8192
    fmap_max: int = 16
    mbstd_group: int = 4
    impl: str = "ext"
    kimg_stable: float = 2.0
    kimg_fade: float = 2.0
    total_kimg: float | None = None
    batch: dict = field(default_factory=lambda: {0: 64})
    lr: dict = field(default_factory=lambda: {0: 0.004})
    betas: tuple = (0.0, 0.99)
    adam_eps: float = 1e-8
    reset_opt_on_grow: bool = True
    gp_lambda: float = 10.0
    drift: float = 0.001
    ema_beta: float = 0.99
    amp: str = "none"
    channels_last: bool = False
    seed: int = 0
    snapshot_kimg: float = 10.0
    keep_checkpoints: int = 3
    grid: int = 64
    swd_images: int = 0
    # runtime (not part of the experiment; may change on resume)
    outdir: str = "runs"
    run_dir: str | None = None
    resume: str | None = None
    max_steps: int | None = None
    workers: int = 2
    device: str = "auto"
    tensorboard: bool = True
    progress: bool = True

    def batch_for(self, resolution: int) -> int:
        return _lookup(self.batch, resolution)

    def lr_for(self, resolution: int) -> float:
        return _lookup(self.lr, resolution)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["batch"] = {str(k): v for k, v in self.batch.items()}
        d["lr"] = {str(k): v for k, v in self.lr.items()}
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["batch"] = {int(k): v for k, v in d["batch"].items()}
        d["lr"] = {int(k): v for k, v in d["lr"].items()}
        d["betas"] = tuple(d["betas"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _lookup(table: dict, resolution: int):
    """Per-resolution value; key 0 is the default for resolutions not listed."""
    return table.get(resolution, table.get(0))


PRESETS = {
    "demo": dict(total_kimg=100.0),  # the dataclass defaults, with a long last stable phase
    "paper": dict(
        resolution=None,  # from the data
        latent_size=512,
        fmap_max=512,
        kimg_stable=600.0,
        kimg_fade=600.0,
        total_kimg=12000.0,
        batch={0: 4, 4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4},
        lr={0: 0.001, 1024: 0.0015},
        snapshot_kimg=100.0,
        ema_beta=0.999,
        workers=4,
    ),
}


def parse_per_resolution(text: str, cast) -> dict:
    """``"16"`` -> {0: 16}; ``"4:128,8:128,32:64"`` (optionally with a default ``"*:4"``) -> dict."""
    out = {}
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if ":" in part:
                key, value = part.split(":", 1)
                out[0 if key.strip() == "*" else int(key)] = cast(value)
            else:
                out[0] = cast(part)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a value or a list like '4:128,8:128,*:16', got {text!r}"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError(f"empty per-resolution value {text!r}")
    return out


def _positive(cast):
    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return v

    return parse


def cli_name(tool: str) -> str:
    """How the user called a CLI: ``progan-<tool>`` (console script) or ``python -m progan_ext.<tool>``."""
    if os.path.basename(sys.argv[0] if sys.argv else "") == f"progan-{tool}":
        return f"progan-{tool}"
    return f"python -m progan_ext.{tool}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=cli_name("train"),
        description="Progressive Growing GAN training (WGAN-GP) on the progan_ext fused ops. "
        "With no arguments: a ~2-minute demo (2 cores) on the embedded procedural dataset (4x4 -> 16x16).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    S = argparse.SUPPRESS  # unset flags keep the preset's value
    g = p.add_argument_group("data")
    g.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="defaults to start from")
    g.add_argument("--data", default=S, help="image folder or prepared pyramid dir (default: procedural dataset)")
    g.add_argument("--resolution", type=int, default=S, help="final resolution, power of two 8..1024 (demo: 16)")
    g.add_argument("--procedural-images", type=_positive(int), default=S, help="size of the procedural dataset (2048)")
    g.add_argument("--mirror", action="store_true", default=S, help="random x-flips of the real images")
    g.add_argument("--workers", type=int, default=S, help="data loader worker processes (procedural data 0, image folders 2, paper 4)")
    g = p.add_argument_group("networks")
    g.add_argument("--latent-size", type=_positive(int), default=S, help="demo 128, paper 512")
    g.add_argument("--fmap-base", type=_positive(int), default=S, help="channel rule base (8192)")
    g.add_argument("--fmap-max", type=_positive(int), default=S, help="channel cap (demo 16, paper 512)")
    g.add_argument("--mbstd-group", type=_positive(int), default=S, help="minibatch-stddev group size (4)")
    g.add_argument("--impl", choices=["ext", "reference"], default=S, help="fused ops or plain PyTorch (ext)")
    g = p.add_argument_group("schedule")
    g.add_argument("--kimg-stable", type=_positive(float), default=S, help="kimg per stable phase (demo 2, paper 600)")
    g.add_argument("--kimg-fade", type=_positive(float), default=S, help="kimg per fade-in (demo 2, paper 600)")
    g.add_argument("--total-kimg", type=_positive(float), default=S,
                   help="stop after this many kimg; the last stable phase lasts until then (demo 100 unless "
                        "--resolution/--kimg-stable/--kimg-fade are given, paper 12000; else the last phase's end)")
    g.add_argument("--batch", type=lambda t: parse_per_resolution(t, int), default=S,
                   help="global minibatch, one value or per resolution '4:128,...,*:4' (demo 64)")
    g.add_argument("--lr", type=lambda t: parse_per_resolution(t, float), default=S,
                   help="learning rate, one value or per resolution (demo 0.004, paper 0.001)")
    g.add_argument("--no-reset-opt", dest="reset_opt_on_grow", action="store_false", default=S,
                   help="keep Adam state when a new resolution starts (official: reset)")
    g = p.add_argument_group("loss and optimiser")
    g.add_argument("--gp-lambda", type=float, default=S, help="gradient penalty weight (10)")
    g.add_argument("--drift", type=float, default=S, help="drift penalty weight (0.001)")
    g.add_argument("--ema-beta", type=float, default=S, help="generator EMA per step (demo 0.99, paper 0.999)")
    g.add_argument("--amp", choices=["none", "bf16"], default=S, help="bf16 autocast (none)")
    g.add_argument("--channels-last", action="store_true", default=S, help="channels_last memory format")
    g.add_argument("--seed", type=int, default=S, help="random seed (0)")
    g = p.add_argument_group("outputs and runtime")
    g.add_argument("--outdir", default=S, help="parent of new run directories (runs)")
    g.add_argument("--run-dir", default=S, help="exact run directory (default: OUTDIR/NNNNN-<desc>)")
    g.add_argument("--snapshot-kimg", type=_positive(float), default=S, help="grid + checkpoint every ... kimg (demo 10, paper 100)")
    g.add_argument("--keep-checkpoints", type=_positive(int), default=S, help="checkpoints kept (3)")
    g.add_argument("--grid", type=_positive(int), default=S, help="images in the sample grids (64)")
    g.add_argument("--swd-images", type=int, default=S, help="compute SWD with this many images at each snapshot (0: off)")
    g.add_argument("--resume", default=S, help="run directory or checkpoint file to continue")
    g.add_argument("--max-steps", type=_positive(int), default=S, help="stop (with a checkpoint) after this many steps in this invocation")
    g.add_argument("--device", default=S, help="auto, cpu, cuda, cuda:1, ... (auto)")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S, help="no TensorBoard scalars")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no tqdm bar")
    return p


SCHEDULE_FLAGS = {"resolution", "kimg_stable", "kimg_fade"}
RUNTIME_FIELDS = ("outdir", "run_dir", "resume", "max_steps", "workers", "device", "tensorboard", "progress", "total_kimg")


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def parse_args(argv=None) -> TrainConfig:
    """Parses and validates flags; bad values exit through ``parser.error`` with a clear message."""
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    preset = ns.pop("preset")
    # On --resume the experiment comes from the checkpoint: only flags given now apply, no preset.
    values = {} if ns.get("resume") else dict(PRESETS[preset])
    if preset == "demo" and SCHEDULE_FLAGS & ns.keys():
        values.pop("total_kimg", None)  # a schedule of your own ends where its phases end
    values.update(ns)
    values["preset"] = preset
    if values.get("data") is None and "workers" not in ns and not ns.get("resume"):
        values["workers"] = 0  # the procedural images are in memory: loader processes only cost CPU
    try:
        cfg = resolve(values)
    except ValueError as exc:
        parser.error(str(exc))
    return cfg


def resolve(values: dict) -> TrainConfig:
    """Builds and validates a TrainConfig (raises ValueError with a message)."""
    values = dict(values)
    if values.get("resume"):
        return TrainConfig(**{k: v for k, v in values.items() if k in RUNTIME_FIELDS or k == "preset"})
    data = values.get("data")
    if data is not None:
        from ..data import open_source

        try:
            src = open_source(data, 8)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ValueError(str(exc)) from None
        if values.get("resolution") is None:
            res = getattr(src, "resolution", None)
            values["resolution"] = res if hasattr(src, "level") else _folder_resolution(src)
    if "resolution" in values and values["resolution"] is None:  # paper preset without --data
        values["resolution"] = 1024
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg


def _folder_resolution(src) -> int:
    """Largest power of two <= the first image's shorter side (capped to 1024)."""
    from PIL import Image

    with Image.open(src.files[0]) as im:
        side = min(im.size)
    r = 8
    while r * 2 <= min(side, 1024):
        r *= 2
    return r


def validate(cfg: TrainConfig, world_size: int | None = None) -> None:
    check_resolution(cfg.resolution)
    world = world_size_from_env() if world_size is None else world_size
    for r in resolutions_up_to(cfg.resolution):
        b = cfg.batch_for(r)
        if b is None:
            raise ValueError(f"--batch has no value for resolution {r}; add one or a default '*:N'")
        if b < 1 or b % world:
            raise ValueError(f"batch {b} at {r}x{r} must be a positive multiple of the {world} processes")
        per = b // world
        g = min(cfg.mbstd_group, per)
        if per % g:
            raise ValueError(
                f"batch {per} per process at {r}x{r} is not divisible by the minibatch-stddev group "
                f"{g} (= min(--mbstd-group {cfg.mbstd_group}, batch)); use a multiple of {g}"
            )
        lr = cfg.lr_for(r)
        if lr is None or not lr > 0:
            raise ValueError(f"--lr must give a positive learning rate for resolution {r}, got {lr}")
    if not 0.0 <= cfg.ema_beta < 1.0:
        raise ValueError(f"--ema-beta must be in [0, 1), got {cfg.ema_beta}")
    if cfg.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {cfg.workers}")
    if cfg.swd_images < 0:
        raise ValueError(f"--swd-images must be >= 0, got {cfg.swd_images}")
