"""tools/check_device_code.py: parsing of cuobjdump's output, the H100 occupancy arithmetic (known
answers, and NVIDIA's cuda_occupancy.h itself when the header and g++ are here), the block sizes of
its kernel families against the launch code, the checks, and the whole check on a CUDA-built module
when there is one and cuobjdump is installed."""

import collections
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_device_code", ROOT / "tools" / "check_device_code.py")
cdc = importlib.util.module_from_spec(_spec)
sys.modules["check_device_code"] = cdc  # dataclasses look their module up by name
_spec.loader.exec_module(cdc)

# A host binary with two fatbins, as `cuobjdump -res-usage _C.so` prints it (an empty cubin first).
RES_USAGE = """
Fatbin elf code:
================
arch = sm_90
code version = [1,8]
host = linux
compile_size = 64bit

Resource usage:
 Common:
  GLOBAL:0

Fatbin elf code:
================
arch = sm_80
code version = [1,8]
host = linux
compile_size = 64bit

Resource usage:
 Common:
  GLOBAL:0
 Function _Z7k_localIfEvPT_i:
  REG:32 STACK:296 SHARED:0 LOCAL:0 CONSTANT[0]:364 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _Z6k_wmmaPK6__halfS1_Pf:
  REG:22 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:376 TEXTURE:0 SURFACE:0 SAMPLER:0

Fatbin elf code:
================
arch = sm_90
code version = [1,8]
host = linux
compile_size = 64bit

Resource usage:
 Common:
  GLOBAL:0
 Function _Z7k_localIfEvPT_i:
  REG:32 STACK:296 SHARED:0 LOCAL:0 CONSTANT[0]:540 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _Z6k_wmmaPK6__halfS1_Pf:
  REG:22 STACK:0 SHARED:2048 LOCAL:0 CONSTANT[0]:552 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function _Z4k100Pf:
  REG:10 STACK:0 SHARED:1136 LOCAL:16 CONSTANT[0]:536 TEXTURE:0 SURFACE:0 SAMPLER:0
"""

SASS = """
Fatbin elf code:
================
arch = sm_90
code version = [1,8]
host = linux
compile_size = 64bit

	code for sm_90
		Function : _Z7k_localIfEvPT_i
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                     /* 0x00000a00ff017b82 */
                                                                              /* 0x000fe20000000800 */
        /*0160*/                   STL [R1+0x34], R21 ;                       /* 0x0000341501007387 */
        /*01e0*/              @!P0 STL [R1+0x30], R20 ;                       /* 0x0000301401007387 */
        /*0300*/                   LDL.64 R4, [R1+0x30] ;                     /* 0x0000300001047983 */
        /*0310*/                   EXIT ;                                     /* 0x000000000000794d */
		..........

		Function : _Z6k_wmmaPK6__halfS1_Pf
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0210*/                   LDSM.16.M88.4 R12, [R2] ;                  /* 0x000000000208783b */
        /*0220*/                   HMMA.16816.F32 R16, R12.reuse, R6, RZ ;     /* 0x000000060c10723c */
        /*0230*/                   HMMA.16816.F32 R12, R12, R4, RZ ;           /* 0x000000040c0c723c */
        /*0240*/              @UP0 HMMA.1684.F32.TF32 R8, R12, R4, R8 ;        /* 0x000000040c08723c */
        /*0250*/                   HGMMA.64x64x16.F32 R24, gdesc[UR4], RZ ;    /* 0x00000000041879f0 */
        /*0260*/                   EXIT ;                                     /* 0x000000000000794d */

Fatbin elf code:
================
arch = sm_80
code version = [1,8]
host = linux
compile_size = 64bit

	code for sm_80
		Function : _Z6k_wmmaPK6__halfS1_Pf
        /*0220*/                   HMMA.16816.F32 R16, R12.reuse, R6, RZ ;     /* 0x000000060c10723c */
"""


