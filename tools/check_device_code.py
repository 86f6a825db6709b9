"""Static checks of the compiled CUDA kernels: no local memory, tensor cores where promised, and an
H100 occupancy floor per kernel family. No GPU needed; reads the built extension's device code.

    python tools/check_device_code.py                       # the progan_ext._C that imports here
    python tools/check_device_code.py --module path/_C.so   # an explicit binary (CI: the installed one)
    python tools/check_device_code.py --doc docs/device_code.md   # also write the table

It runs ``cuobjdump -res-usage`` (registers, static shared memory, stack frame and local memory of
every kernel, per embedded cubin) and ``cuobjdump -sass`` (counts of tensor-core instructions
HMMA/HGMMA and of local-memory loads/stores LDL/STL) on the module's embedded fatbin: the check
reuses the build's own compile instead of compiling again. cuobjdump is not part of the local
toolkit: ``pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm`` (found on PATH, in the
environment's ``nvidia/*/bin``, or through $CUOBJDUMP).

A kernel fails when (each violation is one line of the output and the exit status is 1):
  * it has a stack frame, local memory or LDL/STL instructions: a register spill or a local array
    (both turn register traffic into memory traffic; ptxas's "spill stores" are STL in the SASS);
  * its family is a tensor-core family and its SASS has no HMMA/HGMMA (e.g. WMMA silently lost);
  * its occupancy on an H100 (sm_90 limits, `occupancy` below) is under its family's floor;
  * it belongs to no family in FAMILIES (a new kernel: give it a block size and a floor);
  * an expected tensor-core instantiation (EXPECTED_TENSOR_CORE) is missing from an sm_80+ cubin.
Archs: every sm_80+ cubin in the binary is checked; --require-arch (default 90) must be present.
CI builds with TORCH_CUDA_ARCH_LIST=9.0, so sm_80 is checked only in binaries that contain it
(e.g. the default arch list of a GPU-less `pip install .`); docs/device_code.md says why.
"""

from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ---- H100 (sm_90) limits ---------------------------------------------------------------------------
# The same rules as NVIDIA's occupancy calculator, cuda_occupancy.h (CUDA 13.0, compute capability
# 9.x branches of cudaOccMaxBlocksPerSMRegsLimit / ...SmemLimit / ...WarpsLimit and
# cudaOccMaxBlocksPerMultiprocessor), with the H100's device properties (CUDA C++ Programming Guide,
# "Technical Specifications per Compute Capability", 9.0; deviceQuery on an H100: 233472 B shared
# per SM, 232448 B opt-in per block, 1024 B reserved per block). tests/test_device_code.py compares
# this arithmetic with cuda_occupancy.h itself when the header and g++ are present.
H100 = dict(
    regs_per_sm=65536,           # 64 K 32-bit registers per SM
    regs_per_block=65536,
    max_regs_per_thread=255,     # ptxas never allocates more (the header's bound is 256)
    reg_alloc_unit=256,          # registers are allocated per warp in units of 256
    sub_partitions=4,            # each SM sub-partition holds a quarter of the register file
    warp_size=32,
    max_threads_per_sm=2048,     # 64 warps
    max_blocks_per_sm=32,
    smem_per_sm=233472,          # 228 KiB (the largest carveout; the default carveout preference)
    smem_per_block=49152,        # 48 KiB without opt-in: the limit of static __shared__ arrays
    smem_per_block_optin=232448, # 227 KiB with cudaFuncSetAttribute
    reserved_smem_per_block=1024,  # the driver's per-block reserve (sm_80+)
    smem_alloc_unit=128,
)
# ptxas for sm_90 (CUDA 12.8+/13) lays the driver's 1 KiB per-block reserve out at the start of the
# kernel's shared window, and cuobjdump's SHARED counts it: a kernel with `1024 bytes smem` in
# `ptxas -v` shows SHARED:2048 for sm_90 but SHARED:1024 for sm_80. We report (and charge
# occupancy with) the user's static bytes, so the reserve is removed for sm_9x cubins.
SM90_SHARED_WINDOW = 1024


