"""PEP 517 build backend of progan_ext: setuptools, compiling against the target environment's torch.

progan_ext._C must be compiled against the very torch it will be imported with. pip's isolated build
(plain `pip install .`) runs setup.py in a temporary environment that holds only the build
requirements and hides the site-packages of the environment being installed into. Listing torch in
`build-system.requires` would download a second, multi-GB torch into that temporary environment,
and nothing guarantees it is the same version as the one the module will run with.

So this backend (`build-system.backend-path` in pyproject.toml) puts the target environment's
site-packages back on sys.path, *after* the isolated build requirements: setup.py then imports the
torch of the environment that `pip install .` installs into (pip runs the backend with that
environment's interpreter, so `site.getsitepackages()` names it). Without build isolation
(`--no-build-isolation`, `pip install -e .`) those folders are on sys.path already and nothing
changes. setup.py records the torch it built against and pins it in the wheel's metadata; at import,
progan_ext/_ext.py compares it with the running torch.
"""

from __future__ import annotations

import os
import site
import sys


def target_site_packages() -> list[str]:
    """site-packages folders of the interpreter running the build (the install target)."""
    folders = list(site.getsitepackages())
    if sys.prefix == sys.base_prefix:  # not a venv: `pip install --user torch` counts too
        folders.append(site.getusersitepackages())
    return [f for f in folders if os.path.isdir(f)]


def _expose_target_environment() -> None:
    for folder in target_site_packages():
        if folder not in sys.path:
            sys.path.append(folder)  # after the build requirements: their setuptools wins


_expose_target_environment()

from setuptools.build_meta import *  # noqa: E402,F401,F403  (the hooks themselves are setuptools')
from setuptools.build_meta import __all__  # noqa: E402,F401
