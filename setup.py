"""Builds progan_ext._C against the PyTorch that is installed in this environment.

Install with ``pip install .`` (README, 'Install'). The extension must be compiled against the very
torch it will run with: the in-tree build backend (build_backend/progan_ext_build.py) lets an
isolated build import the target environment's torch instead of downloading another one, and the
wheel pins ``torch==<the version compiled against>``. ``pip install --no-build-isolation .`` and
``pip install -e .`` use the environment's torch directly.

Build knobs (environment variables, read here and only here; documented in the README):
  PROGAN_EXT_FORCE_CUDA=1    fail if the CUDA kernels cannot be built
  PROGAN_EXT_CPU_ONLY=1      build only the C++ CPU kernels
  PROGAN_EXT_DEBUG=1         -O0 -g host code, -G device code, no fast paths hidden by optimisation
  PROGAN_EXT_EMULATE=1       also build progan_ext._emu: the CUDA kernels compiled for the CPU emulator
                             (csrc/emu, docs/emulated_cuda.md); =asan builds only that module, with
                             AddressSanitizer + UBSan (CI's memory check; run with libasan preloaded);
                             =trace builds only progan_ext._emu_trace, the memory-access tracer's build
                             (coalescing and bank conflicts of the kernels, docs/memory_access.md)
  PROGAN_EXT_TRACE_KERNELS   with =trace: which kernel files of csrc/emu to trace: all (default), or a
                             comma-separated list (pixel_norm,bias_act); probes: none, only the
                             tracer's probe kernels (enough for tests/test_memory_tracer.py)
  TORCH_CUDA_ARCH_LIST       GPU architectures (default without a visible GPU: 8.0;8.6;8.9;9.0+PTX)
  MAX_JOBS                   parallel compile jobs (ninja)
  PROGAN_EXT_NVCC_THREADS    nvcc --threads (default 2)
  CUDA_HOME                  the CUDA toolkit; found from nvcc when unset (nvcc may be a wrapper)
"""

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent.resolve()
DEFAULT_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no", "off")


FORCE_CUDA = _flag("PROGAN_EXT_FORCE_CUDA")
EMULATE = os.environ.get("PROGAN_EXT_EMULATE", "0").strip().lower()
if EMULATE in ("", "0", "false", "no", "off"):
    EMULATE = None
elif EMULATE not in ("1", "true", "yes", "on", "asan", "trace"):
    sys.exit(f"progan_ext: PROGAN_EXT_EMULATE must be 1, asan or trace, got {EMULATE!r}")
CPU_ONLY = _flag("PROGAN_EXT_CPU_ONLY")
DEBUG = _flag("PROGAN_EXT_DEBUG")
NVCC_THREADS = os.environ.get("PROGAN_EXT_NVCC_THREADS", "2")
if FORCE_CUDA and CPU_ONLY:
    sys.exit("progan_ext: PROGAN_EXT_FORCE_CUDA=1 and PROGAN_EXT_CPU_ONLY=1 contradict each other")


