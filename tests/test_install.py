"""Installing and finding the compiled module: the build backend, the no-torch message, a source
checkout that uses the installed binary, stale-build warnings, console entry points."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import progan_ext
from conftest import requires_compiled
from progan_ext import _ext
from progan_ext._sources import sources_digest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (REPO / "setup.py").is_file(), reason="needs the source checkout")


def _python(code_or_args, cwd, **env):
    args = [sys.executable, "-c", code_or_args] if isinstance(code_or_args, str) else [sys.executable, *code_or_args]
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROGAN_EXT_REQUIRE_EXT")}
    full.update(env)
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=full, timeout=300)


def test_backend_exposes_the_target_environments_torch_to_an_isolated_build():
    # pip's isolated build removes the target's site-packages from sys.path; the backend puts them back
    # (after the build requirements), so setup.py compiles against the torch that will import the module.
    code = (
        "import sys, site\n"
        "hidden = set(site.getsitepackages())\n"
        "sys.path[:] = [p for p in sys.path if p not in hidden]\n"
        "try:\n    import torch\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('torch visible')\n"
        f"sys.path.insert(0, {str(REPO / 'build_backend')!r})\n"
        "import progan_ext_build as b\n"
        "import torch\n"
        "print(torch.__file__)\n"
        "print(all(callable(getattr(b, h)) for h in ('build_wheel', 'build_editable', 'build_sdist',"
        " 'get_requires_for_build_wheel', 'prepare_metadata_for_build_wheel')))\n"
    )
    res = _python(code, cwd=REPO)
    assert res.returncode == 0, res.stderr
    torch_file, hooks = res.stdout.split()
    import torch

    assert Path(torch_file) == Path(torch.__file__) and hooks == "True"


def test_pyproject_uses_the_in_tree_backend_and_declares_the_scripts():
    import tomllib

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["build-system"]["build-backend"] == "progan_ext_build"
    assert meta["build-system"]["backend-path"] == ["build_backend"]
    assert not any(r.startswith("torch") for r in meta["build-system"]["requires"])  # no second torch
    assert meta["project"]["scripts"] == {
        "progan-train": "progan_ext.train:main", "progan-generate": "progan_ext.generate:main",
        "progan-prepare": "progan_ext.prepare:main", "progan-metrics": "progan_ext.metrics:main"}


def test_setup_without_torch_stops_with_one_line():
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['setup.py', 'egg_info'];"
            " runpy.run_path('setup.py', run_name='__main__')")
    res = _python(code, cwd=REPO, PROGAN_EXT_CPU_ONLY="1")
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "PyTorch is not installed" in lines[0] and "`pip install torch`" in lines[0] and "`pip install .`" in lines[0]


def test_sources_digest_tracks_content(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "a.cpp").write_text("int a;")
    (tmp_path / "notes.txt").write_text("ignored")
    first = sources_digest(tmp_path)
    (tmp_path / "notes.txt").write_text("still ignored")
    assert sources_digest(tmp_path) == first
    (tmp_path / "cpu" / "a.cpp").write_text("int a; // edited")
    assert sources_digest(tmp_path) != first


# ----------------------------------------------------------------------------------------------
# A source checkout without a compiled module of its own, beside an installed copy that has one.


def _fake_checkout_and_install(tmp_path):
    """tmp/checkout: setup.py, csrc/, progan_ext/ (Python only); tmp/site/progan_ext: the same
    package with the compiled module (linked) and a _build_info.py for the checkout's csrc/."""
    checkout, site = tmp_path / "checkout", tmp_path / "site"
    checkout.mkdir()
    shutil.copy(REPO / "setup.py", checkout / "setup.py")
    shutil.copytree(REPO / "csrc", checkout / "csrc")
    ignore = shutil.ignore_patterns("_C*", "_build_info.py", "__pycache__")
    shutil.copytree(Path(progan_ext.__file__).parent, checkout / "progan_ext", ignore=ignore)
    shutil.copytree(Path(progan_ext.__file__).parent, site / "progan_ext", ignore=ignore)
    binary = Path(_ext.module_path)
    (site / "progan_ext" / binary.name).symlink_to(binary)
    info = dict(_ext.build_info, sources_digest=sources_digest(checkout / "csrc"))
    (site / "progan_ext" / "_build_info.py").write_text("BUILD_INFO = " + repr(info) + "\n")
    return checkout, site


