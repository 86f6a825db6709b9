"""Shared helpers of the progan_ext benchmarks: ProGAN shapes, flag parsing, timing, device ceilings,
tables and JSON output (what a run's results record about where they came from: ``provenance.py``).

Used by ``bench_ops.py``, ``bench_train.py`` and ``summarize.py`` (all run as scripts from any working
directory; they put this folder and the repository root on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _use_checkout() -> bool:
    """Benchmark the checkout these scripts live in when it holds a built module (an in-place
    build, as run_gpu_suite.sh makes) or when progan_ext is not installed; otherwise the installed
    package (``pip install .`` builds outside the checkout)."""
    import importlib.util

    if not (REPO_ROOT / "progan_ext").is_dir() or str(REPO_ROOT) in sys.path:
        return False
    if any((REPO_ROOT / "progan_ext").glob("_C*.so")) or any((REPO_ROOT / "progan_ext").glob("_C*.pyd")):
        return True
    return importlib.util.find_spec("progan_ext") is None


if _use_checkout():
    sys.path.insert(1, str(REPO_ROOT))

import torch  # noqa: E402

# ----------------------------------------------------------------------------------------------
# ProGAN configuration (official: tkarras/progressive_growing_of_gans, config.py / networks.py).

RESOLUTIONS = (4, 8, 16, 32, 64, 128, 256, 512, 1024)

# Per-resolution minibatch of the official single-GPU schedule.
DEFAULT_BATCH = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4}


# CPU runs (--device cpu, or no GPU) default to the early ProGAN stages at a width a CPU trains:
# 4^2..64^2 with 64 channels (fmap_base 2048, fmap_max 64), batch 64 up to 16^2 and 16 above
# (issue 11's cases; --fmap-base 512 --fmap-max 128 gives 128..16 channels over the same range).
CPU_RESOLUTIONS = (4, 8, 16, 32, 64)
CPU_BATCH = {4: 64, 8: 64, 16: 64, 32: 16, 64: 16}
CPU_FMAP_BASE, CPU_FMAP_MAX = 2048, 64


def is_cpu_run(device: str) -> bool:
    """Whether ``--device`` (auto, cpu or cuda) will run on the CPU."""
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def nf(res: int, fmap_base: int = 8192, fmap_max: int = 512) -> int:
    """Channels of the block at resolution ``res``: min(fmap_base / 2**(log2(res) - 1), fmap_max).

    512 up to 32x32, 256 at 64, 128 at 128, 64 at 256, 32 at 512, 16 at 1024 (official values).
    """
    stage = int(round(math.log2(res))) - 1
    return max(1, min(fmap_base // (2**stage), fmap_max))


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
LAYOUTS = ("nchw", "channels_last")
_LAYOUT_ALIASES = {"cl": "channels_last", "nhwc": "channels_last", "contiguous": "nchw"}


def to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """NCHW-contiguous or channels_last copy of a 4-D tensor (other ranks are returned as they are)."""
    if t.dim() != 4:
        return t.contiguous()
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    return t.contiguous(memory_format=fmt)


# ----------------------------------------------------------------------------------------------
# Flag parsing: every bad value is an argparse error that names the flag, the value and the choices.


def parse_choices(text: str, choices, *, what: str, aliases=None, allow_all: bool = True) -> list[str]:
    """Comma-separated subset of ``choices`` (order kept, duplicates dropped); ``all`` means every choice."""
    aliases = aliases or {}
    out: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key = aliases.get(item.lower(), item.lower())
        if allow_all and key == "all":
            items = list(choices)
        elif key in choices:
            items = [key]
        else:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {item!r}; choose from {', '.join(choices)}" + (" or all" if allow_all else "")
            )
        out.extend(i for i in items if i not in out)
    if not out:
        raise argparse.ArgumentTypeError(f"no {what} given")
    return out


def dtype_list(text: str) -> list[str]:
    return parse_choices(text, tuple(DTYPES), what="dtype", aliases=_DTYPE_ALIASES)


def layout_list(text: str) -> list[str]:
    return parse_choices(text, LAYOUTS, what="layout", aliases=_LAYOUT_ALIASES)


def resolution_list(text: str) -> list[int]:
    """Resolutions such as ``4,8,16``, a range ``64-256`` (powers of two in between) or ``all``."""
    out: list[int] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "all":
            vals = list(RESOLUTIONS)
        elif "-" in item:
            lo, _, hi = item.partition("-")
            try:
                lo_i, hi_i = int(lo), int(hi)
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad resolution range {raw!r}; write e.g. 64-256") from None
            for v in (lo_i, hi_i):
                if v not in RESOLUTIONS:
                    raise argparse.ArgumentTypeError(
                        f"resolution {v} in {raw!r} is not a ProGAN resolution {RESOLUTIONS}"
                    )
            vals = [r for r in RESOLUTIONS if lo_i <= r <= hi_i]
        else:
            try:
                v = int(item)
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad resolution {raw!r}; write e.g. 4,8,64-256 or all") from None
            if v not in RESOLUTIONS:
                raise argparse.ArgumentTypeError(f"resolution {v} is not a ProGAN resolution {RESOLUTIONS}")
            vals = [v]
        out.extend(v for v in vals if v not in out)
    if not out:
        raise argparse.ArgumentTypeError("no resolution given")
    return sorted(out)


def batch_spec(text: str) -> dict:
    """``--batch``: one integer for every resolution (``8``) or per resolution (``256:8,512:4``)."""
    text = text.strip()
    try:
        if ":" not in text:
            n = int(text)
            if n < 1:
                raise ValueError
            return {"all": n}
        out = {}
        for part in text.split(","):
            r, _, n = part.partition(":")
            r_i, n_i = int(r), int(n)
            if r_i not in RESOLUTIONS or n_i < 1:
                raise ValueError
            out[r_i] = n_i
        return out
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad --batch {text!r}; write one positive integer (e.g. 8) or res:batch pairs (e.g. 256:8,512:4)"
        ) from None


def batch_for(res: int, spec: dict | None) -> int:
    """The minibatch at ``res``: the override if given, else the official per-resolution batch."""
    if spec:
        if "all" in spec:
            return spec["all"]
        if res in spec:
            return spec[res]
    return DEFAULT_BATCH[res]


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Flags both benchmark scripts share."""
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"),
                   help="auto: cuda when available, else cpu (wall-clock timing)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and few repeats (CPU smoke test; finishes in seconds)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    p.add_argument("--tf32", default="default", choices=("default", "on", "off"),
                   help="fp32 convolutions/matmuls on TF32 tensor cores: leave torch's defaults, or force "
                        "both cuDNN and cuBLAS flags on/off (recorded in the JSON either way)")
    p.add_argument("--cudnn-benchmark", default="on", choices=("on", "off"),
                   help="torch.backends.cudnn.benchmark (on gives eager convolutions their best algorithm)")
    p.add_argument("--time-budget-s", type=positive_float, default=None,
                   help="stop starting new rows after this many seconds (the rest are marked skipped); "
                        "the JSON is rewritten after every row, so a killed run still leaves its rows")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU intra-op threads (torch.set_num_threads); default torch's, --quick on CPU: 1 "
                        "(small CPU ops run fastest and steadiest on one thread)")
    p.add_argument("--seed", type=int, default=0)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch.cuda.is_available() is False")
    return torch.device(name)


