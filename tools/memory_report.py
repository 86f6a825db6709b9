"""Memory efficiency of every CUDA kernel of progan_ext at ProGAN layer shapes, measured on the
emulated build (progan_ext.memory_trace): writes docs/memory_access.md and checks each kernel
against its floor.

    PROGAN_EXT_CPU_ONLY=1 PROGAN_EXT_EMULATE=trace python setup.py build_ext --inplace   # once
    python tools/memory_report.py            # writes docs/memory_access.md, exit 1 if a floor fails
    python tools/memory_report.py --check    # only checks the floors (CI)

Each case runs one op (forward or one of its backward building blocks) at a ProGAN layer's channel
counts and a reduced spatial size where the access pattern per warp is the one of the full-size
layer (the shape column says which layer it stands for); every case in both memory layouts and in
fp32 and bf16.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from progan_ext import memory_trace  # noqa: E402

SQRT2 = math.sqrt(2.0)


@dataclasses.dataclass
class Case:
    op: str
    layer: str      # the ProGAN layer it stands for
    shape: tuple    # x: [N, C, H, W]
    run: object     # (ops, x) -> output tensor
    cout: int = 0   # conv: output channels


def conv_w(cout, cin, k, dtype):
    return torch.randn(cout, cin, k, k, dtype=torch.float32).to(dtype)


def cases():
    b = lambda c, dt: torch.randn(c).to(dt)  # noqa: E731
    return [
        Case("pixel_norm", "G 4x4..32x32 (C=512), 8x8 shown", (2, 512, 8, 8), lambda o, x: o.pixel_norm(x, 1e-8)),
        Case("pixel_norm", "G 1024x1024 (C=16), 16x16 shown", (2, 16, 16, 16), lambda o, x: o.pixel_norm(x, 1e-8)),
        Case("pixel_norm_backward", "G 256x256 (C=64), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: o.pixel_norm_backward(torch.randn_like(x), x, 1e-8)),
        Case("pixel_norm_backward_from_output", "G 256x256 conv + pixel norm (C=64), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: o.pixel_norm_backward_from_output(torch.randn_like(x), x, saved_r(x))),
        Case("bias_act", "G/D 256x256 (C=64), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: o.bias_act(x, b(x.shape[1], x.dtype), "lrelu", 0.2)),
        Case("bias_act_backward", "G/D 256x256 (C=64), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: o.bias_act_backward(torch.randn_like(x), x, 0.2)),
        Case("minibatch_stddev", "D 4x4 block (C=512), full size", (8, 512, 4, 4),
             lambda o, x: o.minibatch_stddev(x, 4, 1, 1e-8)),
        Case("minibatch_stddev_backward", "D 4x4 block (C=512), full size", (8, 512, 4, 4),
             lambda o, x: o.minibatch_stddev_backward(torch.randn(8, 513, 4, 4).to(x.dtype).contiguous(
                 memory_format=torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                 and not x.is_contiguous() else torch.contiguous_format), x, 4, 1, 1e-8)),
        Case("eq_conv2d 3x3 + pixel norm", "G 256x256 conv (64->64), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: o.eq_conv2d(x, conv_w(64, 64, 3, x.dtype), b(64, x.dtype), SQRT2, "lrelu", 0.2, True), 64),
        Case("eq_conv2d 3x3 + pixel norm", "G 128x128 conv (128->128), 8x8 shown", (2, 128, 8, 8),
             lambda o, x: o.eq_conv2d(x, conv_w(128, 128, 3, x.dtype), b(128, x.dtype), SQRT2, "lrelu", 0.2, True), 128),
        Case("eq_conv2d 1x1 toRGB", "G 256x256 toRGB (64->3), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: o.eq_conv2d(x, conv_w(3, 64, 1, x.dtype), b(3, x.dtype), 1.0, "linear", 0.2, False), 3),
        Case("eq_conv2d 1x1 fromRGB", "D 256x256 fromRGB (3->64), 16x16 shown", (2, 3, 16, 16),
             lambda o, x: o.eq_conv2d(x, conv_w(64, 3, 1, x.dtype), b(64, x.dtype), SQRT2, "lrelu", 0.2, False), 64),
        Case("eq_conv2d 1x1 toRGB", "G 1024x1024 toRGB (16->3), 256x256 shown", (2, 16, 256, 256),
             lambda o, x: o.eq_conv2d(x, conv_w(3, 16, 1, x.dtype), b(3, x.dtype), 1.0, "linear", 0.2, False), 3),
        Case("eq_conv2d 1x1 fromRGB", "D 1024x1024 fromRGB (3->16), 256x256 shown", (2, 3, 256, 256),
             lambda o, x: o.eq_conv2d(x, conv_w(16, 3, 1, x.dtype), b(16, x.dtype), SQRT2, "lrelu", 0.2, False), 16),
        Case("conv2d_resample_grad_weight 1x1 toRGB", "G 256x256 toRGB (64->3), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: o.conv2d_resample_grad_weight(x, like(x, 2, 3, 16, 16), 0.125, "same", 1), 3),
        Case("upsample_conv2d + pixel norm", "G 256x256 up (128->64), 8x8 -> 16x16 shown", (2, 128, 8, 8),
             lambda o, x: o.upsample_conv2d(x, conv_w(64, 128, 3, x.dtype), b(64, x.dtype), SQRT2, "lrelu", 0.2, True),
             64),
        Case("conv2d_downsample", "D 256x256 down (64->128), 16x16 -> 8x8 shown", (2, 64, 16, 16),
             lambda o, x: o.conv2d_downsample(x, conv_w(128, 64, 3, x.dtype), b(128, x.dtype), SQRT2, "lrelu", 0.2),
             128),
        Case("conv2d_resample same (grad input)", "G/D 256x256 (64->64), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: o.conv2d_resample(x, conv_w(64, 64, 3, x.dtype), 0.06, "same"), 64),
        Case("conv2d_resample_grad_weight same", "G/D 256x256 (64->64), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: o.conv2d_resample_grad_weight(x, torch.randn_like(x), 0.06, "same", 3), 64),
        Case("conv2d_resample_grad_weight same, TF32 off", "G/D 256x256 (64->64), 16x16 shown", (2, 64, 16, 16),
             lambda o, x: without_tf32(o.conv2d_resample_grad_weight, x, torch.randn_like(x), 0.06, "same", 3), 64),
    ]


def like(x, *shape):
    """A random tensor of this shape in x's dtype and memory layout."""
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return torch.randn(shape).to(x.dtype).contiguous(memory_format=fmt)