def find_cuda_home():
    """The CUDA toolkit folder, or None. nvcc on PATH may be a wrapper script, so ask nvcc itself:
    its dry run prints the toolkit root as `#$ TOP=...`."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home).resolve())
    nvcc = shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc",) if Path(p).exists()), None
    )
    if nvcc is None:
        return None
    try:
        out = subprocess.run(
            [nvcc, "-dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
            capture_output=True, text=True, timeout=120,
        )
        m = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
        if m:
            top = Path(m.group(1).strip()).resolve()
            if (top / "bin" / "nvcc").exists():
                return str(top)
    except (OSError, subprocess.SubprocessError):
        pass
    return str(Path(nvcc).resolve().parent.parent)


CUDA_HOME = None if CPU_ONLY else find_cuda_home()
if CUDA_HOME:
    os.environ["CUDA_HOME"] = CUDA_HOME  # before torch.utils.cpp_extension reads it at import

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:
    if getattr(exc, "name", None) != "torch":
        raise  # torch is there but broken: its own traceback says more than we could
    sys.exit(
        f"progan_ext: PyTorch is not installed in {sys.prefix} (the environment being installed into); "
        "install it first with `pip install torch`, then run `pip install .` again"
    )
TORCH_BASE_VERSION = torch.__version__.split("+")[0]


def cuda_decision():
    """(with_cuda, reason) for building the CUDA kernels."""
    if CPU_ONLY:
        return False, "PROGAN_EXT_CPU_ONLY=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is not a CUDA build"
    if CUDA_HOME is None:
        return False, "no CUDA toolkit found (nvcc not on PATH and CUDA_HOME unset)"
    return True, f"CUDA_HOME={CUDA_HOME}"


WITH_CUDA, REASON = cuda_decision()
if FORCE_CUDA and not WITH_CUDA:
    sys.exit(f"progan_ext: PROGAN_EXT_FORCE_CUDA=1 but the CUDA kernels cannot be built: {REASON}")

if WITH_CUDA and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
    os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
ARCH_LIST = os.environ.get("TORCH_CUDA_ARCH_LIST", "(visible GPUs)") if WITH_CUDA else None

if WITH_CUDA:
    print(f"progan_ext: building with CUDA kernels ({REASON}, TORCH_CUDA_ARCH_LIST={ARCH_LIST})", flush=True)
else:
    print(f"progan_ext: building the CPU-only extension ({REASON})", flush=True)


def build_info() -> dict:
    """What the binary is built against; progan_ext/_ext.py compares it at import."""
    digest = runpy.run_path(str(ROOT / "progan_ext" / "_sources.py"))["sources_digest"]
    return {
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_path": str(Path(torch.__file__).parent),
        "with_cuda": WITH_CUDA,
        "cuda_home": CUDA_HOME if WITH_CUDA else None,
        "arch_list": ARCH_LIST,
        "debug": DEBUG,
        "python": sys.version.split()[0],
        "sources_digest": digest(ROOT / "csrc"),
        "builder": "setup.py",
    }


class BuildWithInfo(BuildExtension):
    """torch's BuildExtension, then ``_build_info.py`` written beside every copy of the module
    (the build folder that goes into the wheel, and the source tree for --inplace / editable).
    An extension with ``plain_sources`` has those compiled without its ``instrument_flags``."""

    def build_extension(self, ext):
        plain = getattr(ext, "plain_sources", None)
        if plain:
            args = dict(ext.extra_compile_args)
            args["cxx"] = [f for f in args["cxx"] if f not in ext.instrument_flags]
            ext.extra_objects = list(ext.extra_objects or []) + self.compiler.compile(
                plain, output_dir=self.build_temp, macros=ext.define_macros, include_dirs=ext.include_dirs,
                debug=self.debug, extra_postargs=args, depends=ext.depends)
        super().build_extension(ext)

    def run(self):
        info = build_info()  # before compiling: the digest of the sources this build compiles
        super().run()
        built = [ext.name for ext in self.extensions]
        folders = {Path(self.build_lib) / "progan_ext"}
        if self.inplace:
            folders.add(ROOT / "progan_ext")
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "_build_info.py").write_text(build_info_text(folder / "_build_info.py", built, info))


def build_info_text(path: Path, built: list[str], new: dict) -> str:
    """_build_info.py after building the modules `built`. `new` is build_info() taken when the build
    started (a source edited during the build then reads as newer than the binary); it describes
    progan_ext._C, so a build without _C (an emulated variant alone) keeps the existing
    description. module_digests records the csrc/ digest each module was last built from, so that
    a variant left over from older sources is refused at import instead of testing old kernels
    (progan_ext/_ext.py)."""
    old = {}
    if path.is_file():
        old = runpy.run_path(str(path)).get("BUILD_INFO", {})
    info = dict(new) if "progan_ext._C" in built or not old else dict(old)
    digests = dict(old.get("module_digests", {}))
    digests.update({name: new["sources_digest"] for name in built})
    info["module_digests"] = digests
    return "# Written by the build (setup.py or CMake); do not edit.\nBUILD_INFO = " + repr(info) + "\n"


def extension():
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "autograd").glob("*.cpp"))
    # -fno-trapping-math: the CPU kernels never read floating-point exception flags; without it GCC
    # may not compute both sides of a select (leaky ReLU) and leaves those loops scalar on AVX2.
    cxx = ["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"]
    args = {"cxx": cxx}
    macros = []
    if WITH_CUDA:
        sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
        args["nvcc"] = (["-O0", "-G", "-g"] if DEBUG else ["-O3", "-lineinfo"]) + [
            "--expt-relaxed-constexpr",
            f"--threads={NVCC_THREADS}",
        ]
        macros.append(("PROGAN_EXT_WITH_CUDA", "1"))
        return CUDAExtension("progan_ext._C", sources, extra_compile_args=args, define_macros=macros)
    return CppExtension("progan_ext._C", sources, extra_compile_args=args, define_macros=macros)


def emulated_extension():
    """progan_ext._emu: csrc/cuda compiled as host C++ against the emulator (csrc/emu)."""
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "emu").glob("*.cpp"))
    sources.append("csrc/kernel_paths.cpp")
    cxx = ["-O0", "-g"] if DEBUG else ["-O2"]
    link = []
    if EMULATE == "asan":
        # Out-of-bounds and misaligned accesses of the kernels (compute-sanitizer's memcheck, here).
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-omit-frame-pointer"]
        cxx = ["-O1", "-g"] + sanitize
        link = sanitize
    return CppExtension("progan_ext._emu", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link,
                        define_macros=[("PROGAN_EXT_EMULATION", "1")])


# Instrumentation of the memory-tracing build: every load and store calls a __tsan_* hook
# (csrc/emu/trace/tsan_hooks.cpp, no ThreadSanitizer runtime). Aggregate copies stay whole (no SRA)
# and no loop or adjacent accesses are vectorised or merged, so a 16-byte vector load is one 16-byte
# access, as nvcc's LDG.128, and every scalar access stays the width the source gives it.
TRACE_FLAGS = ["-fsanitize=thread", "-fno-tree-sra", "-fno-tree-vectorize", "-fno-tree-slp-vectorize",
               "-fno-store-merging"]


def traced_extension():
    """progan_ext._emu_trace: the emulated kernels (op namespace progan_ext_emu_trace) with the
    kernel translation units instrumented for the memory-access tracer (csrc/emu/tracer.h); the
    emulator itself and the hooks are compiled plain. -fno-gnu-unique: GCC would bind the static
    locals of inline functions (the WMMA element maps, the shared-memory tags) process-wide to one
    copy shared with progan_ext._emu when both modules are loaded."""
    emu = ROOT / "csrc" / "emu"
    plain = ["runtime.cpp", "device_api.cpp", "module.cpp", "autograd.cpp", "trace/tracer.cpp", "trace/tsan_hooks.cpp"]
    available = sorted(p.stem for p in emu.glob("*.cpp") if p.name not in plain + ["probes.cpp", "autocast.cpp"])
    wanted = os.environ.get("PROGAN_EXT_TRACE_KERNELS", "all").strip()
    wanted = available if wanted == "all" else [] if wanted == "probes" else [k.strip() for k in wanted.split(",")]
    if set(wanted) - set(available):
        sys.exit(f"progan_ext: PROGAN_EXT_TRACE_KERNELS names {sorted(set(wanted) - set(available))}, "
                 f"not among {available}")
    kernels = ["trace/trace_probes.cpp"] + [f"{k}.cpp" for k in wanted]
    macros = [("PROGAN_EXT_EMULATION", "1"), ("PROGAN_EMU_TRACE", "1"), ("PROGAN_EMU_NS", "progan_ext_emu_trace")]
    ext = CppExtension("progan_ext._emu_trace", [f"csrc/emu/{k}" for k in kernels],
                       extra_compile_args={"cxx": ["-O2", "-g", "-fno-gnu-unique"] + TRACE_FLAGS},
                       define_macros=macros)
    ext.plain_sources = [f"csrc/emu/{p}" for p in plain] + ["csrc/kernel_paths.cpp"]
    ext.instrument_flags = TRACE_FLAGS
    return ext


print(f"progan_ext: compiling against torch {torch.__version__} from {Path(torch.__file__).parent}", flush=True)
if EMULATE:
    module = "progan_ext._emu_trace" if EMULATE == "trace" else "progan_ext._emu"
    print(f"progan_ext: building the emulated CUDA module {module} (PROGAN_EXT_EMULATE={EMULATE})", flush=True)
# A sanitized or traced module is for runs next to an existing progan_ext._C: only it is built.
if EMULATE == "asan":
    ext_modules = [emulated_extension()]
elif EMULATE == "trace":
    ext_modules = [traced_extension()]
else:
    ext_modules = [extension()] + ([emulated_extension()] if EMULATE else [])
setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildWithInfo},
    # The binary only loads into the torch it was compiled against: say so in the wheel's metadata,
    # so that pip never swaps torch from under it without a warning.
    install_requires=[f"torch=={TORCH_BASE_VERSION}", "numpy", "pillow", "tqdm"],
)
