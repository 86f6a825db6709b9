"""The CUDA emulator itself (csrc/emu), through probe kernels whose answer or error is known.

The expected shuffle results are computed here from the CUDA C++ Programming Guide's wording
(subsections of `width` lanes; up/down do not wrap; xor may read earlier subsections only); the
emulator implements the PTX ISA's shfl.sync pseudocode: two independent readings that must agree.
Deliberately broken kernels (missing __syncthreads, missing __syncwarp, a divergent barrier, bad
masks, misaligned WMMA pointers, launches over the limits) must be caught.
"""


import pytest
import torch

from progan_ext import emulated

pytestmark = pytest.mark.skipif(not emulated.available, reason="emulated CUDA module not built (PROGAN_EXT_EMULATE=1)")


def probe(name, x=None, args=()):
    x = torch.zeros(1) if x is None else x
    return emulated.ops().emu_probe(x, name, list(args))


# ----------------------------------------------------------------------------------------------
# Warp shuffles and votes against the CUDA manual.


def manual_shuffle(mode, values, arg, width):
    out = []
    for tid, v in enumerate(values):
        lane, base = tid % 32, tid - tid % 32
        seg = lane // width * width  # first lane of this lane's subsection
        if mode == "idx":
            src = seg + arg % width
        elif mode == "up":
            src = lane - arg if lane - seg - arg >= 0 else lane
        elif mode == "down":
            src = lane + arg if lane - seg + arg < width else lane
        else:  # xor: later subsections give back the caller's own value
            src = lane ^ arg
            if src // width > lane // width:
                src = lane
        out.append(values[base + src])
    return out


@pytest.mark.parametrize("mode", ["idx", "up", "down", "xor"])
@pytest.mark.parametrize("width", [1, 2, 4, 8, 16, 32])
def test_shuffles_follow_the_cuda_manual(mode, width):
    values = torch.randperm(1000)[:64].int()  # two warps
    for arg in (0, 1, 3, 5, 8, 17, 31):
        got = probe(f"shfl_{mode}", values, [0xFFFFFFFF, arg, width]).tolist()
        assert got == manual_shuffle(mode, values.tolist(), arg, width), (mode, width, arg)


def test_shuffle_within_a_partial_mask():
    values = torch.arange(100, 132).int()
    got = probe("shfl_xor", values, [0x0000FFFF, 1, 32]).tolist()
    assert got[:16] == [100 + (i ^ 1) for i in range(16)] and got[16:] == [-1] * 16
    with pytest.raises(RuntimeError, match="reads lane 16, which is not in the mask 0x0000ffff"):
        probe("shfl_xor", values, [0x0000FFFF, 16, 32])


@pytest.mark.parametrize("width", [0, 3, 64])
def test_shuffle_width_must_be_a_power_of_two_up_to_32(width):
    with pytest.raises(RuntimeError, match="width must be a power of two"):
        probe("shfl_idx", torch.arange(32).int(), [0xFFFFFFFF, 0, width])


def test_votes():
    pred = (torch.rand(32) < 0.5).int()
    pred[3], pred[4] = 1, 0
    bits = sum(1 << i for i in range(32) if pred[i])
    assert probe("ballot", pred).tolist() == [bits - (1 << 32) if bits >= 1 << 31 else bits] * 32
    assert probe("any", pred).tolist() == [1] * 32
    assert probe("all", pred).tolist() == [0] * 32
    assert probe("all", torch.ones(32).int()).tolist() == [1] * 32
    half = probe("ballot", pred, [0x0000FFFF]).tolist()
    assert half[:16] == [bits & 0xFFFF] * 16 and half[16:] == [-1] * 16


# ----------------------------------------------------------------------------------------------
# Missing synchronisation shows up (shared memory is poisoned with NaN before every block).


def test_block_reduction_needs_its_barrier():
    x = torch.rand(256)
    torch.testing.assert_close(probe("smem_sum", x), x.sum().reshape(1))
    assert torch.isnan(probe("smem_sum_no_barrier", x)).all()  # read before the other threads wrote


def test_warp_synchronous_reduction_needs_syncwarp():
    x = torch.rand(32)
    torch.testing.assert_close(probe("warp_sum", x), x.sum().reshape(1))
    assert torch.isnan(probe("warp_sum_no_syncwarp", x)).all()


