"""Generates benchmarks/results/SUMMARY.md from the run folders written by run_gpu_suite.sh (GPU) and
run_cpu_suite.sh (CPU).

A run folder holds provenance.json, stages.tsv, bench_ops*.json and bench_train*.json. For each run
the summary shows its provenance, the status of every suite stage, the speed targets with the
measured worst-case ratio of each (issue 6's on a GPU at the official shapes, issue 11's on the CPU
at the CPU shapes), the training-step table and every bench_ops row (collapsed). The
file is generated, never edited by hand; rerun this script after adding or removing a run folder.

    python benchmarks/summarize.py                                  # all runs under benchmarks/results
    python benchmarks/summarize.py --runs DIR [DIR ...] --out FILE  # chosen runs
    python benchmarks/summarize.py --print-run DIR                  # also print DIR's short summary
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import common  # benchmarks/common.py
import provenance  # benchmarks/provenance.py

RESULTS = Path(__file__).resolve().parent / "results"

# Issue 6's targets (H100; ratios measured in one run). Each check: (metric, threshold, label).
# Metrics of bench_ops rows: x_eager = eager ms / ext ms, x_compile = compile ms / ext ms,
# pct_copy = ext's GB/s as % of the measured copy bandwidth.
OP_TARGETS = [
    {"case": "pixel_norm fwd+bwd, maps >= 64^2", "op": "pixel_norm", "modes": ("fwdbwd",), "res": (64, 1024),
     "checks": [("pct_copy", 85.0, ">= 85% of copy bandwidth"), ("x_eager", 3.0, ">= 3x eager")]},
    {"case": "minibatch_stddev fwd+bwd", "op": "minibatch_stddev", "modes": ("fwdbwd",), "res": (4, 1024),
     "checks": [("x_eager", 5.0, ">= 5x eager")]},
    {"case": "upsample_conv2d + epilogue, 512^2/32ch and 1024^2/16ch", "op": "upsample_conv2d",
     "modes": ("fwd", "fwdbwd"), "res": (512, 1024),
     "checks": [("x_eager", 3.0, ">= 3x eager"), ("x_compile", 1.5, ">= 1.5x torch.compile")]},
    {"case": "upsample_conv2d + epilogue, 64^2..256^2", "op": "upsample_conv2d", "modes": ("fwd", "fwdbwd"),
     "res": (64, 256), "checks": [("x_eager", 1.5, ">= 1.5x eager")]},
    {"case": "conv2d_downsample, 256^2..1024^2", "op": "conv2d_downsample", "modes": ("fwd", "fwdbwd"),
     "res": (256, 1024), "checks": [("x_eager", 2.0, ">= 2x eager")]},
    {"case": "any op at any ProGAN shape", "op": None, "modes": ("fwd", "fwdbwd"), "res": (4, 1024),
     "checks": [("x_eager", 1.0, "never slower than eager")]},
]
TRAIN_TARGETS = [
    {"case": "training step at 256^2, bf16", "res": 256, "precision": "bf16", "threshold": 2.0},
    {"case": "training step at 1024^2, bf16", "res": 1024, "precision": "bf16", "threshold": 2.5},
]
# Issue 11's targets (the CPU, bench_ops/bench_train --device cpu at their CPU shapes; fp32 and bf16,
# NCHW and channels_last; ratios measured in one run).
CPU_OP_TARGETS = [
    {"case": "every op", "op": None, "modes": ("fwd", "fwdbwd"), "res": (4, 64),
     "checks": [("x_eager", 1.0, ">= 1.0x eager")]},
    {"case": "upsample_conv2d + epilogue, 32^2..64^2", "op": "upsample_conv2d", "modes": ("fwd",), "res": (32, 64),
     "checks": [("x_eager", 1.8, ">= 1.8x eager")]},
    {"case": "conv2d_downsample, 32^2..64^2", "op": "conv2d_downsample", "modes": ("fwd",), "res": (32, 64),
     "checks": [("x_eager", 1.5, ">= 1.5x eager")]},
    {"case": "fused convs (upsample_conv2d, conv2d_downsample)", "op": ("upsample_conv2d", "conv2d_downsample"),
     "modes": ("fwdbwd",), "res": (4, 64), "checks": [("x_eager", 1.2, ">= 1.2x eager")]},
]
CPU_TRAIN_TARGETS = [
    {"case": "training step at 16^2", "res": 16, "precision": None, "threshold": 1.3},
    {"case": "training step at 64^2", "res": 64, "precision": None, "threshold": 1.3},
]
METRIC_KEY = {"x_eager": "speedup_vs_eager", "x_compile": "speedup_vs_compile", "pct_copy": "pct_copy"}


# ----------------------------------------------------------------------------------------------
# Loading.


def load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"load_error": f"{path.name}: {exc}"}


def load_run(d: Path) -> dict:
    run = {"dir": d, "name": d.name, "provenance": None, "stages": [], "ops": [], "train": []}
    if (d / "provenance.json").exists():
        run["provenance"] = load_json(d / "provenance.json")
    run["stages"] = provenance.read_stages(d / "stages.tsv")
    for p in sorted(d.glob("bench_ops*.json")):
        doc = load_json(p)
        doc["_file"] = p.name
        run["ops"].append(doc)
    for p in sorted(d.glob("bench_train*.json")):
        doc = load_json(p)
        doc["_file"] = p.name
        run["train"].append(doc)
    return run


def find_runs(results_dir: Path) -> list[Path]:
    runs = [p for p in results_dir.iterdir() if p.is_dir() and
            ((p / "provenance.json").exists() or (p / "stages.tsv").exists() or any(p.glob("bench_*.json")))]
    return sorted(runs, key=lambda p: p.name, reverse=True)  # names start with the UTC date: newest first


# ----------------------------------------------------------------------------------------------
# Target evaluation.


def _official(doc: dict) -> bool:
    c = doc.get("config", {})
    return (not c.get("quick") and c.get("fmap_base", 8192) == 8192 and c.get("fmap_max", 512) == 512
            and not c.get("batch"))


def _cpu(doc: dict) -> bool:
    """A CPU run at the CPU shapes (not --quick): what issue 11's targets are measured on."""
    return doc.get("device_type") == "cpu" and not doc.get("config", {}).get("quick")


