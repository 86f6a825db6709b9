"""Stress loop for the 2-process (gloo) training run: how often does a finished run fail?

Runs ``torchrun --nproc_per_node 2 -m progan_ext.train`` with a tiny, shortened schedule many times
and counts the runs that did not exit 0, with the failing rank's exit code and the last lines of
its output. ``--busy K`` keeps K extra processes spinning on the CPU meanwhile (a loaded CI
machine changes thread timing, which is what exposed the exit-time abort of issue 9).

    python tools/ddp_stress.py --runs 100             # idle machine
    python tools/ddp_stress.py --runs 100 --busy 2    # CPU kept busy by two spinning processes
    python tools/ddp_stress.py --minimal --runs 100   # the bare mechanism, without the trainer

--minimal runs, instead of the trainer, the smallest script with the failure of issue 9: create the
gloo group, build an Adam optimizer (which imports torch._dynamo and through it
torch.distributed.nn, whose functions then keep the group alive), all_gather_object, destroy the
group, exit. --minimal --fixed imports torch.distributed.nn before creating the group, as
progan_ext.training.distributed.init does.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_ARGS = ["--resolution", "8", "--fmap-max", "8", "--latent-size", "16", "--batch", "8",
              "--procedural-images", "64", "--kimg-stable", "0.008", "--kimg-fade", "0.008",
              "--snapshot-kimg", "0.008", "--no-progress", "--workers", "0", "--device", "cpu"]


def _spin(stop):
    while not stop.is_set():
        sum(i * i for i in range(10000))


MINIMAL = """
import os, torch, torch.distributed as dist
if os.environ.get("STRESS_FIXED") == "1":
    import torch.distributed.nn  # before the group exists: nothing binds it
dist.init_process_group("gloo")
torch.optim.Adam(torch.nn.Linear(2, 2).parameters())  # imports torch._dynamo -> torch.distributed.nn
out = [None] * dist.get_world_size()
dist.all_gather_object(out, {"rng": torch.get_rng_state()})
dist.destroy_process_group()
"""


def one_run(run_dir: Path, timeout: float, extra: list[str], minimal: bool = False) -> tuple[int, str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    if minimal:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "minimal.py").write_text(MINIMAL)
        target = [str(run_dir / "minimal.py")]
    else:
        target = ["-m", "progan_ext.train", *TRAIN_ARGS, "--run-dir", str(run_dir), *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *target]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=run_dir.parent)
    except subprocess.TimeoutExpired as exc:
        return -999, f"timed out after {timeout:g} s\n{(exc.stderr or b'')[-2000:]!r}"
    return out.returncode, out.stdout[-1500:] + out.stderr[-3000:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--busy", type=int, default=0, help="extra CPU-spinning processes during the loop")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per run before it counts as hung")
    ap.add_argument("--json", type=Path, help="write the counts and failure tails here")
    ap.add_argument("--minimal", action="store_true", help="run the bare reproduction instead of the trainer")
    ap.add_argument("--fixed", action="store_true", help="with --minimal: apply the fix (import order)")
    ap.add_argument("extra", nargs="*", help="extra trainer flags (after --)")
    args = ap.parse_args(argv)

    if args.fixed:
        os.environ["STRESS_FIXED"] = "1"
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    failures, codes = [], collections.Counter()
    t0 = time.time()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs):
                code, tail = one_run(Path(tmp) / f"run{i}", args.timeout, args.extra, args.minimal)
                codes[code] += 1
                if code != 0:
                    signal = re.findall(r"(exitcode\s*:\s*-?\d+|terminate called[^\n]*|Signal \d+ \(\w+\))", tail)
                    failures.append({"run": i, "returncode": code, "signals": signal, "tail": tail[-2500:]})
                print(f"run {i + 1}/{args.runs}: exit {code}   failures so far {len(failures)}", flush=True)
    finally:
        stop.set()
        for p in spinners:
            p.join(5)
    rate = len(failures) / max(args.runs, 1)
    summary = {"runs": args.runs, "busy": args.busy, "minimal": args.minimal, "fixed": args.fixed,
               "failures": len(failures), "rate": rate,
               "exit_codes": dict(codes), "seconds": round(time.time() - t0, 1)}
    print(json.dumps(summary))
    for f in failures[:3]:
        print(f"--- run {f['run']} exit {f['returncode']} {f['signals']}\n{f['tail'][-1200:]}")
    if args.json:
        args.json.write_text(json.dumps({**summary, "failure_details": failures}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
