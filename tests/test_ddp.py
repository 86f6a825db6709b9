"""Data-parallel training with 2 CPU processes on the gloo backend, launched through torchrun."""

import json
import subprocess
import sys

import pytest

from conftest import subprocess_env

from progan_ext.training import checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

ARGS = ["--resolution", "8", "--fmap-max", "8", "--latent-size", "16", "--batch", "8", "--procedural-images", "64",
        "--kimg-stable", "0.032", "--kimg-fade", "0.032", "--snapshot-kimg", "0.032", "--no-progress",
        "--workers", "0", "--device", "cpu"]


def torchrun(*args, cwd):
    env = subprocess_env(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "progan_ext.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, cwd=cwd)


def test_two_gloo_processes_train_resume_and_stay_in_sync(tmp_path):
    run = tmp_path / "ddp"
    out = torchrun(*ARGS, "--run-dir", str(run), "--max-steps", "6", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert out.stdout.count("run directory:") == 1  # only rank 0 writes
    state = checkpoint.load(run)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert state["step"] == 6 and state["nimg"] == 48  # global batch 8 = 2 x 4
    g_sums, d_sums = zip(*state["rank_param_checksums"])
    assert g_sums[0] == g_sums[1] and d_sums[0] == d_sums[1]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    # resume in 2 processes and finish the schedule (4 stable, 8 fade, 8 stable = 96 images)
    out = torchrun("--resume", str(run), "--no-progress", "--workers", "0", "--device", "cpu", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    state = checkpoint.load(run)
    assert state["nimg"] == 96 and state["resolution"] == 8
    g_sums, d_sums = zip(*state["rank_param_checksums"])
    assert g_sums[0] == g_sums[1] and d_sums[0] == d_sums[1]
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["event"] == "done"


def test_batch_must_split_over_processes(monkeypatch, capsys):
    # parse-time check, as torchrun sets WORLD_SIZE before the trainer parses its flags
    from progan_ext.training.config import parse_args

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        parse_args(ARGS + ["--batch", "7"])
    assert "batch 7 at 4x4 must be a positive multiple of the 2 processes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(ARGS + ["--batch", "10"])  # 5 per process, group min(4, 5) = 4
    assert "not divisible by the minibatch-stddev group" in capsys.readouterr().err
