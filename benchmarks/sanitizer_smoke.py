"""Small run of every progan_ext op (forward and backward) for compute-sanitizer.

``run_gpu_suite.sh`` runs this under ``compute-sanitizer --tool memcheck`` and ``--tool racecheck``:
every op, fwd + bwd, fp32/bf16/fp16, NCHW and channels_last, on small shapes with odd sizes (channels
not a multiple of any vector width, batch 1, non-square maps), so every kernel runs a few times
with ragged edges but the sanitizer finishes in seconds. Each result is compared with the reference
computed on the CPU in float64 (so the sanitizer sees almost only progan_ext's own kernels).

Exit status: 0 when every case ran and matched, 1 otherwise (each failure is printed).

    python benchmarks/sanitizer_smoke.py [--device cuda|cpu|emulated] [--dtypes fp32,bf16,fp16]

``--device emulated`` runs the CUDA kernels of the emulated build (``progan_ext._emu``, built with
``PROGAN_EXT_EMULATE=1`` or ``=asan``) on CPU tensors: CI runs it under AddressSanitizer + UBSan.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings

import common  # benchmarks/common.py (puts the repository root on sys.path)
import torch

TOL = {"fp32": 5e-3, "fp16": 3e-2, "bf16": 0.15}  # relative L2 error vs float64: loose on purpose, it catches
# garbage (unwritten or misindexed memory gives errors near 1 or NaN); tests/ check accuracy.
# fp32 convolutions with TF32 allowed (PyTorch's default; every channel count since the padding of
# issue 15) run on TF32 tensor cores: a 10-bit mantissa, and outputs near zero whose leaky-ReLU slope
# then differs from float64's, so their gradients get this bound (still far below garbage's ~1).
TOL_TF32 = 6e-2
_cuda_kernels = False  # set by main: the CUDA kernels (a GPU or the emulated build) are under test


def cases():
    """(name, callable(mod, x, w, b), x shape, weight shape or None, bias?)."""
    s2 = math.sqrt(2.0)
    conv = dict(gain=s2, act="lrelu", alpha=0.2)
    yield "pixel_norm", lambda m, x, w, b: m.pixel_norm(x), (3, 37, 5, 7), None, False
    yield "pixel_norm_n1", lambda m, x, w, b: m.pixel_norm(x), (1, 9, 4, 4), None, False
    yield "minibatch_stddev", lambda m, x, w, b: m.minibatch_stddev(x, 4, 1), (8, 13, 5, 6), None, False
    yield "minibatch_stddev_f2", lambda m, x, w, b: m.minibatch_stddev(x, 2, 2), (6, 10, 3, 3), None, False
    yield "bias_act", lambda m, x, w, b: m.bias_act(x, b, "lrelu", 0.2), (3, 37, 5, 7), None, True
    yield "eq_conv2d_k3_pn", lambda m, x, w, b: m.eq_conv2d(x, w, b, pixel_norm=True, **conv), (2, 19, 9, 7), (23, 19, 3, 3), True
    yield "eq_conv2d_k1", lambda m, x, w, b: m.eq_conv2d(x, w, b, gain=1.0, act="linear", alpha=0.2), (2, 19, 6, 5), (3, 19, 1, 1), True
    yield "eq_conv2d_k1_fromrgb", lambda m, x, w, b: m.eq_conv2d(x, w, b, **conv), (2, 3, 6, 5), (21, 3, 1, 1), True
    # 16 channels on the long side: whole 16-byte vectors, so channels_last takes the vector kernels
    yield "eq_conv2d_k1_vec", lambda m, x, w, b: m.eq_conv2d(x, w, b, gain=1.0, act="linear", alpha=0.2), (2, 16, 6, 5), (3, 16, 1, 1), True
    yield "eq_conv2d_k1_fromrgb_vec", lambda m, x, w, b: m.eq_conv2d(x, w, b, pixel_norm=True, **conv), (2, 3, 6, 5), (16, 3, 1, 1), True
    yield "minibatch_stddev_long", lambda m, x, w, b: m.minibatch_stddev(x, 4, 1), (4, 3, 24, 23), None, False
    yield "upsample_conv2d", lambda m, x, w, b: m.upsample_conv2d(x, w, b, pixel_norm=True, **conv), (2, 21, 5, 6), (17, 21, 3, 3), True
    yield "upsample_conv2d_n1", lambda m, x, w, b: m.upsample_conv2d(x, w, b, **conv), (1, 8, 4, 4), (8, 8, 3, 3), True
    yield "conv2d_downsample", lambda m, x, w, b: m.conv2d_downsample(x, w, b, **conv), (2, 21, 10, 12), (17, 21, 3, 3), True


def rel(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30)).item()


def run_case(fn, xs, ws, with_bias, dtype, layout, device, gen) -> list[str]:
    import progan_ext.ops as ops  # noqa: PLC0415
    import progan_ext.reference as ref  # noqa: PLC0415

    x64 = torch.randn(xs, generator=gen, dtype=torch.float64)
    w64 = torch.randn(ws, generator=gen, dtype=torch.float64) if ws else None
    nb = ws[0] if ws else xs[1]
    b64 = 0.1 * torch.randn(nb, generator=gen, dtype=torch.float64) if with_bias else None
    # Inputs rounded to the test dtype first, so the reference sees exactly what the kernel sees.
    ins64 = [t.to(dtype).double().requires_grad_(True) if t is not None else None for t in (x64, w64, b64)]
    insd = [common.to_layout(t.detach().to(device=device, dtype=dtype), layout).requires_grad_(True)
            if t is not None else None for t in ins64]
    y = fn(ops, *insd)
    g64 = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(dtype).double()
    y_ref = fn(ref, *ins64)
    want = [t for t in insd if t is not None]
    grads = torch.autograd.grad(y, want, g64.to(device=device, dtype=dtype))
    grads_ref = torch.autograd.grad(y_ref, [t for t in ins64 if t is not None], g64)
    problems = []
    if device.type == "cuda":
        torch.cuda.synchronize()
    if y.dtype != dtype or y.shape != y_ref.shape:
        problems.append(f"output {y.dtype} {tuple(y.shape)}, expected {dtype} {tuple(y_ref.shape)}")
    tol = TOL[{torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]]
    if dtype == torch.float32 and ws is not None and torch.backends.cudnn.allow_tf32 and _cuda_kernels:
        tol = TOL_TF32
    for name, a, b in [("y", y, y_ref)] + [(f"grad{i}", g, gr) for i, (g, gr) in enumerate(zip(grads, grads_ref))]:
        if not torch.isfinite(a.float()).all():
            problems.append(f"{name} has non-finite values")
            continue
        e = rel(a, b)
        if e > tol:
            problems.append(f"{name} relative error {e:.2e} > {tol:.0e}")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu", "emulated"),
                   help="emulated: the CUDA kernels of progan_ext._emu on CPU tensors")
    p.add_argument("--dtypes", type=common.dtype_list, default=list(common.DTYPES))
    p.add_argument("--layouts", type=common.layout_list, default=list(common.LAYOUTS))
    args = p.parse_args(argv)
    device = common.resolve_device("cpu" if args.device == "emulated" else args.device)
    global _cuda_kernels
    _cuda_kernels = args.device in ("cuda", "emulated")
    warnings.filterwarnings("ignore", message=".*Falling back to the pure-PyTorch reference.*")
    import progan_ext  # noqa: PLC0415
    from progan_ext import emulated  # noqa: PLC0415

    if args.device == "emulated":
        if not emulated.available:
            print(f"error: {emulated.error}", file=sys.stderr)
            return 2
        progan_ext.ops.use_kernels("cpu", emulated.NAMESPACE)
        print(f"# progan_ext: the emulated CUDA kernels (torch.ops.{emulated.NAMESPACE}) on CPU tensors")
    else:
        info = progan_ext.ops.backend_info()
        print(f"# progan_ext: {common.backend_summary(info, device.type)}")
    gen = torch.Generator().manual_seed(0)
    failures = n = 0
    for name, fn, xs, ws, with_bias in cases():
        for dt in args.dtypes:
            for layout in args.layouts:
                n += 1
                try:
                    problems = run_case(fn, xs, ws, with_bias, common.DTYPES[dt], layout, device, gen)
                except Exception as exc:  # noqa: BLE001
                    problems = ["raised " + common.short_error(exc)]
                if problems:
                    failures += 1
                    print(f"FAIL {name} {dt} {layout}: {'; '.join(problems)}")
    print(f"# {n - failures}/{n} cases passed on {args.device if args.device == 'emulated' else device}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
