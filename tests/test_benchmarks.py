"""Smoke tests of the benchmark scripts (CPU, seconds each), so they cannot rot.

Each script runs as a subprocess with --quick, exactly as a user would run it, and its JSON is checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def run(args, timeout=90, env=None, cwd=ROOT):
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(args, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


@pytest.fixture(scope="module")
def ops_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_ops") / "ops.json"
    r = run([sys.executable, str(BENCH / "bench_ops.py"), "--quick", "--device", "cpu",
             "--dtypes", "fp32,bf16", "--layouts", "all", "--out", str(out)])
    return r, out


def test_bench_ops_quick_writes_complete_json(ops_run):
    r, out = ops_run
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "x eager" in r.stdout and "rows in" in r.stdout  # the table and its footer
    doc = json.loads(out.read_text())
    assert doc["schema"] == "progan_ext.bench_ops/1"
    assert doc["complete"] is True
    prov = doc["provenance"]
    for key in ("date_utc", "command", "torch", "python", "git", "flags", "progan_ext"):
        assert key in prov
    assert "backend_info" in prov["progan_ext"]
    assert "torch.backends.cudnn.allow_tf32" in prov["flags"]
    assert doc["ceilings"]["copy"]["GBps"] > 0
    assert doc["ceilings"]["matmul"]["fp32"]["TFLOPs"] > 0
    rows = doc["rows"]
    ops = {r["op"] for r in rows}
    assert ops == {"pixel_norm", "minibatch_stddev", "bias_act", "eq_conv2d_k3", "eq_conv2d_k1_torgb",
                   "eq_conv2d_k1_fromrgb", "upsample_conv2d", "conv2d_downsample"}
    assert {(r["dtype"], r["layout"], r["mode"]) for r in rows} == {
        (d, lay, m) for d in ("fp32", "bf16") for lay in ("nchw", "channels_last") for m in ("fwd", "fwdbwd")}
    for row in rows:
        assert row["status"] == "ok", row
        assert row["bytes"] > 0 and row["flops"] > 0
        for name in ("ext", "eager"):
            c = row["contenders"][name]
            assert c["status"] == "ok" and c["ms"] > 0 and c["reps"] >= 3 and c["sets"] >= 2
        assert row["speedup_vs_eager"] > 0 and row["gbps"] > 0 and row["pct_copy"] > 0
        assert row["backend"]


def test_bench_ops_minimal_counts():
    """The byte and FLOP formulas on one hand-checked case (upsample_conv2d at 1024^2, bf16, fwd)."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_ops  # noqa: PLC0415
        import common  # noqa: PLC0415
    finally:
        sys.path.remove(str(BENCH))
    v = bench_ops.VARIANTS["upsample_conv2d"]
    s = v.shape(1024, 4, common.nf)
    assert (s.n, s.cin, s.cout, s.hin, s.hout) == (4, 32, 16, 512, 1024)
    x, w, b, y = 4 * 32 * 512 * 512, 16 * 32 * 9, 16, 4 * 16 * 1024 * 1024
    assert bench_ops.count_bytes(v, s, "fwd", 2) == 2 * (x + w + b + y)
    assert bench_ops.count_bytes(v, s, "fwdbwd", 2) == 2 * ((x + w + b + y) + (x + w + b + y) + (x + w + b))
    macs = y * 32 * 4
    assert bench_ops.count_flops(v, s, "fwd") == 2 * macs + 5 * y
    assert bench_ops.count_flops(v, s, "fwdbwd") == 6 * macs + 12 * y
    assert [common.nf(r) for r in common.RESOLUTIONS] == [512, 512, 512, 512, 256, 128, 64, 32, 16]


def _bench_common():
    sys.path.insert(0, str(BENCH))
    try:
        import common  # noqa: PLC0415
    finally:
        sys.path.remove(str(BENCH))
    return common


def test_timer_caps_slow_rows():
    """Slow rows: one input set, no estimate/warm-up rounds, timed rounds capped by row_ms (>= floor_reps).
    The counts are what is checked, not the times (the steps only need to be clearly slow or fast)."""
    import time  # noqa: PLC0415

    import torch  # noqa: PLC0415

    common = _bench_common()
    seen = {"slow": [], "fast": []}

    def step(name, ms):
        def f(k):
            seen[name].append(k)
            time.sleep(ms / 1e3)
        return f

    timer = common.Timer(torch.device("cpu"), warmup_ms=1, rep_ms=1000, min_reps=25, max_reps=200,
                         row_ms=150, floor_reps=5, slow_ms=20)
    out = timer.compare({"slow": step("slow", 40), "fast": step("fast", 1)}, n_sets=4)
    assert out["slow"]["reps"] == out["fast"]["reps"] == 5  # 150 ms / 41 ms < 5 -> the floor
    assert out["slow"]["sets"] == 1 and set(seen["slow"]) == {0} and set(seen["fast"]) == {0}
    assert len(seen["slow"]) == 1 + 5  # the probing call, then the timed rounds only

    seen = {"slow": [], "fast": []}
    timer = common.Timer(torch.device("cpu"), warmup_ms=1, rep_ms=1, min_reps=25, max_reps=200,
                         row_ms=150, floor_reps=5, slow_ms=None)
    out = timer.compare({"slow": step("slow", 10), "fast": step("fast", 1)}, n_sets=4)
    assert out["slow"]["sets"] == 4 and set(seen["slow"]) == {0, 1, 2, 3}
    assert 5 < out["slow"]["reps"] < 25  # 25 rounds of 11 ms > 150 ms: capped below min_reps
    uncapped = common.Timer(torch.device("cpu"), rep_ms=1, min_reps=7, max_reps=200)
    assert uncapped.compare({"a": step("fast", 1)})["a"]["reps"] == 7