def saved_r(y):
    """An inverse norm per pixel as the pixel-normed convs save it: [N, 1, H, W] float32."""
    return torch.rsqrt(y.float().square().mean(1, keepdim=True) + 1e-8).contiguous()


def without_tf32(fn, *args):
    """fn(*args) with TF32 off for convolutions: float32 then takes the simple paths."""
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        return fn(*args)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}


@dataclasses.dataclass
class Row:
    case: Case
    dtype: str
    layout: str
    kernel: memory_trace.KernelTrace
    out_elems: int

    @property
    def bytes_per_output(self) -> float:
        return self.kernel.global_bytes / self.out_elems


def run_all(only: str | None, skipped: list[str]) -> list[Row]:
    """Every case in every dtype and layout; a case whose kernels the build lacks
    (PROGAN_EXT_TRACE_KERNELS) goes to `skipped`."""
    o = memory_trace.ops()
    rows = []
    for case in cases():
        if only and only not in case.op:
            continue
        for dname, dtype in DTYPES.items():
            for lname, fmt in LAYOUTS.items():
                torch.manual_seed(0)
                x = torch.randn(case.shape).to(dtype).contiguous(memory_format=fmt)
                t0 = time.time()
                try:
                    with memory_trace.trace() as t:
                        out = case.run(o, x)
                except NotImplementedError:
                    skipped.append(f"{case.op} ({case.layer})")
                    break
                print(f"{case.op:36s} {dname} {lname}: {len(t.kernels)} kernels, {time.time() - t0:.1f} s", flush=True)
                for k in t.kernels.values():
                    rows.append(Row(case, dname, lname, k, out.numel()))
    return rows