def op_rows(run: dict):
    for doc in run["ops"]:
        for r in doc.get("rows", []):
            yield doc, r


def _op_matches(t: dict, op: str) -> bool:
    return not t["op"] or op == t["op"] or (isinstance(t["op"], tuple) and op in t["op"])


def evaluate_op_targets(run: dict, targets=OP_TARGETS, selected=_official) -> list[dict]:
    """One result per (target, check, dtype, layout, mode) that has rows: the worst measured value."""
    out = []
    for t in targets:
        for metric, thr, label in t["checks"]:
            groups: dict = {}
            for doc, r in op_rows(run):
                if not selected(doc) or r.get("status") != "ok":
                    continue
                if not _op_matches(t, r["op"]):
                    continue
                if r["mode"] not in t["modes"] or not t["res"][0] <= r["res"] <= t["res"][1]:
                    continue
                v = r.get(METRIC_KEY[metric])
                if v is None:
                    continue
                key = (r["dtype"], r["layout"], r["mode"])
                g = groups.setdefault(key, {"worst": None, "rows": 0, "below": 0, "backends": set()})
                g["rows"] += 1
                g["below"] += v < thr
                g["backends"].add(r.get("backend", "?"))
                if g["worst"] is None or v < g["worst"][0]:
                    g["worst"] = (v, f"{r['op']} {r['res']}^2")
            if not groups:
                out.append({"case": t["case"], "target": label, "group": "-", "worst": None, "where": "-",
                            "rows": 0, "verdict": "no data"})
            for (dt, lay, mode), g in sorted(groups.items()):
                v, where = g["worst"]
                verdict = "met" if v >= thr else f"missed by {100 * (1 - v / thr):.0f}%"
                if any(b.startswith("reference") for b in g["backends"]):
                    verdict += " (ext not compiled: reference fallback)"
                out.append({"case": t["case"], "target": label, "group": f"{dt} {lay} {mode}",
                            "worst": v, "metric": metric, "where": where,
                            "rows": g["rows"], "below": g["below"], "verdict": verdict})
    return out


