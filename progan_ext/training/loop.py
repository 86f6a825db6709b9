"""The training loop: data -> networks -> (schedule, D step, G step, EMA, snapshot)* -> outputs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import loss as losses
from ..data import make_loader, open_source
from ..networks import Discriminator, Generator, num_params
from . import checkpoint, distributed as dist
from .config import RUNTIME_FIELDS, TrainConfig, validate
from .outputs import RunLog, make_run_dir, save_grid
from .schedule import Schedule

__all__ = ["train", "TrainingDiverged", "build_networks", "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130
LOG_EVERY_STEPS = 25


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left as it was."""


# ----------------------------------------------------------------------------------------------
# Setup helpers.


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA but torch.cuda.is_available() is False")
    return device


def build_networks(cfg: TrainConfig, device=None):
    """G, D and the EMA copy of G for ``cfg`` (on ``device``)."""
    def make_g():
        return Generator(cfg.resolution, cfg.latent_size, cfg.fmap_base, cfg.fmap_max, impl=cfg.impl)

    G = make_g()
    D = Discriminator(cfg.resolution, cfg.fmap_base, cfg.fmap_max, cfg.mbstd_group, impl=cfg.impl)
    G_ema = make_g().requires_grad_(False).eval()  # layers hold a module reference: no deepcopy
    G_ema.load_state_dict(G.state_dict())
    nets = [G, D, G_ema]
    if device is not None:
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        nets = [n.to(device=device, memory_format=fmt) for n in nets]
    return nets


def make_adam(params, cfg: TrainConfig, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=tuple(float(b) for b in cfg.betas), eps=cfg.adam_eps)


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class StopRequest:
    """First Ctrl-C (SIGINT) asks the loop to stop after the current step; a second one aborts.

    A SIGINT within ``DEBOUNCE_S`` of the first counts as the same Ctrl-C: under torchrun each rank
    receives the terminal's SIGINT and, a moment later, the one the launcher forwards."""

    DEBOUNCE_S = 1.0

    def __init__(self):
        self.requested = False
        self._first = 0.0
        self._previous = None

    def __enter__(self):
        if hasattr(signal, "SIGINT") and _in_main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            if time.monotonic() - self._first < self.DEBOUNCE_S:
                return
            raise KeyboardInterrupt
        self.requested = True
        self._first = time.monotonic()
        print("\nCtrl-C: stopping after this step and writing a checkpoint (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ----------------------------------------------------------------------------------------------
# One training step.


def prepare_reals(batch_u8: torch.Tensor, cfg: TrainConfig, device, alpha: float) -> torch.Tensor:
    """uint8 batch -> float in [-1, 1] on device, x-flipped if ``--mirror``, and during a fade-in
    blended with its 2x-downsampled-and-upsampled self by alpha (the official real-image lerp)."""
    x = batch_u8.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    if cfg.mirror:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=device) < 0.5
        x = torch.where(flip, x.flip(3), x)
    if alpha < 1.0:
        low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
        x = torch.lerp(low, x, alpha)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_step(G, D, G_ema, opt_g, opt_d, reals, cfg: TrainConfig, res: int, alpha: float, autocast) -> dict:
    """One D step (WGAN-GP + drift), one G step, one EMA update. Returns 0-dim loss tensors."""
    n, device = reals.shape[0], reals.device
    # D step: fakes come from G without a graph.
    with autocast():
        with torch.no_grad():
            fakes = G(torch.randn(n, cfg.latent_size, device=device), resolution=res, alpha=alpha)
        loss_d, stats = losses.d_loss_wgangp(D, reals, fakes.to(reals.dtype), resolution=res, alpha=alpha,
                                             gp_lambda=cfg.gp_lambda, drift=cfg.drift)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    dist.average_gradients(D)
    opt_d.step()
    # G step: D's parameters are frozen so only G accumulates gradients.
    D.requires_grad_(False)
    with autocast():
        fakes = G(torch.randn(n, cfg.latent_size, device=device), resolution=res, alpha=alpha)
        loss_g = losses.g_loss_wgan(D, fakes, resolution=res, alpha=alpha)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    dist.average_gradients(G)
    opt_g.step()
    D.requires_grad_(True)
    # EMA of G's weights for sampling.
    with torch.no_grad():
        torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - cfg.ema_beta)
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **stats}


# ----------------------------------------------------------------------------------------------
# The run.


