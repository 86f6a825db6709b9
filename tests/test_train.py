"""Trainer CLI end to end (tiny configs, in-process), resume equivalence, bad arguments, NaN, Ctrl-C."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import subprocess_env
from PIL import Image

from progan_ext.train import main
from progan_ext.training import checkpoint, loop

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TINY = ["--resolution", "8", "--fmap-max", "8", "--latent-size", "16", "--batch", "8", "--procedural-images", "64",
        "--kimg-stable", "0.064", "--kimg-fade", "0.064", "--snapshot-kimg", "0.064", "--grid", "16",
        "--no-progress", "--workers", "0"]


def run(tmp_path, *extra, name="run"):
    run_dir = tmp_path / name
    rc = main(TINY + ["--run-dir", str(run_dir), *extra])
    return rc, run_dir


def test_cli_end_to_end_two_resolutions_with_fade(tmp_path):
    rc, run_dir = run(tmp_path)
    assert rc == 0
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["resolution"] == 8 and cfg["fmap_max"] == 8 and cfg["G_params"] > 0
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    phases = {(r.get("resolution"), r.get("phase")) for r in records}
    assert {(4, "stable"), (8, "fade"), (8, "stable")} <= phases
    fade_alphas = [r["alpha"] for r in records if r.get("phase") == "fade"]
    assert all(0 < a < 1 for a in fade_alphas)
    assert records[-1]["event"] == "done" and records[-1]["kimg"] >= 0.192
    assert all(map(lambda r: all(v == v for v in r.values() if isinstance(v, float)), records))  # no NaN
    pngs = sorted(run_dir.glob("*.png"))
    assert {p.name for p in pngs} >= {"stage-00-4x4-stable.png", "stage-01-8x8-fade.png", "stage-02-8x8-stable.png"}
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
    ckpts = checkpoint.list_checkpoints(run_dir)
    assert 1 <= len(ckpts) <= 3  # --keep-checkpoints default 3; 3 snapshots + final
    state = checkpoint.load(run_dir)
    assert state["nimg"] == 192 and state["resolution"] == 8 and state["alpha"] == 1.0
    assert not list(run_dir.glob("*.tmp*"))  # atomic writes left no temp files


def _states_equal(a, b):
    for key in ("G", "D", "G_ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    for key in ("opt_g", "opt_d"):
        sa, sb = a[key]["state"], b[key]["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            for k in sa[i]:
                assert torch.equal(sa[i][k], sb[i][k]), f"{key} state {i}.{k} differs"
    for k in ("nimg", "step", "data_pos", "opt_resolution"):
        assert a[k] == b[k]
    assert torch.equal(a["rng"][0]["cpu"], b["rng"][0]["cpu"])


def test_resume_is_bitwise_identical(tmp_path):
    # 10 steps of 8 images = 80 images: crosses 4x4 stable (64) into the 8x8 fade-in; mirror on.
    extra = ["--mirror", "--kimg-stable", "0.04", "--kimg-fade", "0.08", "--snapshot-kimg", "1"]
    rc, straight = run(tmp_path, *extra, "--max-steps", "10", name="straight")
    assert rc == 0
    rc, split = run(tmp_path, *extra, "--max-steps", "5", name="split")
    assert rc == 0
    assert checkpoint.load(split)["step"] == 5
    assert main(["--resume", str(split), "--max-steps", "5", "--no-progress", "--workers", "0"]) == 0
    a, b = checkpoint.load(straight), checkpoint.load(split)
    assert a["step"] == b["step"] == 10 and a["resolution"] == 8 and 0 < a["alpha"] < 1
    _states_equal(a, b)  # tolerance: none, bitwise equal on CPU


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "/nonexistent/dir"], "does not exist"),
        (["--resolution", "12"], "power of two"),
        (["--resolution", "2048"], "power of two"),
        (["--batch", "6"], "not divisible by the minibatch-stddev group"),
        (["--batch", "4:8,8:6"], "not divisible"),
        (["--batch", "x"], "expected a value"),
        (["--kimg-fade", "-1"], "must be positive"),
        (["--impl", "cuda"], "invalid choice"),
    ],
)
def test_bad_arguments_clear_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(TINY + ["--run-dir", str(tmp_path / "r")] + args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_empty_data_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(SystemExit):
        main(TINY + ["--data", str(tmp_path / "empty")])
    assert "no images found" in capsys.readouterr().err


def test_nan_stops_with_message_and_keeps_last_checkpoint(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = loop.losses.g_loss_wgan

    def poisoned(D, fakes, resolution, alpha=1.0):
        calls["n"] += 1
        out = real(D, fakes, resolution=resolution, alpha=alpha)
        return out * float("nan") if calls["n"] >= 12 else out

    monkeypatch.setattr(loop.losses, "g_loss_wgan", poisoned)
    rc, run_dir = run(tmp_path)
    assert rc == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "loss_g=nan" in err and "checkpoint-000000064.pt" in err
    state = checkpoint.load(run_dir)  # still the good one from 64 images
    assert state["nimg"] == 64
    assert all(torch.isfinite(v).all() for v in state["G"].values())
    assert json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])["event"] == "diverged"


def test_ctrl_c_writes_checkpoint_and_exits_cleanly(tmp_path, monkeypatch):
    real_step, calls = loop.train_step, {"n": 0}

    def step_then_sigint(*a, **k):
        calls["n"] += 1
        out = real_step(*a, **k)
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_sigint)
    before = signal.getsignal(signal.SIGINT)
    rc, run_dir = run(tmp_path)
    assert rc == loop.EXIT_INTERRUPTED
    state = checkpoint.load(run_dir)
    assert state["step"] == 3 and state["nimg"] == 24
    assert json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])["event"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_module_entry_point_runs(tmp_path):
    env = subprocess_env(PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-m", "progan_ext.train", *TINY, "--run-dir", str(tmp_path / "m"),
                          "--max-steps", "2"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "G " in out.stdout and "parameters" in out.stdout
    assert checkpoint.load(tmp_path / "m")["step"] == 2


@pytest.mark.parametrize("impl", ["reference", "ext"])
def test_bf16_channels_last_smoke(tmp_path, impl):
    rc, run_dir = run(tmp_path, "--amp", "bf16", "--channels-last", "--impl", impl, "--max-steps", "10")
    assert rc == 0
    state = checkpoint.load(run_dir)
    assert state["config"]["amp"] == "bf16" and state["step"] == 10 and state["resolution"] == 8
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state["G"].values())