def evaluate_train_targets(run: dict, targets=TRAIN_TARGETS, selected=_official) -> list[dict]:
    """One result per target and precision (a target with precision None covers every precision run)."""
    out = []
    for t in targets:
        found = {}
        for doc in run["train"]:
            if not selected(doc):
                continue
            for r in doc.get("rows", []):
                if (r.get("variant") == "ext" and r.get("res") == t["res"]
                        and t["precision"] in (None, r.get("precision")) and r.get("speedup_vs_reference") is not None):
                    found[r.get("precision")] = r
        if not found:
            out.append({"case": t["case"], "target": f">= {t['threshold']}x eager img/s", "worst": None,
                        "verdict": "no data", "precision": t["precision"] or "-"})
        for prec, r in sorted(found.items()):
            v = r["speedup_vs_reference"]
            verdict = "met" if v >= t["threshold"] else f"missed by {100 * (1 - v / t['threshold']):.0f}%"
            if str(r.get("backend", "")).startswith("reference"):
                verdict += " (ext not compiled: reference fallback)"
            out.append({"case": t["case"], "target": f">= {t['threshold']}x eager img/s", "worst": v,
                        "verdict": verdict, "layout": r.get("layout"), "precision": prec})
    return out


# ----------------------------------------------------------------------------------------------
# Rendering.


def _f(v, kind="g"):
    return common.fmt_num(v, kind)


def _prov_line(run) -> dict:
    p = run["provenance"] or {}
    git = p.get("git") or {}
    gpu = p.get("gpu") or {}
    ext = (p.get("progan_ext") or {}).get("backend_info") or {}
    dev = "cuda" if gpu.get("available") else "cpu"
    cpu = p.get("cpu") or {}
    cpu_name = (f"CPU {cpu.get('model') or '?'}, {p.get('cpu_threads', '?')} threads"
                + (f", load avg at start {cpu['loadavg'][0]:.1f}" if cpu.get("loadavg") else ""))
    return {
        "device": gpu.get("name") if gpu.get("available") else cpu_name,
        "date": p.get("suite_started_utc") or p.get("date_utc") or "?",
        "commit": (git.get("commit") or "?")[:10],
        "dirty": {True: "yes", False: "no"}.get(git.get("dirty"), "?"),
        "gpu": gpu.get("name") or "none", "driver": gpu.get("driver") or "-",
        "torch": p.get("torch") or "?", "cuda": p.get("torch_cuda") or "-",
        "backend": common.backend_kinds(ext, dev) if ext else "?",
    }


def stage_counts(run) -> str:
    st = run["stages"]
    if not st:
        return "-"
    passed = sum(s["status"] == "pass" for s in st)
    ran = sum(s["status"] in ("pass", "fail", "timeout") for s in st)
    return f"{passed}/{ran} passed" + (f", {len(st) - ran} skipped" if len(st) > ran else "")


def target_table(targets, ttargets) -> str:
    rows = [[t["case"], t["target"], t["group"], _f(t["worst"], "pct" if t.get("metric") == "pct_copy" else "x"),
             t["where"], f"{t.get('below', 0)}/{t['rows']}", t["verdict"]] for t in targets]
    rows += [[t["case"], t["target"], f"{t.get('precision') or ''} {t.get('layout') or ''}".strip(), _f(t["worst"], "x"),
              "ext vs reference", "-", t["verdict"]] for t in ttargets]
    return common.markdown_table(["case", "target", "dtype layout mode", "worst measured", "at", "rows below / rows",
                                  "verdict"], rows)


