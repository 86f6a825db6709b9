"""The roofline model (benchmarks/roofline.py): hand-checked counts, invariants of every row, agreement
with bench_ops.py's minimal counts, and the README section it generates (so that cannot go stale).

Pure arithmetic on shapes: no GPU and no compiled extension needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
try:
    import bench_ops  # noqa: E402
    import common  # noqa: E402
    import roofline  # noqa: E402
finally:
    sys.path.remove(str(BENCH))

ROWS = roofline.network_layers()


def find(net, res, prefix):
    (row,) = [r for r in ROWS if r.net == net and r.res == res and r.layer.startswith(prefix)]
    return row


def test_readme_section_is_what_the_script_generates():
    text = roofline.README.read_text()
    assert roofline.current_section(text) == roofline.readme_section(ROWS), (
        "benchmarks/README.md's roofline section is stale: run python benchmarks/roofline.py --write-readme")
    assert "MODEL, not a measurement" in roofline.current_section(text)


def test_d_conv3x3_at_8_by_hand():
    """D's 3x3 eq_conv2d at 8^2: N=128, 512 -> 512, bias + leaky ReLU."""
    r = find("D", 8, "eq_conv2d 3x3")
    n, c, h = 128, 512, 8
    x, w, b, y = n * c * h * h, c * c * 9, c, n * c * h * h
    macs = n * h * h * c * c * 9
    assert (r.n, r.cin, r.cout) == (n, c, c) and r.fused_macs == r.eager_macs == macs
    assert r.total("fused", "fwd", "flops") == 2 * macs + 2 * y  # bias 1 + lrelu 1 per output
    assert r.total("fused", "fwd", "bytes", "bf16") == 2 * (x + w + b + y)
    assert r.total("fused", "fwd", "bytes", "fp32") == 4 * (x + w + b + y)
    # Eager: w * scale, conv, in-place bias add, leaky ReLU.
    assert [k.name for k in r.eager["fwd"]] == ["w * scale", "conv (cuDNN)", "bias add (in place)", "leaky ReLU"]
    assert r.total("eager", "fwd", "bytes", "bf16") == 2 * (2 * w + (x + w + y) + (2 * y + b) + 2 * y)
    # 19.3 GFLOP at 989 TFLOP/s (19.5 us) beats 2*(x+w+b+y) = 13.1 MB at 3.35 TB/s (3.9 us): compute bound.
    assert r.seconds("fused", "fwd", "bf16") == pytest.approx((2 * macs + 2 * y) / 989e12)
    assert r.fused_limit("fwd", "bf16") == "compute"
    eager_s = 2 * 2 * w / 3.35e12 + 2 * macs / 989e12 + 2 * (2 * y + b) / 3.35e12 + 2 * 2 * y / 3.35e12 + 0
    assert r.seconds("eager", "fwd", "bf16") == pytest.approx(eager_s)
    assert r.bound("fwd", "bf16") == pytest.approx(eager_s / ((2 * macs + 2 * y) / 989e12))


def test_upsample_at_1024_by_hand():
    """G's upsample_conv2d at 1024^2: N=4, 32 -> 16 channels, 512^2 -> 1024^2, memory bound."""
    r = find("G", 1024, "upsample_conv2d")
    x, w, b, y = 4 * 32 * 512 * 512, 16 * 32 * 9, 16, 4 * 16 * 1024 * 1024
    assert r.fused_macs == y * 32 * 4 and r.eager_macs == y * 32 * 9
    assert r.total("fused", "fwd", "bytes", "bf16") == 2 * (x + w + b + y)
    assert r.seconds("fused", "fwd", "bf16") == pytest.approx(2 * (x + w + b + y) / 3.35e12)
    up = r.eager["fwd"][0]
    assert up.name.startswith("nearest upsample") and (up.read, up.write) == (x, 4 * x)  # stored ...
    conv = [k for k in r.eager["fwd"] if k.name.startswith("conv")][0]
    assert conv.read == 4 * x + w  # ... and re-read by the conv


@pytest.mark.parametrize("mode", roofline.MODES)
def test_fused_never_moves_or_computes_more_than_eager(mode):
    for r in ROWS:
        for dt in roofline.DTYPES:
            assert r.total("fused", mode, "bytes", dt) <= r.total("eager", mode, "bytes", dt), (r.layer, r.res)
            assert r.seconds("fused", mode, dt) <= r.seconds("eager", mode, dt), (r.layer, r.res)
        assert r.total("fused", mode, "flops") <= r.total("eager", mode, "flops"), (r.layer, r.res)


def test_todays_backward_is_never_below_the_fused_bound():
    for r in ROWS:
        assert r.today["fwd"] == r.fused["fwd"]
        for dt in roofline.DTYPES:
            assert r.seconds("today", "fwdbwd", dt) >= r.seconds("fused", "fwdbwd", dt), (r.layer, r.res)
    up = find("G", 1024, "upsample_conv2d")
    assert [k.name for k in up.today["fwdbwd"]] == [
        "fused conv + epilogue", "pixel_norm_backward_from_output(g, y, r)", "bias_act_backward",
        "bias grad (sum)", "weight flip (adjoint kernel)", "grad input (conv2d_resample)",
        "grad weight (conv2d_resample_grad_weight)"]