def apply_threads(threads: int | None, device: torch.device, quick: bool) -> None:
    if threads is None and quick and device.type == "cpu":
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)


def apply_backend_flags(tf32: str, cudnn_benchmark: str) -> None:
    """Sets the TF32 and cuDNN-benchmark flags (legacy API; see tf32_state for how they are read)."""
    if tf32 != "default":
        on = tf32 == "on"
        try:
            torch.backends.cuda.matmul.allow_tf32 = on
            torch.backends.cudnn.allow_tf32 = on
        except RuntimeError:  # someone used the new fp32_precision API; mixing the two raises
            torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
            torch.backends.cudnn.conv.fp32_precision = "tf32" if on else "ieee"
    torch.backends.cudnn.benchmark = cudnn_benchmark == "on"


def tf32_state() -> dict:
    """The TF32 switches as torch reports them (legacy flags and, where present, fp32_precision)."""

    def read(fn):
        try:
            return fn()
        except Exception:  # noqa: BLE001  (mixed legacy/new API raises on read)
            return None

    return {
        "torch.backends.cuda.matmul.allow_tf32": read(lambda: bool(torch.backends.cuda.matmul.allow_tf32)),
        "torch.backends.cudnn.allow_tf32": read(lambda: bool(torch.backends.cudnn.allow_tf32)),
        "torch.backends.cuda.matmul.fp32_precision": read(lambda: str(torch.backends.cuda.matmul.fp32_precision)),
        "torch.backends.cudnn.conv.fp32_precision": read(lambda: str(torch.backends.cudnn.conv.fp32_precision)),
        "torch.backends.cudnn.benchmark": bool(torch.backends.cudnn.benchmark),
    }