PROBE = ("import warnings, json\n"
         "with warnings.catch_warnings(record=True) as w:\n"
         "    warnings.simplefilter('always')\n"
         "    import progan_ext\n"
         "from progan_ext import ops\n"
         "print(json.dumps({'file': progan_ext.__file__, 'module': progan_ext._ext.module_path,"
         " 'backend': ops.backend_info()['ops']['eq_conv2d']['cpu'],"
         " 'warnings': [str(m.message) for m in w if 'Falling back' in str(m.message)]}))\n")


@requires_compiled
def test_checkout_without_module_uses_the_installed_one(tmp_path):
    checkout, site = _fake_checkout_and_install(tmp_path)
    res = _python(PROBE, cwd=checkout, PYTHONPATH=str(site))  # like `python -m ...` from the repo root
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["file"] == str(checkout / "progan_ext" / "__init__.py")
    assert Path(out["module"]).parent == site / "progan_ext"
    assert out["backend"] == "compiled C++ kernel" and out["warnings"] == []


@requires_compiled
def test_checkout_with_stale_installed_module_names_cause_and_command(tmp_path):
    checkout, site = _fake_checkout_and_install(tmp_path)
    kernel = next((checkout / "csrc" / "cpu").glob("*.cpp"))
    kernel.write_text(kernel.read_text() + "\n// edited after the install\n")
    res = _python(PROBE, cwd=checkout, PYTHONPATH=str(site))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["backend"] == "reference (PyTorch)" and len(out["warnings"]) == 1
    message = out["warnings"][0]
    assert str(checkout) in message and "other csrc/ sources" in message and "`pip install .`" in message


def test_checkout_without_any_module_names_the_command(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    (checkout / "progan_ext").mkdir(parents=True)
    (checkout / "csrc").mkdir()
    monkeypatch.setattr(_ext, "PACKAGE_DIR", checkout / "progan_ext")
    monkeypatch.setattr(_ext, "CHECKOUT", checkout)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "elsewhere")])
    folder, info, message = _ext._locate()
    assert folder is None and info is None
    assert str(checkout) in message and "no installed progan_ext was found" in message
    assert "`pip install .`" in message and "build_ext --inplace" in message


def test_installed_package_without_module_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(_ext, "PACKAGE_DIR", tmp_path / "progan_ext")
    monkeypatch.setattr(_ext, "CHECKOUT", None)
    folder, _, message = _ext._locate()
    assert folder is None and "has no compiled module" in message and "`pip install .`" in message


def test_entry_points_when_installed():
    scripts = {name: shutil.which(name, path=os.path.dirname(sys.executable))
               for name in ("progan-train", "progan-generate", "progan-prepare", "progan-metrics")}
    if not all(scripts.values()):
        pytest.skip("progan_ext is not pip-installed in this environment (no console scripts)")
    for name, path in scripts.items():
        res = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, PYTHONWARNINGS="ignore"))
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"usage: {name} "), res.stdout[:200]


# ---- optional builds of the kernels (progan_ext._emu, progan_ext._emu_trace) -------------------
def test_stale_emulated_module_is_refused_without_loading(monkeypatch):
    # A variant built from other csrc/ sources would run old kernels: refused before import.
    monkeypatch.setattr(_ext, "CHECKOUT", REPO)  # as when imported from the checkout (CI imports the installed copy)
    monkeypatch.setattr(_ext, "_read_build_info", lambda folder: {"module_digests": {"progan_ext._no_such": "0" * 64}})
    why = _ext.load_variant("progan_ext._no_such", "progan_ext_no_such", "`the build command`")
    assert "stale build" in why and "`the build command`" in why
    assert "progan_ext._no_such" not in sys.modules


def test_current_emulated_module_that_is_absent_names_the_command(monkeypatch):
    monkeypatch.setattr(_ext, "CHECKOUT", REPO)
    current = sources_digest(REPO / "csrc")
    monkeypatch.setattr(_ext, "_read_build_info", lambda folder: {"module_digests": {"progan_ext._no_such": current}})
    why = _ext.load_variant("progan_ext._no_such", "progan_ext_no_such", "`the build command`")
    assert "is not built" in why and "`the build command`" in why


def test_module_lacking_ops_is_refused_instead_of_crashing(monkeypatch):
    # No digest recorded (a build that predates them): the ops its namespace lacks decide.
    monkeypatch.setattr(_ext, "_read_build_info", lambda folder: {})
    why = _ext.load_variant("json", "progan_ext_no_such", "`the build command`")
    assert "lacks the ops ['pixel_norm'," in why and "`the build command`" in why
