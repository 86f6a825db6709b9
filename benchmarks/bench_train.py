"""Times one full ProGAN training step and reports images per second, per implementation.

One step, as the official trainer does it (one D step per G step):

1. D step: fakes = G(z) (no grad), loss = WGAN-GP (D(fake) - D(real) + 10 * (|grad D(x_hat)| - 1)^2
   + 0.001 * D(real)^2) via ``progan_ext.loss.d_loss_wgangp``, backward, Adam step of D;
2. G step: loss = -D(G(z)) via ``progan_ext.loss.g_loss_wgan``, backward (D's parameters frozen),
   Adam step of G;
3. EMA of G's weights (beta 0.999).

Adam: lr 1e-3, betas (0.0, 0.99), eps 1e-8, for both networks. Precision ``fp32``, or ``bf16`` =
``torch.autocast(bfloat16)`` over the forward passes and losses (weights and optimiser state fp32).

Variants:

* ``reference``          -- networks built with ``impl="reference"`` (plain eager PyTorch): the baseline;
* ``ext``                -- ``impl="ext"``: the fused progan_ext ops (compiled kernels when built);
* ``reference-compiled`` -- reference networks with ``torch.compile(fullgraph=True)`` of G and of D's forward;
* ``ext-compiled``       -- the same over the ext ops.

torch.compile cannot differentiate its graphs twice, so in the compiled variants the gradient penalty's
D(x_hat) (the only D call whose input requires grad) runs through the eager D; D(real), D(fake) and the
G step's D call run compiled. The JSON records how many D calls per step went each way.

Examples::

    python benchmarks/bench_train.py --quick                       # CPU smoke, seconds
    python benchmarks/bench_train.py --res 256,1024 --precisions bf16 --out train.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings

import common  # benchmarks/common.py (puts the repository root on sys.path)
import provenance  # benchmarks/provenance.py
import torch

VARIANTS = ("reference", "ext", "reference-compiled", "ext-compiled")
PRECISIONS = ("fp32", "bf16")
EMA_BETA = 0.999


class PenaltyEagerD(torch.nn.Module):
    """The D handed to d_loss_wgangp in compiled variants: calls whose input requires grad (the
    gradient penalty's x_hat, whose gradient is differentiated again) go to the eager D, all others to
    the compiled D. Both share the same parameters."""

    def __init__(self, eager: torch.nn.Module, compiled):
        super().__init__()
        self.eager = eager  # registered: .parameters() are D's own
        self._compiled = compiled
        self.eager_calls = 0
        self.compiled_calls = 0

    def forward(self, img, *args, **kwargs):
        if torch.is_grad_enabled() and img.requires_grad:
            self.eager_calls += 1
            return self.eager(img, *args, **kwargs)
        self.compiled_calls += 1
        return self._compiled(img, *args, **kwargs)


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return t if t.dim() == 0 else t.mean()


def import_trainer():
    """(Generator, Discriminator, d_loss_wgangp, g_loss_wgan) or raises ImportError."""
    from progan_ext.loss import d_loss_wgangp, g_loss_wgan  # noqa: PLC0415
    from progan_ext.networks import Discriminator, Generator  # noqa: PLC0415

    return Generator, Discriminator, d_loss_wgangp, g_loss_wgan


class TrainStep:
    """Networks, optimisers, EMA and input pool of one variant; ``step(k)`` runs one training step."""

    def __init__(self, trainer, variant: str, precision: str, res: int, args, device):
        Generator, Discriminator, self.d_loss, self.g_loss = trainer
        impl = "ext" if variant.startswith("ext") else "reference"
        compiled = variant.endswith("-compiled")
        torch.manual_seed(args.seed)
        fmt = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
        def make_g():
            return Generator(max_resolution=args.max_res, latent_size=args.latent_size, fmap_base=args.fmap_base,
                             fmap_max=args.fmap_max, impl=impl).to(device=device, memory_format=fmt)

        self.G = make_g()
        self.D = Discriminator(max_resolution=args.max_res, fmap_base=args.fmap_base, fmap_max=args.fmap_max,
                               mbstd_group_size=4, impl=impl).to(device=device, memory_format=fmt)
        # A second G loaded with G's weights (copy.deepcopy cannot copy modules that hold a Python module).
        self.G_ema = make_g().requires_grad_(False)
        self.G_ema.load_state_dict(self.G.state_dict())
        adam = dict(lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
        self.opt_g = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **adam)
        self.ema_params = list(self.G_ema.parameters())
        self.g_params = list(self.G.parameters())
        if compiled:
            torch._dynamo.reset()
            # fullgraph: G and D forward are one graph each (issue 13); a graph break is an error here.
            self.G_run = torch.compile(self.G, mode=args.compile_mode, fullgraph=True)
            d_fast = torch.compile(self.D, mode=args.compile_mode, fullgraph=True)
            self.D_dloss = PenaltyEagerD(self.D, d_fast)
            self.D_gloss = d_fast
        else:
            self.G_run, self.D_dloss, self.D_gloss = self.G, self.D, self.D
        self.compiled = compiled
        self.res, self.alpha = res, args.alpha
        self.batch = common.batch_for(res, args.batch)
        self.device = device
        self.amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else None
        gen = torch.Generator(device=device)
        gen.manual_seed(args.seed + 1)
        self.reals = [
            (torch.rand(self.batch, 3, res, res, generator=gen, device=device) * 2 - 1).contiguous(memory_format=fmt)
            for _ in range(args.real_sets)
        ]
        self.latent_size = args.latent_size
        self.last = None

    def _ctx(self):
        return self.amp() if self.amp else _Null()

    def step(self, k: int):
        r, a = self.res, self.alpha
        reals = self.reals[k]
        # D step.
        z = torch.randn(self.batch, self.latent_size, device=self.device)
        with self._ctx():
            with torch.no_grad():
                fakes = self.G_run(z, resolution=r, alpha=a).to(reals.dtype)
            loss_d, _stats = self.d_loss(self.D_dloss, reals, fakes, resolution=r, alpha=a, gp_lambda=10.0, drift=1e-3)
            loss_d = _scalar(loss_d)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        # G step (D frozen: only G's gradients are needed).
        self.D.requires_grad_(False)
        z = torch.randn(self.batch, self.latent_size, device=self.device)
        with self._ctx():
            fakes = self.G_run(z, resolution=r, alpha=a)
            loss_g = _scalar(self.g_loss(self.D_gloss, fakes, resolution=r, alpha=a))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        # EMA of G.
        with torch.no_grad():
            torch._foreach_lerp_(self.ema_params, self.g_params, 1.0 - EMA_BETA)
        self.last = (loss_d.detach(), loss_g.detach())


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_row(row, trainer, args, device, deadline) -> None:
    compiled = row["variant"].endswith("-compiled")
    if deadline.remaining() < (args.compile_min_budget_s if compiled else 0):
        row["status"] = "skipped: time budget"
        return
    ts = first_step(row, trainer, args, device)
    timer = common.Timer(device, fixed=(args.warmup_steps, args.steps))
    finish_row(row, ts, timer(ts.step, len(ts.reals)), args)


def first_step(row, trainer, args, device) -> TrainStep:
    ts = TrainStep(trainer, row["variant"], row["precision"], row["res"], args, device)
    t0 = time.perf_counter()
    ts.step(0)  # compiles (compiled variants), autotunes cuDNN, allocates
    common.sync(device)
    row["first_step_s"] = time.perf_counter() - t0
    return ts


def run_interleaved(rows, trainer, args, device) -> None:
    """The eager variants of one (resolution, precision), their timed steps interleaved step by step
    (common.Timer.compare): on shared CPU cores the ratio to the reference stays meaningful."""
    live = {}
    for row in rows:
        try:
            live[row["variant"]] = (row, first_step(row, trainer, args, device))
        except Exception as exc:  # noqa: BLE001  (one variant failing must not stop the others)
            row["status"] = "error: " + common.short_error(exc)
    if not live:
        return
    timer = common.Timer(device, fixed=(args.warmup_steps, args.steps))
    try:
        stats = timer.compare({v: ts.step for v, (_row, ts) in live.items()}, args.real_sets)
    except Exception as exc:  # noqa: BLE001
        for row, _ts in live.values():
            row["status"] = "error: " + common.short_error(exc)
        return
    for v, (row, ts) in live.items():
        finish_row(row, ts, stats[v], args)


def finish_row(row, ts, t, args) -> None:
    compiled = row["variant"].endswith("-compiled")
    row.update({k: t[k] for k in ("ms", "p20_ms", "p80_ms", "min_ms")})
    row["steps"] = t["reps"]
    row["img_per_s"] = row["batch"] / (t["ms"] / 1e3)
    loss_d, loss_g = (float(v) for v in ts.last)
    row["loss_d"], row["loss_g"] = loss_d, loss_g
    n_steps = 1 + args.warmup_steps + args.steps
    if compiled:
        row["compiled"] = {
            "fullgraph": True,
            "G": "torch.compile (both the no-grad D-step call and the G-step call)",
            "D": "torch.compile for D(real), D(fake) and the G step; eager for the gradient penalty's D(x_hat)",
            "d_loss_calls_per_step": {"compiled": ts.D_dloss.compiled_calls / n_steps,
                                      "eager": ts.D_dloss.eager_calls / n_steps},
        }
    else:
        row["compiled"] = None
    row["status"] = "ok" if math.isfinite(loss_d) and math.isfinite(loss_g) else "non-finite loss"


TABLE = [
    ("i", "#", 5, "s"), ("res", "res", 5, "int"), ("alpha", "alpha", 5, "g"), ("batch", "batch", 5, "int"),
    ("precision", "prec", 4, "s"), ("variant", "variant", 18, "s"), ("backend", "ops backend", 20, "s"),
    ("ms", "step ms", 8, "g"), ("img_per_s", "img/s", 7, "g"), ("x_ref", "x ref", 6, "x"),
    ("first_step_s", "1st s", 6, "g"), ("status", "status", 30, "s"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark one ProGAN training step (D WGAN-GP, G, EMA): img/s per variant.",
                                epilog="See benchmarks/README.md.")
    p.add_argument("--res", type=common.resolution_list, default=None,
                   help="training resolution(s), e.g. 256,1024 (default 256; --quick: 8)")
    p.add_argument("--max-res", type=int, default=None,
                   help="the networks' max_resolution (default: the largest --res)")
    p.add_argument("--alpha", type=float, default=1.0, help="fade-in alpha in [0, 1] (default 1.0: stable phase)")
    p.add_argument("--precisions", type=lambda t: common.parse_choices(t, PRECISIONS, what="precision"),
                   default=None, help="fp32,bf16 or all (default bf16,fp32; --quick: fp32)")
    p.add_argument("--variants", type=lambda t: common.parse_choices(t, VARIANTS, what="variant"), default=None,
                   help=f"{','.join(VARIANTS)} or all (default all; --quick: reference,ext)")
    p.add_argument("--layout", default="nchw", choices=common.LAYOUTS, help="memory format of networks and images")
    p.add_argument("--batch", type=common.batch_spec, default=None,
                   help="override the per-resolution batch: one integer, or res:batch pairs like 256:8,1024:4")
    p.add_argument("--latent-size", type=common.positive_int, default=None, help="512 (official; --quick: 16)")
    p.add_argument("--fmap-base", type=common.positive_int, default=None, help="8192 (official; --quick: 64)")
    p.add_argument("--fmap-max", type=common.positive_int, default=None, help="512 (official; --quick: 16)")
    p.add_argument("--warmup-steps", type=common.positive_int, default=None, help="after the first step (3; --quick: 1)")
    p.add_argument("--steps", type=common.positive_int, default=None, help="timed steps (10; --quick: 3)")
    p.add_argument("--real-sets", type=common.positive_int, default=2, help="batches of random reals rotated")
    p.add_argument("--compile-mode", default="default", choices=("default", "max-autotune", "max-autotune-no-cudagraphs"))
    p.add_argument("--compile-min-budget-s", type=float, default=60.0,
                   help="skip a compiled variant when less of --time-budget-s than this is left")
    p.add_argument("--interleave", default="auto", choices=("auto", "on", "off"),
                   help="time the eager variants of a resolution and precision interleaved, step by step "
                        "(auto: on for the CPU, whose cores may be shared)")
    common.add_common_args(p)
    args = p.parse_args(argv)
    q = args.quick
    args.interleave = args.interleave == "on" or (args.interleave == "auto" and common.is_cpu_run(args.device))
    if not q and common.is_cpu_run(args.device):  # a CPU-sized network (common.CPU_*): 64 channels
        args.res = args.res or [16, 64]
        args.batch = args.batch or {"all": 16}
        args.fmap_base = args.fmap_base or common.CPU_FMAP_BASE
        args.fmap_max = args.fmap_max or common.CPU_FMAP_MAX
        args.variants = args.variants or ["reference", "ext"]
        args.steps = args.steps or 20  # shared cores: more steps keep the median steady
    args.res = args.res or ([8] if q else [256])
    args.max_res = args.max_res or max(args.res)
    if args.max_res not in common.RESOLUTIONS or args.max_res < max(args.res):
        p.error(f"--max-res {args.max_res} must be a ProGAN resolution >= every --res {args.res}")
    if not 0.0 <= args.alpha <= 1.0:
        p.error(f"--alpha must be in [0, 1], got {args.alpha}")
    args.precisions = args.precisions or (["fp32"] if q else ["bf16", "fp32"])
    args.variants = args.variants or (["reference", "ext"] if q else list(VARIANTS))
    args.batch = args.batch or ({"all": 4} if q else None)
    args.latent_size = args.latent_size or (16 if q else 512)
    args.fmap_base = args.fmap_base or (64 if q else 8192)
    args.fmap_max = args.fmap_max or (16 if q else 512)
    args.warmup_steps = args.warmup_steps or (1 if q else 3)
    args.steps = args.steps or (3 if q else 10)
    for r in args.res:
        b = common.batch_for(r, args.batch)
        if b % min(4, b):
            p.error(f"batch {b} at {r}x{r} is not divisible by the minibatch-stddev group size 4")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = common.Deadline(args.time_budget_s)
    device = common.resolve_device(args.device)
    common.apply_backend_flags(args.tf32, args.cudnn_benchmark)
    common.apply_threads(args.threads, device, args.quick)
    warnings.filterwarnings("ignore", message=".*Falling back to the pure-PyTorch reference.*")
    prov = provenance.provenance(device)
    backend = prov.get("progan_ext", {}).get("backend_info", {})
    doc = {"schema": "progan_ext.bench_train/1", "provenance": prov,
           "config": {k: v for k, v in vars(args).items() if k != "out"}, "device_type": device.type,
           "rows": [], "complete": False}
    try:
        trainer = import_trainer()
    except ImportError as exc:
        msg = (f"bench_train needs progan_ext.networks and progan_ext.loss (the trainer), which this checkout "
               f"lacks: {common.short_error(exc)}")
        print(f"error: {msg}", file=sys.stderr)
        doc["status"] = "unavailable: " + msg
        if args.out:
            common.write_json(args.out, doc)
        return 3
    rows = []
    eager_first = sorted(
        ((res, prec, var) for res in args.res for prec in args.precisions for var in args.variants),
        key=lambda t: t[2].endswith("-compiled"))  # eager variants first: they fit any budget
    for res, prec, var in eager_first:
        rows.append({"index": len(rows), "res": res, "max_res": args.max_res, "alpha": args.alpha,
                     "batch": common.batch_for(res, args.batch), "precision": prec, "layout": args.layout,
                     "variant": var, "impl": "ext" if var.startswith("ext") else "reference",
                     "backend": common.backend_kinds(backend, device.type) if var.startswith("ext")
                     else "reference (PyTorch)",
                     "status": "pending"})
    doc["rows"] = rows
    print(f"# bench_train on {prov['gpu'].get('name') if device.type == 'cuda' else 'CPU (wall-clock timing)'}; "
          f"torch {prov['torch']}; git {str(prov['git']['commit'])[:10]}{' (dirty)' if prov['git']['dirty'] else ''}")
    print(f"# ext = progan_ext.ops: {common.backend_summary(backend, device.type)}")
    print("# step = D step (WGAN-GP + drift) + G step + EMA; compiled variants: G and D forward compiled, "
          "the gradient penalty's D(x_hat) eager")
    table = common.StreamTable(TABLE)
    table.header()
    for row in rows:
        if row["status"] != "pending":  # timed with its group
            pass
        elif deadline.expired():
            row["status"] = "skipped: time budget"
        elif args.interleave and not row["variant"].endswith("-compiled"):
            run_interleaved([r for r in rows if r["res"] == row["res"] and r["precision"] == row["precision"]
                             and not r["variant"].endswith("-compiled")], trainer, args, device)
        else:
            try:
                run_row(row, trainer, args, device, deadline)
            except Exception as exc:  # noqa: BLE001  (one variant failing must not stop the others)
                row["status"] = "error: " + common.short_error(exc)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        for r in rows:
            base = next((b for b in rows if b["variant"] == "reference" and b["res"] == r["res"]
                         and b["precision"] == r["precision"] and b.get("img_per_s")), None)
            if base and r.get("img_per_s"):
                r["speedup_vs_reference"] = r["img_per_s"] / base["img_per_s"]
        vals = dict(row, i=f"{row['index'] + 1}/{len(rows)}", x_ref=row.get("speedup_vs_reference"))
        table.row(vals)
        if args.out:
            doc["elapsed_s"] = deadline.elapsed()
            common.write_json(args.out, doc)
    skipped = sum(r["status"].startswith("skipped") for r in rows)
    doc["complete"] = skipped == 0
    doc["loadavg_end"] = provenance.cpu_info()["loadavg"]  # how busy the (possibly shared) machine was at the end
    doc["elapsed_s"] = deadline.elapsed()
    if args.out:
        common.write_json(args.out, doc)
    bad = [r for r in rows if r["status"] != "ok" and not r["status"].startswith("skipped")]
    print(f"# {len(rows) - skipped} rows in {deadline.elapsed():.1f} s; {skipped} skipped (time budget); "
          f"{len(bad)} failed" + (f"; JSON: {args.out}" if args.out else ""))
    for r in bad:
        print(f"#   r={r['res']} {r['precision']} {r['variant']}: {r['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