# ---- parsing -----------------------------------------------------------------------------------------
def test_parse_res_usage():
    ks = cdc.parse_res_usage(RES_USAGE)
    got = [(k.arch, k.mangled, k.regs, k.stack, k.shared, k.local) for k in ks]
    assert got == [
        (80, "_Z7k_localIfEvPT_i", 32, 296, 0, 0),
        (80, "_Z6k_wmmaPK6__halfS1_Pf", 22, 0, 1024, 0),
        (90, "_Z7k_localIfEvPT_i", 32, 296, 0, 0),
        (90, "_Z6k_wmmaPK6__halfS1_Pf", 22, 0, 1024, 0),  # sm_90: SHARED counts the 1 KiB reserve
        (90, "_Z4k100Pf", 10, 0, 112, 16),
    ]


def test_parse_res_usage_of_a_bare_cubin():
    """A .cubin's listing has no 'arch =' line: the caller names the arch (from its SASS)."""
    text = RES_USAGE.split("Resource usage:")[-1]
    assert [(k.arch, k.shared) for k in cdc.parse_res_usage("Resource usage:" + text, arch=80)] == \
        [(80, 0), (80, 2048), (80, 1136)]  # no sm_90 window to remove on sm_80
    with pytest.raises(ValueError, match="before any 'arch = sm_XX' line"):
        cdc.parse_res_usage("Resource usage:" + text)
    assert set(cdc.parse_sass("\tcode for sm_80\n" + SASS.split("Fatbin")[1].split("code for sm_90")[1])) == \
        {(80, "_Z7k_localIfEvPT_i"), (80, "_Z6k_wmmaPK6__halfS1_Pf")}


def test_parse_sass_counts_opcodes_per_arch_and_kernel():
    c = cdc.parse_sass(SASS)
    assert set(c) == {(90, "_Z7k_localIfEvPT_i"), (90, "_Z6k_wmmaPK6__halfS1_Pf"), (80, "_Z6k_wmmaPK6__halfS1_Pf")}
    local = c[(90, "_Z7k_localIfEvPT_i")]
    assert (local["STL"], local["LDL"], local["HMMA"]) == (2, 1, 0)  # the predicated STL counts
    wmma = c[(90, "_Z6k_wmmaPK6__halfS1_Pf")]
    assert (wmma["HMMA"], wmma["HGMMA"], wmma["LDSM"], wmma["STL"]) == (3, 1, 1, 0)
    assert c[(80, "_Z6k_wmmaPK6__halfS1_Pf")]["HMMA"] == 1


LOOP_SASS = """
	code for sm_90
		Function : _Z4k_gw
        /*0000*/                   LDC R1, c[0x0][0x28] ;                     /* 0x00000a00ff017b82 */
        /*0010*/                   IADD3 R2, R2, 0x1, RZ ;                    /* 0x0000000102027810 */
        /*0020*/                   HMMA.16816.F32 R16, R12, R6, R16 ;         /* 0x000000060c10723c */
        /*0030*/                   CALL.REL.NOINC 0x100 ;                     /* 0x000000c000007944 */
        /*0040*/                   HMMA.16816.F32 R20, R12, R4, R20 ;         /* 0x000000040c14723c */
        /*0050*/               @P0 BRA 0x10 ;                                /* 0xffffffb000000947 */
        /*0060*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;              /* 0x0000000000007b1d */
        /*0070*/              @!P1 BRA 0x60 ;                                /* 0xffffffe000008947 */
        /*0080*/                   BRA 0x0 ;                                  /* 0xfffffff000007947 */
        /*0090*/                   EXIT ;                                     /* 0x000000000000794d */
		Function : _Z4k_ew
        /*0000*/                   LDG.E R2, [R2.64] ;                        /* 0x0000000402027981 */
        /*0010*/               @P0 BRA 0x0 ;                                 /* 0xfffffff000000947 */
"""