def _load_resume_state(where) -> dict:
    """The checkpoint to resume from: a given file, or the newest readable one of a run directory.
    Unreadable newer ones (a truncated copy, a full disk) are renamed ``*.unreadable`` with a
    warning, so that pruning never keeps them in place of good ones; stale temp files of a killed
    run are removed."""
    where = Path(where)
    if not where.is_dir():
        return checkpoint.load(where)

    def set_aside(bad: Path, message: str) -> None:
        if not dist.is_main():  # under torchrun, rank 0 renames and speaks for all
            return
        aside = bad.with_name(bad.name + ".unreadable")
        os.replace(bad, aside)
        print(f"warning: {message}; renamed it to {aside.name} and resuming from an older checkpoint",
              file=sys.stderr, flush=True)

    if dist.is_main():
        checkpoint.remove_stale_temp_files(where)
    return checkpoint.load_newest(where, on_skip=set_aside)


def _resume_config(cfg: TrainConfig):
    state = _load_resume_state(cfg.resume)
    saved = TrainConfig.from_json(state["config"])
    for name in RUNTIME_FIELDS:  # runtime flags of this invocation win
        value = getattr(cfg, name)
        if name == "total_kimg" and value is None:
            continue
        if name in ("outdir", "run_dir"):
            continue
        setattr(saved, name, value)
    saved.run_dir = str(Path(state["path"]).parent)
    return saved, state


def train(cfg: TrainConfig) -> int:
    """Runs (or resumes) a training run. Returns the exit code (0 done, 130 interrupted).

    Under torchrun every rank leaves the same way (``distributed.shutdown``: barrier, then the
    process group is destroyed), also after Ctrl-C or a non-finite loss, which all ranks decide
    together. A rank that fails on its own aborts instead (``distributed.abort``); the others then
    raise ``distributed.PeerFailed`` naming it."""
    device = pick_device(cfg.device)
    dist.init(device)
    try:
        code = _train(cfg, device)
    except TrainingDiverged:
        with contextlib.suppress(Exception):  # every rank stops at the same step: leave together
            dist.shutdown()
        raise
    except BaseException as exc:
        dist.abort(exc)
        raise
    dist.shutdown()
    return code