@pytest.mark.parametrize("order", ["forward", "reverse", "shuffle", "warps", "warps-reverse"])
def test_cross_warp_read_needs_its_barrier(monkeypatch, order):
    # The round-robin orders keep the two warps in step at the __syncwarp and so cannot see the
    # missing __syncthreads; the warp-major orders run one warp a whole barrier interval ahead.
    monkeypatch.setenv("PROGAN_EMU_THREAD_ORDER", order)
    x = torch.rand(64)
    want = x.roll(-32)
    torch.testing.assert_close(probe("cross_warp", x), want)
    got = probe("cross_warp_no_barrier", x)
    if order.startswith("warps"):
        first = slice(0, 32) if order == "warps" else slice(32, 64)  # the warp that ran ahead
        assert torch.isnan(got[first]).all() and not torch.isnan(got).all()
    else:
        torch.testing.assert_close(got, want)


def test_thread_order_names_are_checked(monkeypatch):
    monkeypatch.setenv("PROGAN_EMU_THREAD_ORDER", "sideways")
    with pytest.raises(RuntimeError, match="warps or warps-reverse, got 'sideways'"):
        probe("cross_warp", torch.rand(64))
    monkeypatch.setenv("PROGAN_EMU_THREAD_ORDER", "forward")
    monkeypatch.setenv("PROGAN_EMU_BLOCK_ORDER", "warps")  # a thread order only
    with pytest.raises(RuntimeError, match="BLOCK_ORDER must be forward, reverse or shuffle, got 'warps'"):
        probe("cross_warp", torch.rand(64))


@pytest.mark.parametrize("n", [32, 96, 256, 1024])
def test_block_sum_helper(n):
    x = torch.rand(n)
    torch.testing.assert_close(probe("block_sum", x), x.sum().expand(n))


def test_block_sum_needs_whole_warps():
    # warp_sum's full mask would name lanes a partial last warp does not have
    with pytest.raises(RuntimeError, match="names lanes that do not exist"):
        probe("block_sum", torch.rand(1000))


def test_async_copy_lands_at_the_wait():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = probe("async_copy", x)
    assert torch.isnan(out[:4]).all()  # before cp.async.wait_group: still the poison
    assert out[4:8].tolist() == x.tolist()
    assert out[8:].tolist() == [0.0] * 4  # src-size 0: zero fill


def test_async_copy_can_land_at_issue(monkeypatch):
    # The other end of what a GPU allows: the copy lands as it is issued, so a copy into a slot
    # that another warp still reads overwrites it at once (the ring-buffer race the default,
    # latest landing never shows).
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    monkeypatch.setenv("PROGAN_EMU_ASYNC_LAND", "issue")
    out = probe("async_copy", x)
    assert out[:8].tolist() == x.tolist() * 2  # already there before the wait
    assert out[8:].tolist() == [0.0] * 4
    monkeypatch.setenv("PROGAN_EMU_ASYNC_LAND", "soon")
    with pytest.raises(RuntimeError, match="PROGAN_EMU_ASYNC_LAND must be wait or issue, got 'soon'"):
        probe("async_copy", x)


# ----------------------------------------------------------------------------------------------
# Errors: reported as RuntimeError naming the kernel and the rule, never a hang or a crash.


@pytest.mark.parametrize(
    "name,args,message",
    [
        ("divergent_barrier", [40], "divergent __syncthreads"),
        ("barrier_vs_shuffle", [], "deadlock.*waits at __shfl_sync for lane 16, which waits at __syncthreads"),
        ("different_collectives", [], "deadlock.*lanes of one mask at different collectives"),
        ("mask_without_self", [], "called by a lane that its mask 0x00000001 does not name"),
        ("mask_names_exited_lane", [], "exited"),
        ("partial_warp_full_mask", [], "names lanes that do not exist"),
        ("trap", [], r"__trap\(\) executed.*thread \(3,0,0\)"),
    ],
)
def test_broken_kernels_are_reported(name, args, message):
    with pytest.raises(RuntimeError, match=message) as info:
        probe(name, args=args)
    assert "CUDA emulator" in str(info.value) and "_probe" in str(info.value)  # names the kernel