def render_run(run) -> str:
    pl = _prov_line(run)
    p = run["provenance"] or {}
    lines = [f"## {run['name']}", ""]
    driver = f" (driver {pl['driver']})" if pl["gpu"] != "none" else ""
    lines.append(f"Commit `{pl['commit']}` (dirty: {pl['dirty']}), {pl['device']}{driver}, "
                 f"torch {pl['torch']}, CUDA {pl['cuda']}, python {p.get('python', '?')}, started {pl['date']}. "
                 f"`ext` ops ran as: {pl['backend']}.")
    if p.get("suite_command"):
        lines.append(f"Command: `{p['suite_command']}`.")
    lines.append("")
    if run["stages"]:
        lines.append("### Suite stages")
        lines.append("")
        rows = [[s["stage"], s["status"], "" if s["exit_code"] is None else s["exit_code"], _f(s["seconds"], "int"),
                 _f(s["time_limit_s"], "int"), s["log"] or "-"] for s in run["stages"]]
        lines += [common.markdown_table(["stage", "status", "exit", "s", "limit s", "log"], rows), ""]
    docs = run["ops"] + run["train"]
    if any(_cpu(d) for d in docs):
        lines += ["### Issue 11 targets (CPU)", "",
                  "Worst row per dtype, layout and mode (`x eager` = eager ms / ext ms, `x reference` = ext img/s / "
                  "reference img/s; interleaved medians of one run).", ""]
        lines += [target_table(evaluate_op_targets(run, CPU_OP_TARGETS, _cpu),
                               evaluate_train_targets(run, CPU_TRAIN_TARGETS, _cpu)), ""]
    if not any(_cpu(d) for d in docs) or any(_official(d) for d in docs):
        lines += ["### Issue 6 targets", ""]
        if not any(_official(d) for d in docs):
            lines += ["No run at the official ProGAN shapes here (quick or overridden shapes): targets not evaluated.",
                      ""]
        else:
            lines += [target_table(evaluate_op_targets(run), evaluate_train_targets(run)), ""]
    for doc in run["train"]:
        lines += [f"### Training step ({doc['_file']})", ""]
        if doc.get("status"):
            lines += [f"{doc['status']}", ""]
        rows = [[r["res"], _f(r.get("alpha")), r.get("batch"), r["precision"], r.get("layout", "-"), r["variant"],
                 _f(r.get("ms")), _f(r.get("img_per_s")), _f(r.get("speedup_vs_reference"), "x"),
                 _f(r.get("first_step_s")), r["status"]] for r in doc.get("rows", [])]
        if rows:
            lines += [common.markdown_table(["res", "alpha", "batch", "prec", "layout", "variant", "step ms", "img/s",
                                             "x reference", "first step s", "status"], rows), ""]
    for doc in run["ops"]:
        rows = doc.get("rows", [])
        done = [r for r in rows if not r.get("status", "").startswith(("skipped", "pending"))]
        lines += [f"### Ops ({doc['_file']}): {len(done)} of {len(rows)} rows measured"
                  + ("" if doc.get("complete") else " (incomplete: time budget or killed)"), ""]
        ceil = doc.get("ceilings")
        if ceil:
            mm = ", ".join(f"{k} {v['TFLOPs']:.4g}" for k, v in ceil["matmul"].items()
                           if isinstance(v, dict) and "TFLOPs" in v)
            lines += [f"Ceilings measured at the start of this file's run (the %copy and %mm columns use them): "
                      f"copy {ceil['copy']['GBps']:.4g} GB/s (read + write), n={ceil['matmul']['n']} matmul "
                      f"TFLOP/s: {mm}.", ""]
        lines += ["<details><summary>all rows</summary>", ""]
        table = []
        for r in done:
            c = r.get("contenders", {})
            table.append([r["op"], r["res"], f"{r['n']}x{r['cin']}>{r['cout']}", r["dtype"], r["layout"], r["mode"],
                          _f(c.get("ext", {}).get("ms")), _f(c.get("eager", {}).get("ms")),
                          _f(c.get("compile", {}).get("ms")), _f(r.get("speedup_vs_eager"), "x"),
                          _f(r.get("speedup_vs_compile"), "x"), _f(r.get("gbps")), _f(r.get("pct_copy"), "pct"),
                          _f(r.get("tflops")), _f(r.get("pct_matmul"), "pct"), r.get("status", "?")])
        lines += [common.markdown_table(["op", "res", "N x Cin>Cout", "dtype", "layout", "mode", "ext ms", "eager ms",
                                         "compile ms", "x eager", "x compile", "GB/s", "%copy", "TFLOP/s", "%mm",
                                         "status"], table), "", "</details>", ""]
    return "\n".join(lines)


def render_summary(runs) -> str:
    head = [
        "# progan_ext benchmark results", "",
        "Generated by `benchmarks/summarize.py` from the run folders in this directory, each written by",
        "`benchmarks/run_gpu_suite.sh` (GPU) or `benchmarks/run_cpu_suite.sh` (CPU) on the machine named in it.",
        "Do not edit by hand; see `benchmarks/README.md` for how to reproduce every number and what each column",
        "means, and `benchmarks/NOTES.md` for what was profiled and changed.", "",
    ]
    if not runs:
        return "\n".join(head + ["No runs yet: results appear here only from real runs of the suite.", ""])
    rows = []
    for run in runs:
        pl = _prov_line(run)
        rows.append([run["name"], pl["date"], pl["commit"], pl["dirty"], pl["device"], pl["driver"], pl["torch"],
                     pl["cuda"], pl["backend"], stage_counts(run)])
    head += ["## Runs (newest first)", "",
             common.markdown_table(["run", "date", "commit", "dirty", "device", "driver", "torch", "CUDA",
                                    "ext ops", "stages"], rows), ""]
    return "\n".join(head + [render_run(r) for r in runs])