def _train(cfg: TrainConfig, device: torch.device) -> int:
    rank, world, main = dist.rank(), dist.world_size(), dist.is_main()
    if device.type == "cpu" and world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    resume = None
    if cfg.resume:
        cfg, resume = _resume_config(cfg)
    validate(cfg, world)
    torch.manual_seed(cfg.seed * 1009 + rank)
    say = (lambda *a: print(*a, flush=True)) if main else (lambda *a: None)

    # ---- data
    source = open_source(cfg.data, cfg.resolution, seed=cfg.seed, procedural_images=cfg.procedural_images)
    say(f"data: {source.describe()}")

    # ---- networks and optimisers
    G, D, G_ema = build_networks(cfg, device)
    dist.broadcast_module(G)
    dist.broadcast_module(D)
    G_ema.load_state_dict(G.state_dict())
    backends = op_backends(cfg.impl, device)
    say(f"networks ({cfg.impl}): G {num_params(G):,} parameters, D {num_params(D):,} parameters "
        f"(final resolution {cfg.resolution}, fmap_max {cfg.fmap_max}, latent {cfg.latent_size})")
    say(f"ops on {device.type}: {describe_backends(backends, cfg.impl)}")
    schedule = Schedule(cfg.resolution, cfg.kimg_stable, cfg.kimg_fade, cfg.total_kimg)
    say(f"schedule: {schedule.describe()}; {schedule.total_nimg / 1000:g} kimg in total")
    pos = schedule.at(0)
    opt_g = make_adam(G.parameters(), cfg, cfg.lr_for(pos.resolution))
    opt_d = make_adam(D.parameters(), cfg, cfg.lr_for(pos.resolution))
    grid_z = torch.randn(cfg.grid, cfg.latent_size, generator=torch.Generator().manual_seed(cfg.seed))
    nimg, step, data_pos, opt_res = 0, 0, 0, pos.resolution

    if resume is not None:
        for net, key in ((G, "G"), (D, "D"), (G_ema, "G_ema")):
            net.load_state_dict(resume[key])
        opt_g.load_state_dict(resume["opt_g"])
        opt_d.load_state_dict(resume["opt_d"])
        nimg, step, data_pos, opt_res = resume["nimg"], resume["step"], resume["data_pos"], resume["opt_resolution"]
        grid_z = resume["grid_z"]
        rngs = resume["rng"]
        if len(rngs) == world:
            set_rng_state(rngs[rank], device)
        else:
            say(f"warning: checkpoint has RNG states of {len(rngs)} processes, this run has {world}; reseeding")
            torch.manual_seed(cfg.seed * 1009 + rank + nimg)
        say(f"resumed from {resume['path']} at {nimg / 1000:g} kimg (step {step})")
        del resume

    # ---- run directory
    run_dir = None
    if main:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else make_run_dir(cfg.outdir, _desc(cfg))
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.run_dir = str(run_dir)
        with open(run_dir / "config.json", "w") as f:
            json.dump({**cfg.to_json(), "world_size": world, "device": str(device),
                       "G_params": num_params(G), "D_params": num_params(D), "op_backends": backends}, f, indent=2)
        say(f"run directory: {run_dir}")
        if step == 0:  # the real images, as the networks see them at the final resolution
            save_grid(real_grid(source, cfg.resolution, cfg.grid, cfg.seed), run_dir / "reals.png")
    log = RunLog(run_dir, cfg.tensorboard) if main else None
    if log is not None and log.note:
        say(log.note)
    if main:
        log.write({"event": "start", **({"resumed_at_kimg": nimg / 1000} if step else {}), "data": source.describe(),
                   "skipped_files": source.skipped, "G_params": num_params(G), "D_params": num_params(D),
                   "world_size": world, "op_backends": backends})

    def autocast():  # --amp bf16: convolutions and matmuls in bf16, weights and Adam in fp32
        if cfg.amp == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def snapshot_grid(name: str, res: int, alpha: float):
        if main:
            with torch.no_grad():
                imgs = torch.cat([G_ema(z.to(device), resolution=res, alpha=alpha) for z in grid_z.split(64)])
            save_grid(imgs, run_dir / name)

    def save_checkpoint() -> Path | None:
        rngs = dist.gather_objects(rng_state(device))
        # Per-rank parameter checksums: equal on every rank when gradient averaging keeps them in sync.
        sums = dist.gather_objects([float(sum(p.detach().double().sum() for p in n.parameters())) for n in (G, D)])
        if not main:
            return None
        state = {
            "config": cfg.to_json(), "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "nimg": nimg, "step": step,
            "data_pos": data_pos, "opt_resolution": opt_res, "grid_z": grid_z, "rng": rngs,
            "resolution": schedule.at(nimg).resolution, "alpha": schedule.at(nimg).alpha, "world_size": world, "rank_param_checksums": sums,
        }
        return checkpoint.save_atomic(state, run_dir, nimg, cfg.keep_checkpoints)

    # ---- the loop
    snap_nimg = int(round(cfg.snapshot_kimg * 1000))
    loader, loader_key = None, None
    steps_here, last_ckpt, exit_code = 0, None, 0
    totals, t_tick, n_tick = {}, time.time(), 0
    from tqdm import tqdm

    bar = tqdm(total=schedule.total_nimg, initial=min(nimg, schedule.total_nimg), unit="img", unit_scale=True,
               disable=not (main and cfg.progress), dynamic_ncols=True, smoothing=0.05)
    with StopRequest() as stop:
        while not schedule.done(nimg):
            pos = schedule.at(nimg)
            res, alpha = pos.resolution, pos.alpha
            batch = cfg.batch_for(res) // world
            if res != opt_res:  # a new resolution starts: official resets Adam, per-resolution lr
                if cfg.reset_opt_on_grow:
                    opt_g = make_adam(G.parameters(), cfg, cfg.lr_for(res))
                    opt_d = make_adam(D.parameters(), cfg, cfg.lr_for(res))
                opt_res = res
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = cfg.lr_for(res)
            if loader_key != (res, batch):
                loader = make_loader(source, res, batch, pos=data_pos, seed=cfg.seed, rank=rank, world=world,
                                     workers=cfg.workers, pin_memory=device.type == "cuda")
                loader_key = (res, batch)
            reals = prepare_reals(next(loader), cfg, device, alpha)
            out = train_step(G, D, G_ema, opt_g, opt_d, reals, cfg, res, alpha, autocast)
            nimg += batch * world
            data_pos += batch * world
            step += 1
            steps_here += 1
            values = {k: float(v) for k, v in out.items()}
            bad = not all(math.isfinite(v) for v in values.values())
            stop_now, bad = dist.all_reduce_flags(stop.requested, bad, device=device)
            if bad:
                where = f"step {step}, {nimg / 1000:.3f} kimg, {res}x{res} {pos.phase.kind} alpha {alpha:.3f}"
                msg = (f"non-finite loss at {where}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                       + f". Stopped; last good checkpoint: {last_ckpt or _latest(run_dir) or 'none written yet'}"
                       + ". Try a lower --lr or --amp none.")
                if main:
                    log.write({"event": "diverged", "kimg": nimg / 1000, "step": step, **values})
                    log.close()
                bar.close()
                raise TrainingDiverged(msg)
            for k, v in values.items():
                totals[k] = totals.get(k, 0.0) + v
            n_tick += 1
            bar.update(batch * world)
            if step % 5 == 0 or n_tick == 1:
                bar.set_postfix_str(f"{res}x{res} {pos.phase.kind} a={alpha:.2f} kimg={nimg / 1000:.1f} "
                                    f"D={values['loss_d']:.3f} G={values['loss_g']:.3f}", refresh=False)
            phase_end = schedule.at(nimg).phase.index != pos.phase.index or schedule.done(nimg)
            snapshot = nimg // snap_nimg != (nimg - batch * world) // snap_nimg or schedule.done(nimg)
            limit = cfg.max_steps is not None and steps_here >= cfg.max_steps
            if main and (step % LOG_EVERY_STEPS == 0 or snapshot or phase_end or stop_now or limit):
                dt = time.time() - t_tick
                rec = {"kimg": nimg / 1000, "step": step, "resolution": res, "phase": pos.phase.kind,
                       "alpha": round(alpha, 5), "batch": batch * world, "lr": cfg.lr_for(res),
                       "img_per_s": round(n_tick * batch * world / max(dt, 1e-9), 2),
                       **{k: v / n_tick for k, v in totals.items()}}
                log.write(rec)
                totals, t_tick, n_tick = {}, time.time(), 0
            if phase_end:
                snapshot_grid(f"stage-{pos.phase.index:02d}-{res}x{res}-{pos.phase.kind}.png", res, alpha if pos.phase.kind == "stable" else 1.0)
            if snapshot or stop_now or limit:
                snapshot_grid(f"fakes-{nimg // 1000:06d}kimg-{res}x{res}.png", res, schedule.at(nimg).alpha
                              if schedule.at(nimg).resolution == res else 1.0)
                last_ckpt = save_checkpoint() or last_ckpt
                if main and cfg.swd_images > 0 and res >= 16:
                    _log_swd(log, G_ema, source, cfg, res, nimg, device)
            if stop_now:
                say(f"\ninterrupted at {nimg / 1000:.3f} kimg; checkpoint: {last_ckpt}\n"
                    f"resume with: python -m progan_ext.train --resume {run_dir}")
                exit_code = EXIT_INTERRUPTED
                break
            if limit:
                break
    bar.close()
    if main:
        log.write({"event": "interrupted" if exit_code else ("done" if schedule.done(nimg) else "paused"),
                   "kimg": nimg / 1000, "step": step, "checkpoint": str(last_ckpt)})
        log.close()
        if exit_code == 0:
            say(f"{'finished' if schedule.done(nimg) else 'stopped'} at {nimg / 1000:g} kimg; outputs in {run_dir}")
    return exit_code