def test_parse_main_loops_takes_the_innermost_loop_with_the_most_tensor_ops():
    loops = cdc.parse_main_loops(LOOP_SASS)
    # 0x10..0x50 and 0x0..0x80 both hold the 2 HMMA: the smaller range is the main loop; k_ew has none
    assert loops == {(90, "_Z4k_gw"): cdc.MainLoop(instructions=5, calls=1, tensor_ops=2)}


def test_shorten():
    s = cdc.shorten
    assert s("void progan_ext::cuda::igemm::conv_igemm_kernel<c10::Half, (progan_ext::cuda::ConvMode)1>"
             "(c10::Half const*, c10::Half const*, float const*, c10::Half*, float*, "
             "progan_ext::cuda::igemm::FastParams)") == "igemm::conv_igemm_kernel<Half, Up>"
    assert s("void progan_ext::cuda::(anonymous namespace)::bias_act_kernel<float, 4, true>(float const*, "
             "float const*, float*, long, long, long, bool, float)") == "bias_act_kernel<float, 4, true>"
    assert s("_Z4k100Pf") == "_Z4k100Pf"


# the same header template compiled into a second .cu: another sm_90 cubin with the kernel
SECOND_CUBIN_RES = """
arch = sm_90
Resource usage:
 Function _Z6k_wmmaPK6__halfS1_Pf:
  REG:24 STACK:0 SHARED:2048 LOCAL:0 CONSTANT[0]:552 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
SECOND_CUBIN_SASS = """
arch = sm_90
		Function : _Z6k_wmmaPK6__halfS1_Pf
        /*0220*/                   HMMA.16816.F32 R16, R12.reuse, R6, RZ ;     /* 0x000000060c10723c */
        /*0230*/                   HMMA.16816.F32 R12, R12, R4, RZ ;           /* 0x000000040c0c723c */
        /*0240*/                   HMMA.16816.F32 R12, R12, R4, RZ ;           /* 0x000000040c0c723c */