@dataclasses.dataclass(frozen=True)
class Occupancy:
    blocks: int          # resident blocks per SM
    warps: int           # resident warps per SM
    percent: float       # warps / 64
    limiter: str         # the resources that stop the next block: warps, blocks, regs, smem ('+'-joined)
    by: dict             # blocks allowed by each resource


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def occupancy(regs: int, threads: int, static_smem: int, dynamic_smem: int = 0, dev: dict = H100) -> Occupancy:
    """Resident blocks per SM of a kernel with `regs` registers per thread, `threads` per block and
    `static_smem` + `dynamic_smem` bytes of shared memory per block (user bytes, without the
    driver's reserve), by the rules of cuda_occupancy.h for compute capability 9.0."""
    warps_per_block = -(-threads // dev["warp_size"])
    # Registers: per warp, rounded up to the allocation unit; each sub-partition holds whole warps.
    regs_per_warp = _round_up(max(regs, 1) * dev["warp_size"], dev["reg_alloc_unit"])
    if regs > dev["max_regs_per_thread"] or \
            regs_per_warp * _round_up(warps_per_block, dev["sub_partitions"]) > dev["regs_per_block"]:
        by_regs = 0
    else:
        warps_per_sub = (dev["regs_per_sm"] // dev["sub_partitions"]) // regs_per_warp
        by_regs = warps_per_sub * dev["sub_partitions"] // warps_per_block
    # Shared memory: user bytes + the per-block reserve, rounded up to the allocation unit.
    smem = _round_up(static_smem + dynamic_smem + dev["reserved_smem_per_block"], dev["smem_alloc_unit"])
    limit = dev["smem_per_block_optin"] if dynamic_smem else dev["smem_per_block"]
    by_smem = 0 if smem > limit + dev["reserved_smem_per_block"] else dev["smem_per_sm"] // smem
    by_warps = (dev["max_threads_per_sm"] // dev["warp_size"]) // warps_per_block
    by = {"warps": by_warps, "blocks": dev["max_blocks_per_sm"], "regs": by_regs, "smem": by_smem}
    blocks = min(by.values())
    limiter = "+".join(k for k, v in by.items() if v == blocks)  # every resource that binds
    max_warps = dev["max_threads_per_sm"] // dev["warp_size"]
    return Occupancy(blocks, blocks * warps_per_block, 100.0 * blocks * warps_per_block / max_warps, limiter, by)


# ---- kernel families: block size, occupancy floor, tensor cores ------------------------------------
@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    pattern: str         # regex on the short kernel name (re.search)
    threads: int         # block size of every launch (tests/test_device_code.py reads csrc/cuda)
    floor: float         # minimum H100 occupancy, percent of 64 warps
    tensor_cores: bool   # must contain HMMA/HGMMA
    why: str


FAMILIES = [
    Family("igemm (tensor cores)", r"\b(conv_igemm_kernel|grad_weight_igemm_kernel)<", 256, 25.0, True,
           "implicit-GEMM tiles (WMMA; one cp.async ring with one barrier per K step, pipelined_k_loop: "
           "3 stages, 2 for the TF32 weight gradient, where 3 would pass 48 KB of static shared memory): latency is hidden inside the block by the copies in flight "
           "and by 4 independent MMAs per warp per fragment load, not by many warps. "
           "2 blocks/SM (25%) lets one block's barriers and epilogue overlap the other's MMAs; below 2 "
           "every barrier idles the SM's tensor cores. Today (register-limited; the conv kernels carry "
           "__launch_bounds__(256, 2)): conv 2 blocks (bf16 124-126, fp16 112-114, TF32 126-128 registers, "
           "44.8-45.6 KB of static shared memory, so 2 blocks fit by shared memory too: "
           "the conflict-free store-order epilogue took fp16 from 96 registers and 3 blocks to 2; the "
           "incremental K cursor and per-row output offsets removed every int64 division from the K "
           "loop and the stores), weight gradient 4-5 (48-64 registers; one pixel row per thread keeps "
           "the division-free pixel cursor within 64)."),
    Family("elementwise (memory-bound)",
           r"\b(bias_act_kernel|lrelu_grad_kernel|pixel_norm_planes_kernel|stddev_fill_kernel|"
           r"split_k_finish_kernel)<", 256, 50.0,
           False,
           "one or two 16-byte loads per thread in flight: Little's law for H100 HBM3 (3.35 TB/s x "
           "~0.7 us loaded latency, assumed / 132 SMs = ~18 KB in flight per SM) needs 560-1100 "
           "threads per SM, so >= 50% occupancy (1024 threads) keeps the memory system busy."),
    Family("reductions (memory-bound)",
           r"\b(pixel_norm_rows_kernel|pixel_norm_planes_split_kernel|norm_pass_rows_kernel|norm_pass_planes_kernel|"
           r"stddev_partial_kernel|"
           r"stddev_finish_kernel|stddev_grad_stat_kernel|"
           r"stddev_grad_kernel|grad_weight_finish_kernel)<", 256, 50.0, False,
           "stream their input once like the elementwise kernels (same Little's-law argument, 50%); "
           "the block reductions add barriers, which more resident blocks also cover."),
    Family("pointwise conv (memory-bound)",
           r"\b(conv_pointwise_few_out_kernel|conv_pointwise_few_in_kernel|grad_weight_pointwise_kernel|"
           r"conv_pointwise_rows_few_out_kernel|conv_pointwise_rows_few_in_kernel|"
           r"grad_weight_pointwise_rows_kernel)<", 256, 50.0, False,
           "1x1 convs with <= 4 channels on one side (toRGB, fromRGB, their gradients; NCHW and the "
           "channels_last `rows` kernels): about 2 x 4 FLOPs per element moved, so bandwidth-bound like the "
           "elementwise kernels (same Little's-law argument, 50%); shared memory never limits them before "
           "the registers do: 4-10 KB per block on NCHW (staged weights and bias), 12-14 KB in the rows "
           "forward kernels (24-32 KB in float64: also the block's staged few-channel rows), up to 33 KB "
           "in the rows weight gradient (its reduction buffer: 6 blocks)."),
    Family("weight packing", r"\bpack_weight_kernel<", 256, 50.0, False,
           "one small launch per tensor-core conv call (the weight operand, <= 9.4 MB at 512 channels): "
           "a 32 x 32 tile of raw taps staged in 37 KB of shared memory, then one coalesced store per "
           "slot and lane. 50% keeps enough tiles in flight to cover the staging loads; today registers "
           "(40) and shared memory both allow 6 blocks of 8 warps per SM (75%)."),
    Family("simple conv (fallback)", r"\b(conv_simple_kernel|grad_weight_partial(_rows)?_kernel)<", 256, 37.5, False,
           "the untuned fallback (float64, float32 without TF32, unaligned shapes): a loop of dependent "
           "FMAs over Cin x taps on L1/L2-resident data (weights broadcast across the warp). 3 blocks "
           "(6 warps per scheduler) cover that L1 latency; float64 needs 68 registers for it today "
           "(register pairs), which allows exactly 3. The floor catches a register blow-up, not speed."),
]

# Tensor-core instantiations that must exist in every sm_80+ cubin set: (kernel, T, mode, input
# layout: true NHWC, false NCHW read in place), the TF32 (float) weight gradient included.
_MODES = ("Same", "Up", "Down")
EXPECTED_TENSOR_CORE = sorted(
    f"igemm::{k}<{t}, {m}, {cl}>" for k in ("conv_igemm_kernel", "grad_weight_igemm_kernel")
    for t in ("Half", "BFloat16", "float") for m in _MODES for cl in ("true", "false"))

TENSOR_CORE_OPS = ("HMMA", "HGMMA")
LOCAL_OPS = ("LDL", "STL")


# ---- parsing cuobjdump's output --------------------------------------------------------------------
@dataclasses.dataclass
class Kernel:
    arch: int                # 80, 90, ...
    mangled: str
    regs: int
    stack: int               # stack frame bytes (spills and local arrays live here)
    shared: int              # user static shared memory bytes (cuobjdump's SHARED minus the sm_90 window)
    local: int
    copies: int = 1          # the same kernel in several cubins (a header template in several .cu)
    sass: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    name: str = ""           # short demangled name
    loop: "MainLoop | None" = None  # the tensor-core main loop (parse_main_loops)


_ARCH_RE = re.compile(r"^arch = sm_(\d+)a?\s*$")
_FUNC_RE = re.compile(r"^\s*Function ([^\s:]+):\s*$")
_RES_RE = re.compile(r"^\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def parse_res_usage(text: str, arch: int | None = None) -> list[Kernel]:
    """Kernels of `cuobjdump -res-usage` output (a host binary or object with fatbins, whose
    'arch = sm_XX' lines name each cubin's arch; or one bare cubin of arch `arch`), one per
    (cubin, function), in order."""
    kernels, func = [], None
    for line in text.splitlines():
        if m := _ARCH_RE.match(line):
            arch = int(m.group(1))
        elif m := _FUNC_RE.match(line):
            func = m.group(1)
        elif (m := _RES_RE.match(line)) and func is not None:
            if arch is None:
                raise ValueError(f"cuobjdump -res-usage: function {func} before any 'arch = sm_XX' line")
            regs, stack, shared, local = map(int, m.groups())
            if arch >= 90 and shared >= SM90_SHARED_WINDOW:
                shared -= SM90_SHARED_WINDOW
            kernels.append(Kernel(arch, func, regs, stack, shared, local))
            func = None
    return kernels


_SASS_FUNC_RE = re.compile(r"^\s*Function : (\S+)\s*$")
_SASS_ARCH_RE = re.compile(r"^\s*code for sm_(\d+)a?\s*$")  # also in a bare cubin's listing


_SASS_LINE_RE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9]*)([^;]*);")


def sass_functions(text: str):
    """(arch, mangled kernel, [(address, opcode, operands)]) per function listing of
    `cuobjdump -sass`, in order (a kernel in several cubins appears once per cubin)."""
    arch, key, ins = None, None, []
    for line in text.splitlines() + ["code for sm_0"]:  # the sentinel flushes the last function
        arch_m = _ARCH_RE.match(line) or _SASS_ARCH_RE.match(line)
        func_m = _SASS_FUNC_RE.match(line)
        if (arch_m or func_m) and key is not None:
            yield key[0], key[1], ins
            key = None
        if arch_m:
            arch = int(arch_m.group(1))
        elif func_m:
            key, ins = (arch, func_m.group(1)), []
        elif key is not None and (m := _SASS_LINE_RE.match(line)):
            ins.append((int(m.group(1), 16), m.group(2), m.group(3)))


def parse_sass(text: str) -> dict[tuple[int, str], collections.Counter]:
    """Opcode counts (the mnemonic before its first '.') per (arch, mangled kernel) of
    `cuobjdump -sass`; a kernel in several cubins of one arch adds up."""
    counts: dict[tuple[int, str], collections.Counter] = collections.defaultdict(collections.Counter)
    for arch, name, ins in sass_functions(text):
        counts[(arch, name)].update(op for _, op, _ in ins)  # a kernel with no instructions still appears
    return dict(counts)


_BRANCH_TARGET_RE = re.compile(r"^\s*(?:\.[A-Z0-9.]+)?\s+(?:`\()?0x([0-9a-f]+)")


@dataclasses.dataclass(frozen=True)
class MainLoop:
    instructions: int  # static instructions from the loop head to its backward branch
    calls: int         # CALLs among them: a subroutine per iteration (64-bit integer division, ...)
    tensor_ops: int


def parse_main_loops(text: str) -> dict[tuple[int, str], MainLoop]:
    """Per (arch, mangled kernel) of `cuobjdump -sass`, the main loop: of the ranges from a backward
    branch's target to the branch, the one holding the most HMMA/HGMMA instructions (the smallest on
    a tie: the innermost); kernels without tensor-core instructions in a loop are left out. The
    first cubin of a kernel counts (copies of a header template are the same code)."""
    listings: dict[tuple[int, str], list[tuple[int, str, str]]] = {}
    for arch, name, ins in sass_functions(text):
        listings.setdefault((arch, name), ins)  # the first copy
    loops = {}
    for key, ins in listings.items():
        best = None
        for addr, op, rest in ins:
            t = _BRANCH_TARGET_RE.match(rest) if op == "BRA" else None
            if t is None or int(t.group(1), 16) >= addr:
                continue
            body = [o for a, o, _ in ins if int(t.group(1), 16) <= a <= addr]
            tensor = sum(o in TENSOR_CORE_OPS for o in body)
            if tensor and (best is None or (tensor, -len(body)) > (best.tensor_ops, -best.instructions)):
                best = MainLoop(len(body), sum(o == "CALL" for o in body), tensor)
        if best is not None:
            loops[key] = best
    return loops


def shorten(demangled: str) -> str:
    """`progan_ext::cuda::igemm::conv_igemm_kernel<c10::Half, (progan_ext::cuda::ConvMode)0>(...)`
    -> `igemm::conv_igemm_kernel<Half, Same>`: no parameter list, no common namespaces."""
    s = demangled
    if s.endswith(")"):  # drop the parameter list: the last balanced (...) group
        depth = 0
        for i in range(len(s) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(s[i], 0)
            if depth == 0:
                s = s[:i]
                break
    s = re.sub(r"void ", "", s)
    s = re.sub(r"\(progan_ext::cuda::ConvMode\)(\d)", lambda m: _MODES[int(m.group(1))], s)
    for prefix in ("progan_ext::cuda::", "(anonymous namespace)::", "c10::"):
        s = s.replace(prefix, "")
    return s.replace("(bool)1", "true").replace("(bool)0", "false").strip()


def demangle(names: list[str]) -> dict[str, str]:
    """Demangled names by c++filt (binutils); the mangled name where it is missing."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    out = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True, text=True, check=True).stdout
    return dict(zip(names, out.splitlines()))


def merge(kernels: list[Kernel], sass: dict[tuple[int, str], collections.Counter],
          loops: dict[tuple[int, str], MainLoop] | None = None) -> list[Kernel]:
    """One Kernel per (arch, mangled name), keeping the worst copy (most registers / stack), with
    its SASS counts, main loop and short name."""
    by_key: dict[tuple[int, str], Kernel] = {}
    for k in kernels:
        key = (k.arch, k.mangled)
        old = by_key.get(key)
        if old is None:
            by_key[key] = k
            continue
        worst = max(old, k, key=lambda x: (x.stack + x.local, x.regs, x.shared))
        worst.copies = old.copies + 1
        by_key[key] = worst
    names = demangle(sorted({m for _, m in by_key}))
    for (arch, mangled), k in by_key.items():
        k.name = shorten(names.get(mangled, mangled))
        copies = max(k.copies, 1)
        total = sass.get((arch, mangled), collections.Counter())
        # a header template compiled into several .cu files appears once per cubin: per-copy counts
        k.sass = collections.Counter({op: n // copies for op, n in total.items()})
        k.loop = (loops or {}).get((arch, mangled))
    return sorted(by_key.values(), key=lambda k: (k.arch, family_of(k.name).name if family_of(k.name) else "~", k.name))


def family_of(name: str) -> Family | None:
    return next((f for f in FAMILIES if re.search(f.pattern, name)), None)


# ---- the checks ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    kernel: Kernel
    family: Family | None
    occ: Occupancy | None
    tensor_ops: int
    local_ops: int
    problems: list[str]


def check(kernels: list[Kernel], require_archs: tuple[int, ...] = (90,)) -> tuple[list[Row], list[str]]:
    """Rows for the table and the violations (empty: pass)."""
    rows, violations = [], []
    archs = sorted({k.arch for k in kernels})
    for arch in require_archs:
        if arch not in archs:
            violations.append(f"sm_{arch}: no sm_{arch} device code in the binary (archs present: "
                              f"{', '.join(f'sm_{a}' for a in archs) or 'none'})")
    for k in kernels:
        if k.arch < 80:
            continue  # pre-Ampere builds take the simple paths; the floors are for H100/A100
        fam = family_of(k.name)
        problems = []
        tensor_ops = sum(k.sass[op] for op in TENSOR_CORE_OPS)
        local_ops = sum(k.sass[op] for op in LOCAL_OPS)
        if k.stack or k.local or local_ops:
            problems.append(f"local memory: stack {k.stack} B, local {k.local} B, "
                            f"{k.sass['STL']} STL / {k.sass['LDL']} LDL (spills or a local array)")
        occ = None
        if fam is None:
            problems.append("no kernel family in tools/check_device_code.py FAMILIES (block size, floor)")
        else:
            occ = occupancy(k.regs, fam.threads, k.shared)
            if fam.tensor_cores and tensor_ops == 0:
                problems.append("tensor-core kernel without HMMA/HGMMA instructions")
            if fam.tensor_cores and k.loop is not None and k.loop.calls:
                problems.append(f"{k.loop.calls} CALL in the main loop (a subroutine every K step, e.g. "
                                "64-bit integer division: keep index math incremental)")
            if occ.percent < fam.floor:
                problems.append(f"H100 occupancy {occ.percent:.1f}% ({occ.blocks} blocks of {fam.threads} "
                                f"threads, limited by {occ.limiter}) below the floor {fam.floor:g}%")
        rows.append(Row(k, fam, occ, tensor_ops, local_ops, problems))
        violations += [f"sm_{k.arch} {k.name}: {p}" for p in problems]
    for arch in (a for a in archs if a >= 80):
        present = {k.name for k in kernels if k.arch == arch}
        for name in EXPECTED_TENSOR_CORE:
            if name not in present:
                violations.append(f"sm_{arch} {name}: expected tensor-core kernel missing from the binary")
    return rows, violations


# ---- the report ------------------------------------------------------------------------------------
def render(rows: list[Row], violations: list[str], meta: dict) -> str:
    out = ["# Device code of the CUDA kernels (generated)", "",
           "Generated by `tools/check_device_code.py` (do not edit): registers, shared memory, local memory, "
           "H100 occupancy and tensor-core instructions of every kernel in the built extension, read from "
           "its device code with `cuobjdump -res-usage` and `cuobjdump -sass`.", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    n_fail = sum(1 for r in rows if r.problems)
    out += ["", f"**{len(rows)} kernels (per arch), {n_fail} failing; {len(violations)} violations in all.**", ""]
    out += ["## Rules", "",
            "- No local memory: a stack frame, LOCAL bytes or any `LDL`/`STL` instruction fails (spills "
            "and local arrays both become memory traffic; ptxas's spill stores are `STL`).",
            "- Tensor-core families must contain `HMMA`/`HGMMA` (WMMA compiles to `HMMA` on sm_80/sm_90; "
            "TF32 WMMA to `HMMA.1684.F32.TF32`). Counts are static: instructions in the kernel's code (its unrolled "
            "main-loop body), not executed instructions.",
            "- Tensor-core kernels: no `CALL` in the main loop (the backward branch's range with the most "
            "HMMA/HGMMA). A call there is a software subroutine every K step, in practice 64-bit integer "
            "division or modulo (80-250 instructions each on sm_90): the index math is kept incremental. "
            "The table gives the loop's static instruction count (one pass of its body) and its calls.",
            "- Occupancy on an H100 (sm_90), with the block size of the launch code and the rules of "
            "`cuda_occupancy.h`: registers allocated per warp in units of 256 from 4 sub-partitions of "
            "16384, 2048 threads, 32 blocks and 228 KiB shared memory per SM, shared memory allocated "
            "per block as user bytes + 1 KiB driver reserve in units of 128 B. Percent = resident warps "
            "/ 64. The occupancy of a kernel is that of H100 also in sm_80 rows (its registers differ).",
            "- Shared = user static bytes (`ptxas -v`'s smem). For sm_90 cuobjdump's SHARED also counts "
            "the 1 KiB reserve that ptxas places in the kernel's window; it is subtracted.",
            "- Archs: every sm_80+ cubin of the binary is checked. CI compiles sm_90 only "
            "(TORCH_CUDA_ARCH_LIST=9.0, the compile this check reuses), so CI checks sm_90; sm_80 rows appear "
            "when the binary holds sm_80 code (e.g. the default 8.0;8.6;8.9;9.0+PTX of a GPU-less "
            "`pip install .`). Pre-Ampere cubins are skipped (the host sends them to the simple paths).", "",
            "| family | block | floor | why |", "|---|---|---|---|"]
    out += [f"| {f.name} | {f.threads} | {f.floor:g}% | {f.why} |" for f in FAMILIES]
    out += ["", "Expected tensor-core kernels (each sm_80+ arch): " + ", ".join(f"`{n}`" for n in EXPECTED_TENSOR_CORE)
            + " (`float`: TF32).", ""]
    if violations:
        out += ["## Violations", ""] + [f"- {v}" for v in violations] + [""]
    out += ["## Per family", "", "| arch | family | kernels | registers | shared B | worst occupancy | "
            "HMMA/HGMMA per kernel |", "|---|---|---|---|---|---|---|"]
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r.kernel.arch, r.family.name if r.family else "(none)")].append(r)
    for (arch, fam), rs in sorted(groups.items()):
        regs = sorted(r.kernel.regs for r in rs)
        shared = sorted(r.kernel.shared for r in rs)
        worst = min((r for r in rs if r.occ), key=lambda r: r.occ.percent, default=None)
        tc = sorted(r.tensor_ops for r in rs)
        out.append(f"| sm_{arch} | {fam} | {len(rs)} | {regs[0]}-{regs[-1]} | {shared[0]}-{shared[-1]} | "
                   + (f"{worst.occ.percent:.1f}% (`{worst.kernel.name}`, {worst.occ.limiter})" if worst else "-")
                   + f" | {tc[0]}-{tc[-1]} |")
    out += ["", "## Per kernel", "",
            "| kernel | arch | regs | shared B | stack/local B | STL/LDL | blocks/SM | warps/SM | occupancy "
            "(limiter) | HMMA/HGMMA | main loop instr/calls | floor | result |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k, o = r.kernel, r.occ
        occ = f"{o.blocks} | {o.warps} | {o.percent:.1f}% ({o.limiter})" if o else "- | - | -"
        floor = f"{r.family.floor:g}%" if r.family else "-"
        copies = f" (x{k.copies})" if k.copies > 1 else ""
        out.append(f"| `{k.name}`{copies} | sm_{k.arch} | {k.regs} | {k.shared} | {k.stack}/{k.local} | "
                   f"{k.sass['STL']}/{k.sass['LDL']} | {occ} | {k.sass['HMMA']}/{k.sass['HGMMA']} | "
                   f"{f'{k.loop.instructions}/{k.loop.calls}' if k.loop else '-'} | {floor} | "
                   + ("pass" if not r.problems else "**FAIL**: " + "; ".join(r.problems)) + " |")
    out += ["", "(xN): the kernel is a header template compiled into N translation units (one cubin each, "
            "identical code); the worst copy is shown.", ""]
    return "\n".join(out)


# ---- running cuobjdump -----------------------------------------------------------------------------
def find_cuobjdump() -> str | None:
    """$CUOBJDUMP, PATH, the pip wheels' nvidia/*/bin of this environment, then $CUDA_HOME/bin."""
    if os.environ.get("CUOBJDUMP"):
        return os.environ["CUOBJDUMP"]
    found = shutil.which("cuobjdump")
    if found:
        return found
    import site
    for base in [*site.getsitepackages(), site.getusersitepackages()]:
        hits = sorted(glob.glob(os.path.join(base, "nvidia", "*", "bin", "cuobjdump")))
        if hits:
            return hits[-1]
    home = os.environ.get("CUDA_HOME")
    if home and os.path.exists(os.path.join(home, "bin", "cuobjdump")):
        return os.path.join(home, "bin", "cuobjdump")
    return None


def default_module() -> str:
    """The progan_ext._C that `import progan_ext` loads (installed, or this checkout's in-place
    build), if it was built with CUDA."""
    try:
        import progan_ext
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import progan_ext
    ext = progan_ext._ext
    if not ext.available:
        raise SystemExit(f"check_device_code: progan_ext._C did not load ({ext.error}); pass --module")
    if not ext.cuda_compiled():
        raise SystemExit(f"check_device_code: {ext.module_path} was built without CUDA kernels "
                         "(PROGAN_EXT_FORCE_CUDA=1 builds them)")
    return ext.module_path


def build_info(module: str) -> dict:
    """BUILD_INFO of the _build_info.py beside the module, read without importing it."""
    path = Path(module).parent / "_build_info.py"
    try:
        tree = ast.parse(path.read_text())
        node = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "BUILD_INFO")
        return ast.literal_eval(node.value)
    except (OSError, StopIteration, ValueError, SyntaxError, AttributeError):
        return {}


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    m = re.search(r"release [^\n]+", out)
    return m.group(0) if m else "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", nargs="+", help="the CUDA-built extension (.so), or its object files or "
                    "cubins; default: the progan_ext._C that imports")
    ap.add_argument("--doc", help="write the markdown table here (e.g. docs/device_code.md)")
    ap.add_argument("--require-arch", type=int, action="append",
                    help="an arch (90, 80) that must be in the binary; repeatable (default: 90)")
    ap.add_argument("--note", action="append", default=[], help="a line for the report's header (repeatable)")
    ap.add_argument("--cuobjdump", help="the cuobjdump binary (default: $CUOBJDUMP, PATH, pip's nvidia/*/bin)")
    args = ap.parse_args(argv)
    modules = args.module or [default_module()]
    tool = args.cuobjdump or find_cuobjdump()
    if not tool:
        print("check_device_code: cuobjdump not found; pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm",
              file=sys.stderr)
        return 2

    def run(flag: str, module: str) -> str:
        res = subprocess.run([tool, flag, module], capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"check_device_code: {tool} {flag} {module} failed:\n{res.stderr}")
        return res.stdout

    found, sass, loops = [], {}, {}
    for module in modules:
        sass_text = run("-sass", module)
        arch = re.search(r"^\s*code for sm_(\d+)", sass_text, re.M)  # a bare cubin has one arch
        found += parse_res_usage(run("-res-usage", module), int(arch.group(1)) if arch else None)
        for key, counts in parse_sass(sass_text).items():
            sass[key] = sass.get(key, collections.Counter()) + counts
        for key, loop in parse_main_loops(sass_text).items():
            loops.setdefault(key, loop)
    kernels = merge(found, sass, loops)
    rows, violations = check(kernels, tuple(args.require_arch or (90,)))
    module = modules[0]
    info = build_info(module)
    shown, skip = [], False
    for a in (argv if argv is not None else sys.argv[1:]):
        if not skip and a != "--note":
            shown.append(Path(a).name if a.startswith("/") else a)
        skip = a == "--note"
    command = "python tools/check_device_code.py " + " ".join(shown)
    meta = {
        "command": f"`{command.strip()}`",
        "module": f"`{', '.join(Path(m).name for m in modules)}`, built with TORCH_CUDA_ARCH_LIST={info.get('arch_list', '?')}, "
                  f"torch {info.get('torch_version', '?')}, builder {info.get('builder', '?')}",
        "compiler": "nvcc " + _version([os.path.join(info["cuda_home"], "bin", "nvcc"), "--version"])
                    if info.get("cuda_home") else "unknown",
        "cuobjdump": _version([tool, "--version"]),
        "archs checked": ", ".join(sorted({f"sm_{r.kernel.arch}" for r in rows})) or "none",
    }
    meta.update((f"note {i + 1}", n) for i, n in enumerate(args.note))
    if args.doc:
        Path(args.doc).write_text(render(rows, violations, meta))
    worst = min((r for r in rows if r.occ), key=lambda r: r.occ.percent, default=None)
    tc = [r for r in rows if r.family and r.family.tensor_cores]
    print(f"check_device_code: {len(rows)} kernels ({meta['archs checked']}) in {' '.join(modules)}; "
          f"{sum(1 for r in rows if r.kernel.stack or r.kernel.local or r.local_ops)} with local memory; "
          f"{len(tc)} tensor-core kernels, HMMA/HGMMA {min((r.tensor_ops for r in tc), default=0)}-"
          f"{max((r.tensor_ops for r in tc), default=0)} each, main loops "
          f"{min((r.kernel.loop.instructions for r in tc if r.kernel.loop), default=0)}-"
          f"{max((r.kernel.loop.instructions for r in tc if r.kernel.loop), default=0)} instructions with "
          f"{sum(r.kernel.loop.calls for r in tc if r.kernel.loop)} calls; worst H100 occupancy "
          + (f"{worst.occ.percent:.1f}% ({worst.kernel.name})" if worst else "-"))
    for v in violations:
        print("FAIL " + v)
    if args.doc:
        print(f"check_device_code: wrote {args.doc}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
