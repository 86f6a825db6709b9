"""One rank of a 2-process training run for tests/test_ddp.py, with an optional injected fault.

Runs ``progan_ext.train.main`` with the given flags, then prints how many gloo worker threads
outlived the run (0 means the process group really was destroyed) and exits with main's code.
PROBE_FAULT="kind:rank:step" injects, on that rank at that step:
  raise   - an exception in the training step (this rank alone fails)
  ckpt    - an exception while writing the checkpoint (rank 0 only writes)
  nan     - a non-finite loss
  sigint  - a SIGINT to this process (Ctrl-C)
"""

import os
import signal
import sys

import torch

from progan_ext.train import main
from progan_ext.training import checkpoint, distributed, loop

kind, fault_rank, fault_step = (os.environ.get("PROBE_FAULT", "none:-1:-1").split(":") + ["", ""])[:3]
here = int(os.environ.get("RANK", "0"))
mine = here == int(fault_rank)
steps = [0]

if mine and kind in ("raise", "nan", "sigint"):
    real_step = loop.train_step

    def train_step(*args, **kwargs):
        steps[0] += 1
        out = real_step(*args, **kwargs)
        if steps[0] == int(fault_step):
            if kind == "raise":
                raise RuntimeError("injected fault")
            if kind == "nan":
                out["loss_d"] = torch.tensor(float("nan"))
            if kind == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
        return out

    loop.train_step = train_step

if mine and kind == "ckpt":
    def save_atomic(*args, **kwargs):
        raise OSError(28, "No space left on device (injected)")

    checkpoint.save_atomic = save_atomic

code = main(sys.argv[1:])
print(f"probe rank {here}: gloo threads after train: {distributed.gloo_threads_alive()}", flush=True)
sys.exit(code)
