"""Loads the compiled module ``progan_ext._C`` and checks that it matches the running torch.

The build records the torch and CUDA versions it compiled against in ``_build_info.py``. A
mismatch would surface as an undefined-symbol error deep inside the import; instead we compare
versions first and explain in one sentence. Without the compiled module every op runs through
``progan_ext.reference`` (one warning), unless ``PROGAN_EXT_REQUIRE_EXT=1`` makes that an error.
``PROGAN_EXT_DISABLE_EXT=1`` skips the compiled module on purpose (to compare or debug).
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch

__all__ = ["available", "error", "build_info", "cuda_compiled", "version_mismatch"]

available = False
error: str | None = None
build_info: dict = {}

_REBUILD = "rebuild it with `pip install --no-build-isolation .` (see README, 'Install')"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


def version_mismatch(info: dict, torch_version: str, torch_cuda: str | None) -> str | None:
    """One sentence saying why a binary built as ``info`` cannot load into this torch, or None."""
    built = info.get("torch_version", "?")
    if built.split("+")[0] != torch_version.split("+")[0]:
        return f"progan_ext._C was built against torch {built} but torch {torch_version} is installed; {_REBUILD}"
    if info.get("with_cuda") and info.get("torch_cuda") != torch_cuda:
        return (
            f"progan_ext._C was built for CUDA {info.get('torch_cuda')} but the installed torch uses "
            f"CUDA {torch_cuda}; {_REBUILD}"
        )
    return None


def _load() -> None:
    global available, error, build_info
    if _flag("PROGAN_EXT_DISABLE_EXT"):
        error = "the compiled extension is disabled by PROGAN_EXT_DISABLE_EXT=1"
        return
    try:
        from . import _build_info  # written by setup.py / CMake at build time

        build_info = dict(_build_info.BUILD_INFO)
    except ImportError:
        error = "progan_ext was not compiled (no progan_ext/_build_info.py); " + _REBUILD
        return
    error = version_mismatch(build_info, torch.__version__, torch.version.cuda)
    if error:
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
    if _flag("PROGAN_EXT_REQUIRE_EXT"):
        raise ImportError(f"PROGAN_EXT_REQUIRE_EXT=1 but {error}")
    warnings.warn(f"{error}. Falling back to the pure-PyTorch reference ops.", RuntimeWarning, stacklevel=2)