@pytest.mark.parametrize(
    "grid,block,smem,message",
    [
        ((1, 1, 1), (1025, 1, 1), 0, "1024"),
        ((1, 1, 1), (32, 33, 1), 0, "1056 threads per block exceed 1024"),
        ((1, 1, 1), (1, 1, 65), 0, "exceeds"),
        ((1, 65536, 1), (32, 1, 1), 0, "65535"),
        ((0, 1, 1), (32, 1, 1), 0, "zero dimension"),
        ((1, 1, 1), (32, 1, 1), 48 * 1024 + 1, "cudaFuncSetAttribute"),
    ],
)
def test_launch_limits(grid, block, smem, message):
    with pytest.raises(RuntimeError, match=message):
        probe("launch", args=[*grid, *block, smem])
    probe("launch", args=[1, 1, 1, 32, 1, 1, 48 * 1024])  # at the limits is fine
    probe("launch", args=[2, 1, 1, 1024, 1, 1, 0])


def test_dry_run_checks_and_counts_launches_but_runs_no_block(monkeypatch):
    monkeypatch.setenv("PROGAN_EMU_DRY_RUN", "1")
    before = emulated.stats()
    probe("launch", args=[3, 1, 1, 64, 1, 1, 0])
    after = emulated.stats()
    assert after["launches"] == before["launches"] + 1 and after["blocks"] == before["blocks"]
    with pytest.raises(RuntimeError, match="1024"):  # the launch limits still apply
        probe("launch", args=[1, 1, 1, 1025, 1, 1, 0])
    monkeypatch.setenv("PROGAN_EMU_DRY_RUN", "yes")
    with pytest.raises(RuntimeError, match="PROGAN_EMU_DRY_RUN must be 0 or 1"):
        probe("launch", args=[1, 1, 1, 32, 1, 1, 0])
    monkeypatch.setenv("PROGAN_EMU_DRY_RUN", "0")
    probe("launch", args=[3, 1, 1, 64, 1, 1, 0])
    assert emulated.stats()["blocks"] == after["blocks"] + 3


def test_shared_memory_limits():
    with pytest.raises(RuntimeError, match="static shared memory of 50000 bytes exceeds the 48 KB"):
        probe("big_static_smem")
    with pytest.raises(RuntimeError, match="cudaFuncSetAttribute"):
        probe("dynamic_smem", args=[64 * 1024, 0])
    assert probe("dynamic_smem", args=[64 * 1024, 100 * 1024]).tolist() == [7]  # raised with the attribute
    with pytest.raises(RuntimeError, match="227 KB"):
        probe("dynamic_smem", args=[64 * 1024, 300 * 1024])
    assert probe("dynamic_smem", args=[1024, 0]).tolist() == [7]


# ----------------------------------------------------------------------------------------------
# Block order.


def test_block_order_is_selectable(monkeypatch):
    seen = {}
    for order in ("forward", "reverse", "shuffle"):
        monkeypatch.setenv("PROGAN_EMU_BLOCK_ORDER", order)
        seen[order] = {probe("block_order", args=[64]).item() for _ in range(4)}
    assert seen["forward"] == {63} and seen["reverse"] == {0}
    assert len(seen["shuffle"]) > 1  # the last block to run varies: an order-dependent kernel shows it
    monkeypatch.setenv("PROGAN_EMU_BLOCK_ORDER", "sideways")
    with pytest.raises(RuntimeError, match="PROGAN_EMU_BLOCK_ORDER must be forward, reverse or shuffle"):
        probe("block_order")


# ----------------------------------------------------------------------------------------------
# WMMA.


def _gemm_input(a, b, lda=16):
    x = torch.zeros(768, dtype=torch.float16)
    x[: 16 * lda].view(16, lda)[:, :16] = a
    x[512:] = b.reshape(-1)
    return x


def test_wmma_gemm():
    a, b = torch.randn(16, 16).half(), torch.randn(16, 16).half()
    out = probe("wmma_gemm", _gemm_input(a, b), [0, 16])
    torch.testing.assert_close(out, a.float() @ b.float(), rtol=1e-5, atol=1e-5)
    out = probe("wmma_gemm", _gemm_input(a, b, lda=24), [0, 24])  # ldm 48 bytes: allowed
    torch.testing.assert_close(out, a.float() @ b.float(), rtol=1e-5, atol=1e-5)