# ---- floors ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Floor:
    efficiency: float  # least global sector efficiency (loads and stores together)
    conflict: float    # most shared wavefronts per ideal wavefront
    why: str
    lanes: float = 0.0  # least active lanes per global request (of 32), where lanes can be kept busy
    degree: int = 1     # most bank-conflict degree of any one shared request (n-way)


# Kernel name prefix -> floor, from what each kernel's access pattern should achieve. Where a kernel
# falls short today the floor is its current value (a regression guard) and the note says "SHORT:"
# with the target (docs/memory_access.md, "Falls short").
GOOD = "whole 32-byte sectors by construction"
FLOORS: dict[str, Floor] = {
    "pixel_norm_planes_kernel": Floor(
        0.90, 1.0,
        "NCHW: lane i owns VEC adjacent pixels, so each channel's load and store is one contiguous run of "
        "32 x 16 bytes (two runs when a warp straddles two images): " + GOOD + "; no shared memory."),
    "pixel_norm_planes_split_kernel": Floor(
        0.90, 1.0,
        "NCHW with few pixels: as the planes kernel, lane i owns VEC adjacent pixels (each channel's access "
        "one contiguous run per image a warp touches: " + GOOD + "), and the 8 warps of a block take every "
        "8th channel; the partial sums meet in shared memory laid out [sum][warp][k][lane], lanes on "
        "consecutive words: conflict-free."),
    "pixel_norm_rows_kernel<scalar_t, ": Floor(
        0.90, 1.0,
        "channels_last: a group of lanes per pixel (a warp from C/VEC >= 32, else the next power of two "
        "above C/VEC, several pixels per warp), lane l loads vectors l, l + L, ... of one contiguous row: "
        + GOOD + ", and all 32 lanes busy at every C that is a power of two (C = 16: 8 pixels per warp).",
        lanes=31.9),
    "conv_pointwise_few_out_kernel": Floor(
        0.90, 1.0,
        "toRGB on NCHW: a thread per pixel, lanes on adjacent pixels, so each input channel's load and each "
        "output's store is one contiguous run of the plane: " + GOOD + " (the staged weights: a few partial "
        "sectors per block, bytes negligible); shared loads are broadcasts (every lane the same word)."),
    "conv_pointwise_few_in_kernel": Floor(
        0.90, 1.0,
        "fromRGB on NCHW: as the few-outputs kernel, the 3 input runs read once into registers and every "
        "output channel stored as one contiguous run: " + GOOD + "; shared loads are broadcasts."),
    "grad_weight_pointwise_kernel": Floor(
        0.90, 1.0,
        "toRGB / fromRGB weight gradient on NCHW: a warp per long-side channel, lanes on adjacent pixels of "
        "one image's chunk, so both planes are read in contiguous runs: " + GOOD + "; no shared memory."),
    "conv_pointwise_rows_few_out_kernel": Floor(
        0.93, 4.0,
        "toRGB on channels_last: a group of lanes per pixel, lane l loading vectors l, l + L, ... of the "
        "pixel's contiguous row, so a warp's load is one contiguous run of 32 / L rows: 95-100%. The 3 "
        "outputs of a pixel go to the block's staged output rows in shared memory and the block stores "
        "its pixels' rows as one contiguous run, consecutive threads on consecutive elements: 100% (it "
        "was one request per output channel, each touching the sectors of the warp's 3-value rows: 50% "
        "in bf16); 95.6-100% together. Shared: every group of the warp reads the same weight rows as "
        "16-byte vectors, so a quarter warp's phase holds at most the 8 rows of one group (broadcasts) "
        "and a request takes up to 4 wavefronts for 128 distinct bytes, the wavefronts 4 scalar loads "
        "would take (inherent to 16-byte loads of broadcast rows; 2 pixels per thread on large maps "
        "halve the number of requests); the padded rows keep each phase conflict-free; the staging "
        "stores 2-way where a padding row falls inside a warp's store (once per block); the staged "
        "outputs, 3 words apart per pixel, conflict-free.", degree=2),
    "conv_pointwise_rows_few_in_kernel": Floor(
        0.95, 2.5,
        "fromRGB on channels_last: the block's pixels' 3-value input rows are one contiguous run, loaded "
        "into shared memory by consecutive threads on consecutive elements (100%; it was 3 scalar "
        "requests per pixel group, each touching the sectors of the warp's rows: 36-37%), then each "
        "group reads its pixel's values there (one address per group: broadcasts). The outputs of a "
        "pixel are stored as 16-byte vectors, lane l of the group taking vectors l, l + L, ...: a warp's "
        "store is one contiguous run of 32 / L rows (100%). Shared: weight rows and bias read as in the "
        "few-outputs kernel (broadcast 16-byte rows, up to 4 wavefronts per 128 distinct bytes; 1.5-2.3 "
        "here), staging stores 2-way at most.", degree=2),
    "grad_weight_pointwise_rows_kernel": Floor(
        0.90, 1.0,
        "toRGB / fromRGB weight gradient on channels_last: groups of lanes over a slice of the long rows "
        "(one contiguous run per group and pixel), the few-side values read by every lane of the group: "
        + GOOD + " (93-95%: each group reads its pixel's 3-value row, the warp's groups sharing the "
        "sectors); the partial row written by consecutive threads on consecutive addresses (100%). "
        "Shared: the warps' sums stored in the weight's order with a padding word every 32 values, read "
        "back by consecutive threads: conflict-free."),
    "split_k_finish_kernel": Floor(
        0.90, 1.0,
        "the conv's split-K reduction, elementwise in the output's memory order: each split's slice read "
        "at the same index, consecutive lanes on consecutive elements: " + GOOD + "; the bias read per "
        "element (broadcast in NCHW, consecutive channels in channels_last)."),
    "lrelu_grad_kernel": Floor(0.90, 1.0, "elementwise over the flat tensor, 16 bytes per lane: " + GOOD + "."),
    "bias_act_kernel": Floor(
        0.90, 1.0,
        "elementwise, 16 bytes per lane; the bias read per vector: one scalar in NCHW (a vector lies in "
        "one channel), one 16-byte vector of VEC adjacent channels in channels_last (C % VEC == 0): "
        + GOOD + "."),
    "stddev_partial_kernel": Floor(0.90, 1.0, "a block per (group, feature) reads contiguous planes: " + GOOD + "."),
    "stddev_grad_kernel": Floor(0.90, 1.0, "elementwise over x and grad: " + GOOD + " (92% in channels_last bf16: "
                                "the extra channel shifts rows by one element)."),
    "stddev_finish_kernel": Floor(0.50, 1.0, "M x F values (2 here) by as many lanes: a single partial sector; "
                                  "bytes negligible."),
    "stddev_fill_kernel": Floor(0.05, 1.0, "writes the one stddev channel: in channels_last one element per pixel "
                                "row (stride C + F), inherently a sector per lane; bytes negligible (0.1 B/out)."),
    "stddev_grad_stat_kernel": Floor(0.05, 1.0, "reads the stddev channel's gradient: in channels_last one element "
                                     "per pixel row, inherently strided; bytes negligible."),
    "igemm::conv_igemm_kernel<T, M, false>": Floor(
        0.60, 1.2,
        "NCHW input read in place (AColsNchw): a warp's lanes load one channel of 32 consecutive GEMM rows, "
        "runs of an image row, and store them into column-major A tiles (conflict-free); shared memory "
        "1.07-1.12 wavefronts per ideal, never more than 2-way (the accumulator stores of the epilogue, "
        "as with NHWC input). Same and up modes: 90-100% (whole sectors but "
        "where a warp's rows wrap at the end of an image row). SHORT: the down mode, 61-63%: its output "
        "pixel q reads input 2q - 1 + tap, so one tap's lanes read every other element and a sector is "
        "fetched by two requests (taps tx and tx + 1; on a GPU the second is likely an L1 hit, which this "
        "model does not count). Target: a K step over tap pairs (tx, tx + 1) for the down mode. The NHWC "
        "copy path it replaces moved 2 x |x| more through DRAM (the copy's read and write); autotuning "
        "times both on a GPU (kernel_nhwc).",
        degree=2),
    "igemm::conv_igemm_kernel<T, M, true>": Floor(
        0.86, 1.45,
        "NHWC input (ARowsNhwc): cp.async tile loads (16 bytes per lane) and epilogue stores: whole sectors, except the up mode's "
        "NCHW stores, 50% (inherent to a block per output parity: a phase's pixels are every other pixel "
        "of a row, so a warp's 4-byte stores land 8 bytes apart; loads and stores together 93% without "
        "split-K, 87% in the shown 8x8 up layer, which splits its 32 K steps in two: each split stores "
        "its whole fp32 tile after half the loads, so the 50% stores weigh twice). Shared "
        "memory: fragment loads and the epilogue's passes over the C tile conflict-free; two sites 2-way: "
        "the cp.async A-tile stores (a quarter-warp writes two 64-byte row pieces 80 bytes apart, the "
        "pitch that keeps the fragment loads conflict-free; giving its 8 lanes 8 rows instead would halve "
        "the global efficiency of the same copies) and the accumulator stores (4 rows x 32 bytes per "
        "phase, rows 272 or 528 bytes apart): 1.17-1.42 wavefronts per ideal, never more than 2-way.",
        degree=2),
    "norm_pass_planes_kernel": Floor(
        0.90, 1.0,
        "the conv's separate norm pass (Cout > 64, or the simple path), NCHW: a thread per pixel, a warp's "
        "lanes adjacent pixels, so each channel's access is one contiguous run: " + GOOD + "."),
    "norm_pass_rows_kernel": Floor(
        0.90, 1.0,
        "the norm pass in channels_last: a group of lanes per pixel (a warp from Cout = 32) reads the "
        "pixel's contiguous fp32 row and writes its output row: " + GOOD + "."),
    "igemm::grad_weight_igemm_kernel": Floor(
        0.95, 1.25,
        "the tensor-core weight gradient (bf16; fp32 as TF32): cp.async tile loads of 16 bytes per lane, "
        "contiguous partial-tile stores: " + GOOD + ". Shared: fragment loads conflict-free; the cp.async "
        "stores of a quarter-warp land in two rows 144 (272) bytes apart, 2-way in some phases "
        "(1.11-1.20 wavefronts per ideal). NCHW inputs read in place (<T, M, false>): a warp loads one "
        "channel of the K step's 32 consecutive pixels (whole sectors but where a step wraps an image row) "
        "and stores them along the tile's pixel rows, conflict-free; 1.11 wavefronts per ideal.", degree=2),
    "grad_weight_partial_kernel": Floor(
        0.90, 1.0,
        "the simple grad-weight path, now only for float64 and float32 with TF32 off (the 'TF32 off' "
        "case), on NCHW: lanes on adjacent pixels of one plane, " + GOOD + "."),
    "grad_weight_partial_rows_kernel": Floor(
        0.95, 1.0,
        "the simple grad-weight path on channels_last: lanes on 32 adjacent input channels of one "
        "(co, ky, kx), so a warp reads x at a pixel as one contiguous run of its row and g[pixel][co] as "
        "one broadcast: loads 100%; the partial sums stored one per lane, k * k apart in the weight's "
        "order (12%, but one store request per ~1000 loads): 98.8% together. The warps' sums meet in "
        "shared memory, conflict-free. It replaced the NCHW kernel's channels_last use, whose lanes read "
        "pixels Cin elements apart: 13%, and 13x the bytes per weight element (31463 against 2425)."),
    "grad_weight_finish_kernel": Floor(0.90, 1.0, "sums the partial buffers, contiguous: " + GOOD + "."),
    "pack_weight_kernel": Floor(
        0.95, 1.0,
        "the igemm convs' weight operand in one launch (it replaced 10-30 small ATen ops): a block stages "
        "a 32 x 32 tile of raw taps with loads that follow the weight's memory order (co-major for the "
        "input gradient's transposed view) and writes each slot with lanes along co, the operand's "
        "contiguous dimension: " + GOOD + " (partial rows only where Cout is padded). fromRGB on "
        "channels_last, whose 3-tap weight rows read part of a sector per staging load (86-92%), took this "
        "kernel until the channels_last pointwise kernels; every traced case is now at 100%. Shared: a staged co row is 32 * 9 + 1 floats long, so the fold reads (lane = co) are conflict-free."),
}