def test_resampling_convs_do_2_25x_fewer_macs():
    rows = [r for r in ROWS if r.op in ("upsample_conv2d", "conv2d_downsample")]
    assert len(rows) == 16
    for r in rows:
        assert r.eager_macs * 4 == r.fused_macs * 9
        fused_conv = r.fused["fwd"][0].flops - (5 if r.op == "upsample_conv2d" else 2) * r.n * r.cout * (
            r.res if r.op == "upsample_conv2d" else r.res // 2) ** 2
        eager_conv = [k.flops for k in r.eager["fwd"] if k.name.startswith("conv")][0]
        assert fused_conv * 9 == eager_conv * 4


def test_every_layer_of_the_official_networks():
    nf, batch = common.nf, common.DEFAULT_BATCH
    for res in common.RESOLUTIONS:
        g = [r for r in ROWS if r.net == "G" and r.res == res]
        d = [r for r in ROWS if r.net == "D" and r.res == res]
        assert all(r.n == batch[res] for r in g + d)
        if res == 4:
            assert [r.op for r in g] == ["pixel_norm", "linear", "eq_conv2d", "eq_conv2d"]
            assert [r.op for r in d] == ["eq_conv2d", "minibatch_stddev", "eq_conv2d", "linear", "linear"]
            assert find("D", 4, "eq_conv2d 3x3").cin == 513  # minibatch stddev's extra channel
        else:
            assert [(r.op, r.cin, r.cout) for r in g] == [
                ("upsample_conv2d", nf(res // 2), nf(res)), ("eq_conv2d", nf(res), nf(res)), ("eq_conv2d", nf(res), 3)]
            assert [(r.op, r.cin, r.cout) for r in d] == [
                ("eq_conv2d", 3, nf(res)), ("eq_conv2d", nf(res), nf(res)),
                ("conv2d_downsample", nf(res), nf(res // 2))]


BENCH_VARIANT = {("G", "upsample_conv2d"): "upsample_conv2d", ("G", "eq_conv2d 3x3"): "eq_conv2d_k3",
                 ("G", "toRGB"): "eq_conv2d_k1_torgb", ("D", "fromRGB"): "eq_conv2d_k1_fromrgb",
                 ("D", "conv2d_downsample"): "conv2d_downsample", ("op", "pixel_norm"): "pixel_norm",
                 ("op", "minibatch_stddev"): "minibatch_stddev", ("op", "bias_act"): "bias_act"}


def test_fused_counts_agree_with_bench_ops():
    """The fused forward is bench_ops.py's minimal row (bytes and FLOPs), the fused fwd+bwd has its FLOPs."""
    checked = 0
    for r in ROWS:
        name = next((v for (net, pre), v in BENCH_VARIANT.items() if r.net == net and r.layer.startswith(pre)), None)
        if name is None:
            continue
        v = bench_ops.VARIANTS[name]
        s = v.shape(r.res, r.n, common.nf)
        assert r.total("fused", "fwd", "bytes", "bf16") == bench_ops.count_bytes(v, s, "fwd", 2), (name, r.res)
        for mode in roofline.MODES:
            assert r.total("fused", mode, "flops") == bench_ops.count_flops(v, s, mode), (name, r.res, mode)
        checked += 1
    assert checked == 8 + 9 + 9 + 9 + 8 + 3 * 9  # up, G 3x3, toRGB, fromRGB, down; the standalone ops


def test_targets_come_from_summarize_and_cover_rows():
    t = {x["case"]: x for x in roofline.target_bounds(ROWS)}
    up = t["upsample_conv2d + epilogue, 512^2/32ch and 1024^2/16ch"]
    assert up["threshold"] == 3.0 and up["rows"] == 2
    lo, hi = up["bf16"]
    rows = [find("G", res, "upsample_conv2d") for res in (512, 1024)]
    assert lo == min(r.bound(m, "bf16") for r in rows for m in roofline.MODES)
    assert hi == max(r.bound(m, "bf16") for r in rows for m in roofline.MODES)
    assert all(x["rows"] > 0 for x in t.values())


def test_script_writes_json_and_refuses_a_readme_from_a_variant(tmp_path, capsys):
    out = tmp_path / "roofline.json"
    assert roofline.main(["--out", str(out)]) == 0
    assert "not a measurement" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["schema"] == "progan_ext.roofline/1" and "not a measurement" in doc["model"]
    assert len(doc["rows"]) == len(ROWS)
    assert doc["rows"][0]["fwd"]["fused"]["kernels"]
    with pytest.raises(SystemExit) as e:
        roofline.main(["--write-readme", "--eager-pixel-norm", "one-pass"])
    assert e.value.code == 2
    one = roofline.network_layers("one-pass")
    assert all(a.bound("fwd", "bf16") <= b.bound("fwd", "bf16") + 1e-12 for a, b in zip(one, ROWS))
