"""Loads the compiled module ``progan_ext._C`` and checks that it matches the running torch.

The build records the torch and CUDA versions it compiled against in ``_build_info.py``. A
mismatch would surface as an undefined-symbol error deep inside the import; instead we compare
versions first and explain in one sentence. Without the compiled module every op runs through
``progan_ext.reference`` (one warning), unless ``PROGAN_EXT_REQUIRE_EXT=1`` makes that an error.
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch

__all__ = ["available", "error", "build_info", "cuda_compiled"]

available = False
error: str | None = None
build_info: dict = {}

_REBUILD = "rebuild it with `pip install --no-build-isolation .` (see README, 'Install')"


def _load() -> None:
    global available, error, build_info
    try:
        from . import _build_info  # written by setup.py / CMake at build time

        build_info = dict(_build_info.BUILD_INFO)
    except ImportError:
        error = "progan_ext was not compiled (no progan_ext/_build_info.py); " + _REBUILD
        return
    built_torch = build_info.get("torch_version", "?")
    if built_torch.split("+")[0] != torch.__version__.split("+")[0]:
        error = (
            f"progan_ext._C was built against torch {built_torch} but torch {torch.__version__} is "
            f"installed; {_REBUILD}"
        )
        return
    built_cuda = build_info.get("torch_cuda")
    if build_info.get("with_cuda") and built_cuda != torch.version.cuda:
        error = (
            f"progan_ext._C was built with CUDA {built_cuda} (torch's CUDA) but the installed torch "
            f"uses CUDA {torch.version.cuda}; {_REBUILD}"
        )
        return
    try:
        importlib.import_module("progan_ext._C")
    except ImportError as exc:  # a stale or foreign binary
        error = f"progan_ext._C failed to load ({exc}); {_REBUILD}"
        return
    available = True


def cuda_compiled() -> bool:
    """True when the compiled module carries CUDA kernels."""
    return available and bool(build_info.get("with_cuda"))


_load()
if not available:
    if os.environ.get("PROGAN_EXT_REQUIRE_EXT", "0") not in ("", "0"):
        raise ImportError(f"PROGAN_EXT_REQUIRE_EXT is set but {error}")
    warnings.warn(f"{error}. Falling back to the pure-PyTorch reference ops.", RuntimeWarning, stacklevel=2)