def floor_for(name: str):
    best = None
    for prefix, f in FLOORS.items():
        if name.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, f)
    return best[1] if best else None


def check(rows: list[Row]) -> list[str]:
    failures = []
    for r in rows:
        f = floor_for(r.kernel.name)
        k = r.kernel
        where = f"{r.case.op} {r.dtype} {r.layout} {k.name}"
        if f is None:
            failures.append(f"{where}: no floor in tools/memory_report.py FLOORS (a new kernel: give it one)")
            continue
        if k.global_efficiency < f.efficiency - 1e-9:
            failures.append(f"{where}: global efficiency {k.global_efficiency:.1%} < floor {f.efficiency:.0%}")
        if k.shared.conflict > f.conflict + 1e-9:
            failures.append(f"{where}: shared wavefronts per ideal {k.shared.conflict:.2f} > floor {f.conflict:.2f}")
        degree = k.shared.max_degree
        if degree > f.degree:
            failures.append(f"{where}: a {degree}-way shared bank conflict > floor {f.degree}-way")
        lanes = global_lanes(k)
        if lanes < f.lanes - 1e-9:
            failures.append(f"{where}: {lanes:.1f} active lanes per global request < floor {f.lanes:g}")
    return failures


def global_lanes(k: memory_trace.KernelTrace) -> float:
    """Active lanes per global request, loads and stores together."""
    req = k.global_load.requests + k.global_store.requests
    return (k.global_load.lanes + k.global_store.lanes) / req if req else 32.0


