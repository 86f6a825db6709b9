"""``python -m progan_ext.train``: progressive GAN training (see ``progan_ext/training``).

With no arguments it runs the demo preset (a few minutes on a CPU) on the embedded procedural
dataset and writes ``runs/NNNNN-procedural-16/``. ``--preset paper --data DIR`` is the official
ProGAN configuration. Under ``torchrun --nproc_per_node K`` it trains data-parallel.
"""

from __future__ import annotations

import sys

from .training.config import parse_args
from .training.distributed import PeerFailed
from .training.loop import TrainingDiverged, train

__all__ = ["main"]


def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        return train(cfg)
    except TrainingDiverged as exc:
        print(f"error: training diverged: {exc}", file=sys.stderr, flush=True)
        return 1
    except PeerFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except (OSError, ValueError) as exc:  # missing data, unreadable checkpoint, ...: one line, no traceback
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