def print_run(run) -> None:
    """The short text summary run_gpu_suite.sh prints last."""
    pl = _prov_line(run)
    print()
    print(f"==== SUMMARY {run['name']}: commit {pl['commit']} (dirty {pl['dirty']}), {pl['gpu']}, torch {pl['torch']}, "
          f"ext ops: {pl['backend']}")
    t = common.StreamTable([("stage", "stage", 14, "s"), ("status", "status", 46, "s"), ("exit", "exit", 4, "s"),
                            ("seconds", "s", 5, "int"), ("limit", "limit", 5, "int")])
    t.header()
    for s in run["stages"]:
        t.row({"stage": s["stage"], "status": s["status"], "exit": "" if s["exit_code"] is None else str(s["exit_code"]),
               "seconds": s["seconds"], "limit": s["time_limit_s"]})
    for doc in run["ops"]:
        rows = doc.get("rows", [])
        meas = [r for r in rows if not r.get("status", "").startswith(("skipped", "pending"))]
        bad = [r for r in meas if r.get("status") != "ok"]
        sp = [r["speedup_vs_eager"] for r in meas if r.get("speedup_vs_eager")]
        geo = math.exp(sum(math.log(v) for v in sp) / len(sp)) if sp else None
        print(f"{doc['_file']}: {len(meas)}/{len(rows)} rows, {len(bad)} with failure/mismatch; ext vs eager "
              f"geomean {_f(geo, 'x')}, min {_f(min(sp) if sp else None, 'x')}, max {_f(max(sp) if sp else None, 'x')}")
    for doc in run["train"]:
        for r in doc.get("rows", []):
            print(f"train {r['res']}^2 {r['precision']} {r['variant']:18s} {_f(r.get('img_per_s'))} img/s "
                  f"({_f(r.get('speedup_vs_reference'), 'x')} reference) {r['status']}")
        if doc.get("status"):
            print(f"train: {doc['status'][:200]}")
    docs = run["ops"] + run["train"]
    for issue, selected, op_t, train_t in (("issue 6", _official, OP_TARGETS, TRAIN_TARGETS),
                                           ("issue 11 (CPU)", _cpu, CPU_OP_TARGETS, CPU_TRAIN_TARGETS)):
        if not any(selected(d) for d in docs):
            continue
        tt = common.StreamTable([("case", f"{issue} target", 60, "s"), ("group", "dtype layout mode", 26, "s"),
                                 ("worst", "worst", 7, "s"), ("verdict", "verdict", 30, "s")])
        tt.header()
        for x in evaluate_op_targets(run, op_t, selected) + evaluate_train_targets(run, train_t, selected):
            kind = "pct" if x.get("metric") == "pct_copy" else "x"
            tt.row({"case": f"{x['case'][:34]}: {x['target']}", "group": x.get("group") or x.get("precision", "-"),
                    "worst": _f(x["worst"], kind), "verdict": x["verdict"]})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Generate SUMMARY.md from GPU-suite run folders.")
    p.add_argument("--results-dir", type=Path, default=RESULTS, help="folder of run folders (default benchmarks/results)")
    p.add_argument("--runs", type=Path, nargs="+", default=None, help="summarise these run folders instead")
    p.add_argument("--out", type=Path, default=None, help="default: <results-dir>/SUMMARY.md")
    p.add_argument("--print-run", type=Path, default=None, help="print this run folder's short summary")
    p.add_argument("--no-write", action="store_true", help="do not write SUMMARY.md")
    args = p.parse_args(argv)
    if args.runs is None and not args.results_dir.is_dir():
        p.error(f"--results-dir {args.results_dir} is not a folder")
    dirs = args.runs if args.runs is not None else find_runs(args.results_dir)
    for d in dirs:
        if not d.is_dir():
            p.error(f"run folder {d} does not exist")
    runs = [load_run(d) for d in dirs]
    if not args.no_write:
        out = args.out or args.results_dir / "SUMMARY.md"
        out.write_text(render_summary(runs))
        print(f"wrote {out} ({len(runs)} run(s))")
    if args.print_run:
        if not args.print_run.is_dir():
            p.error(f"--print-run {args.print_run} is not a folder")
        print_run(load_run(args.print_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