# ---- before and after (issue 14, item 4) -------------------------------------------------------
# The "before" numbers are a committed measurement (BASELINE, written by --save-baseline from the
# kernels as they were before the fixes); the "after" numbers are this run's.
BASELINE = ROOT / "docs" / "memory_access_baseline.json"


@dataclasses.dataclass(frozen=True)
class Fix:
    title: str
    before: str  # kernel name prefix in the baseline
    after: str   # kernel name prefix now


FIXES = [
    Fix("pixel_norm, channels_last: a lane group per pixel, several pixels per warp at small C "
        "(was a warp per pixel: 2-8 of 32 lanes busy at C = 16)",
        "pixel_norm_rows_kernel<scalar_t, ", "pixel_norm_rows_kernel<scalar_t, "),
    Fix("bias_act, channels_last: the bias read as 16-byte vectors of VEC channels (was VEC scalar "
        "loads per lane, each touching its own sector)", "bias_act_kernel", "bias_act_kernel"),
    Fix("the igemm conv epilogue: the fp32 C tile laid out in the stores' walking order (column-major "
        "for NCHW output) and, for channels_last, the in-tile pixel norm by a warp per row (was one "
        "row-major tile: NCHW passes and the channels_last norm read it 68 floats apart, 4-way)",
        "igemm::conv_igemm_kernel", "igemm::conv_igemm_kernel"),
    Fix("the conv's norm pass, channels_last: a lane group per pixel over its contiguous row (was a "
        "thread per pixel, lanes C elements apart)", "pixel_norm_rows_kernel<scalar_t>", "norm_pass_"),
]