def convs_use_tf32() -> bool:
    """Whether fp32 cuDNN convolutions may run on TF32 tensor cores under the current flags."""
    st = tf32_state()
    if st["torch.backends.cudnn.allow_tf32"] is not None:
        return st["torch.backends.cudnn.allow_tf32"]
    return st["torch.backends.cudnn.conv.fp32_precision"] == "tf32"


# ----------------------------------------------------------------------------------------------
# Timing.


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Deadline:
    """Wall-clock budget of a script, counted from its construction (None = unlimited)."""

    def __init__(self, budget_s: float | None):
        self.t0 = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def remaining(self) -> float:
        return math.inf if self.budget_s is None else self.budget_s - self.elapsed()

    def expired(self) -> bool:
        return self.remaining() <= 0


class Timer:
    """Median time of one call of ``step(k)``, k rotating over ``n_sets`` input sets.

    CUDA: a pair of CUDA events around every call, one synchronisation at the end; the time of a call
    therefore includes host-side launch overhead whenever the host cannot keep the GPU busy (tiny
    shapes), as a user would see it. CPU: ``time.perf_counter`` around every call.
    Warm-up and repeat counts adapt to the call's duration: about ``warmup_ms`` of warm-up, then about
    ``rep_ms`` of timed calls, clamped to [min_reps, max_reps]. ``fixed`` = (warmup, reps) overrides that.

    Slow rows (CPU bf16 convolutions in eager PyTorch take seconds per call): ``row_ms`` caps the timed
    part of a row at that many milliseconds, never below ``floor_reps`` repeats; and once a contender's
    call takes more than ``slow_ms``, ``compare`` times it on one input set without the separate
    estimate and warm-up rounds (a call that long neither fits in a cache nor needs warming).
    """

    def __init__(self, device: torch.device, *, warmup_ms: float = 25.0, rep_ms: float = 100.0,
                 min_reps: int = 10, max_reps: int = 200, fixed: tuple[int, int] | None = None,
                 row_ms: float | None = None, floor_reps: int = 5, slow_ms: float | None = None):
        self.device = device
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms
        self.min_reps, self.max_reps = min_reps, max_reps
        self.fixed = fixed
        self.row_ms, self.floor_reps, self.slow_ms = row_ms, floor_reps, slow_ms

    def _n_rep(self, per_call_ms: float) -> int:
        n = min(self.max_reps, max(self.min_reps, int(self.rep_ms / per_call_ms)))
        if self.row_ms is not None and n * per_call_ms > self.row_ms:
            n = max(min(self.floor_reps, n), int(self.row_ms / per_call_ms))
        return n

    def _clock(self):
        """(start, stop, elapsed_ms) callables for one timed interval."""
        if self.device.type == "cuda":
            def start():
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                return e

            def stop(_s):
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                return e

            return start, stop, lambda s, e: s.elapsed_time(e)
        return (lambda: time.perf_counter()), (lambda _s: time.perf_counter()), (lambda s, e: (e - s) * 1e3)

    def __call__(self, step, n_sets: int = 1) -> dict:
        start, stop, elapsed = self._clock()
        n_sets = max(1, n_sets)
        it = 0

        def run(n):
            nonlocal it
            for _ in range(n):
                step(it % n_sets)
                it += 1

        if self.fixed is not None:
            n_warm, n_rep = self.fixed
            run(n_warm)
            sync(self.device)
        else:
            run(n_sets)  # first touch of every set (allocator, cuDNN autotuning, lazy init)
            sync(self.device)
            n_est = max(3, n_sets)
            s = start()
            run(n_est)
            e = stop(s)
            sync(self.device)
            est = max(elapsed(s, e) / n_est, 1e-4)
            run(min(1000, max(1, int(self.warmup_ms / est))))
            n_rep = self._n_rep(est)
        marks = []
        for _ in range(n_rep):
            s = start()
            step(it % n_sets)
            it += 1
            marks.append((s, stop(s)))
        sync(self.device)
        return _stats([elapsed(s, e) for s, e in marks], n_sets)

    def compare(self, steps: dict, n_sets: int = 1) -> dict:
        """Times several contenders interleaved: round r calls each ``steps[name](k)`` once (the order
        rotating from round to round), so load that comes and goes on a shared machine hits every
        contender alike and their ratio stays meaningful. Returns ``{name: stats}`` as ``__call__`` does;
        the number of rounds follows the sum of the contenders' per-call estimates, or ``fixed``."""
        start, stop, elapsed = self._clock()
        names = list(steps)
        n_sets = max(1, n_sets)
        it = dict.fromkeys(names, 0)

        def call(name):
            steps[name](it[name] % n_sets)
            it[name] += 1

        if self.fixed is not None:
            n_warm, n_rep = self.fixed
            for _ in range(n_warm):
                for name in names:
                    call(name)
            return self._rounds(names, call, n_rep, n_sets)
        once = {}
        for name in names:  # one call each on set 0, timed: does this row need the slow-row treatment?
            sync(self.device)
            s = start()
            call(name)
            e = stop(s)
            sync(self.device)
            once[name] = max(elapsed(s, e), 1e-4)
        if self.slow_ms is not None and max(once.values()) > self.slow_ms:
            n_sets = 1  # ``call`` reads it: from here on every call uses set 0
            return self._rounds(names, call, self._n_rep(sum(once.values())), n_sets)
        est = {}
        for name in names:
            for _ in range(n_sets - 1):  # first touch of every other set
                call(name)
            sync(self.device)
            s = start()
            for _ in range(max(3, n_sets)):
                call(name)
            e = stop(s)
            sync(self.device)
            est[name] = max(elapsed(s, e) / max(3, n_sets), 1e-4)
        per_round = sum(est.values())
        for _ in range(min(1000, max(1, int(self.warmup_ms / per_round)))):
            for name in names:
                call(name)
        return self._rounds(names, call, self._n_rep(per_round), n_sets)

    def _rounds(self, names, call, n_rep: int, n_sets: int) -> dict:
        start, stop, elapsed = self._clock()
        sync(self.device)
        marks = {name: [] for name in names}
        for r in range(n_rep):
            for j in range(len(names)):
                name = names[(r + j) % len(names)]
                s = start()
                call(name)
                marks[name].append((s, stop(s)))
        sync(self.device)
        return {name: _stats([elapsed(s, e) for s, e in m], n_sets) for name, m in marks.items()}


