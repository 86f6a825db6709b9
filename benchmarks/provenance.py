"""Provenance of benchmark results: which code ran where (git commit and dirty state, torch, CUDA,
GPU or CPU and how busy the machine was, flags, the progan_ext build and backends).

Used by ``bench_ops.py`` and ``bench_train.py`` for every JSON they write, by ``summarize.py``, and as
a small CLI by ``run_gpu_suite.sh`` and ``run_cpu_suite.sh``::

    python benchmarks/provenance.py provenance --stages STAGES.tsv --out provenance.json [--extra k=v ...]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from common import REPO_ROOT, _short, tf32_state, write_json  # benchmarks/common.py (sets sys.path)

import torch  # noqa: E402  (after common: it puts the checkout on sys.path when it holds the build)


def _run(cmd, timeout=10) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_state() -> dict:
    """Commit and dirty flag of the checkout. SUITE_GIT_COMMIT / SUITE_GIT_DIRTY override them (for a
    copy of the tree without .git, such as the device machine's)."""
    commit = os.environ.get("SUITE_GIT_COMMIT") or _run(["git", "rev-parse", "HEAD"])
    dirty_env = os.environ.get("SUITE_GIT_DIRTY")
    if dirty_env is not None:
        dirty = dirty_env.lower() in ("1", "true", "yes")
        changes = None
    else:
        status = _run(["git", "status", "--porcelain"])
        if status is None:
            dirty, changes = None, None
        else:
            # Results written by the running suite do not make the measured code dirty.
            changes = [ln for ln in status.splitlines() if "benchmarks/results/" not in ln]
            dirty = bool(changes)
    return {"commit": commit, "dirty": dirty, "changed_files": changes[:50] if changes else changes}


def gpu_info(device: torch.device | None = None) -> dict:
    if not torch.cuda.is_available():
        return {"available": False}
    device = device or torch.device("cuda")
    p = torch.cuda.get_device_properties(device)
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return {
        "available": True,
        "name": p.name,
        "capability": f"{p.major}.{p.minor}",
        "multiprocessors": p.multi_processor_count,
        "l2_bytes": int(getattr(p, "L2_cache_size", 0) or 0),
        "memory_bytes": int(p.total_memory),
        "driver": driver.splitlines()[0] if driver else None,
    }


def cpu_info() -> dict:
    """The CPU and how busy the machine was: CPU timings on shared cores depend on both."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or None
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001  (older torch)
        capability = None
    return {"model": model, "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "aten_capability": capability, "loadavg": load}


def provenance(device: torch.device | None = None) -> dict:
    """Everything a reader needs to know which code ran where: git, versions, device, flags, backend."""
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable] + sys.argv),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "git": git_state(),
        "gpu": gpu_info(device if device is not None and device.type == "cuda" else None),
        "cpu": cpu_info(),
        "flags": tf32_state(),
        "env": {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "TORCH_CUDA_ARCH_LIST", "MAX_JOBS",
                                           "PYTORCH_NO_CUDA_MEMORY_CACHING", "OMP_NUM_THREADS")
                if k in os.environ},
    }
    try:
        import triton  # noqa: PLC0415

        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        info["triton"] = None
    try:
        import progan_ext  # noqa: PLC0415

        info["progan_ext"] = {"file": progan_ext.__file__, "version": progan_ext.__version__,
                              "backend_info": progan_ext.ops.backend_info()}
    except Exception as exc:  # noqa: BLE001
        info["progan_ext"] = {"error": _short(exc)}
    return info


def read_stages(path: Path) -> list[dict]:
    """stages.tsv lines: name, status, exit code, seconds, time limit, log file, command."""
    stages = []
    if not path.exists():
        return stages
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split("\t")
        f += [""] * (7 - len(f))
        stages.append({
            "stage": f[0], "status": f[1],
            "exit_code": int(f[2]) if f[2].lstrip("-").isdigit() else None,
            "seconds": float(f[3]) if f[3] else None,
            "time_limit_s": float(f[4]) if f[4] else None,
            "log": f[5] or None, "command": f[6] or None,
        })
    return stages


def _main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="provenance.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pv = sub.add_parser("provenance", help="write provenance.json for a suite folder")
    pv.add_argument("--stages", type=Path, required=True, help="stages.tsv written by run_gpu_suite.sh or run_cpu_suite.sh")
    pv.add_argument("--out", type=Path, required=True)
    pv.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE",
                    help="extra top-level string fields (suite command line, start time, ...)")
    args = p.parse_args(argv)
    info = provenance(torch.device("cuda") if torch.cuda.is_available() else None)
    info.pop("command", None)  # this helper's own command line is not interesting
    for kv in args.extra:
        k, sep, v = kv.partition("=")
        if not sep:
            p.error(f"--extra needs KEY=VALUE, got {kv!r}")
        info[k] = v
    info["nvcc"] = _run(["nvcc", "--version"])
    info["stages"] = read_stages(args.stages)
    write_json(args.out, info)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