"""


@pytest.mark.skipif(shutil.which("c++filt") is None, reason="c++filt (binutils) not installed")
def test_merge_dedupes_cubins_and_attaches_sass():
    merged = cdc.merge(cdc.parse_res_usage(RES_USAGE + SECOND_CUBIN_RES), cdc.parse_sass(SASS + SECOND_CUBIN_SASS))
    by = {(k.arch, k.name): k for k in merged}
    wmma = by[(90, "k_wmma")]
    assert (wmma.copies, wmma.regs, wmma.sass["HMMA"]) == (2, 24, 3)  # the worse copy; per-copy counts
    assert by[(80, "k_wmma")].copies == 1 and by[(80, "k_wmma")].sass["HMMA"] == 1
    assert by[(90, "k_local<float>")].stack == 296 and by[(90, "k_local<float>")].sass["STL"] == 2


# ---- occupancy on H100 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("regs,threads,smem,blocks,limiter", [
    (255, 256, 0, 1, "regs"),        # 255 regs -> 8192 per warp -> 2 warps per sub-partition
    (32, 256, 0, 8, "warps+regs"),   # 2048 threads / 256, and 1024 regs per warp -> 64 warps
    (24, 256, 0, 8, "warps"),        # 768 regs per warp -> 21 warps per sub-partition: threads bind
    (64, 256, 0, 4, "regs"),         # 2048 regs per warp -> 8 warps per sub-partition -> 32 warps
    (65, 256, 0, 3, "regs"),         # 2080 -> 2304 (unit 256): 7 warps per sub-partition -> 28 warps
    (33, 256, 0, 6, "regs"),         # 1056 -> 1280: 12 per sub-partition -> 48 warps
    (128, 256, 34816, 2, "regs"),    # the igemm tile: 6 by shared memory, 2 by registers
    (32, 256, 49152, 4, "smem"),     # (48 KiB + 1 KiB reserve) x 4 <= 228 KiB < x 5
    (16, 32, 0, 32, "blocks"),       # 32 blocks of 1 warp: 50%
    (16, 64, 0, 32, "warps+blocks"),
])
def test_occupancy_known_answers(regs, threads, smem, blocks, limiter):
    occ = cdc.occupancy(regs, threads, smem)
    assert (occ.blocks, occ.limiter) == (blocks, limiter)
    assert occ.warps == blocks * -(-threads // 32) and occ.percent == pytest.approx(100 * occ.warps / 64)


def test_occupancy_limits():
    assert cdc.occupancy(256, 256, 0).blocks == 0          # more registers than a thread can have
    assert cdc.occupancy(32, 1024, 49153).blocks == 0      # static shared memory above 48 KiB
    assert cdc.occupancy(32, 256, 100 * 1024, dynamic_smem=100 * 1024).blocks == 1  # opt-in: 2 x 101 KiB
    assert cdc.occupancy(32, 256, 1).by["smem"] == 233472 // 1152  # 1 B + 1 KiB, rounded up to 128 B


OCC_HEADER = Path("/usr/local/cuda/include/cuda_occupancy.h")
OCC_HARNESS = r"""
#include <cstdio>
#include <cuda_occupancy.h>
int main() {
  cudaOccDeviceProp p;  // H100 SXM
  p.computeMajor = 9; p.computeMinor = 0; p.maxThreadsPerBlock = 1024; p.maxThreadsPerMultiprocessor = 2048;
  p.regsPerBlock = 65536; p.regsPerMultiprocessor = 65536; p.warpSize = 32; p.sharedMemPerBlock = 49152;
  p.sharedMemPerMultiprocessor = 233472; p.numSms = 132; p.sharedMemPerBlockOptin = 232448;
  p.reservedSharedMemPerBlock = 1024;
  int regs, threads; long smem;
  while (std::scanf("%d %d %ld", &regs, &threads, &smem) == 3) {
    cudaOccFuncAttributes a; a.maxThreadsPerBlock = 1024; a.numRegs = regs; a.sharedSizeBytes = smem;
    a.numBlockBarriers = 1;
    cudaOccDeviceState s; cudaOccResult r;
    if (cudaOccMaxActiveBlocksPerMultiprocessor(&r, &p, &a, &s, threads, 0) != CUDA_OCC_SUCCESS) return 1;
    std::printf("%d\n", r.activeBlocksPerMultiprocessor);
  }
}
"""


def _cuda_include():
    for cand in (OCC_HEADER, *sorted(Path("/usr/local").glob("cuda-*/include/cuda_occupancy.h"))):
        if cand.exists():
            return cand.parent
    return None


@pytest.mark.skipif(_cuda_include() is None or shutil.which("g++") is None,
                    reason="needs g++ and the CUDA toolkit's cuda_occupancy.h")
def test_occupancy_matches_cuda_occupancy_h(tmp_path):
    """The Python arithmetic against NVIDIA's own calculator, over registers x block sizes x shared."""
    src, exe = tmp_path / "occ.cpp", tmp_path / "occ"
    src.write_text(OCC_HARNESS)
    subprocess.run(["g++", "-O1", "-I", str(_cuda_include()), str(src), "-o", str(exe)], check=True)
    cases = [(r, t, s) for r in (1, 16, 24, 32, 33, 40, 48, 56, 64, 65, 72, 80, 96, 100, 128, 129, 168, 200, 255)
             for t in (32, 64, 96, 128, 256, 512, 1024) for s in (0, 1, 1024, 4000, 16384, 34816, 49152)]
    out = subprocess.run([str(exe)], input="".join(f"{r} {t} {s}\n" for r, t, s in cases), capture_output=True,
                         text=True, check=True).stdout.split()
    mismatches = [(c, int(o), cdc.occupancy(*c).blocks) for c, o in zip(cases, out) if int(o) != cdc.occupancy(*c).blocks]
    assert len(out) == len(cases) and not mismatches, mismatches[:10]