def _stats(times: list, n_sets: int) -> dict:
    times = sorted(times)
    return {
        "ms": statistics.median(times),
        "p20_ms": times[int(0.2 * (len(times) - 1))],
        "p80_ms": times[int(math.ceil(0.8 * (len(times) - 1)))],
        "min_ms": times[0],
        "reps": len(times),
        "sets": n_sets,
    }


def rotation_sets(set_bytes: int, device: torch.device, *, quick: bool, max_sets: int = 32) -> int:
    """How many input sets to rotate so that one pass over them exceeds the cache twice over.

    CUDA: 2x the L2 size (read off the device), never more than 25% of the free memory. CPU: 2x 64 MiB
    (a generous last-level cache). At least 2 sets, so consecutive calls never share inputs.
    """
    if quick:
        return 2
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        cache = int(getattr(props, "L2_cache_size", 0) or 50 * 2**20)
        free, _total = torch.cuda.mem_get_info(device)
        cap = max(1, int(0.25 * free) // max(1, set_bytes))
    else:
        cache, cap = 64 * 2**20, max_sets
    need = math.ceil(2 * cache / max(1, set_bytes))
    return max(1, min(max_sets, cap, max(2, need)))


# ----------------------------------------------------------------------------------------------
# Device ceilings, measured in the same run as the rows they normalise.


def measure_ceilings(device: torch.device, dtypes, *, quick: bool) -> dict:
    """Device-to-device copy bandwidth and large-matmul rate per dtype, on random data.

    Copy: ``dst.copy_(src)`` of a 1 GiB buffer (8 MiB with --quick, 64 MiB on CPU); GB/s counts the
    bytes read plus the bytes written (2 x size). Matmul: ``a @ b`` with n x n random matrices (n = 8192
    on CUDA, 512 on CPU, 256 with --quick); TFLOP/s = 2 n^3 / time. The fp32 matmul runs with TF32 on or
    off to match what fp32 cuDNN convolutions use under the current flags, so it is their ceiling.
    """
    timer = Timer(device, warmup_ms=20, rep_ms=100 if not quick else 10, min_reps=5 if not quick else 3,
                  max_reps=50)
    out: dict = {}
    if device.type == "cuda":
        nbytes = 8 * 2**20 if quick else min(2**30, int(0.2 * torch.cuda.mem_get_info(device)[0]))
    else:
        nbytes = 8 * 2**20 if quick else 64 * 2**20
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = timer(lambda k: dst.copy_(src))
    out["copy"] = {"bytes_per_call": 2 * src.numel() * 4, "ms": t["ms"],
                   "GBps": 2 * src.numel() * 4 / (t["ms"] * 1e6)}
    del src, dst
    n = 256 if quick else (8192 if device.type == "cuda" else 512)
    out["matmul"] = {"n": n}
    conv_tf32 = convs_use_tf32()
    for name in dtypes:
        dt = DTYPES[name]
        a = torch.randn(n, n, device=device).to(dt)
        b = torch.randn(n, n, device=device).to(dt)
        prev = None
        if dt == torch.float32:
            prev = _set_matmul_tf32(conv_tf32)
        try:
            t = timer(lambda k: a @ b)
            out["matmul"][name] = {"ms": t["ms"], "TFLOPs": 2 * n**3 / (t["ms"] * 1e9)}
            if dt == torch.float32:
                out["matmul"][name]["tf32"] = conv_tf32
        except RuntimeError as exc:  # e.g. a dtype the CPU matmul lacks
            out["matmul"][name] = {"error": _short(exc)}
        finally:
            if prev is not None:
                _restore_matmul_tf32(prev)
        del a, b
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def _set_matmul_tf32(on: bool):
    try:
        prev = ("legacy", torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = on
    except RuntimeError:
        prev = ("new", torch.backends.cuda.matmul.fp32_precision)
        torch.backends.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
    return prev


def _restore_matmul_tf32(prev) -> None:
    kind, value = prev
    if kind == "legacy":
        torch.backends.cuda.matmul.allow_tf32 = value
    else:
        torch.backends.cuda.matmul.fp32_precision = value


def backend_kinds(backend_info: dict, device_type: str) -> str:
    """The implementations progan_ext.ops uses on this device type, e.g. 'compiled CUDA kernel'."""
    ops = backend_info.get("ops", {})
    return ", ".join(sorted({v.get(device_type, "?") for v in ops.values()})) or "?"


def backend_summary(backend_info: dict, device_type: str) -> str:
    """One line: which implementation the 'ext' contender really is on this device."""
    return (f"extension {backend_info.get('extension', '?')}; ops on {device_type}: "
            f"{backend_kinds(backend_info, device_type)}")


# ----------------------------------------------------------------------------------------------
# Output: streamed text tables, markdown tables, JSON.


def _short(exc: BaseException, limit: int = 240) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:limit]


short_error = _short


def fmt_num(v, kind: str = "g") -> str:
    """Compact number for tables: '-' for missing; ms/rates with 3 significant digits; ratios 2 decimals."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if kind == "x":
        return f"{v:.2f}x"
    if kind == "pct":
        return f"{v:.0f}%"
    if kind == "int":
        return str(int(v))
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


class StreamTable:
    """A fixed-width text table printed one row at a time (the progress output of long runs).

    ``columns``: list of (key, title, width, kind); kind is passed to fmt_num, or 's' for text.
    """

    def __init__(self, columns, stream=None):
        self.columns = columns
        self.stream = stream or sys.stdout

    def _line(self, cells) -> str:
        parts = []
        for (_key, _title, width, kind), cell in zip(self.columns, cells):
            parts.append(cell.ljust(width) if kind == "s" else cell.rjust(width))
        return " ".join(parts).rstrip()

    def header(self) -> None:
        print(self._line([c[1] for c in self.columns]), file=self.stream)
        print(self._line(["-" * c[2] for c in self.columns]), file=self.stream)
        self.stream.flush()

    def row(self, values: dict) -> None:
        cells = []
        for key, _title, _width, kind in self.columns:
            v = values.get(key)
            cells.append(("-" if v is None else str(v)) if kind == "s" else fmt_num(v, kind))
        print(self._line(cells), file=self.stream)
        self.stream.flush()


def markdown_table(headers, rows) -> str:
    """GitHub markdown table from a header list and rows of already formatted cells."""
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(lines)


def _json_default(o):
    if isinstance(o, (torch.dtype, torch.device, Path)):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: Path, obj) -> None:
    """Atomically (write, then rename) so a reader or a killed run never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_finite(obj), indent=1, default=_json_default) + "\n")
    os.replace(tmp, path)


def _finite(o):
    """NaN/inf are not JSON: store them as null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o