def measurement(r: Row) -> dict:
    k = r.kernel
    return {"op": r.case.op, "layer": r.case.layer, "dtype": r.dtype, "layout": r.layout, "kernel": k.name,
            "load": pct(k.global_load), "store": pct(k.global_store), "efficiency": k.global_efficiency,
            "lanes": global_lanes(k), "shared_conflict": k.shared.conflict, "bytes_per_output": r.bytes_per_output}


def save_baseline(rows: list[Row], path: Path) -> None:
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    doc = {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--", "csrc")),
           "date": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "torch": torch.__version__,
           "command": "python tools/memory_report.py --save-baseline " + str(path.relative_to(ROOT)),
           "rows": [measurement(r) for r in rows]}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def before_after(rows: list[Row], baseline: dict | None) -> list[str]:
    if not baseline:
        return []
    out = ["", "## Before and after the fixes (issue 14, item 4)", "",
           f"Before: `{baseline['command']}` at commit {baseline['commit'][:10]}"
           f"{' (csrc modified)' if baseline['dirty'] else ''}, {baseline['date']}, torch {baseline['torch']} "
           f"(committed as {BASELINE.relative_to(ROOT)}); after: this run. Global load / store as in the "
           "tables above; lanes: active lanes per global request (of 32); shared: shared-memory wavefronts per ideal "
           "wavefront, loads and stores together (1.00: no bank conflicts).", ""]
    now = {}
    for r in rows:
        now.setdefault((r.case.op, r.case.layer, r.dtype, r.layout), []).append(measurement(r))
    for fix in FIXES:
        out += [f"**{fix.title}**", "",
                "| op, layer | dtype | layout | kernel | global load | global store | lanes | shared | bytes/out |",
                "|---|---|---|---|---|---|---|---|---|"]
        for b in baseline["rows"]:
            if not b["kernel"].startswith(fix.before):
                continue
            key = (b["op"], b["layer"], b["dtype"], b["layout"])
            after = [m for m in now.get(key, []) if m["kernel"].startswith(fix.after)]
            if not after:
                out.append(f"| {b['op']}, {b['layer']} | {b['dtype']} | {b['layout']} | `{b['kernel']}` | "
                           f"{b['load']} -> not measured | {b['store']} -> not measured | {b['lanes']:.0f} | "
                           f"{b['shared_conflict']:.2f} | {b['bytes_per_output']:.1f} |")
                continue
            a = after[0]
            name = f"`{b['kernel']}`" + ("" if a["kernel"] == b["kernel"] else f" -> `{a['kernel']}`")
            out.append(f"| {b['op']}, {b['layer']} | {b['dtype']} | {b['layout']} | {name} | {b['load']} -> "
                       f"{a['load']} | {b['store']} -> {a['store']} | {b['lanes']:.0f} -> {a['lanes']:.0f} | "
                       f"{b['shared_conflict']:.2f} -> {a['shared_conflict']:.2f} | "
                       f"{b['bytes_per_output']:.1f} -> {a['bytes_per_output']:.1f} |")
        out.append("")
    return out