@pytest.mark.parametrize("flags, message", [
    (["--ops", "nope"], "unknown op 'nope'"),
    (["--res", "100"], "not a ProGAN resolution"),
    (["--dtypes", "fp8"], "unknown dtype 'fp8'"),
    (["--batch", "0"], "bad --batch"),
])
def test_bench_ops_rejects_bad_flags(flags, message):
    r = run([sys.executable, str(BENCH / "bench_ops.py"), "--quick", *flags], timeout=60)
    assert r.returncode == 2
    assert message in r.stderr


def test_bench_train_rejects_bad_flags():
    r = run([sys.executable, str(BENCH / "bench_train.py"), "--quick", "--variants", "fast"], timeout=60)
    assert r.returncode == 2 and "unknown variant 'fast'" in r.stderr


@pytest.mark.skipif(has_module("progan_ext.networks"), reason="the trainer exists: see the next test")
def test_bench_train_says_when_the_trainer_is_missing(tmp_path):
    out = tmp_path / "train.json"
    r = run([sys.executable, str(BENCH / "bench_train.py"), "--quick", "--device", "cpu", "--out", str(out)])
    assert r.returncode == 3
    assert "progan_ext.networks" in r.stderr
    assert json.loads(out.read_text())["status"].startswith("unavailable")


def test_bench_train_quick(tmp_path):
    pytest.importorskip("progan_ext.networks")
    pytest.importorskip("progan_ext.loss")
    out = tmp_path / "train.json"
    r = run([sys.executable, str(BENCH / "bench_train.py"), "--quick", "--device", "cpu", "--out", str(out)])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["schema"] == "progan_ext.bench_train/1" and doc["complete"] is True
    assert "backend_info" in doc["provenance"]["progan_ext"]
    assert {r["variant"] for r in doc["rows"]} == {"reference", "ext"}
    for row in doc["rows"]:
        assert row["status"] == "ok", row
        assert row["ms"] > 0 and row["img_per_s"] > 0 and row["steps"] == 3


def test_summarize_over_quick_results(ops_run, tmp_path):
    r, out = ops_run
    assert r.returncode == 0
    run_dir = tmp_path / "20260101T0000Z_cpu_test"
    run_dir.mkdir()
    (run_dir / "bench_ops_quick.json").write_text(out.read_text())
    (run_dir / "stages.tsv").write_text("# header\nops_quick\tpass\t0\t3\t60\tops.log\tpython bench_ops.py\n")
    s = run([sys.executable, str(BENCH / "summarize.py"), "--results-dir", str(tmp_path), "--print-run",
             str(run_dir)], timeout=60)
    assert s.returncode == 0, s.stderr
    md = (tmp_path / "SUMMARY.md").read_text()
    assert "## Runs (newest first)" in md and "## 20260101T0000Z_cpu_test" in md
    assert "targets not evaluated" in md  # quick shapes are not ProGAN shapes
    assert "| pixel_norm |" in md and "ops_quick" in md
    assert "==== SUMMARY" in s.stdout


def test_summarize_with_no_runs(tmp_path):
    s = run([sys.executable, str(BENCH / "summarize.py"), "--results-dir", str(tmp_path)], timeout=60)
    assert s.returncode == 0, s.stderr
    assert "No runs yet" in (tmp_path / "SUMMARY.md").read_text()


def test_suite_script_parses():
    r = subprocess.run(["bash", "-n", str(BENCH / "run_gpu_suite.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_suite_rehearsal_on_cpu(tmp_path):
    """SUITE_QUICK=1 runs the suite's bookkeeping on the CPU: stages, provenance, JSONs, summary last."""
    outdir = tmp_path / "suite"
    r = run(["bash", str(BENCH / "run_gpu_suite.sh"), str(outdir)], timeout=240,
            env={"PYTHON": sys.executable, "SUITE_QUICK": "1", "SUITE_SKIP": "train,ops_fp32_fp16,ops_autotune"})
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]
    stages = [ln.split("\t") for ln in (outdir / "stages.tsv").read_text().splitlines() if not ln.startswith("#")]
    names = [s[0] for s in stages]
    assert names == ["build", "tests", "crash_bt", "memcheck", "racecheck", "ops_bf16", "train", "ops_compile", "ops_fp32_fp16",
                     "ops_autotune"]
    assert dict((s[0], s[1]) for s in stages)["ops_bf16"] == "pass"
    prov = json.loads((outdir / "provenance.json").read_text())
    assert prov["suite_command"].startswith("bash benchmarks/run_gpu_suite.sh")
    assert [s["stage"] for s in prov["stages"]] == names
    assert "commit" in prov["git"] and "backend_info" in prov["progan_ext"]
    assert json.loads((outdir / "bench_ops_bf16.json").read_text())["complete"] is True
    assert (outdir / "SUMMARY.md").exists()  # a run outside benchmarks/results gets its own summary
    assert "==== SUMMARY" in r.stdout.split("== total")[-1]  # the summary is printed last