# ---- the kernel families against the launch code --------------------------------------------------------
def _launch_sites():
    """(file, kernel names, block expression) of every PROGAN_LAUNCH in csrc/cuda, and the
    kernels defined with __global__."""
    sites, kernels = [], set()
    for path in sorted((ROOT / "csrc" / "cuda").glob("*.cu*")):
        text = re.sub(r"//[^\n]*", "", path.read_text())  # comments mention the macro too
        kernels |= set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(", text))
        for m in re.finditer(r"PROGAN_LAUNCH\(", text):
            if text[:m.start()].rstrip().endswith("#define"):
                continue
            # the macro's first three arguments; a kernel with template arguments is in parentheses
            args, depth, cur = [], 0, ""
            for ch in text[m.end():]:
                depth += {"(": 1, ")": -1}.get(ch, 0)
                if depth < 0 or (ch == "," and depth == 0):
                    args.append(cur.strip())
                    cur = ""
                    if depth < 0 or len(args) == 3:
                        break
                else:
                    cur += ch
            names = re.findall(r"(\w+_kernel)\b", args[0])
            if not names:  # a kernel pointer chosen earlier in the file: the kernels it takes the address of
                names = re.findall(r"&\s*(?:\w+::)*(\w+_kernel)\s*<", text)
            sites.append((path.name, names, args[2], text))
    return sites, kernels


def _resolve(expr, text):
    """The block size a launch's expression gives; for threads_for(work[, max]) (blocks sized to
    their work, whole warps up to max) its largest, the size the family's occupancy is for."""
    bound = re.search(rf"const int {re.escape(expr)} = (threads_for\(.*?\));", text) if expr.isidentifier() else None
    if bound:
        expr = bound.group(1)
    if expr.startswith("threads_for("):
        cap = re.fullmatch(r"threads_for\((?:[^()]|\([^()]*\))*?(?:,\s*(\d+))?\)", expr)
        assert cap, f"cannot read threads_for's cap in {expr!r}"
        return int(cap.group(1) or re.search(r"int threads_for\(int64_t work, int max_threads = (\d+)\)",
                                              (ROOT / "csrc" / "cuda" / "device_utils.cuh").read_text()).group(1))
    if expr.isdigit():
        return int(expr)
    name = expr.split("::")[-1]
    src = "".join((ROOT / "csrc" / "cuda" / f).read_text() for f in ("conv_igemm_load.cuh", "conv_igemm.cuh")) \
        if expr.startswith("igemm::") else text
    m = re.search(rf"constexpr int (?:[^;]*\b)?{name} = (\d+)", src)
    assert m, f"cannot resolve the block size {expr!r}"
    return int(m.group(1))


def test_families_cover_every_kernel_with_the_launch_block_size():
    sites, kernels = _launch_sites()
    assert len(sites) >= 15 and kernels >= {"conv_igemm_kernel", "grad_weight_igemm_kernel", "bias_act_kernel"}
    for k in kernels:
        fams = [f for f in cdc.FAMILIES if re.search(f.pattern, k + "<")]
        assert len(fams) == 1, f"kernel {k}: families {[f.name for f in fams]} (exactly one expected)"
    launched = set()
    for fname, names, block, text in sites:
        assert names, f"{fname}: a PROGAN_LAUNCH whose kernel could not be named"
        threads = _resolve(block, text)
        for n in names:
            launched.add(n)
            fam = cdc.family_of(n + "<")
            assert fam is not None and fam.threads == threads, (fname, n, block, threads, fam)
    assert launched == kernels, f"kernels never launched or launched but not __global__: {launched ^ kernels}"


# ---- the checks -----------------------------------------------------------------------------------------
def _kernel(name, arch=90, regs=32, stack=0, shared=0, local=0, **sass):
    return cdc.Kernel(arch, "_Z" + name, regs, stack, shared, local, sass=collections.Counter(sass), name=name)


def _expected(arch=90, **kw):
    return [_kernel(n, arch, regs=128, shared=34816, HMMA=64, **kw) for n in cdc.EXPECTED_TENSOR_CORE]


def test_check_passes_a_clean_binary():
    rows, violations = cdc.check(_expected() + [_kernel("bias_act_kernel<float, 4, true>", regs=24)])
    assert violations == [] and len(rows) == len(cdc.EXPECTED_TENSOR_CORE) + 1


def test_check_reports_each_violation():
    kernels = _expected()
    kernels[0].sass = collections.Counter()  # WMMA lost
    kernels += [
        _kernel("bias_act_kernel<float, 4, true>", regs=24, stack=16, STL=2, LDL=2),  # a spill
        _kernel("bias_act_kernel<float, 1, true>", regs=72),  # 3 blocks: 37.5% < 50%
        _kernel("mystery_kernel<float>"),
    ]
    _, violations = cdc.check(kernels, require_archs=(90, 80))
    text = "\n".join(violations)
    assert "sm_80: no sm_80 device code" in text
    assert f"{cdc.EXPECTED_TENSOR_CORE[0]}: tensor-core kernel without HMMA" in text
    assert "bias_act_kernel<float, 4, true>: local memory: stack 16 B, local 0 B, 2 STL / 2 LDL" in text
    assert "bias_act_kernel<float, 1, true>: H100 occupancy 37.5% (3 blocks of 256 threads, limited by regs)" in text
    assert "mystery_kernel<float>: no kernel family" in text
    assert len(violations) == 5
    kernels = _expected()
    kernels[1].loop = cdc.MainLoop(instructions=300, calls=2, tensor_ops=16)  # int64 division per K step
    kernels[2].loop = cdc.MainLoop(instructions=190, calls=0, tensor_ops=16)
    _, violations = cdc.check(kernels)
    assert violations == [f"sm_90 {cdc.EXPECTED_TENSOR_CORE[1]}: 2 CALL in the main loop (a subroutine every K "
                          "step, e.g. 64-bit integer division: keep index math incremental)"]
    _, violations = cdc.check(_expected()[1:])
    assert violations == [f"sm_90 {cdc.EXPECTED_TENSOR_CORE[0]}: expected tensor-core kernel missing from the binary"]


def test_render_has_a_row_per_kernel(tmp_path):
    rows, violations = cdc.check(_expected() + [_kernel("bias_act_kernel<float, 4, true>", regs=24)])
    text = cdc.render(rows, violations, {"command": "`x`"})
    assert "| `bias_act_kernel<float, 4, true>` | sm_90 | 24 | 0 | 0/0 | 0/0 | 8 | 64 | 100.0% (warps) | 0/0 | - |" in text
    rows[0].kernel.loop = cdc.MainLoop(instructions=190, calls=0, tensor_ops=16)
    assert "| 64/0 | 190/0 | 25% | pass |" in cdc.render(rows, violations, {})
    assert text.count("| pass |") == len(rows)


# ---- the whole check on the built module ----------------------------------------------------------------
def _built_module():
    import progan_ext
    ext = progan_ext._ext
    return ext.module_path if ext.available and ext.cuda_compiled() else None


@pytest.mark.skipif(_built_module() is None, reason="progan_ext._C was not built with CUDA (PROGAN_EXT_FORCE_CUDA=1)")
@pytest.mark.skipif(cdc.find_cuobjdump() is None,
                    reason="cuobjdump not installed (pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")
def test_device_code_of_the_built_module(tmp_path, capsys):
    doc = tmp_path / "device_code.md"
    status = cdc.main(["--module", _built_module(), "--doc", str(doc)])
    out = capsys.readouterr().out
    assert status == 0, out
    text = doc.read_text()
    for layout in ("true", "false"):  # NHWC and NCHW inputs
        assert f"igemm::conv_igemm_kernel<Half, Same, {layout}>" in text
        assert f"igemm::grad_weight_igemm_kernel<Half, Same, {layout}>" in text
