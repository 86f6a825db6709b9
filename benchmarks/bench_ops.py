"""Times every progan_ext op against eager PyTorch and torch.compile at the ProGAN layer shapes.

For each selected (op, resolution, dtype, layout, mode) row the contenders are

* ``ext``     -- ``progan_ext.ops.<op>`` (the compiled kernel, or the reference fallback when the
  extension is not built: the ``backend`` field and the table header say which);
* ``eager``   -- the composite a user would write in plain PyTorch, in the input dtype
  (e.g. ``F.interpolate`` + ``F.conv2d(x, w * scale, b)`` + ``F.leaky_relu`` + pixel norm);
* ``compile`` -- ``torch.compile`` of that same composite (a failure is recorded per row).

Modes: ``fwd`` (forward only, no autograd) and ``fwdbwd`` (forward, then ``torch.autograd.grad`` of a
random output gradient with respect to every input: x, weight, bias).

Per row: median ms of each contender, speedup of ext vs eager and vs compile, and for ext the achieved
GB/s and TFLOP/s computed from the MINIMAL bytes and FLOPs of the row (formulas in ``COUNTING`` below and
in benchmarks/README.md) and their percentage of the copy bandwidth and matmul rate measured at start on
the same device. Output: a table streamed to stdout and, with ``--out``, a JSON file rewritten after
every row.

Examples::

    python benchmarks/bench_ops.py --quick                                    # CPU smoke, seconds
    python benchmarks/bench_ops.py --ops upsample_conv2d --res 256-1024 --dtypes bf16 --out up.json
    python benchmarks/bench_ops.py --ops all --dtypes fp32,bf16,fp16 --layouts all --out all.json
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import common  # benchmarks/common.py (puts the repository root on sys.path)
import provenance  # benchmarks/provenance.py
import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)
PN_EPS = 1e-8

# ----------------------------------------------------------------------------------------------
# Eager composites: what a user writes in plain PyTorch, everything in the input dtype.


def eager_pixel_norm(x):
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + PN_EPS)


def eager_minibatch_stddev(x, group_size: int = 4):
    n, c, h, w = x.shape
    g = min(group_size, n)
    y = x.reshape(g, n // g, 1, c, h, w)  # group = samples m, m+M, m+2M, ... (official layout)
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = torch.sqrt(y + 1e-8)
    y = y.mean(dim=(2, 3, 4))  # [M, 1]
    y = y.reshape(n // g, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


def eager_bias_act(x, b):
    return F.leaky_relu(x + b.view(1, -1, 1, 1), 0.2)


def _scale(w, gain):
    return gain / math.sqrt(w.shape[1] * w.shape[2] * w.shape[3])


def eager_eq_conv2d(x, w, b, *, gain, act, pn):
    y = F.conv2d(x, w * _scale(w, gain), b, padding=w.shape[-1] // 2)
    if act == "lrelu":
        y = F.leaky_relu(y, 0.2)
    return eager_pixel_norm(y) if pn else y


def eager_upsample_conv2d(x, w, b):
    y = F.interpolate(x, scale_factor=2, mode="nearest")
    y = F.leaky_relu(F.conv2d(y, w * _scale(w, SQRT2), b, padding=1), 0.2)
    return eager_pixel_norm(y)


def eager_conv2d_downsample(x, w, b):
    # The bias commutes with the average pooling, so conv2d's own bias is the natural eager spelling.
    y = F.avg_pool2d(F.conv2d(x, w * _scale(w, SQRT2), b, padding=1), 2)
    return F.leaky_relu(y, 0.2)


# ----------------------------------------------------------------------------------------------
# The benchmarked op variants: shapes at a ProGAN resolution, inputs, contenders, FLOP counts.


@dataclass(frozen=True)
class Shape:
    n: int
    cin: int
    cout: int  # channels of the output
    hin: int
    hout: int
    k: int = 0  # conv kernel size (0: no weight)


@dataclass(frozen=True)
class Variant:
    name: str
    op: str  # the progan_ext.ops function (for backend_info)
    min_res: int
    describe: str
    shape: Callable  # (res, n, nf) -> Shape
    ext: Callable
    eager: Callable
    macs_per_out: int = 0  # multiply-adds per output element per input channel (0: not a conv)
    epi_fwd: int = 0  # element-wise FLOPs per output element in the forward epilogue
    epi_bwd: int = 0  # ... and in its backward
    elem_fwd: int = 0  # element-wise FLOPs per input element (non-conv ops)
    elem_bwd: int = 0


def _ops():
    import progan_ext.ops as ops  # noqa: PLC0415

    return ops


VARIANTS = {
    v.name: v
    for v in [
        Variant("pixel_norm", "pixel_norm", 4, "x[N,nf(r),r,r]; G's per-pixel feature norm",
                lambda r, n, nf: Shape(n, nf(r), nf(r), r, r),
                lambda x: _ops().pixel_norm(x), eager_pixel_norm, elem_fwd=3, elem_bwd=5),
        Variant("minibatch_stddev", "minibatch_stddev", 4, "x[N,nf(r),r,r], group 4, 1 feature (ProGAN uses it at 4x4)",
                lambda r, n, nf: Shape(n, nf(r), nf(r) + 1, r, r),
                lambda x: _ops().minibatch_stddev(x, 4, 1), eager_minibatch_stddev, elem_fwd=4, elem_bwd=4),
        Variant("bias_act", "bias_act", 4, "x[N,nf(r),r,r] + bias, leaky ReLU 0.2",
                lambda r, n, nf: Shape(n, nf(r), nf(r), r, r),
                lambda x, b: _ops().bias_act(x, b, "lrelu", 0.2), eager_bias_act, elem_fwd=2, elem_bwd=2),
        Variant("eq_conv2d_k3", "eq_conv2d", 4, "G's 3x3 conv nf(r)->nf(r) at r + bias + lrelu + pixel norm",
                lambda r, n, nf: Shape(n, nf(r), nf(r), r, r, 3),
                lambda x, w, b: _ops().eq_conv2d(x, w, b, gain=SQRT2, act="lrelu", alpha=0.2, pixel_norm=True),
                lambda x, w, b: eager_eq_conv2d(x, w, b, gain=SQRT2, act="lrelu", pn=True),
                macs_per_out=9, epi_fwd=5, epi_bwd=7),
        Variant("eq_conv2d_k1_torgb", "eq_conv2d", 4, "toRGB: 1x1 conv nf(r)->3, gain 1, bias, linear",
                lambda r, n, nf: Shape(n, nf(r), 3, r, r, 1),
                lambda x, w, b: _ops().eq_conv2d(x, w, b, gain=1.0, act="linear", alpha=0.2, pixel_norm=False),
                lambda x, w, b: eager_eq_conv2d(x, w, b, gain=1.0, act="linear", pn=False),
                macs_per_out=1, epi_fwd=1, epi_bwd=1),
        Variant("eq_conv2d_k1_fromrgb", "eq_conv2d", 4, "fromRGB: 1x1 conv 3->nf(r), bias, lrelu",
                lambda r, n, nf: Shape(n, 3, nf(r), r, r, 1),
                lambda x, w, b: _ops().eq_conv2d(x, w, b, gain=SQRT2, act="lrelu", alpha=0.2, pixel_norm=False),
                lambda x, w, b: eager_eq_conv2d(x, w, b, gain=SQRT2, act="lrelu", pn=False),
                macs_per_out=1, epi_fwd=2, epi_bwd=2),
        Variant("upsample_conv2d", "upsample_conv2d", 8,
                "G's first conv at r: nearest 2x of x[N,nf(r/2),r/2,r/2], 3x3 conv ->nf(r), bias, lrelu, pixel norm",
                lambda r, n, nf: Shape(n, nf(r // 2), nf(r), r // 2, r, 3),
                lambda x, w, b: _ops().upsample_conv2d(x, w, b, gain=SQRT2, act="lrelu", alpha=0.2, pixel_norm=True),
                eager_upsample_conv2d, macs_per_out=4, epi_fwd=5, epi_bwd=7),
        Variant("conv2d_downsample", "conv2d_downsample", 8,
                "D's second conv at r: 3x3 conv x[N,nf(r),r,r] ->nf(r/2), 2x2 avg pool, bias, lrelu",
                lambda r, n, nf: Shape(n, nf(r), nf(r // 2), r, r // 2, 3),
                lambda x, w, b: _ops().conv2d_downsample(x, w, b, gain=SQRT2, act="lrelu", alpha=0.2),
                eager_conv2d_downsample, macs_per_out=16, epi_fwd=2, epi_bwd=2),
    ]
}

OP_GROUPS = {
    "eq_conv2d": ["eq_conv2d_k3", "eq_conv2d_k1_torgb", "eq_conv2d_k1_fromrgb"],
    "eq_conv2d_k1": ["eq_conv2d_k1_torgb", "eq_conv2d_k1_fromrgb"],
}

COUNTING = {
    "bytes": (
        "fwd = sum of the input tensors (x, weight, bias) read once + the output written once; "
        "fwdbwd = fwd + the backward's minimum: the inputs and the output gradient read once, every input "
        "gradient written once (anything else can be recomputed). Sizes in the row's dtype."
    ),
    "flops": {
        "pixel_norm": "fwd 3*E (square-accumulate 2, scale 1); bwd +5*E; E = N*C*H*W",
        "minibatch_stddev": "fwd 4*E (mean, subtract, square-accumulate); bwd +4*E; E = N*C*H*W",
        "bias_act": "fwd 2*E (add, leaky ReLU); bwd +2*E (mask-multiply, bias-gradient sum)",
        "eq_conv2d_k3": "fwd 2*M + 5*O; bwd +4*M + 7*O; M = N*Cout*H*W*Cin*9 multiply-adds, O = output elements "
                        "(epilogue: bias 1, lrelu 1, pixel norm 3; backward 1+1+5)",
        "eq_conv2d_k1_torgb": "fwd 2*M + 1*O; bwd +4*M + 1*O; M = N*3*H*W*Cin",
        "eq_conv2d_k1_fromrgb": "fwd 2*M + 2*O; bwd +4*M + 2*O; M = N*Cout*H*W*3",
        "upsample_conv2d": "fwd 2*M + 5*O; bwd +4*M + 7*O; M = N*Cout*(2H)*(2W)*Cin*4: the minimal count, each "
                           "output parity is a 2x2 conv of the low-resolution input (not 9 taps)",
        "conv2d_downsample": "fwd 2*M + 2*O; bwd +4*M + 2*O; M = N*Cout*(H/2)*(W/2)*Cin*16: the minimal count, "
                             "conv3x3 + avgpool2x2 = one 4x4 stride-2 conv",
    },
    "rates": "GB/s = bytes / time; TFLOP/s = flops / time; %copy = GB/s over the measured copy bandwidth "
             "(read + write bytes); %mm = TFLOP/s over the measured n^3 matmul rate of the row's dtype",
}

CONTENDERS = ("ext", "eager", "compile")
MODES = ("fwd", "fwdbwd")
# Relative error of a contender's forward output vs eager above which the row is flagged with '!'
# (eager itself rounds in the row's dtype; fp32 convolutions may use TF32).
ERR_TOL = {"fp32": 5e-3, "fp16": 1e-2, "bf16": 3e-2}


def elem_size(dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def input_shapes(v: Variant, s: Shape) -> list[tuple]:
    x = (s.n, s.cin, s.hin, s.hin)
    if v.name == "bias_act":
        return [x, (s.cin,)]
    if s.k:
        return [x, (s.cout, s.cin, s.k, s.k), (s.cout,)]
    return [x]


def output_shape(s: Shape) -> tuple:
    return (s.n, s.cout, s.hout, s.hout)


def count_bytes(v: Variant, s: Shape, mode: str, esize: int) -> int:
    ins = sum(math.prod(t) for t in input_shapes(v, s))
    out = math.prod(output_shape(s))
    fwd = ins + out
    return esize * (fwd if mode == "fwd" else fwd + (ins + out) + ins)


def count_flops(v: Variant, s: Shape, mode: str) -> int:
    if v.macs_per_out:
        o = math.prod(output_shape(s))
        m = o * s.cin * v.macs_per_out
        fwd = 2 * m + v.epi_fwd * o
        return fwd if mode == "fwd" else fwd + 4 * m + v.epi_bwd * o
    e = s.n * s.cin * s.hin * s.hin
    return v.elem_fwd * e if mode == "fwd" else (v.elem_fwd + v.elem_bwd) * e


# ----------------------------------------------------------------------------------------------
# Running one row.


class InputSet:
    def __init__(self, inputs, grad_out):
        self.inputs, self.grad_out = inputs, grad_out


def make_set(v: Variant, s: Shape, dtype, layout, device, gen, grad: bool) -> InputSet:
    ins = []
    for shp in input_shapes(v, s):
        t = torch.randn(shp, generator=gen, device=device, dtype=torch.float32)
        if len(shp) == 1:
            t = 0.1 * t  # bias
        t = common.to_layout(t.to(dtype), layout)
        ins.append(t.requires_grad_(grad))
    g = common.to_layout(torch.randn(output_shape(s), generator=gen, device=device).to(dtype), layout) if grad else None
    return InputSet(ins, g)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().float(), ref.detach().float()
    if a.shape != ref.shape:
        return math.inf
    den = torch.linalg.vector_norm(ref).item()
    return torch.linalg.vector_norm(a - ref).item() / max(den, 1e-30)


def make_step(fn, sets, mode):
    """step(k): one call of the contender on input set k (forward, or forward + autograd.grad)."""
    grad = mode == "fwdbwd"

    def step(k):
        s = sets[k]
        y = fn(*s.inputs)
        if grad:
            torch.autograd.grad(y, s.inputs, s.grad_out)
        return y

    return step


def first_call(step, device) -> tuple:
    """The first call (compiles, autotunes, allocates): its output and its seconds (first_call_s)."""
    t0 = time.perf_counter()
    y0 = step(0)
    common.sync(device)
    return y0.detach(), time.perf_counter() - t0


def run_row(row, v, s, args, device, timer, deadline, ceilings) -> None:
    dtype = common.DTYPES[row["dtype"]]
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed + row["res"])
    grad = row["mode"] == "fwdbwd"
    esize = elem_size(dtype)
    set_bytes = esize * (sum(math.prod(t) for t in input_shapes(v, s)) + math.prod(output_shape(s)) * (2 if grad else 1))
    n_sets = common.rotation_sets(set_bytes, device, quick=args.quick)
    sets = [make_set(v, s, dtype, row["layout"], device, gen, grad) for _ in range(n_sets)]
    row["sets"] = n_sets
    with torch.no_grad():
        ref_out = eager_out = v.eager(*[t.detach() for t in sets[0].inputs])
    del eager_out
    results, steps = {}, {}
    for name in args.contenders:
        if name == "compile" and deadline.remaining() < args.compile_min_s:
            results[name] = {"status": "skipped: time budget"}
            continue
        try:
            if name == "ext":
                fn = v.ext
            elif name == "eager":
                fn = v.eager
            else:
                torch._dynamo.reset()  # a fresh, static-shape compilation per row
                fn = torch.compile(v.eager, dynamic=False, mode=args.compile_mode)
            step = make_step(fn, sets, row["mode"])
            with torch.set_grad_enabled(grad):
                out, first = first_call(step, device)
                if not args.interleave:
                    results[name] = timer(step, len(sets))
            results.setdefault(name, {})
            results[name].update(first_call_s=first, status="ok",
                                 rel_err_vs_eager=rel_err(out, ref_out) if name != "eager" else 0.0)
            steps[name] = step
        except Exception as exc:  # noqa: BLE001  (one contender failing must not stop the table)
            results[name] = {"status": "error: " + common.short_error(exc)}
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.interleave and steps:
        try:
            with torch.set_grad_enabled(grad):
                for name, t in timer.compare(steps, len(sets)).items():
                    results[name].update(t)
        except Exception as exc:  # noqa: BLE001
            for name in steps:
                results[name] = {"status": "error: " + common.short_error(exc)}
    for r in results.values():
        if r.get("ms"):
            r["gbps"] = row["bytes"] / (r["ms"] * 1e6)
            r["tflops"] = row["flops"] / (r["ms"] * 1e9)
            r["pct_copy"] = 100 * r["gbps"] / ceilings["copy"]["GBps"]
            mm = ceilings["matmul"].get(row["dtype"], {}).get("TFLOPs")
            r["pct_matmul"] = 100 * r["tflops"] / mm if mm else None
    row["contenders"] = results
    ext, eager, comp = (results.get(k, {}) for k in CONTENDERS)
    if ext.get("ms") and eager.get("ms"):
        row["speedup_vs_eager"] = eager["ms"] / ext["ms"]
    if ext.get("ms") and comp.get("ms"):
        row["speedup_vs_compile"] = comp["ms"] / ext["ms"]
    for key in ("gbps", "tflops", "pct_copy", "pct_matmul", "rel_err_vs_eager"):
        row[key] = ext.get(key)
    bad = [k for k, r in results.items() if r.get("rel_err_vs_eager", 0) > ERR_TOL[row["dtype"]]]
    errors = [k for k, r in results.items() if str(r.get("status", "")).startswith("error")]
    row["status"] = "ok" if not bad and not errors else "; ".join(
        [f"{k} differs from eager" for k in bad] + [f"{k} failed" for k in errors])
    del sets, ref_out


# ----------------------------------------------------------------------------------------------
# Command line.

TABLE = [
    ("i", "#", 9, "s"), ("op", "op", 20, "s"), ("res", "res", 4, "int"), ("shape", "N x Cin>Cout", 13, "s"),
    ("dtype", "dtype", 4, "s"), ("lay", "lay", 4, "s"), ("mode", "mode", 6, "s"),
    ("ext", "ext ms", 7, "g"), ("eager", "eager ms", 8, "g"), ("compile", "comp ms", 7, "g"),
    ("x_eager", "x eager", 7, "x"), ("x_compile", "x comp", 7, "x"),
    ("gbps", "GB/s", 6, "g"), ("pct_copy", "%copy", 5, "pct"), ("tflops", "TFLOP/s", 7, "g"),
    ("pct_matmul", "%mm", 4, "pct"), ("err", "err", 7, "s"),
]


def table_values(row, total) -> dict:
    c = row.get("contenders", {})
    err = row.get("rel_err_vs_eager")
    err_s = "-" if err is None else f"{err:.0e}" + ("!" if err > ERR_TOL[row["dtype"]] else "")
    vals = {
        "i": f"{row['index'] + 1}/{total}", "op": row["op"], "res": row["res"],
        "shape": f"{row['n']}x{row['cin']}>{row['cout']}", "dtype": row["dtype"],
        "lay": "cl" if row["layout"] == "channels_last" else "nchw", "mode": row["mode"],
        "x_eager": row.get("speedup_vs_eager"), "x_compile": row.get("speedup_vs_compile"),
        "gbps": row.get("gbps"), "pct_copy": row.get("pct_copy"), "tflops": row.get("tflops"),
        "pct_matmul": row.get("pct_matmul"), "err": err_s,
    }
    for k in CONTENDERS:
        vals[k] = c.get(k, {}).get("ms")
    return vals


def variant_list(text: str) -> list[str]:
    out: list[str] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "all":
            names = list(VARIANTS)
        elif item in OP_GROUPS:
            names = OP_GROUPS[item]
        elif item in VARIANTS:
            names = [item]
        else:
            raise argparse.ArgumentTypeError(
                f"unknown op {raw.strip()!r}; choose from {', '.join(list(VARIANTS) + list(OP_GROUPS))} or all")
        out.extend(n for n in names if n not in out)
    if not out:
        raise argparse.ArgumentTypeError("no op given")
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark progan_ext ops against eager PyTorch and torch.compile at ProGAN shapes.",
        epilog="See benchmarks/README.md for every column and the byte/FLOP counting formulas.")
    p.add_argument("--ops", type=variant_list, default=None,
                   help=f"comma list of {', '.join(VARIANTS)}, the groups {', '.join(OP_GROUPS)}, or all (default)")
    p.add_argument("--res", type=common.resolution_list, default=None,
                   help="resolutions, e.g. 4,8,64-256 or all (default all; --quick: 4,8)")
    p.add_argument("--dtypes", type=common.dtype_list, default=None,
                   help="fp32,bf16,fp16 or all (default all on CUDA; --quick: fp32)")
    p.add_argument("--layouts", type=common.layout_list, default=None,
                   help="nchw,channels_last or all (default all; --quick: nchw)")
    p.add_argument("--modes", type=lambda t: common.parse_choices(t, MODES, what="mode"), default=list(MODES),
                   help="fwd,fwdbwd or all (default all)")
    p.add_argument("--contenders", type=lambda t: common.parse_choices(t, CONTENDERS, what="contender"),
                   default=None, help="ext,eager,compile or all (default all; --quick: ext,eager)")
    p.add_argument("--batch", type=common.batch_spec, default=None,
                   help="override the per-resolution batch: one integer, or res:batch pairs like 256:8,512:4")
    p.add_argument("--fmap-base", type=common.positive_int, default=None, help="8192 (official; --quick: 64)")
    p.add_argument("--fmap-max", type=common.positive_int, default=None, help="512 (official; --quick: 16)")
    p.add_argument("--warmup-ms", type=common.positive_float, default=None, help="warm-up per contender (25; CPU: 50)")
    p.add_argument("--rep-ms", type=common.positive_float, default=None,
                   help="timed calls per contender, in ms of run time (100; CPU: 300); clamped by --min-reps/--max-reps")
    p.add_argument("--min-reps", type=common.positive_int, default=None, help="(10; CPU: 25; --quick: 3)")
    p.add_argument("--max-reps", type=common.positive_int, default=None, help="(200; --quick: 10)")
    p.add_argument("--row-ms", type=common.positive_float, default=None,
                   help="cap on a row's timed rounds in ms, at least 5 rounds (CPU: 5000; else none)")
    p.add_argument("--slow-ms", type=common.positive_float, default=None,
                   help="a call slower than this is timed on one input set without estimate and warm-up "
                        "rounds (CPU: 250; else none)")
    p.add_argument("--compile-mode", default="default", choices=("default", "max-autotune", "max-autotune-no-cudagraphs"),
                   help="torch.compile mode of the compile contender")
    p.add_argument("--compile-min-s", type=float, default=15.0,
                   help="skip the compile contender when less budget than this is left (--time-budget-s)")
    p.add_argument("--interleave", default="auto", choices=("auto", "on", "off"),
                   help="time the contenders of a row interleaved, call by call (auto: on for the CPU, whose "
                        "cores may be shared; off for CUDA: each contender's calls back to back)")
    p.add_argument("--dry-run", action="store_true", help="list the selected rows with shapes and counts, time nothing")
    p.add_argument("--autotune", default="off", choices=("off", "on"),
                   help="progan_ext's autotuned dispatch (progan_ext.autotune, CUDA only): off (default) times the "
                        "compiled kernels themselves as ext; on times what users get (the faster of kernel and "
                        "eager per signature) and records each row's choice")
    common.add_common_args(p)
    args = p.parse_args(argv)
    q = args.quick
    cpu = not q and common.is_cpu_run(args.device)
    args.ops = args.ops or list(VARIANTS)
    args.res = args.res or ([4, 8] if q else list(common.CPU_RESOLUTIONS) if cpu else list(common.RESOLUTIONS))
    args.dtypes = args.dtypes or (["fp32"] if q else ["fp32", "bf16"] if cpu else list(common.DTYPES))
    args.layouts = args.layouts or (["nchw"] if q else list(common.LAYOUTS))
    args.contenders = args.contenders or (["ext", "eager"] if q or cpu else list(CONTENDERS))
    args.batch = args.batch or ({"all": 4} if q else dict(common.CPU_BATCH) if cpu else None)
    args.fmap_base = args.fmap_base or (64 if q else common.CPU_FMAP_BASE if cpu else 8192)
    args.fmap_max = args.fmap_max or (16 if q else common.CPU_FMAP_MAX if cpu else 512)
    args.interleave = args.interleave == "on" or (args.interleave == "auto" and common.is_cpu_run(args.device))
    # CPU calls on shared cores come out bimodal (a preempted call takes a scheduler slice longer):
    # more rounds keep the median in the main mode.
    args.warmup_ms = args.warmup_ms or (2.0 if q else 50.0 if cpu else 25.0)
    args.rep_ms = args.rep_ms or (5.0 if q else 300.0 if cpu else 100.0)
    args.min_reps = args.min_reps or (3 if q else 25 if cpu else 10)
    args.max_reps = args.max_reps or (10 if q else 200)
    args.row_ms = args.row_ms or (5000.0 if cpu else None)
    args.slow_ms = args.slow_ms or (250.0 if cpu else None)
    if args.min_reps > args.max_reps:
        p.error(f"--min-reps {args.min_reps} is larger than --max-reps {args.max_reps}")
    return args


def build_rows(args) -> list[dict]:
    rows = []
    nf = lambda r: common.nf(r, args.fmap_base, args.fmap_max)  # noqa: E731
    for name in args.ops:
        v = VARIANTS[name]
        for dt in args.dtypes:
            for layout in args.layouts:
                for mode in args.modes:
                    for res in args.res:
                        if res < v.min_res:
                            continue
                        s = v.shape(res, common.batch_for(res, args.batch), nf)
                        rows.append({
                            "index": len(rows), "op": name, "function": f"progan_ext.ops.{v.op}", "res": res,
                            "n": s.n, "cin": s.cin, "cout": s.cout, "h_in": s.hin, "h_out": s.hout, "k": s.k,
                            "dtype": dt, "layout": layout, "mode": mode,
                            "bytes": count_bytes(v, s, mode, elem_size(common.DTYPES[dt])),
                            "flops": count_flops(v, s, mode), "status": "pending",
                        })
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    deadline = common.Deadline(args.time_budget_s)
    device = common.resolve_device(args.device)
    common.apply_backend_flags(args.tf32, args.cudnn_benchmark)
    common.apply_threads(args.threads, device, args.quick)
    rows = build_rows(args)
    if not rows:
        print("error: the selection is empty (upsample_conv2d/conv2d_downsample start at 8x8)", file=sys.stderr)
        return 2
    if args.dry_run:
        for r in rows:
            print(f"{r['op']:22s} r={r['res']:<5d} N={r['n']:<4d} {r['cin']:>4d}->{r['cout']:<4d} "
                  f"{r['h_in']}->{r['h_out']} {r['dtype']} {r['layout']} {r['mode']:6s} "
                  f"bytes={r['bytes']:.3e} flops={r['flops']:.3e}")
        print(f"{len(rows)} rows")
        return 0
    if device.type == "cpu" and not args.quick and max(args.res) > 64 and args.fmap_max > 128:
        print("note: full ProGAN shapes on the CPU take very long; use --quick or select --res", file=sys.stderr)
    warnings.filterwarnings("ignore", message=".*Falling back to the pure-PyTorch reference.*")
    os.environ["PROGAN_EXT_AUTOTUNE"] = "1" if args.autotune == "on" else "0"  # read at every call
    from progan_ext import autotune  # noqa: PLC0415
    prov = provenance.provenance(device)
    backend = prov.get("progan_ext", {}).get("backend_info", {})
    print(f"# bench_ops on {prov['gpu'].get('name') if device.type == 'cuda' else 'CPU (wall-clock timing)'}; "
          f"torch {prov['torch']}; git {str(prov['git']['commit'])[:10]}{' (dirty)' if prov['git']['dirty'] else ''}")
    print(f"# ext = progan_ext.ops: {common.backend_summary(backend, device.type)}; autotune {args.autotune}")
    tf = prov["flags"]
    print(f"# TF32: cuda.matmul.allow_tf32={tf['torch.backends.cuda.matmul.allow_tf32']} "
          f"cudnn.allow_tf32={tf['torch.backends.cudnn.allow_tf32']}; cudnn.benchmark={tf['torch.backends.cudnn.benchmark']}")
    ceilings = common.measure_ceilings(device, args.dtypes, quick=args.quick)
    mm = ", ".join(f"{k} {v['TFLOPs']:.3g}" for k, v in ceilings["matmul"].items() if isinstance(v, dict) and "TFLOPs" in v)
    print(f"# ceilings: copy {ceilings['copy']['GBps']:.4g} GB/s (read+write); matmul n={ceilings['matmul']['n']} TFLOP/s: {mm}")
    doc = {
        "schema": "progan_ext.bench_ops/1", "provenance": prov,
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "device_type": device.type, "ceilings": ceilings, "counting": COUNTING,
        "err_tol": ERR_TOL, "rows": rows, "complete": False,
    }
    table = common.StreamTable(TABLE)
    table.header()
    nf = lambda r: common.nf(r, args.fmap_base, args.fmap_max)  # noqa: E731
    timer = common.Timer(device, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms,
                         min_reps=args.min_reps, max_reps=args.max_reps, row_ms=args.row_ms,
                         slow_ms=args.slow_ms)
    for row in rows:
        if deadline.expired():
            row["status"] = "skipped: time budget"
            continue
        v = VARIANTS[row["op"]]
        row["backend"] = backend.get("ops", {}).get(v.op, {}).get(device.type, "?")
        s = v.shape(row["res"], row["n"], nf)
        chosen = len(autotune.choices())
        try:
            run_row(row, v, s, args, device, timer, deadline, ceilings)
        except Exception as exc:  # noqa: BLE001  (e.g. out of memory building the inputs)
            row["status"] = "error: " + common.short_error(exc)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if args.autotune == "on":  # the choices this row's first calls made
            row["autotune"] = [c["choice"] for c in autotune.choices()[chosen:]]
        table.row(table_values(row, len(rows)))
        if args.out:
            doc["elapsed_s"] = deadline.elapsed()
            common.write_json(args.out, doc)
    skipped = sum(r["status"].startswith("skipped") for r in rows)
    failed = [r for r in rows if r["status"] not in ("ok",) and not r["status"].startswith("skipped")]
    doc["complete"] = skipped == 0
    doc["loadavg_end"] = provenance.cpu_info()["loadavg"]  # how busy the (possibly shared) machine was at the end
    doc["elapsed_s"] = deadline.elapsed()
    doc["autotune"] = {"mode": args.autotune, "choices": autotune.choices()}
    if args.out:
        common.write_json(args.out, doc)
    if args.autotune == "on":
        won = [c["choice"] for c in autotune.choices()]
        print(f"# autotune: {len(won)} signatures tuned; the eager composite won {won.count('eager')}, "
              f"the kernel {won.count('kernel')}, the kernel without split-K {won.count('kernel_unsplit')}, "
              f"the kernel on an NHWC copy {won.count('kernel_nhwc')} "
              "(per row: JSON field 'autotune')")
    print(f"# {len(rows) - skipped} rows in {deadline.elapsed():.1f} s; {skipped} skipped (time budget); "
          f"{len(failed)} with a failure or mismatch" + (f"; JSON: {args.out}" if args.out else ""))
    for r in failed[:20]:
        print(f"#   {r['op']} r={r['res']} {r['dtype']} {r['layout']} {r['mode']}: {r['status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
