#!/usr/bin/env bash
# Measures the default demo exactly as a new user runs it, and refreshes what the README shows:
#   docs/demo/fakes.png   final EMA-generator grid of `python -m progan_ext.train` (no arguments)
#   docs/demo/reals.png   the run's grid of real images (written by the trainer at the start)
#   docs/demo/result.json wall and CPU time, the machine's load before/after, SWD x1e3 at 16x16
#                         (2048 images, `python -m progan_ext.metrics`), commit, torch, op backends
# Usage: bash docs/demo/measure.sh   (from anywhere; uses the python on PATH, with progan_ext installed
# or built in the checkout). Nothing here edits a number by hand. On a machine shared with other
# jobs, OMP_NUM_THREADS=1 keeps the CPU time meaningful (two threads that wait on each other spin).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
LOAD_BEFORE=$(cat /proc/loadavg)
/usr/bin/time -v -o "$OUT/time.txt" python -m progan_ext.train --outdir "$OUT/runs" | tee "$OUT/train.log"
LOAD_AFTER=$(cat /proc/loadavg)
RUN=$(ls -d "$OUT"/runs/*/ | head -1)
python -m progan_ext.metrics "$RUN" --num 2048 --json "$OUT/swd.json"
FINAL=$(ls "$RUN"/stage-*.png | sort | tail -1)
cp "$FINAL" docs/demo/fakes.png
cp "$RUN/reals.png" docs/demo/reals.png
python - "$OUT" "$RUN" "$LOAD_BEFORE" "$LOAD_AFTER" "$(basename "$FINAL")" <<'PY'
import datetime, json, os, re, subprocess, sys

import torch

out, run, load_before, load_after, final = sys.argv[1:6]
time_txt = open(os.path.join(out, "time.txt")).read()


def field(name):
    return re.search(rf"{re.escape(name)}: (.+)", time_txt).group(1).strip()


def seconds(text):  # h:mm:ss or m:ss.ss
    parts = [float(p) for p in text.split(":")]
    return sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


cfg = json.load(open(os.path.join(run, "config.json")))
wall = seconds(field("Elapsed (wall clock) time (h:mm:ss or m:ss)"))
user, system = float(field("User time (seconds)")), float(field("System time (seconds)"))
result = {
    "what": "python -m progan_ext.train (no arguments: the demo preset), then "
            "python -m progan_ext.metrics RUN --num 2048",
    "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": f"{os.cpu_count()} logical CPUs, CPU only",
    "torch": torch.__version__,
    "torch_threads": torch.get_num_threads(),
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    "op_backends": cfg["op_backends"],
    "wall_s": round(wall, 1),
    "cpu_user_s": user,
    "cpu_system_s": system,
    "loadavg_before": load_before,
    "loadavg_after": load_after,
    "swd_x1e3": json.load(open(os.path.join(out, "swd.json"))),
    "final_grid": final,
    "kimg": [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))][-1]["kimg"],
}
json.dump(result, open("docs/demo/result.json", "w"), indent=2)
print(json.dumps(result, indent=2))
PY
