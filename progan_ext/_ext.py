"""Finds and loads the compiled module ``progan_ext._C`` and checks that it matches the running torch.

Where the module is looked for:

1. beside this file: an installed wheel, an editable or ``build_ext --inplace`` build, or CMake;
2. when this file is part of a source checkout without a module of its own (``python -m
   progan_ext.train`` run from the repository root imports ``./progan_ext``, not the installed
   copy): the module of an installed progan_ext on ``sys.path``, provided it was built from the
   same ``csrc/`` sources as this checkout.

The build records the torch and CUDA versions it compiled against (and a digest of ``csrc/``) in
``_build_info.py`` beside the module. A mismatch would surface as an undefined-symbol error deep
inside the import; instead we compare first and explain in one sentence, with the command that
fixes it. Without a usable module every op runs through ``progan_ext.reference`` (one warning),
unless ``PROGAN_EXT_REQUIRE_EXT=1`` makes that an error. ``PROGAN_EXT_DISABLE_EXT=1`` skips the
compiled module on purpose (to compare or debug).
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import torch

from ._sources import sources_digest

__all__ = ["available", "error", "build_info", "module_path", "cuda_compiled", "version_mismatch"]

available = False
error: str | None = None
build_info: dict = {}
module_path: str | None = None  # the file progan_ext._C was loaded from

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "setup.py").is_file() and (
    PACKAGE_DIR.parent / "csrc").is_dir() else None

INSTALL = "`pip install .` in the progan_ext checkout (README, 'Install')"
REBUILD = f"rebuild it with {INSTALL}"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


def version_mismatch(info: dict, torch_version: str, torch_cuda: str | None) -> str | None:
    """One sentence saying why a binary built as ``info`` cannot load into this torch, or None."""
    built = info.get("torch_version", "?")
    if built.split("+")[0] != torch_version.split("+")[0]:
        return f"progan_ext._C was built against torch {built} but torch {torch_version} is installed; {REBUILD}"
    if info.get("with_cuda") and info.get("torch_cuda") != torch_cuda:
        return (
            f"progan_ext._C was built for CUDA {info.get('torch_cuda')} but the installed torch uses "
            f"CUDA {torch_cuda}; {REBUILD}"
        )
    return None


def _binary_in(folder: Path) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = folder / f"_C{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _read_build_info(folder: Path) -> dict | None:
    """BUILD_INFO of ``folder/_build_info.py``, read without importing it (it may belong to
    another copy of the package)."""
    try:
        tree = ast.parse((folder / "_build_info.py").read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "BUILD_INFO" for t in node.targets):
            try:
                return dict(ast.literal_eval(node.value))
            except ValueError:
                return None
    return None


def _installed_copies() -> list[Path]:
    """Other ``progan_ext`` folders on sys.path that hold a compiled module (installed copies)."""
    found = []
    for entry in sys.path:
        folder = Path(entry or ".").resolve() / "progan_ext"
        if folder != PACKAGE_DIR and folder not in found and _binary_in(folder) is not None:
            found.append(folder)
    return found


def _stale(info: dict) -> bool:
    """Whether a binary was built from other sources than this checkout's csrc/ (CMake builds
    record no digest and are not checked)."""
    built_from = info.get("sources_digest")
    return built_from is not None and built_from != sources_digest(CHECKOUT / "csrc")


def _locate() -> tuple[Path | None, dict | None, str | None]:
    """(folder holding the module to load, its build info, None) or (None, None, why not)."""
    if _binary_in(PACKAGE_DIR) is not None:
        info = _read_build_info(PACKAGE_DIR)
        if info is None:
            return None, None, f"{_binary_in(PACKAGE_DIR)} has no readable _build_info.py beside it; {REBUILD}"
        if CHECKOUT is not None and _stale(info):
            return None, None, (f"progan_ext._C in {PACKAGE_DIR} was built from other csrc/ sources than the "
                                "checkout's (a stale build); rebuild it the way it was built: `python setup.py "
                                "build_ext --inplace`, `pip install -e .` or the CMake build")
        return PACKAGE_DIR, info, None
    if CHECKOUT is None:
        return None, None, f"progan_ext in {PACKAGE_DIR} has no compiled module (progan_ext._C); {REBUILD}"
    here = f"progan_ext is imported from the source checkout {CHECKOUT}, which holds no compiled module"
    copies = _installed_copies()
    if not copies:
        return None, None, (f"{here}, and no installed progan_ext was found; install it with {INSTALL}, "
                            "or build into the checkout with `python setup.py build_ext --inplace`")
    folder = copies[0]
    info = _read_build_info(folder)
    if info is None:
        return None, None, f"{here}; the installed copy in {folder} has no readable _build_info.py; {REBUILD}"
    if _stale(info):
        return None, None, (f"{here}; the installed copy in {folder} was built from other csrc/ sources "
                            f"than this checkout's (a stale build); {REBUILD}")
    return folder, info, None


def _import_module(folder: Path) -> None:
    if folder == PACKAGE_DIR:
        importlib.import_module("progan_ext._C")
        return
    # The installed copy's binary, loaded as this package's submodule.
    spec = importlib.util.spec_from_file_location("progan_ext._C", _binary_in(folder))
    module = importlib.util.module_from_spec(spec)
    sys.modules["progan_ext._C"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["progan_ext._C"]
        raise


def _load() -> None:
    global available, error, build_info, module_path
    if _flag("PROGAN_EXT_DISABLE_EXT"):
        error = "the compiled extension is disabled by PROGAN_EXT_DISABLE_EXT=1"
        return
    folder, info, error = _locate()
    if folder is None:
        return
    build_info = info
    error = version_mismatch(build_info, torch.__version__, torch.version.cuda)
    if error:
        return
    try:
        _import_module(folder)
    except ImportError as exc:  # a broken or foreign binary
        error = f"progan_ext._C in {folder} failed to load ({exc}); {REBUILD}"
        return
    module_path = str(_binary_in(folder))
    available = True


def load_variant(module: str, namespace: str, build: str) -> str | None:
    """Loads an optional build of the kernels (``progan_ext._emu``, ``progan_ext._emu_trace``), whose
    ops are ``torch.ops.<namespace>``, and registers their fake kernels (opdefs; autograd and autocast are C++, in the module).
    Returns why it is not usable, or None. A variant built from other csrc/ sources than this
    checkout's (its digest in _build_info.py's module_digests) is refused without being loaded: it
    would run old kernels; one that lacks ops the registrations need is refused too. ``build`` is
    the command that builds it."""
    if CHECKOUT is not None:
        built_from = (_read_build_info(PACKAGE_DIR) or {}).get("module_digests", {}).get(module)
        if built_from is not None and built_from != sources_digest(CHECKOUT / "csrc"):
            return (f"{module} was built from other csrc/ sources than the checkout's (a stale build); "
                    f"rebuild it with {build}")
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module} is not built ({exc}); build it with {build}"
    from . import opdefs

    missing = opdefs.missing_ops(namespace)
    if missing:
        return f"{module} lacks the ops {missing} (built from older sources); rebuild it with {build}"
    opdefs.register(namespace)
    return None


def parse_counts(text: str) -> dict[str, int]:
    """A module's "name=count;name=count" introspection string (kernel_path_counts, emu_stats) as a dict."""
    return {k: int(v) for k, v in (item.split("=") for item in text.split(";") if item)}


def cuda_compiled() -> bool:
    """True when the compiled module carries CUDA kernels."""
    return available and bool(build_info.get("with_cuda"))


def fall_back(why: str) -> None:
    """The compiled module is not usable (``why``): every op runs the reference, with one warning,
    or, under PROGAN_EXT_REQUIRE_EXT=1, the import fails."""
    global available, error
    available, error = False, why
    if _flag("PROGAN_EXT_REQUIRE_EXT"):
        raise ImportError(f"PROGAN_EXT_REQUIRE_EXT=1 but {why}")
    warnings.warn(f"{why}. Falling back to the pure-PyTorch reference ops.", RuntimeWarning, stacklevel=3)


_load()
if not available:
    fall_back(error)
