"""Fingerprint of the C++/CUDA sources, so a binary can be matched with the checkout beside it.

setup.py records ``sources_digest(csrc)`` in ``_build_info.py``; when progan_ext is imported from a
source checkout, ``_ext.py`` recomputes it to tell a stale binary from a current one. Standard
library only: setup.py loads this file by path, before torch or progan_ext is importable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SOURCE_SUFFIXES = (".cpp", ".cu", ".h", ".cuh", ".hpp")


def sources_digest(csrc) -> str:
    """SHA-256 over the relative paths and contents of every C++/CUDA source under ``csrc``."""
    csrc = Path(csrc)
    h = hashlib.sha256()
    for path in sorted(p for p in csrc.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()):
        h.update(path.relative_to(csrc).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
