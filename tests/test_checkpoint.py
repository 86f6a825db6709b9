"""Checkpoints that cannot hurt: safe loading, unreadable files, one-line CLI errors, SIGKILL + resume."""

import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import subprocess_env
from progan_ext.generate import main as generate_main
from progan_ext.metrics import main as metrics_main
from progan_ext.train import main as train_main
from progan_ext.training import checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TINY = ["--resolution", "8", "--fmap-max", "8", "--latent-size", "16", "--batch", "8", "--procedural-images", "64",
        "--grid", "4", "--no-progress", "--no-tensorboard", "--workers", "0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run with three checkpoints (64, 128, 192 images)."""
    run = tmp_path_factory.mktemp("ckpt") / "run"
    assert train_main(TINY + ["--kimg-stable", "0.064", "--kimg-fade", "0.064", "--snapshot-kimg", "0.064",
                              "--run-dir", str(run)]) == 0
    assert [p.name for p in checkpoint.list_checkpoints(run)] == [
        "checkpoint-000000064.pt", "checkpoint-000000128.pt", "checkpoint-000000192.pt"]
    return run


def _copy_run(run_dir, dest):
    dest.mkdir()
    for p in run_dir.iterdir():
        if p.is_file():
            (dest / p.name).write_bytes(p.read_bytes())
    return dest


class _Payload:
    """Stands for code hidden in a pickle: unpickling it would create a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_is_plain_data_and_loads_weights_only(run_dir):
    path = checkpoint.list_checkpoints(run_dir)[-1]
    state = torch.load(path, weights_only=True)  # raises if anything in it needs code to build
    assert state["nimg"] == 192 and isinstance(state["config"], dict)
    assert all(isinstance(v, torch.Tensor) for v in state["G_ema"].values())


def test_pickle_with_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "checkpoint-000000064.pt"
    torch.save({"config": {}, "G": {}, "D": {}, "G_ema": {}, "nimg": 0, "resolution": 4, "alpha": 1.0,
                "x": _Payload(str(marker))}, bad)
    with pytest.raises(checkpoint.CheckpointError, match="unsafe load could build; refused"):
        checkpoint.load(bad)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "tensor", "pickle", "empty_dir"])
def test_every_cli_rejects_a_bad_checkpoint_with_one_line(run_dir, tmp_path, capsys, kind):
    good = checkpoint.list_checkpoints(run_dir)[-1]
    path = tmp_path / "checkpoint-000000999.pt"
    if kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "tensor":
        torch.save(torch.randn(3), path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"config": 1}))
    elif kind == "empty_dir":
        path = tmp_path / "empty_run"
        path.mkdir()
    capsys.readouterr()
    codes = [
        train_main(["--resume", str(path), "--no-progress"]),
        generate_main([str(path), "--grid", str(tmp_path / "g.png")]),
        metrics_main([str(path), "--num", "8"]),
    ]
    err = capsys.readouterr().err
    assert codes == [2, 2, 2], err
    lines = err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), err
    assert all(str(path) in line for line in lines), err
    assert not (tmp_path / "g.png").exists()


def test_resume_skips_truncated_newest_checkpoint(run_dir, tmp_path, capsys):
    run = _copy_run(run_dir, tmp_path / "run")
    newest = run / "checkpoint-000000192.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a failed copy or a full disk
    (run / "checkpoint-000000192.pt.tmp4242").write_bytes(b"half-written by a killed process")

    # generate and metrics read the newest readable checkpoint and say which one they skipped
    capsys.readouterr()
    assert generate_main([str(run), "--grid", str(tmp_path / "g.png"), "--num", "4"]) == 0
    out = capsys.readouterr()
    assert "checkpoint-000000192.pt" in out.err and "truncated" in out.err and "skipping" in out.err
    assert "checkpoint-000000128.pt" in out.out

    # --resume sets the unreadable one aside, continues from 128 images and finishes the run
    assert train_main(["--resume", str(run), "--no-progress", "--workers", "0"]) == 0
    out = capsys.readouterr()
    assert "checkpoint-000000192.pt" in out.err and "checkpoint-000000192.pt.unreadable" in out.err
    assert re.search(r"resumed from \S+checkpoint-000000128\.pt at 0\.128 kimg", out.out), out.out
    assert (run / "checkpoint-000000192.pt.unreadable").exists()
    assert not list(run.glob("*.tmp*"))
    state = checkpoint.load(run)
    assert state["nimg"] == 192 and state["path"].endswith("checkpoint-000000192.pt")
    # the same weights as the run that was never damaged (resume is exact on CPU)
    reference = checkpoint.load(run_dir)
    for name, value in reference["G_ema"].items():
        assert torch.equal(value, state["G_ema"][name]), name


def test_resume_with_only_unreadable_checkpoints_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint-000000064.pt").write_bytes(b"\x00" * 100)
    assert train_main(["--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: none of the 1 checkpoints") and "checkpoint-000000064.pt" in err[-1]


def test_cli_errors_are_the_only_output_of_a_fresh_process(tmp_path):
    # a new interpreter, so that any warning printed on import or load would show on stderr
    bad = tmp_path / "notes.pt"
    bad.write_text("not a checkpoint")
    code = ("import sys\n"
            "from progan_ext import generate, metrics, train\n"
            f"codes = [generate.main([{str(bad)!r}, '--grid', 'g.png']), metrics.main([{str(bad)!r}]),"
            f" train.main(['--resume', {str(bad)!r}])]\n"
            "print(codes)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env=subprocess_env(PYTHONWARNINGS="ignore::RuntimeWarning"))
    assert res.returncode == 0 and res.stdout.strip() == "[2, 2, 2]", res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"error: cannot read checkpoint {str(bad)!r}") for line in lines), lines


# ----------------------------------------------------------------------------------------------
# SIGKILL at random points, resume each time.


def _resumed_nimg(stdout: str) -> int | None:
    m = re.search(r"resumed from \S+ at ([0-9.]+) kimg", stdout)
    return int(round(float(m.group(1)) * 1000)) if m else None


def test_sigkill_at_random_points_then_resume_completes(tmp_path):
    """Kills training (SIGKILL: no handler runs) at random moments, also while a checkpoint is
    being written, and resumes each time. The run must finish, every resume must start from the
    newest checkpoint that was complete at the kill (so at most one snapshot interval is lost),
    and the result must equal an uninterrupted run bit for bit."""
    snap = 16  # images per snapshot: every 2 steps of 8; 90 steps in all
    args = TINY + ["--kimg-stable", "0.24", "--kimg-fade", "0.24", "--snapshot-kimg", str(snap / 1000),
                   "--keep-checkpoints", "2"]
    env = subprocess_env(PYTHONWARNINGS="ignore")

    def start(*extra, name):
        log = open(tmp_path / f"{name}.out", "w")
        return subprocess.Popen([sys.executable, "-m", "progan_ext.train", *extra], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=tmp_path), log

    straight, straight_log = start(*args, "--run-dir", str(tmp_path / "straight"), name="straight")
    run = tmp_path / "killed"
    seed = int(os.environ.get("PROGAN_EXT_TEST_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)  # the kill points; the seed is in every failure message
    proc, log = start(*args, "--run-dir", str(run), name="attempt0")
    total, kills, resumed_at = 720, 0, []
    while kills < 3:
        # wait for fresh progress in this attempt (a checkpoint newer than where it started)
        start_nimg = resumed_at[-1] if resumed_at else 0
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            done = [int(checkpoint.PATTERN.search(p.name).group(1)) for p in checkpoint.list_checkpoints(run)]
            if done and max(done) > start_nimg:
                break
            time.sleep(0.01)
        if proc.poll() is not None:
            break  # finished before we could kill it again: fine
        time.sleep(rng.uniform(0.0, 0.15))
        complete = [int(checkpoint.PATTERN.search(p.name).group(1)) for p in checkpoint.list_checkpoints(run)]
        proc.kill()
        proc.wait()
        log.close()
        kills += 1
        proc, log = start("--resume", str(run), "--no-progress", "--workers", "0", name=f"attempt{kills}")
        # the resumed process reports where it starts: at least the newest complete checkpoint
        deadline = time.time() + 240
        while time.time() < deadline and _resumed_nimg((tmp_path / f"attempt{kills}.out").read_text()) is None:
            assert proc.poll() is None or proc.returncode == 0, (tmp_path / f"attempt{kills}.out").read_text()
            time.sleep(0.01)
        resumed = _resumed_nimg((tmp_path / f"attempt{kills}.out").read_text())
        assert resumed is not None and resumed >= max(complete), (seed, resumed, complete)
        resumed_at.append(resumed)

    def finish(p, name):  # the return code; on a timeout a failure that names the seed (wait() alone would not)
        try:
            return p.wait(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail(f"seed {seed}: {name} still running after 300 s; its output:\n"
                        + (tmp_path / f"{name}.out").read_text()[-2000:])

    assert finish(proc, f"attempt{kills}") == 0, (seed, (tmp_path / f"attempt{kills}.out").read_text())
    log.close()
    assert finish(straight, "straight") == 0, seed
    straight_log.close()
    assert kills == 3, seed
    assert resumed_at == sorted(resumed_at), (seed, resumed_at)
    assert not list(run.glob("*.tmp*"))
    a, b = checkpoint.load(run), checkpoint.load(tmp_path / "straight")
    assert a["nimg"] == b["nimg"] == total
    for key in ("G", "D", "G_ema"):
        for name, value in b[key].items():
            assert torch.equal(a[key][name], value), (seed, f"{key}.{name}")
    events = [json.loads(line).get("event") for line in (run / "log.jsonl").read_text().splitlines()]
    assert events[-1] == "done"
