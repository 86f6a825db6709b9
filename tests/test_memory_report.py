"""tools/memory_report.py without the memory-tracing build: its floor checks (efficiency, bank
conflicts, busy lanes) and its before/after section, on hand-made kernel traces whose numbers are
known. The report on the real kernels runs in CI (`python tools/memory_report.py --check`)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("memory_report", ROOT / "tools" / "memory_report.py")
mr = importlib.util.module_from_spec(_spec)
sys.modules["memory_report"] = mr  # dataclasses look their module up by name
_spec.loader.exec_module(mr)
mt = mr.memory_trace


def totals(requests, lanes, units, ideal, degree=0):
    return mt.Totals(requests=requests, lanes=lanes * requests, bytes=ideal * 32, units=units, ideal=ideal,
                     max_degree=degree)


def row(kernel, load, store, shared=None, op="pixel_norm", layout="NHWC"):
    case = mr.Case(op, "a layer", (2, 16, 16, 16), None)
    k = mt.KernelTrace(kernel, 1, 1, load, store, shared or mt.Totals(), mt.Totals(), sites=[])
    return mr.Row(case, "fp32", layout, k, out_elems=2 * 16 * 16 * 16)


def test_every_floor_is_a_floor():
    for prefix, f in mr.FLOORS.items():
        assert 0 < f.efficiency <= 1 and f.conflict >= 1 and 0 <= f.lanes <= 32, prefix
        if f.efficiency < 0.9:  # below the target: says why, or that it is a gap
            assert any(w in f.why for w in ("SHORT", "inherent", "negligible")), prefix
        if f.conflict > 1 or f.degree > 1:  # bank conflicts allowed: says which accesses and how many ways
            assert "-way" in f.why, prefix


def test_longest_prefix_wins():
    assert mr.floor_for("pixel_norm_rows_kernel<scalar_t, VEC, kBackward>") is \
        mr.FLOORS["pixel_norm_rows_kernel<scalar_t, "]
    assert mr.floor_for("norm_pass_rows_kernel<scalar_t>") is mr.FLOORS["norm_pass_rows_kernel"]
    assert mr.floor_for("no_such_kernel") is None


def test_check_passes_a_coalesced_kernel_with_busy_lanes():
    good = row("pixel_norm_rows_kernel<scalar_t, VEC, kBackward>", totals(4, 32, 64, 64), totals(4, 32, 64, 64))
    assert mr.check([good]) == []


@pytest.mark.parametrize("load, store, shared, wanted", [
    # a lane per sector: 12.5% efficiency
    (totals(4, 32, 512, 64), totals(4, 32, 64, 64), None, "global efficiency"),
    # whole sectors but 4 of 32 lanes busy: the pixel_norm row kernel before the lane groups
    (totals(32, 4, 64, 64), totals(32, 4, 64, 64), None, "active lanes"),
    # a 4-way bank conflict in a kernel whose floor allows none
    (totals(4, 32, 64, 64), totals(4, 32, 64, 64), totals(4, 32, 16, 4, degree=4), "shared wavefronts"),
])
def test_check_fails_each_floor(load, store, shared, wanted):
    bad = row("pixel_norm_rows_kernel<scalar_t, VEC, kBackward>", load, store, shared)
    failures = mr.check([bad])
    assert wanted in failures[0], failures
    if wanted == "shared wavefronts":  # also the worst request's degree
        assert len(failures) == 2 and "4-way shared bank conflict > floor 1-way" in failures[1], failures
    else:
        assert len(failures) == 1, failures


def test_a_kernel_without_a_floor_fails():
    new = row("brand_new_kernel<T>", totals(4, 32, 64, 64), totals(4, 32, 64, 64))
    assert ["no floor" in f for f in mr.check([new])] == [True]


def test_before_after_pairs_renamed_kernels():
    before = row("pixel_norm_rows_kernel<scalar_t>", totals(8, 32, 256, 32), totals(8, 32, 256, 32),
                 op="eq_conv2d 3x3 + pixel norm")
    after = row("norm_pass_rows_kernel<scalar_t>", totals(8, 32, 32, 32), totals(8, 32, 32, 32),
                op="eq_conv2d 3x3 + pixel norm")
    other = row("stddev_partial_kernel<scalar_t>", totals(8, 32, 32, 32), totals(8, 32, 32, 32),
                op="eq_conv2d 3x3 + pixel norm")
    baseline = {"commit": "0" * 40, "dirty": False, "date": "2026-12-04T00:00Z", "torch": "2.14.1",
                "command": "python tools/memory_report.py --save-baseline x.json",
                "rows": [mr.measurement(before), mr.measurement(other)]}
    json.dumps(baseline)  # what --save-baseline writes must be JSON
    text = "\n".join(mr.before_after([after, other], baseline))
    line = next(ln for ln in text.splitlines() if "norm_pass_rows_kernel" in ln)
    assert "`pixel_norm_rows_kernel<scalar_t>` -> `norm_pass_rows_kernel<scalar_t>`" in line
    assert "12% (32.0, 32) -> 100% (4.0, 32)" in line, line
    assert "stddev_partial_kernel" not in text  # not one of the fixes
    assert mr.before_after([after], None) == []


def test_committed_baseline_is_measured_before_the_fixes():
    """The committed 'before' is a real run of this tool (provenance present) that holds a row for
    every fix's old kernel."""
    base = json.loads(mr.BASELINE.read_text())
    assert len(base["commit"]) == 40 and base["command"].startswith("python tools/memory_report.py")
    for fix in mr.FIXES:
        assert any(r["kernel"].startswith(fix.before) for r in base["rows"]), fix.title