# ---- the document ------------------------------------------------------------------------------
def pct(t: memory_trace.Totals) -> str:
    return f"{t.efficiency:.0%} ({t.sectors_per_request:.1f}, {t.active_lanes:.0f})" if t.requests else "-"


def conflict(t: memory_trace.Totals) -> str:
    return f"{t.conflict:.2f} / {t.max_degree}" if t.requests else "-"


def markdown(rows: list[Row], failures: list[str], skipped: list[str], baseline: dict | None) -> str:
    lines = [
        "# Memory access efficiency of the CUDA kernels (measured without a GPU)",
        "",
        "Generated by `python tools/memory_report.py` from the memory-tracing build (`PROGAN_EXT_EMULATE=trace`,",
        "`progan_ext.memory_trace`); do not edit by hand. How the numbers are measured, and what they cannot",
        "show, is in docs/emulated_cuda.md, \"Memory-access tracer\".",
        "",
        "Columns: global load / store: sector efficiency (ideal sectors / sectors touched) and, in",
        "parentheses, sectors per request and active lanes per request (of 32); shared load / store: wavefronts per ideal wavefront (1.00: no",
        "bank conflicts) / the worst conflict degree of any request; bytes/out: bytes moved between SM and",
        "L2 (touched sectors x 32) per output element of the op; floor: the kernel's floor (below).",
        "",
    ]
    current = None
    for r in rows:
        if r.case.op != current:
            current = r.case.op
            lines += ["", f"## {r.case.op}", "",
                      "| layer (shape shown) | dtype | layout | kernel | global load | global store | shared load | "
                      "shared store | bytes/out | floor |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
        k = r.kernel
        f = floor_for(k.name)
        floor = (f"{f.efficiency:.0%}, {f.conflict:.1f}" + (f", {f.lanes:g} lanes" if f.lanes else "")) if f else "-"
        lines.append(f"| {r.case.layer} {list(r.case.shape)} | {r.dtype} | {r.layout} | `{k.name}` | "
                     f"{pct(k.global_load)} | {pct(k.global_store)} | {conflict(k.shared_load)} | "
                     f"{conflict(k.shared_store)} | {r.bytes_per_output:.1f} | {floor} |")
    lines += ["", "## Floors", "",
              "| kernel | least global efficiency | most shared wavefronts per ideal | why |", "|---|---|---|---|"]
    for prefix, f in FLOORS.items():
        lanes = f" (and >= {f.lanes:g} active lanes per request)" if f.lanes else ""
        lines.append(f"| `{prefix}` | {f.efficiency:.0%}{lanes} | {f.conflict:.1f} | {f.why} |")
    lines += before_after(rows, baseline)
    lines += ["", "## Falls short (issue 14, item 4: not fixed yet)", ""]
    lines += [f"- `{prefix}`: {f.why[f.why.index('SHORT'):]}" for prefix, f in FLOORS.items()
              if "SHORT" in f.why] or ["None: no kernel is below the efficiency its floor note explains."]
    lines += ["", "## Check", ""]
    lines += [f"- not measured (kernels not in this build): {s}" for s in skipped]
    lines += [f"- FAILS: {f}" for f in failures] or ["Every kernel meets its floor."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only check the floors; do not write the document")
    p.add_argument("--out", default=str(ROOT / "docs" / "memory_access.md"))
    p.add_argument("--only", help="only the cases whose op contains this text")
    p.add_argument("--save-baseline", metavar="JSON",
                   help="also write this run's measurements as the 'before' of the before/after section "
                        f"(the committed one is {BASELINE.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if not memory_trace.available:
        print(memory_trace.error, file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    skipped: list[str] = []
    rows = run_all(args.only, skipped)
    failures = check(rows) + [f"not measured, the build lacks its kernels: {s}" for s in sorted(set(skipped))]
    if args.save_baseline:
        save_baseline(rows, Path(args.save_baseline).resolve())
        print(f"wrote {args.save_baseline}")
    if not args.check:
        baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() and not args.only else None
        Path(args.out).write_text(markdown(rows, failures, sorted(set(skipped)), baseline))
        print(f"wrote {args.out}")
    for f in failures:
        print("FLOOR FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