def test_wmma_checks_alignment_and_ldm():
    a, b = torch.randn(16, 16).half(), torch.randn(16, 16).half()
    with pytest.raises(RuntimeError, match="256-bit"):
        probe("wmma_gemm", _gemm_input(a, b), [8, 16])  # 16-byte aligned only
    with pytest.raises(RuntimeError, match="multiple of 16 bytes"):
        probe("wmma_gemm", _gemm_input(a, b, lda=20), [0, 20])


def test_wmma_element_map_is_scrambled(monkeypatch):
    maps = []
    for seed in ("0", "1"):
        monkeypatch.setenv("PROGAN_EMU_SEED", seed)
        m = probe("wmma_map")
        assert sorted(m.flatten().tolist()) == sorted(float(l * 100 + t) for l in range(32) for t in range(8))
        maps.append(m)
    assert not torch.equal(maps[0], maps[1])
    rows_of_lane0 = {r for r in range(16) for c in range(16) if maps[0][r, c] < 100}
    assert len(rows_of_lane0) > 2  # not the rows a GPU's layout would give lane 0
    # Code that assumes one GPU's layout computes the wrong thing.
    want = (1000 * torch.arange(16.0)).unsqueeze(1).expand(16, 16)
    assert not torch.equal(probe("wmma_assumes_layout"), want)


def test_wmma_tf32_rounding(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(16, 8, generator=gen) * (1 + 2.0**-12)  # low mantissa bits set: RN and truncation differ
    b = torch.randn(8, 16, generator=gen)
    x = torch.cat([a.flatten(), b.flatten()])
    results = {}
    for mode in ("rna", "truncate"):
        monkeypatch.setenv("PROGAN_EMU_TF32", mode)
        results[mode, 0] = probe("wmma_tf32", x, [0])
        results[mode, 1] = probe("wmma_tf32", x, [1])
    assert not torch.equal(results["rna", 0], results["truncate", 0])
    assert torch.equal(results["rna", 1], results["truncate", 1])  # converted with __float_to_tf32
    # TF32 keeps 10 mantissa bits: each product is off by at most ~2^-10 of |a_ik b_kj| (a result
    # near 0 has a large relative error, so the bound is on the sum of the magnitudes)
    err = (results["rna", 1] - a @ b).abs()
    assert bool((err <= 2.0**-10 * (a.abs() @ b.abs()) + 1e-6).all()), err.max()


# ----------------------------------------------------------------------------------------------
# Product kernels do not depend on block or thread order (bitwise), and report their paths.


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_product_kernels_are_order_independent(monkeypatch, dtype):
    E = emulated.ops()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 6, 6, generator=gen).to(dtype)
    w = torch.randn(24, 16, 3, 3, generator=gen).to(dtype)
    g = torch.randn(4, 24, 12, 12, generator=gen).to(dtype)

    def run():
        return [E.upsample_conv2d(x, w, None, 1.4, "lrelu", 0.2, True),
                E.conv2d_resample_grad_weight(x, g, 0.3, "up", 3),
                E.minibatch_stddev(x, 4, 2, 1e-8),
                E.pixel_norm(x, 1e-8)]

    base = run()
    for block_order, thread_order in (("reverse", "forward"), ("shuffle", "reverse"), ("forward", "shuffle"),
                                      ("forward", "warps"), ("reverse", "warps-reverse")):
        monkeypatch.setenv("PROGAN_EMU_BLOCK_ORDER", block_order)
        monkeypatch.setenv("PROGAN_EMU_THREAD_ORDER", thread_order)
        monkeypatch.setenv("PROGAN_EMU_SEED", "7")
        for got, want in zip(run(), base):
            assert torch.equal(got, want), (block_order, thread_order)


def test_kernel_paths_are_reported():
    E = emulated.ops()
    emulated.kernel_paths(reset=True)
    E.eq_conv2d(torch.randn(2, 8, 4, 4, dtype=torch.bfloat16), torch.randn(8, 8, 3, 3, dtype=torch.bfloat16), None,
                1.0, "lrelu", 0.2, True)
    E.eq_conv2d(torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(8, 3, 3, 3, dtype=torch.float64), None,
                1.0, "lrelu", 0.2, True)
    paths = emulated.kernel_paths(reset=True)
    assert paths == {"conv.igemm": 1, "conv.nchw_loads": 1, "conv.norm_in_tile": 1, "conv.simple": 1, "conv.norm_pass": 1}
    assert emulated.kernel_paths() == {}
    assert emulated.stats()["launches"] > 0
