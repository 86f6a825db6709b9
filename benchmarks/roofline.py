"""Roofline MODEL of every layer of the official ProGAN networks: fused progan_ext ops vs the eager
PyTorch composite, at H100 SXM limits. Nothing here is measured; it is arithmetic on shapes.

For each layer of G and D from 4^2 to 1024^2 (and the standalone pixel_norm, minibatch_stddev and
bias_act ops at bench_ops.py's shapes), forward and forward+backward, the script lists the kernels of
each contender with their minimal bytes and FLOPs, bounds each kernel's time from below by
max(bytes / bandwidth, FLOPs / peak), sums the kernels, and reports eager bound / fused bound: the
speedup the fused op would show if both contenders ran every kernel at the hardware limits.

    python benchmarks/roofline.py                      # print the tables
    python benchmarks/roofline.py --out roofline.json  # + every kernel of every row as JSON
    python benchmarks/roofline.py --write-readme       # regenerate the section of benchmarks/README.md

Assumptions (every one of them; the README section repeats the important ones):

1. Limits: H100 SXM, dense: 3.35 TB/s HBM, 989 TFLOP/s bf16, 495 TFLOP/s TF32. fp32 rows assume TF32
   tensor cores for the convolutions and GEMMs of both contenders (PyTorch's default for cuDNN convs).
   Element-wise FLOPs are charged at the same peak (they are far from it), which keeps every bound a
   lower bound.
2. A kernel's time >= max(bytes / 3.35 TB/s, FLOPs / peak); a contender's time >= the sum over its
   kernels: kernels do not overlap, launch latency is zero, and nothing stays in L2 between kernels
   (each kernel reads its inputs from HBM once and writes its outputs once; perfect tiling inside).
3. Every tensor is in the row's dtype (bf16: 2 bytes, fp32: 4), weights and biases too (as in
   bench_ops.py; no autocast weight casts). FLOPs: 2 per multiply-add; element-wise ops as bench_ops.py
   counts them (bias 1, leaky ReLU 1, pixel norm 3 per element forward, 5 backward).
4. Shapes: official channels nf(r) = min(8192 / 2**(log2 r - 1), 512) and batch per resolution
   (common.DEFAULT_BATCH: 128 up to 16^2, 64, 32, 16, 8, then 4 at 512^2 and 1024^2); a layer at
   resolution r runs at the batch of the phase where r is the newest resolution.
5. Fused forward = one kernel: inputs, weight and bias read once, output written once. upsample_conv2d:
   four phase convolutions with 2x2 summed taps, M = N*Cout*(2h)^2*Cin*4 multiply-adds (1/2.25 of the
   9-tap conv on the upsampled tensor); conv2d_downsample: one 4x4 stride-2 conv,
   M = N*Cout*(H/2)^2*Cin*16 = N*Cout*H^2*Cin*4 (1/2.25 of the 3x3 conv at full resolution).
6. Fused backward = two kernels: grad-input (a conv of the same MAC count; for up it is a down-type
   conv and vice versa) with the epilogue's backward in its prologue and the bias gradient reduced in
   it, and grad-weight (recomputes the epilogue backward from dy and y). This needs the forward to save
   its output y and, for pixel-norm layers, the per-pixel inverse norm r (N*H*W values, counted): the
   leaky-ReLU mask is sign(y) and the pixel-norm backward is r*(g - y*mean_c(g*y)). No recompute. This
   is the bound of the fused design. Today's backward (csrc/autograd/*.cpp) launches more kernels;
   the "today" side models them with the same forward: pixel-norm layers take the pixel-norm
   gradient in one pass from the saved output and inverse norm (pixel_norm_backward_from_output, since
   2026-12-04; the *_pn op forms first recomputed the forward convolution, then rebuilt a = y / r in a
   pass of its own), then bias_act_backward (lrelu),
   the bias sum, a materialised weight flip (the adjoint kernel), grad-input and grad-weight; bias_act
   (and the dense layers' epilogue) runs its bias sum as a pass of its own. Every "today" kernel is still
   at its roofline: the README's Status notes slower paths (fp32 grad-weight: a simple kernel).
7. Eager = one kernel per ATen op that eager PyTorch launches for bench_ops.py's composites and their
   autograd: `w * scale` materialised (and its backward), cuDNN conv with the bias added by a separate
   in-place pass (PyTorch's _convolution), nearest upsample stored and re-read by the conv, avg pool,
   leaky ReLU out of place, pixel norm spelled x * rsqrt(mean(x^2, 1) + eps): square, mean, add, rsqrt,
   mul forward and 10 kernels backward (eager_pixel_norm). The element-wise kernel lists follow the ATen
   ops torch.profiler records for these composites (checked on the CPU). `--eager-pixel-norm one-pass`
   counts the pixel norm as one read+write pass each way instead (the spelling most favourable to eager;
   the README's tables use the default, its headline quotes both).
8. fwd+bwd computes every gradient (x, weight, bias), as bench_ops.py's fwdbwd rows and the training step
   do (D's input gradient feeds the gradient penalty); the penalty's second derivatives are not modeled.
9. Dense layers (G's latent -> 4x4, D's two last layers): both contenders run F.linear on the scaled
   weight (networks.py does so for either impl); only the epilogue differs (progan_ext's bias_act and
   pixel_norm ops vs add, leaky_relu and the eager pixel norm).
10. The ratio of two lower bounds is a model, not a bound in either direction on a measured ratio: eager
   also loses time to launches (small layers) and cuDNN's own efficiency, which can push a measured
   speedup above the model; a fused kernel running below its roofline pulls it below.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import common  # benchmarks/common.py: nf, DEFAULT_BATCH, RESOLUTIONS, tables, JSON
import summarize  # benchmarks/summarize.py: issue 6's targets (one place)

BANDWIDTH = 3.35e12  # bytes/s, H100 SXM HBM3
PEAK = {"bf16": 989e12, "fp32": 495e12}  # dense tensor-core FLOP/s (fp32 as TF32)
ESIZE = {"bf16": 2, "fp32": 4}
DTYPES = ("bf16", "fp32")
MODES = ("fwd", "fwdbwd")
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- roofline:begin -->", "<!-- roofline:end -->"


@dataclass(frozen=True)
class Kernel:
    """One kernel launch: elements read and written (in the row's dtype) and FLOPs."""

    name: str
    read: int
    write: int
    flops: int

    def bytes(self, dtype: str) -> int:
        return (self.read + self.write) * ESIZE[dtype]

    def seconds(self, dtype: str) -> float:
        return max(self.bytes(dtype) / BANDWIDTH, self.flops / PEAK[dtype])


@dataclass
class Layer:
    net: str  # "G", "D" or "op" (a standalone op at bench_ops.py's shape)
    res: int
    layer: str
    op: str  # the progan_ext op (bench_ops.py's name) or "linear"
    n: int
    cin: int
    cout: int
    fused: dict  # mode -> [Kernel]
    eager: dict
    fused_macs: int = 0  # the convolution's multiply-adds, forward
    eager_macs: int = 0
    today_bwd: list | None = None  # the backward kernels progan_ext launches today, where they differ

    def __post_init__(self):
        # "today": the fused forward + today's backward (csrc/autograd/*.cpp), fwd+bwd only.
        bwd = self.today_bwd
        self.today = {"fwd": self.fused["fwd"], "fwdbwd": self.fused["fwd"] + bwd if bwd else self.fused["fwdbwd"]}

    def seconds(self, side: str, mode: str, dtype: str) -> float:
        return sum(k.seconds(dtype) for k in getattr(self, side)[mode])

    def total(self, side: str, mode: str, what: str, dtype: str = "bf16") -> int:
        ks = getattr(self, side)[mode]
        return sum(k.bytes(dtype) for k in ks) if what == "bytes" else sum(k.flops for k in ks)

    def bound(self, mode: str, dtype: str, side: str = "fused") -> float:
        """eager bound / the fused bound (side "today": with the backward progan_ext launches today)."""
        return self.seconds("eager", mode, dtype) / self.seconds(side, mode, dtype)

    def fused_limit(self, mode: str, dtype: str) -> str:
        """What limits the fused contender: memory or compute (by the larger share of its bound)."""
        ks = self.fused[mode]
        mem = sum(k.bytes(dtype) / BANDWIDTH for k in ks if k.bytes(dtype) / BANDWIDTH >= k.flops / PEAK[dtype])
        return "memory" if mem >= 0.5 * self.seconds("fused", mode, dtype) else "compute"


def _both(fwd: list, bwd: list) -> dict:
    return {"fwd": fwd, "fwdbwd": fwd + bwd}


# ----------------------------------------------------------------------------------------------
# Eager building blocks (kernel lists of bench_ops.py's composites and their autograd).


def eager_pixel_norm(e: int, p: int, style: str) -> tuple[list, list]:
    """x * rsqrt(mean(x^2, 1) + eps) on e elements with p pixels (e / C): forward and backward kernels."""
    if style == "one-pass":
        return [Kernel("pixel norm (one pass)", e, e, 3 * e)], [Kernel("pixel norm bwd (one pass)", 2 * e, e, 5 * e)]
    fwd = [Kernel("pn: square", e, e, e), Kernel("pn: mean over C", e, p, e), Kernel("pn: + eps", p, p, p),
           Kernel("pn: rsqrt", p, p, p), Kernel("pn: x * r", e + p, e, e)]
    bwd = [Kernel("pn bwd: g * r", e + p, e, e), Kernel("pn bwd: g * x", 2 * e, e, e),
           Kernel("pn bwd: sum over C", e, p, e), Kernel("pn bwd: r^3", p, p, 2 * p),
           Kernel("pn bwd: -0.5 * g_r * r^3", 2 * p, p, 2 * p), Kernel("pn bwd: mean bwd (expand / C)", p, e, e),
           Kernel("pn bwd: x.pow(1) (copy)", e, e, 0), Kernel("pn bwd: * 2", e, e, e),
           Kernel("pn bwd: * grad", 2 * e, e, e), Kernel("pn bwd: accumulate the two paths", 2 * e, e, e)]
    return fwd, bwd


def eager_minibatch_stddev(e: int, q: int, m: int, s: int) -> tuple[list, list]:
    """The official spelling (bench_ops.eager_minibatch_stddev): e = N*C*H*W, q = e / G, m = N / G
    statistics, s = N*H*W elements of the appended channel."""
    fwd = [Kernel("mean over group", e, q, e), Kernel("subtract mean", e + q, e, e), Kernel("square", e, e, e),
           Kernel("mean over group", e, q, e), Kernel("+ eps", q, q, q), Kernel("sqrt", q, q, q),
           Kernel("mean over C,H,W", q, m, q), Kernel("repeat", m, s, 0), Kernel("cat", e + s, e + s, 0)]
    bwd = [Kernel("repeat bwd (sum)", s, m, s), Kernel("mean bwd (expand / n)", m, q, q),
           Kernel("sqrt bwd: 2 * result", q, q, q), Kernel("sqrt bwd: g / (2 * result)", 2 * q, q, q),
           Kernel("mean bwd (expand / G)", q, e, e), Kernel("square bwd: x.pow(1) (copy)", e, e, 0),
           Kernel("square bwd: * 2", e, e, e), Kernel("square bwd: * grad", 2 * e, e, e),
           Kernel("subtract bwd: neg", e, e, e), Kernel("subtract bwd: sum over group", e, q, e),
           Kernel("mean bwd (expand / G)", q, e, e), Kernel("accumulate", 2 * e, e, e),
           Kernel("accumulate the cat path", 2 * e, e, e)]
    return fwd, bwd


def scale_weight(wn: int) -> tuple[list, list]:
    """``w * gain / sqrt(fan_in)`` materialised, and its backward (grad * scale)."""
    return [Kernel("w * scale", wn, wn, wn)], [Kernel("w * scale bwd", wn, wn, wn)]


# ----------------------------------------------------------------------------------------------
# Layers.


def conv_layer(net, res, layer, op, n, cin, cout, hin, k, *, resample="same", act="lrelu", pn=False,
               pn_style="kernels") -> Layer:
    """An equalized conv (+ upsample / avg pool) + bias + act (+ pixel norm): fused and eager kernels."""
    hout = {"same": hin, "up": 2 * hin, "down": hin // 2}[resample]
    i, o, wn, b, p = n * cin * hin * hin, n * cout * hout * hout, cout * cin * k * k, cout, n * hout * hout
    taps = {"same": k * k, "up": 4, "down": 16}[resample]
    macs = o * cin * taps
    lrelu = act == "lrelu"
    epi_f, epi_b = 1 + lrelu + 3 * pn, 1 + lrelu + 5 * pn
    needs_y = lrelu or pn  # the epilogue backward reads the saved output (and the norm)
    saved = (o if needs_y else 0) + (p if pn else 0)
    fused_fwd = Kernel("fused conv + epilogue", i + wn + b, o, 2 * macs + epi_f * o)
    fused_bwd = [Kernel("fused grad input (+ epilogue bwd, bias grad)", o + saved + wn, i + b, 2 * macs + epi_b * o),
                 Kernel("fused grad weight", i + o + saved, wn, 2 * macs)]
    fused = {"fwd": [fused_fwd],
             "fwdbwd": [Kernel(fused_fwd.name + " (saves y" + (", r)" if pn else ")"), i + wn + b, o + (p if pn else 0),
                               fused_fwd.flops)] + fused_bwd}
    # Eager: the conv runs at the upsampled size (up) or at full size before the pool (down).
    ci = 4 * i if resample == "up" else i
    hc = 2 * hin if resample == "up" else hin
    oc = n * cout * hc * hc
    emacs = oc * cin * k * k
    sw_f, sw_b = scale_weight(wn)
    fwd, bwd = [], []
    if resample == "up":
        fwd.append(Kernel("nearest upsample (stored)", i, ci, 0))
    fwd += sw_f + [Kernel("conv (cuDNN)", ci + wn, oc, 2 * emacs), Kernel("bias add (in place)", oc + b, oc, oc)]
    if resample == "down":
        fwd.append(Kernel("avg pool 2x2", oc, o, oc))
    if lrelu:
        fwd.append(Kernel("leaky ReLU", o, o, o))
    if pn:
        pf, pb = eager_pixel_norm(o, p, pn_style)
        fwd += pf
        bwd += pb
    if lrelu:
        bwd.append(Kernel("leaky ReLU bwd", 2 * o, o, o))
    if resample == "down":
        bwd.append(Kernel("avg pool bwd", o, oc, oc))
    bwd += [Kernel("bias grad (sum)", oc, b, oc), Kernel("conv grad input", oc + wn, ci, 2 * emacs),
            Kernel("conv grad weight", ci + oc, wn, 2 * emacs)] + sw_b
    if resample == "up":
        bwd.append(Kernel("nearest upsample bwd (sum 2x2)", ci, i, ci - i))
    today = []  # csrc/autograd/conv.cpp: the *_pn forms save r; one pass over g, y and r
    if pn:
        today.append(Kernel("pixel_norm_backward_from_output(g, y, r)", 2 * o + p, o, 4 * o))
    if lrelu:
        today.append(Kernel("bias_act_backward", 2 * o, o, o))
    today += [Kernel("bias grad (sum)", o, b, o), Kernel("weight flip (adjoint kernel)", wn, wn, 0),
              Kernel("grad input (conv2d_resample)", o + wn, i, 2 * macs),
              Kernel("grad weight (conv2d_resample_grad_weight)", i + o, wn, 2 * macs)]
    return Layer(net, res, layer, op, n, cin, cout, fused, _both(fwd, bwd), macs, emacs, today)


def dense_layer(net, res, layer, n, fin, fout, *, bias=True, act="lrelu", pn_pixels=0, pn_style="kernels") -> Layer:
    """F.linear on the scaled weight (both contenders), then the epilogue: progan_ext's bias_act (and
    pixel_norm over pn_pixels pixels) vs eager add, leaky_relu (and pixel norm)."""
    x, o, wn = n * fin, n * fout, fin * fout
    bb = fout // max(1, pn_pixels // n) if pn_pixels else fout  # bias per channel after G's reshape
    lrelu = act == "lrelu"
    sw_f, sw_b = scale_weight(wn)
    gemm = Kernel("GEMM", x + wn, o, 2 * x * fout)
    gemm_b = [Kernel("GEMM grad input", o + wn, x, 2 * x * fout), Kernel("GEMM grad weight", x + o, wn, 2 * x * fout)]
    f_fwd, f_bwd = sw_f + [gemm], []
    e_fwd, e_bwd = sw_f + [gemm], []
    if bias or lrelu:
        f_fwd.append(Kernel("bias_act", o + bb, o, (bias + lrelu) * o))
        f_bwd.append(Kernel("bias_act bwd", o + (o if lrelu else 0), (o if lrelu else 0) + bb, (bias + lrelu) * o))
    if bias:
        e_fwd.append(Kernel("bias add", o + bb, o, o))
    if lrelu:
        e_fwd.append(Kernel("leaky ReLU", o, o, o))
        e_bwd.append(Kernel("leaky ReLU bwd", 2 * o, o, o))
    if bias:
        e_bwd.append(Kernel("bias grad (sum)", o, bb, o))
    if pn_pixels:
        f_fwd.append(Kernel("pixel_norm", o, o, 3 * o))
        f_bwd.insert(0, Kernel("pixel_norm bwd", 2 * o, o, 5 * o))
        pf, pb = eager_pixel_norm(o, pn_pixels, pn_style)
        e_fwd += pf
        e_bwd = pb + e_bwd
    fused = _both(f_fwd, f_bwd + gemm_b + sw_b)
    today = [k for k in f_bwd if k.name == "pixel_norm bwd"]  # csrc/autograd/bias_act.cpp: the bias sum is its own pass
    today += ([Kernel("bias_act_backward", 2 * o, o, o)] if lrelu else []) + (
        [Kernel("bias grad (sum)", o, bb, o)] if bias else []) + gemm_b + sw_b
    return Layer(net, res, layer, "linear", n, fin, fout, fused, _both(e_fwd, e_bwd + gemm_b + sw_b), today_bwd=today)


def pixel_norm_layer(net, res, layer, n, c, h, pn_style="kernels") -> Layer:
    e, p = n * c * h * h, n * h * h
    pf, pb = eager_pixel_norm(e, p, pn_style)
    fused = _both([Kernel("pixel_norm", e, e, 3 * e)], [Kernel("pixel_norm bwd", 2 * e, e, 5 * e)])
    return Layer(net, res, layer, "pixel_norm", n, c, c, fused, _both(pf, pb))


def minibatch_stddev_layer(net, res, layer, n, c, h, group=4) -> Layer:
    g = min(group, n)
    e, s = n * c * h * h, n * h * h
    fused = _both([Kernel("minibatch_stddev", e, e + s, 4 * e)], [Kernel("minibatch_stddev bwd", 2 * e + s, e, 4 * e)])
    eager = _both(*eager_minibatch_stddev(e, e // g, n // g, s))
    return Layer(net, res, layer, "minibatch_stddev", n, c, c + 1, fused, eager)


def bias_act_layer(net, res, layer, n, c, h) -> Layer:
    e = n * c * h * h
    fused = _both([Kernel("bias_act", e + c, e, 2 * e)], [Kernel("bias_act bwd (+ bias grad)", 2 * e, e + c, 2 * e)])
    eager = _both([Kernel("bias add", e + c, e, e), Kernel("leaky ReLU", e, e, e)],
                  [Kernel("leaky ReLU bwd", 2 * e, e, e), Kernel("bias grad (sum)", e, c, e)])
    today = [Kernel("bias_act_backward", 2 * e, e, e), Kernel("bias grad (sum)", e, c, e)]
    return Layer(net, res, layer, "bias_act", n, c, c, fused, eager, today_bwd=today)


def network_layers(pn_style: str = "kernels") -> list[Layer]:
    """Every layer of the official G and D at every resolution, then the standalone ops at bench_ops.py's
    shapes ([N, nf(r), r, r]; in the networks pixel_norm and bias_act run alone only at 4^2, and
    minibatch_stddev only at 4^2)."""
    nf, batch = common.nf, common.DEFAULT_BATCH
    rows = []
    for r in common.RESOLUTIONS:
        n, c = batch[r], nf(r)
        if r == 4:
            rows += [pixel_norm_layer("G", 4, "latent pixel_norm [N, 512]", n, 512, 1, pn_style),
                     dense_layer("G", 4, "dense 512 -> 512x4x4 + bias_act + pixel_norm", n, 512, 16 * c,
                                 bias=True, pn_pixels=16 * n, pn_style=pn_style),
                     conv_layer("G", 4, "eq_conv2d 3x3 + lrelu + pn", "eq_conv2d", n, c, c, 4, 3, pn=True,
                                pn_style=pn_style)]
        else:
            rows += [conv_layer("G", r, "upsample_conv2d 3x3 + lrelu + pn", "upsample_conv2d", n, nf(r // 2), c,
                                r // 2, 3, resample="up", pn=True, pn_style=pn_style),
                     conv_layer("G", r, "eq_conv2d 3x3 + lrelu + pn", "eq_conv2d", n, c, c, r, 3, pn=True,
                                pn_style=pn_style)]
        rows.append(conv_layer("G", r, "toRGB 1x1 (linear)", "eq_conv2d", n, c, 3, r, 1, act="linear"))
    for r in common.RESOLUTIONS:
        n, c = batch[r], nf(r)
        rows.append(conv_layer("D", r, "fromRGB 1x1 + lrelu", "eq_conv2d", n, 3, c, r, 1))
        if r == 4:
            rows += [minibatch_stddev_layer("D", 4, "minibatch_stddev (group 4)", n, c, 4),
                     conv_layer("D", 4, "eq_conv2d 3x3 + lrelu (Cin+1)", "eq_conv2d", n, c + 1, c, 4, 3),
                     dense_layer("D", 4, "dense 512x4x4 -> 512 + lrelu", n, 16 * c, nf(2)),  # nf(stage 0)
                     dense_layer("D", 4, "dense 512 -> 1 + bias (linear)", n, nf(2), 1, act="linear")]
        else:
            rows += [conv_layer("D", r, "eq_conv2d 3x3 + lrelu", "eq_conv2d", n, c, c, r, 3),
                     conv_layer("D", r, "conv2d_downsample 3x3 + avgpool + lrelu", "conv2d_downsample", n, c,
                                nf(r // 2), r, 3, resample="down")]
    for r in common.RESOLUTIONS:
        n, c = batch[r], nf(r)
        rows += [pixel_norm_layer("op", r, "pixel_norm", n, c, r, pn_style),
                 minibatch_stddev_layer("op", r, "minibatch_stddev", n, c, r),
                 bias_act_layer("op", r, "bias_act", n, c, r)]
    return rows


# ----------------------------------------------------------------------------------------------
# Targets (issue 6, from summarize.py) next to the modeled bounds.


def _in_target(row: Layer, t: dict) -> bool:
    ops = t["op"] if isinstance(t["op"], tuple) else (t["op"],)
    lo, hi = t["res"]
    standalone = row.op in ("pixel_norm", "minibatch_stddev", "bias_act")
    if t["op"] is None:  # "any op at any ProGAN shape": every row
        return lo <= row.res <= hi
    return row.op in ops and lo <= row.res <= hi and (row.net == "op") == standalone


def target_bounds(rows: list[Layer]) -> list[dict]:
    """Per issue-6 x_eager check: the range of the modeled bound over the rows it covers."""
    out = []
    for t in summarize.OP_TARGETS:
        for metric, threshold, label in t["checks"]:
            if metric != "x_eager":
                continue
            sel = [r for r in rows if _in_target(r, t)]
            entry = {"case": t["case"], "target": label, "threshold": threshold, "modes": list(t["modes"]),
                     "rows": len(sel)}
            for dt in DTYPES:
                vals = [r.bound(m, dt) for r in sel for m in t["modes"]]
                entry[dt] = [min(vals), max(vals)] if vals else None
            vals = [r.bound("fwdbwd", "bf16", "today") for r in sel if "fwdbwd" in t["modes"]]
            entry["bf16_fwdbwd_today"] = [min(vals), max(vals)] if vals else None
            out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------
# Output: JSON, terminal table, README section.


def to_json(rows: list[Layer], pn_style: str) -> dict:
    def side(r, s, m):
        return {"kernels": [{"name": k.name, "read_elems": k.read, "write_elems": k.write, "flops": k.flops}
                            for k in getattr(r, s)[m]],
                "flops": r.total(s, m, "flops"),
                **{f"bytes_{dt}": r.total(s, m, "bytes", dt) for dt in DTYPES},
                **{f"bound_us_{dt}": 1e6 * r.seconds(s, m, dt) for dt in DTYPES}}

    return {
        "schema": "progan_ext.roofline/1",
        "model": "roofline MODEL at H100 SXM limits; not a measurement",
        "limits": {"bandwidth_Bps": BANDWIDTH, "peak_flops": PEAK, "element_bytes": ESIZE},
        "eager_pixel_norm": pn_style,
        "assumptions": __doc__.split("Assumptions")[1].strip(),
        "rows": [{"net": r.net, "res": r.res, "layer": r.layer, "op": r.op, "n": r.n, "cin": r.cin, "cout": r.cout,
                  "fused_macs_fwd": r.fused_macs, "eager_macs_fwd": r.eager_macs,
                  **{m: {"fused": side(r, "fused", m), "eager": side(r, "eager", m), "today": side(r, "today", m),
                         **{f"speedup_bound_{dt}": r.bound(m, dt) for dt in DTYPES},
                         **{f"speedup_bound_today_{dt}": r.bound(m, dt, "today") for dt in DTYPES},
                         "fused_limited_by_bf16": r.fused_limit(m, "bf16")} for m in MODES}}
                 for r in rows],
        "targets": target_bounds(rows),
    }


def _x(v: float) -> str:
    return common.fmt_num(v, "x")


def _shape(r: Layer) -> str:
    return f"{r.n} x {r.cin}>{r.cout}"


def layer_table(rows: list[Layer]) -> str:
    heads = ["net", "res", "layer", "N x Cin>Cout", "fwd bf16", "fwd fp32", "fwd+bwd bf16", "fwd+bwd fp32",
             "fwd+bwd bf16, today's bwd", "fused fwd+bwd bf16 us", "fused limited by"]
    body = [[r.net, f"{r.res}^2", r.layer, _shape(r), _x(r.bound("fwd", "bf16")), _x(r.bound("fwd", "fp32")),
             _x(r.bound("fwdbwd", "bf16")), _x(r.bound("fwdbwd", "fp32")), _x(r.bound("fwdbwd", "bf16", "today")),
             common.fmt_num(1e6 * r.seconds("fused", "fwdbwd", "bf16")), r.fused_limit("fwdbwd", "bf16")]
            for r in rows if r.net != "op"]
    return common.markdown_table(heads, body)


def op_table(rows: list[Layer]) -> str:
    ops = ("pixel_norm", "minibatch_stddev", "bias_act")
    heads = ["res", "N x C"] + [f"{o} {m}" for o in ops for m in ("fwd", "fwd+bwd")]
    body = []
    for res in common.RESOLUTIONS:
        sel = {r.op: r for r in rows if r.net == "op" and r.res == res}
        body.append([f"{res}^2", f"{sel['pixel_norm'].n} x {sel['pixel_norm'].cin}"]
                    + [f"{_x(sel[o].bound(m, 'bf16'))} / {_x(sel[o].bound(m, 'fp32'))}" for o in ops for m in MODES])
    return common.markdown_table(heads, body)


def target_table(rows: list[Layer]) -> str:
    def rng(v):
        return "-" if v is None else (_x(v[0]) if _x(v[0]) == _x(v[1]) else f"{_x(v[0])} .. {_x(v[1])}")

    body = []
    for t in target_bounds(rows):
        worst = min(t[dt][0] for dt in DTYPES if t[dt])
        verdict = "bound >= target" if worst >= t["threshold"] else "bound below target at some rows"
        today = t["bf16_fwdbwd_today"]
        if today:
            verdict += "; today's bwd " + (">= target" if today[0] >= t["threshold"] else "below target at some rows")
        body.append([t["case"], ", ".join("fwd+bwd" if m == "fwdbwd" else m for m in t["modes"]), t["target"],
                     rng(t["bf16"]), rng(t["fp32"]), rng(today), verdict])
    return common.markdown_table(["issue 6 target (summarize.py)", "modes", "target", "modeled bound bf16",
                                  "modeled bound fp32", "bf16 fwd+bwd, today's bwd", "model says"], body)


def upsample_headline(rows: list[Layer]) -> str:
    """The upsample_conv2d bounds at 512^2 and 1024^2 (bf16), the layers of the ">= 3x eager" target."""
    ups = [r for r in rows if r.op == "upsample_conv2d" and r.res in (512, 1024)]

    def pair(mode, side="fused"):
        return " / ".join(_x(r.bound(mode, "bf16", side)) for r in ups)

    return (f"{pair('fwd')} fwd, {pair('fwdbwd')} fwd+bwd, {pair('fwdbwd', 'today')} fwd+bwd with today's backward "
            "(512^2 / 1024^2, bf16)")


def readme_section(rows: list[Layer]) -> str:
    lines = [
        BEGIN,
        "## Roofline model (a MODEL, not a measurement)",
        "",
        "Generated by `python benchmarks/roofline.py --write-readme`; do not edit by hand (a test compares it",
        "with the script). **These numbers are a model at H100 SXM limits (3.35 TB/s HBM, 989 TFLOP/s bf16,",
        "495 TFLOP/s TF32 dense), computed from shapes; nothing here was measured.** Each kernel's time is",
        "bounded by max(bytes / bandwidth, FLOPs / peak), a contender's by the sum over its kernels, and the",
        "table gives eager bound / fused bound: the speedup of the fused op if both ran every kernel at the",
        "limits. Fused: one forward kernel (upsample_conv2d as four 2x2 phase convs, 2.25x fewer MACs than",
        "the 3x3 conv on the upsampled tensor; conv2d_downsample as one 4x4 stride-2 conv, also 2.25x fewer),",
        "backward = grad-input + grad-weight kernels with the epilogue backward fused (it needs the saved",
        "output and the per-pixel norm). Today's backward (`csrc/autograd/*.cpp`) runs more passes: the",
        "pixel-norm gradient as a pass of its own over g, the saved output and the inverse norm",
        "(pixel_norm_backward_from_output), bias_act_backward,",
        "a bias sum and a weight flip before the two convs; the \"today's bwd\" columns model those kernels",
        "(same forward). Eager: one kernel per ATen op of bench_ops.py's composite and its",
        "autograd: `w * scale`, the stored nearest upsample, cuDNN conv, a separate bias add, avg pool,",
        "leaky ReLU, and the pixel norm `x * rsqrt(mean(x^2) + eps)` as 5 kernels forward and 10 backward.",
        "Official channels and batch per resolution; fwd+bwd computes the gradients of x, weight and bias;",
        "fp32 assumes TF32 tensor cores for both contenders. Launch latency is not modeled, so at small",
        "layers a measured eager time, and so the measured ratio, can lie far above the model. Every",
        "assumption is listed in the docstring of `roofline.py`; `--out` writes every kernel of every row.",
        "bf16 and fp32 bounds nearly coincide: the TF32 peak is half the bf16 one and fp32 doubles the bytes,",
        "so every kernel's bound doubles.",
        "",
        f"Headline: upsample_conv2d {upsample_headline(rows)}, against issue 6's target of >= 3x eager",
        "(fwd and fwd+bwd). Counting eager's pixel norm as one pass each way instead",
        f"(`--eager-pixel-norm one-pass`, the spelling most favourable to eager): "
        f"{upsample_headline(network_layers('one-pass'))}.",
        "",
        "### Modeled bound on the speedup vs eager, per layer",
        "",
        "Resolution = the layer's output for G's upsample_conv2d, its input for D's conv2d_downsample (as in",
        "bench_ops.py); N = the official batch at that resolution.",
        "",
        layer_table(rows),
        "",
        "### Standalone ops at bench_ops.py's shapes ([N, nf(r), r, r]; cells: bf16 / fp32)",
        "",
        op_table(rows),
        "",
        "### Issue 6 targets next to the model",
        "",
        "The speedup targets (summarize.py's OP_TARGETS, checked there on measured runs) beside the range",
        "of the modeled bound over the rows and modes each covers (\"any op\": every row above).",
        "",
        target_table(rows),
        END,
    ]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """text with the part between the markers (inclusive) replaced; appended if there are no markers."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + section + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def current_section(text: str) -> str | None:
    if BEGIN not in text or END not in text:
        return None
    return BEGIN + text.split(BEGIN, 1)[1].split(END, 1)[0] + END


def print_table(rows: list[Layer]) -> None:
    t = common.StreamTable([("net", "net", 3, "s"), ("res", "res", 6, "s"), ("layer", "layer", 44, "s"),
                            ("shape", "N x Cin>Cout", 13, "s"), ("ef", "eager fwd us", 12, "g"),
                            ("ff", "fused fwd us", 12, "g"), ("xf", "x fwd", 7, "x"), ("xb", "x fwd+bwd", 9, "x"),
                            ("xt", "x f+b today", 11, "x"),
                            ("xf32", "x fwd fp32", 10, "x"), ("xb32", "x f+b fp32", 10, "x"),
                            ("lim", "fused", 7, "s")])
    print("Roofline MODEL at H100 SXM limits (3.35 TB/s, 989 TFLOP/s bf16, 495 TF32); not a measurement. "
          "Times: bf16 lower bounds; x = eager bound / fused bound.")
    t.header()
    for r in rows:
        t.row({"net": r.net, "res": f"{r.res}^2", "layer": r.layer, "shape": _shape(r),
               "ef": 1e6 * r.seconds("eager", "fwd", "bf16"), "ff": 1e6 * r.seconds("fused", "fwd", "bf16"),
               "xf": r.bound("fwd", "bf16"), "xb": r.bound("fwdbwd", "bf16"), "xt": r.bound("fwdbwd", "bf16", "today"),
               "xf32": r.bound("fwd", "fp32"),
               "xb32": r.bound("fwdbwd", "fp32"), "lim": r.fused_limit("fwd", "bf16")[:3]})
    print()
    print(target_table(rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="write the model (every kernel of every row) as JSON")
    p.add_argument("--write-readme", action="store_true",
                   help=f"regenerate the section of {README.name} between {BEGIN} and {END}")
    p.add_argument("--eager-pixel-norm", choices=("kernels", "one-pass"), default="kernels",
                   help="eager pixel norm as its ATen kernels (default, as bench_ops spells it) or one pass")
    a = p.parse_args(argv)
    if a.write_readme and a.eager_pixel_norm != "kernels":
        p.error("--write-readme writes the default model only; drop --eager-pixel-norm one-pass")
    rows = network_layers(a.eager_pixel_norm)
    print_table(rows)
    if a.out:
        common.write_json(a.out, to_json(rows, a.eager_pixel_norm))
        print(f"\nwrote {a.out}")
    if a.write_readme:
        README.write_text(replace_section(README.read_text(), readme_section(rows)))
        print(f"wrote the roofline section of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
