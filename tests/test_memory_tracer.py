"""The memory-access tracer of the emulated CUDA kernels (progan_ext.memory_trace,
docs/memory_access.md) against probe kernels whose sectors and bank conflicts are known
(csrc/emu/trace/trace_probes.cpp). Needs the memory-tracing build (PROGAN_EXT_EMULATE=trace);
skips without it."""

import pytest
import torch

from progan_ext import memory_trace

pytestmark = pytest.mark.skipif(not memory_trace.available, reason=f"memory-tracing build absent: {memory_trace.error}")


def probe(name, *args):
    """Runs one probe kernel under the tracer; its trace and output."""
    with memory_trace.trace() as t:
        out = memory_trace.ops().trace_probe(name, list(args))
    assert len(t.kernels) == 1, sorted(t.kernels)
    return next(iter(t.kernels.values())), out


def totals(t):
    return (t.requests, t.bytes, t.units, t.ideal)


# ---- global memory: sectors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",  # (stride, offset, active lanes, warps) -> (requests, bytes, sectors, ideal sectors)
    [
        ((1, 0, 32, 1), (1, 128, 4, 4)),     # 32 consecutive floats: 4 sectors, 100%
        ((32, 0, 32, 1), (1, 128, 32, 4)),   # stride 32 floats: a sector per lane, 12.5%
        ((2, 0, 32, 1), (1, 128, 8, 4)),     # stride 2: every other float, 50%
        ((1, 1, 32, 1), (1, 128, 5, 4)),     # base 4 bytes past a sector boundary: 5 sectors, 80%
        ((1, 8, 32, 1), (1, 128, 4, 4)),     # base 32-byte aligned, not 128: still 4 sectors
        ((0, 0, 32, 1), (1, 4, 1, 1)),       # every lane the same float: a broadcast, 1 sector
        ((1, 0, 16, 1), (1, 64, 2, 2)),      # half the warp active
        ((1, 0, 32, 4), (4, 512, 16, 16)),   # 4 warps: 4 requests
    ],
)
def test_global_f32(args, expected):
    k, out = probe("global_f32", *args)
    stride, offset, active, warps = args
    t = torch.arange(32 * warps)
    want = torch.where(t % 32 < active, (offset + t * stride).float(), torch.zeros(()))
    torch.testing.assert_close(out, want)
    assert totals(k.global_load) == expected
    assert k.global_load.active_lanes == active
    assert totals(k.global_store)[0] == warps  # out[t] = ...: one coalesced store per warp
    assert k.shared_load.requests == k.shared_store.requests == 0


def test_global_efficiency_properties():
    k, _ = probe("global_f32", 1, 1)
    assert k.global_load.efficiency == pytest.approx(0.8)
    assert k.global_load.sectors_per_request == 5
    k, _ = probe("global_f32", 32)
    assert k.global_load.efficiency == pytest.approx(0.125)
    # bytes moved: 32 load sectors + 4 store sectors
    assert k.global_bytes == 32 * 36


@pytest.mark.parametrize("stride, sectors", [(1, 16), (2, 32)])
def test_global_float4_is_one_16_byte_request(stride, sectors):
    # load_vec<float, 4>: one 16-byte access per lane (as nvcc's LDG.128), not four 4-byte ones.
    k, out = probe("global_f4", stride)
    base = 4 * stride * torch.arange(32).float()
    torch.testing.assert_close(out, 4 * base + 6)
    assert totals(k.global_load) == (1, 512, sectors, 16)


def test_loop_iterations_are_separate_requests():
    k, out = probe("global_loop", 5)
    torch.testing.assert_close(out, sum(32 * i + torch.arange(32).float() for i in range(5)))
    assert totals(k.global_load) == (5, 5 * 128, 20, 20)


# ---- shared memory: bank conflicts --------------------------------------------------------------
@pytest.mark.parametrize(
    "stride, wavefronts",
    [(1, 1), (2, 2), (4, 4), (32, 32), (33, 1), (0, 1), (64, 32)],  # 0: broadcast; 33: the padded stride
)
def test_shared_f32_bank_conflicts(stride, wavefronts):
    k, out = probe("shared_f32", stride)
    if stride:
        torch.testing.assert_close(out, torch.arange(32).float())
    for t in (k.shared_load, k.shared_store):
        assert (t.requests, t.units, t.ideal, t.max_degree) == (1, wavefronts, 1, wavefronts)
    assert k.shared_load.conflict == wavefronts


@pytest.mark.parametrize(
    "name, stride, wavefronts, ideal, degree",
    [
        ("shared_f2", 1, 2, 2, 1),    # 8 bytes: two half-warp phases of 128 bytes
        ("shared_f2", 2, 4, 2, 2),    # 16 bytes apart: each half warp spans 256 bytes, 2-way
        ("shared_f4", 1, 4, 4, 1),    # 16 bytes: four quarter-warp phases of 128 bytes
        ("shared_f4", 2, 8, 4, 2),
        ("shared_f4", 8, 32, 4, 8),   # 128 bytes apart: a quarter warp's 8 lanes in banks 0-3, 8-way
    ],
)
def test_shared_vector_phases(name, stride, wavefronts, ideal, degree):
    k, out = probe(name, stride)
    torch.testing.assert_close(out, torch.arange(32).float())
    for t in (k.shared_load, k.shared_store):
        assert (t.requests, t.units, t.ideal, t.max_degree) == (1, wavefronts, ideal, degree)


def test_async_copy_is_a_global_load_and_a_shared_store():
    k, out = probe("async_copy")
    torch.testing.assert_close(out, torch.arange(32).float())
    assert totals(k.global_load) == (1, 512, 16, 16)
    assert (k.shared_store.requests, k.shared_store.units, k.shared_store.ideal) == (1, 4, 4)


@pytest.mark.parametrize("ldm, wavefronts, degree", [(16, 8, 2), (24, 4, 1)])
def test_wmma_load_ldmatrix_phases(ldm, wavefronts, degree):
    # A 16 x 16 half tile: 4 phases of 8 rows x 16 bytes. Rows 32 bytes apart put rows r and r + 4
    # of a phase in the same banks (2-way); 48 bytes apart (ldm 24) spread them over all 32.
    k, _ = probe("wmma_load", ldm)
    assert (k.shared_load.requests, k.shared_load.units, k.shared_load.ideal, k.shared_load.max_degree) == (
        1, wavefronts, 4, degree)
    # Only the kernel's own global traffic: its one store, nothing of the emulator's WMMA machinery
    # (a std::function that allocates on the heap looked like 16-byte global stores before it was muted).
    assert (k.global_load.requests, k.global_store.requests) == (0, 1)


# ---- the tracer's switch --------------------------------------------------------------------------
def test_nothing_is_recorded_outside_trace():
    memory_trace.ops().trace_probe("global_f32", [1])  # untraced
    with memory_trace.trace() as t:
        pass
    assert t.kernels == {}


def test_kernel_names_and_sites():
    k, _ = probe("global_f32", 1, 0, 32, 2)
    assert k.name == "global_f32_probe" and k.launches == 1 and k.blocks == 1
    kinds = sorted(kind for _, kind, _ in k.sites)
    assert kinds == ["global_load", "global_store"]
