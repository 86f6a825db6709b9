"""Data-parallel training with 2 CPU processes on the gloo backend.

The first test goes through torchrun, as a user would. The others launch the two ranks directly
(tests/ddp_probe.py) against a rendezvous store held by this test process, as torchrun's agent
holds it, so that each rank's exit code and output can be checked on its own: every rank must
leave through the same shutdown (the gloo worker threads joined before the interpreter exits,
issue 9), and when one rank fails the other must exit non-zero naming it, never hang.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from conftest import subprocess_env

from progan_ext.training import checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

ARGS = ["--resolution", "8", "--fmap-max", "8", "--latent-size", "16", "--batch", "8", "--procedural-images", "64",
        "--kimg-stable", "0.032", "--kimg-fade", "0.032", "--snapshot-kimg", "0.032", "--no-progress",
        "--workers", "0", "--device", "cpu"]
PROBE = str(Path(__file__).with_name("ddp_probe.py"))
TIMEOUT = 120  # seconds per launch; a hung rank fails the test instead of the CI run


def torchrun(*args, cwd, module=("-m", "progan_ext.train"), **popen):
    env = subprocess_env(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT, cwd=cwd, **popen)


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


@pytest.mark.parametrize("repeat", range(3))
def test_finished_run_exits_cleanly(tmp_path, repeat):
    """A light version of tools/ddp_stress.py: a whole short run ends with exit 0 on both ranks.
    Before the fix about one run in 7-25 aborted at exit (SIGABRT); the deterministic check of the
    cause is in test_every_rank_destroys_its_group."""
    out = torchrun(*ARGS, "--kimg-stable", "0.008", "--kimg-fade", "0.008", "--snapshot-kimg", "0.008",
                   "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "terminate called" not in text, text[-3000:]


def launch_ranks(tmp_path, *args, fault="none:-1:-1"):
    """Starts both ranks of ddp_probe.py; returns [(exit code, output)] per rank."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    procs = []
    for rank in range(2):
        env = subprocess_env(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
                             MASTER_PORT=str(store.port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank),
                             LOCAL_WORLD_SIZE="2", TORCHELASTIC_USE_AGENT_STORE="True", PROBE_FAULT=fault)
        procs.append(subprocess.Popen([sys.executable, PROBE, *ARGS, "--run-dir", str(tmp_path / "run"), *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                      cwd=tmp_path))
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=TIMEOUT)
            results.append((p.returncode, out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


def test_every_rank_destroys_its_group(tmp_path):
    # The cause of the exit-time abort: the gloo workers outlived destroy_process_group (the group
    # was still referenced) and freed Python objects during interpreter finalisation.
    results = launch_ranks(tmp_path)
    for code, out in results:
        assert code == 0, out[-3000:]
        assert "gloo threads after train: 0" in out, out[-3000:]


def test_exception_in_one_rank_stops_the_other_with_its_name(tmp_path):
    (c0, out0), (c1, out1) = launch_ranks(tmp_path, fault="raise:1:3")
    assert c1 != 0 and "injected fault" in out1, out1[-3000:]
    assert c0 == 1, out0[-3000:]
    assert "error: rank 0 stopped because rank 1 failed: RuntimeError: injected fault" in out0, out0[-3000:]


def test_checkpoint_failure_on_rank0_while_rank1_waits(tmp_path):
    (c0, out0), (c1, out1) = launch_ranks(tmp_path, fault="ckpt:0:0")
    assert c0 != 0 and "No space left on device (injected)" in out0, out0[-3000:]
    assert c1 == 1, out1[-3000:]
    assert "error: rank 1 stopped because rank 0 failed: OSError" in out1, out1[-3000:]


def test_nonfinite_loss_on_one_rank_stops_both_together(tmp_path):
    results = launch_ranks(tmp_path, fault="nan:1:2")
    for code, out in results:
        assert code == 1 and "training diverged: non-finite loss at step 2" in out, out[-3000:]
        assert "gloo threads after train: 0" in out, out[-3000:]


def test_ctrl_c_on_one_rank_checkpoints_and_stops_both(tmp_path):
    results = launch_ranks(tmp_path, fault="sigint:1:2")
    for code, out in results:
        assert code == 130, out[-3000:]
        assert "gloo threads after train: 0" in out, out[-3000:]
    state = checkpoint.load(tmp_path / "run")
    assert state["step"] == 2 and len(state["rng"]) == 2


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs process groups")
def test_ctrl_c_under_torchrun(tmp_path):
    """The terminal's Ctrl-C reaches torchrun and both ranks (and torchrun forwards it again): the
    ranks stop after the step, write one checkpoint and exit 130."""
    env = subprocess_env(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "progan_ext.train", *ARGS, "--kimg-stable", "100", "--run-dir", str(run)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
                         start_new_session=True)
    try:
        for line in p.stdout:  # wait until training runs
            if line.startswith("run directory:"):
                break
        import time

        time.sleep(2.0)
        os.killpg(p.pid, signal.SIGINT)
        out = p.stdout.read()
        p.wait(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    # torchrun itself prints a traceback when the signal reaches it (SignalException, raised in its
    # monitor loop); no traceback may pass through the trainer's frames.
    assert "terminate called" not in out, out[-3000:]
    assert not re.search(r'File "[^"]*progan_ext[/\\\\]', out), out[-3000:]
    assert "interrupted at" in out and "resume with" in out, out[-3000:]
    assert checkpoint.list_checkpoints(run), out[-3000:]


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