def op_backends(impl: str, device: torch.device) -> dict:
    """``{op: backend}`` that ``impl`` runs on ``device``: from ``progan_ext.ops.backend_info()``
    for the fused ops, the PyTorch reference for ``--impl reference``."""
    from .. import ops

    info = ops.backend_info()
    if impl == "reference":
        return {op: "reference (PyTorch)" for op in info["ops"]}
    return {op: per_device.get(device.type, "reference (PyTorch)") for op, per_device in info["ops"].items()}


def describe_backends(backends: dict, impl: str) -> str:
    """One line: 'compiled C++ kernel for all 6 ops', or which ops run which backend, and why the
    compiled module is missing when it is."""
    from .. import _ext

    groups: dict[str, list[str]] = {}
    for op, backend in backends.items():
        groups.setdefault(backend, []).append(op)
    if len(groups) == 1:
        (backend, ops_), = groups.items()
        text = f"{backend} for all {len(ops_)} ops"
    else:
        text = "; ".join(f"{backend}: {', '.join(ops_)}" for backend, ops_ in groups.items())
    if "reference (PyTorch)" not in groups:
        text += f" ({_ext.module_path})"
    elif impl == "ext" and not _ext.available:
        text += f" (compiled module not loaded: {_ext.error})"
    return text


def real_grid(source, resolution: int, num: int, seed: int) -> torch.Tensor:
    """``num`` real images (a fixed random choice) at ``resolution``, in [-1, 1]."""
    import numpy as np

    idx = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[:num].tolist()
    return torch.from_numpy(np.stack([source.get(i, resolution) for i in idx])).float() / 127.5 - 1


def _latest(run_dir):
    if run_dir is None:
        return None
    found = checkpoint.list_checkpoints(run_dir)
    return found[-1] if found else None


def _desc(cfg: TrainConfig) -> str:
    data = "procedural" if cfg.data is None else Path(cfg.data).name or "data"
    return f"{data}-{cfg.resolution}"


def _log_swd(log, G_ema, source, cfg, res, nimg, device) -> None:
    from ..metrics import swd_real_vs_generator

    levels = swd_real_vs_generator(G_ema, source, res, cfg.swd_images, device=device, seed=cfg.seed)
    log.write({"kimg": nimg / 1000, "event": "swd", **{f"swd_{k}": v for k, v in levels.items()}})
