"""Public entry points of progan_ext: one function per op.

Each function validates its arguments (the same checks and messages as ``progan_ext.reference``),
then calls the compiled ``torch.ops.progan_ext.<op>`` when the extension has a kernel for the
input's device, and the plain-PyTorch reference otherwise. ``backend_info()`` says which is which.
The compiled ops' autograd formulas and autocast rules are C++ (``csrc/autograd/``,
``csrc/autocast.cpp``); their fake kernels live in ``progan_ext/opdefs/``.

Which implementation serves a device type is decided once, outside any traced code: ``KERNELS``
maps a device type to the compiled ops that serve its tensors, filled at import from the
dispatcher. The functions below only read that table, and their checks are plain Python on
static shapes and dtypes, so ``torch.compile`` traces them into the caller's graph (no graph
breaks, ``fullgraph=True`` works). ``use_kernels`` re-routes a device type, e.g. to another
namespace that registers the same schemas, or to the reference.
"""

from __future__ import annotations

import math
import warnings

import torch

from . import _ext, autotune
from . import reference as ref

__all__ = [
    "pixel_norm",
    "minibatch_stddev",
    "bias_act",
    "eq_conv2d",
    "upsample_conv2d",
    "conv2d_downsample",
    "backend_info",
    "use_kernels",
    "kernel_namespace",
    "OPS",
]

OPS = ("pixel_norm", "minibatch_stddev", "bias_act", "eq_conv2d", "upsample_conv2d", "conv2d_downsample")
# Internal forms the public functions prefer when a namespace has them: the pixel-normed convs that
# also return the per-pixel inverse norm, so that their backward needs no second convolution.
_PN_FORMS = ("eq_conv2d_pn", "upsample_conv2d_pn")

if _ext.available:
    from . import opdefs  # noqa: F401  (registers the fake kernels)


# ----------------------------------------------------------------------------------------------
# Which implementation serves each device type.

NAMESPACE = "progan_ext"  # the torch.ops namespace of the compiled extension
# Device types whose tensors a torch.ops namespace can serve, with their dispatch keys ("meta":
# the fake kernels in opdefs/ are also Meta kernels). Other device types use the reference.
DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA", "meta": "Meta"}

# The implementation table: device type -> (namespace, {op name: torch.ops callable with a kernel
# for that device type}). An op missing from its entry runs the reference; a namespace of None
# means the reference was chosen on purpose (no warning). Written only by use_kernels.
KERNELS: dict[str, tuple[str | None, dict]] = {}
_warned: set[tuple[str, str]] = set()


def _kernels_in(namespace: str, device_type: str) -> dict:
    """The public ops that ``torch.ops.<namespace>`` implements for ``device_type`` tensors."""
    key = DISPATCH_KEYS.get(device_type)
    if key is None:
        return {}
    ns = getattr(torch.ops, namespace)
    return {
        op: getattr(ns, op)
        for op in OPS + _PN_FORMS
        if hasattr(ns, op) and torch._C._dispatch_has_kernel_for_dispatch_key(f"{namespace}::{op}", key)
    }


def use_kernels(device_type: str, namespace: str | None = NAMESPACE) -> str | None:
    """Routes the public ops on ``device_type`` tensors to the kernels of ``torch.ops.<namespace>``
    (an op without a kernel there runs the reference, with a warning), or, for ``namespace=None``,
    every op to the reference. For tests, comparisons and alternative builds of the same schemas.

    At import, with the extension loaded, the table is ``use_kernels(t)`` for every device type in
    ``DISPATCH_KEYS``. Compiled graphs guard on the table: a change re-traces them.

    Returns:
        The namespace that served ``device_type`` before (pass it back to restore).
    """
    if not isinstance(device_type, str) or not device_type:
        raise ValueError(f"device_type must be a device type such as 'cpu' or 'cuda', got {device_type!r}")
    if namespace is not None and not any(hasattr(getattr(torch.ops, namespace), op) for op in OPS):
        raise ValueError(f"torch.ops.{namespace} defines none of the progan_ext ops {OPS}")
    before = kernel_namespace(device_type)
    KERNELS[device_type] = (namespace, {} if namespace is None else _kernels_in(namespace, device_type))
    return before


def kernel_namespace(device_type: str) -> str | None:
    """The torch.ops namespace routed to ``device_type`` tensors, or None (the reference)."""
    return KERNELS.get(device_type, (None, {}))[0]


if _ext.available:
    for _device_type in DISPATCH_KEYS:
        use_kernels(_device_type)


def _warn_no_kernel(op: str, device_type: str) -> None:
    """Once per (op, device type): the extension is loaded but has no kernel for these tensors."""
    if (op, device_type) in _warned:
        return
    _warned.add((op, device_type))
    warnings.warn(
        f"progan_ext: no compiled {op} kernel for {device_type} tensors in this build; "
        "using the pure-PyTorch reference",
        RuntimeWarning,
        stacklevel=4,
    )


# Under torch.compile, Dynamo runs _warn_no_kernel when it traces the call instead of tracing into
# it (warnings.warn would break the graph): the flag torch.compiler.assume_constant_result sets, set
# here directly because that function imports torch._dynamo (seconds) and progan_ext imports fast.
_warn_no_kernel._dynamo_marked_constant = True


def _kernel(op: str, x: torch.Tensor):
    """The compiled op serving ``x``'s device, or None for the reference. Table look-ups only
    (no dispatcher queries), so torch.compile traces it without a graph break."""
    namespace, kernels = KERNELS.get(x.device.type, (NAMESPACE, {}))
    kernel = kernels.get(op)
    if kernel is None and namespace is not None and _ext.available:
        _warn_no_kernel(op, x.device.type)
    return kernel


def _tuned(x: torch.Tensor) -> bool:
    """Whether calls on ``x``'s device type are autotuned (progan_ext.autotune; CUDA by default)."""
    return x.device.type in autotune.device_types


def _use_kernel(op: str, args: tuple, run_kernel, run_eager) -> bool:
    """Whether this call runs the compiled kernel rather than the eager composite: always, unless
    autotuning (progan_ext.autotune; CUDA tensors) measured the composite faster for this call's
    signature. Call sites test ``_tuned(x)`` first, so that an untuned device (the CPU) pays next
    to nothing for it."""
    return autotune.choose(op, args, {"kernel": run_kernel, "eager": run_eager}) == "kernel"


# The tensor-core conv's path knobs that autotuning also times (kernel_paths.h): candidate name ->
# (the knob's setter in the kernel namespace, the path a call records when the knob changes it).
# "kernel_unsplit": K not split (the small maps); "kernel_nhwc": an NCHW input copied to NHWC
# first instead of read in place.
_CONV_KNOBS = {"kernel_unsplit": ("set_conv_split_k", "conv.split_k"),
               "kernel_nhwc": ("set_conv_nchw_loads", "conv.nchw_loads")}


def _path_counts(namespace) -> dict:
    """This module's kernel path counts so far (not reset)."""
    return _ext.parse_counts(getattr(torch.ops, namespace).kernel_path_counts(False))


def _knob_off(x: torch.Tensor, setter: str, run):
    """``run()`` with one of the tensor-core conv's path knobs turned off on this thread (the op's
    forward only: its backward runs later, with the default)."""
    knob = getattr(getattr(torch.ops, kernel_namespace(x.device.type)), setter)
    before = knob(False)
    try:
        return run()
    finally:
        knob(before)


def _run_conv(op: str, x: torch.Tensor, args: tuple, run, eager) -> torch.Tensor:
    """A conv op's call: the kernel, unless autotuning (CUDA tensors) measured the eager composite,
    or the kernel with one of its path knobs off (_CONV_KNOBS; timed only where the knob changes
    this call's path), faster."""
    if not _tuned(x):
        return run()

    def candidates():  # built only when the signature is timed
        found = {"kernel": run, "eager": eager}
        namespace = kernel_namespace(x.device.type)
        ns = getattr(torch.ops, namespace)
        knobs = {name: knob for name, knob in _CONV_KNOBS.items() if hasattr(ns, knob[0])}  # a routed namespace may lack them
        if knobs:
            before = _path_counts(namespace)
            with torch.no_grad():
                run()
            after = _path_counts(namespace)
            for name, (setter, path) in knobs.items():
                if after.get(path, 0) > before.get(path, 0):
                    found[name] = lambda setter=setter: _knob_off(x, setter, run)
        return found

    choice = autotune.choose(op, args, candidates)
    if choice == "eager":
        return eager()
    if choice in _CONV_KNOBS:
        return _knob_off(x, _CONV_KNOBS[choice][0], run)
    return run()


def _pn_form(op: str, x: torch.Tensor):
    """The (y, inverse norm) form of a pixel-normed conv op serving ``x``'s device, or None."""
    return KERNELS.get(x.device.type, (NAMESPACE, {}))[1].get(op + "_pn")


def _has_kernel(op: str, device_type: str) -> bool:
    """Whether a compiled kernel serves ``op`` for ``device_type`` tensors."""
    return op in KERNELS.get(device_type, (None, {}))[1]


def backend_info() -> dict:
    """Which implementation each op uses, per device type.

    Returns:
        ``{"extension": "loaded" | <reason it is not>, "build": {...}, "ops": {op: {"cpu": backend,
        "cuda": backend}}}`` where backend is ``"compiled C++ kernel"``, ``"compiled CUDA kernel"``
        or ``"reference (PyTorch)"`` (or ``"torch.ops.<namespace> kernel"`` after ``use_kernels``
        routed a device type to another namespace).
    """
    names = {"cpu": "compiled C++ kernel", "cuda": "compiled CUDA kernel"}

    def backend(op, dev):
        if not _has_kernel(op, dev):
            return "reference (PyTorch)"
        namespace = kernel_namespace(dev)
        return names[dev] if namespace == NAMESPACE else f"torch.ops.{namespace} kernel"

    return {
        "extension": "loaded" if _ext.available else f"not loaded: {_ext.error}",
        "build": dict(_ext.build_info),
        "ops": {op: {dev: backend(op, dev) for dev in ("cpu", "cuda")} for op in OPS},
        "autotune": {"enabled": autotune.enabled(), "device_types": sorted(autotune.device_types),
                     "choices": autotune.choices()},
    }


# ----------------------------------------------------------------------------------------------
# Element-wise and reduction ops.


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pixel-wise feature normalisation (ProGAN): ``x * rsqrt(mean(x**2, dim=1) + eps)``.

    Args:
        x: [N, C] or [N, C, H, W] tensor, float16/bfloat16/float32/float64, NCHW or channels_last.
        eps: positive constant added to the mean square.
    Returns:
        Tensor of x's shape, dtype and memory format.
    """
    ref.check_pixel_norm(x, eps)
    kernel = _kernel("pixel_norm", x)
    run = lambda: kernel(x, float(eps))  # noqa: E731
    if kernel is not None and (not _tuned(x) or _use_kernel("pixel_norm", (x, eps), run,
                                                             lambda: ref.pixel_norm(x, eps))):
        return kernel(x, float(eps))
    return ref.pixel_norm(x, eps)


def minibatch_stddev(
    x: torch.Tensor, group_size: int = 4, num_features: int = 1, eps: float = 1e-8
) -> torch.Tensor:
    """Minibatch standard deviation layer, exactly as the official ProGAN/StyleGAN code.

    Args:
        x: [N, C, H, W]; N must be divisible by G = min(group_size, N), C by num_features.
        group_size: samples per group (the samples m, m+M, m+2M, ... with M = N/G form a group).
        num_features: F, the number of statistics channels appended.
        eps: added to the biased variance before the square root.
    Returns:
        [N, C + F, H, W]: x followed by the F statistics channels.
    """
    ref.check_minibatch_stddev(x, group_size, num_features, eps)
    kernel = _kernel("minibatch_stddev", x)
    run = lambda: kernel(x, int(group_size), int(num_features), float(eps))  # noqa: E731
    eager = lambda: ref.minibatch_stddev(x, group_size, num_features, eps)  # noqa: E731
    if kernel is not None and (
        not _tuned(x) or _use_kernel("minibatch_stddev", (x, group_size, num_features, eps), run, eager)
    ):
        return run()
    return ref.minibatch_stddev(x, group_size, num_features, eps)


def bias_act(
    x: torch.Tensor, bias: torch.Tensor | None = None, act: str = "lrelu", alpha: float = 0.2
) -> torch.Tensor:
    """Adds a per-channel bias (broadcast over dim 1), then leaky ReLU or identity.

    Args:
        x: tensor of rank 2 to 5, channels in dim 1.
        bias: [C] tensor of x's dtype and device, or None.
        act: ``"lrelu"`` or ``"linear"``.
        alpha: leaky ReLU slope for negative inputs (>= 0).
    Returns:
        Tensor of x's shape, dtype and memory format.
    """
    bias = ref.autocast_bias(x, bias)  # inside autocast the bias follows x's dtype
    ref.check_bias_act(x, bias, act, alpha)
    kernel = _kernel("bias_act", x)
    if kernel is not None and (
        not _tuned(x)
        or _use_kernel("bias_act", (x, bias, act, alpha), lambda: kernel(x, bias, act, float(alpha)),
                       lambda: ref.bias_act(x, bias, act, alpha))
    ):
        return kernel(x, bias, act, float(alpha))
    return ref.bias_act(x, bias, act, alpha)


# ----------------------------------------------------------------------------------------------
# Equalized-learning-rate convolutions.


def eq_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    gain: float = math.sqrt(2),
    act: str = "lrelu",
    alpha: float = 0.2,
    pixel_norm: bool = False,
) -> torch.Tensor:
    """Equalized-LR convolution with a fused bias / leaky-ReLU / pixel-norm epilogue.

    Computes ``conv2d(x, weight * gain / sqrt(Cin*k*k), padding=k//2)``, adds bias, applies the
    activation and, if ``pixel_norm``, normalises each pixel's feature vector (eps 1e-8). Inside
    ``torch.autocast`` all three convolution ops run in the autocast dtype, as ``conv2d`` does.

    Args:
        x: [N, Cin, H, W]. weight: raw parameter [Cout, Cin, k, k], k odd. bias: [Cout] or None.
    Returns:
        [N, Cout, H, W] in x's dtype and memory format.
    """
    x, weight, bias = ref.autocast_conv_inputs(x, weight, bias)  # conv autocast policy (also csrc/autocast.cpp)
    ref.check_conv(x, weight, bias, gain, act, alpha)
    kernel = _kernel("eq_conv2d", x)
    eager = lambda: ref.eq_conv2d(x, weight, bias, gain=gain, act=act, alpha=alpha, pixel_norm=pixel_norm)  # noqa: E731
    if kernel is not None:
        pn_form = _pn_form("eq_conv2d", x) if pixel_norm else None

        def run():
            if pn_form is not None:
                return pn_form(x, weight, bias, float(gain), act, float(alpha))[0]
            return kernel(x, weight, bias, float(gain), act, float(alpha), bool(pixel_norm))

        return _run_conv("eq_conv2d", x, (x, weight, bias, gain, act, alpha, pixel_norm), run, eager)
    return eager()


def upsample_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    gain: float = math.sqrt(2),
    act: str = "lrelu",
    alpha: float = 0.2,
    pixel_norm: bool = False,
) -> torch.Tensor:
    """Nearest 2x upsample followed by a 3x3 ``eq_conv2d`` and its epilogue, as one fused op
    (the upsampled tensor is never stored).

    Args:
        x: [N, Cin, H, W]. weight: [Cout, Cin, 3, 3]. bias: [Cout] or None.
    Returns:
        [N, Cout, 2H, 2W] in x's dtype and memory format.
    """
    x, weight, bias = ref.autocast_conv_inputs(x, weight, bias)  # conv autocast policy (also csrc/autocast.cpp)
    ref.check_conv(x, weight, bias, gain, act, alpha, kernel_sizes=(3,), op="upsample_conv2d")
    kernel = _kernel("upsample_conv2d", x)
    eager = lambda: ref.upsample_conv2d(  # noqa: E731
        x, weight, bias, gain=gain, act=act, alpha=alpha, pixel_norm=pixel_norm)
    if kernel is not None:
        pn_form = _pn_form("upsample_conv2d", x) if pixel_norm else None

        def run():
            if pn_form is not None:
                return pn_form(x, weight, bias, float(gain), act, float(alpha))[0]
            return kernel(x, weight, bias, float(gain), act, float(alpha), bool(pixel_norm))

        return _run_conv("upsample_conv2d", x, (x, weight, bias, gain, act, alpha, pixel_norm), run, eager)
    return eager()


def conv2d_downsample(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    gain: float = math.sqrt(2),
    act: str = "lrelu",
    alpha: float = 0.2,
) -> torch.Tensor:
    """3x3 equalized conv, 2x2 average pooling and bias_act as one fused op.

    Args:
        x: [N, Cin, H, W] with H and W even. weight: [Cout, Cin, 3, 3]. bias: [Cout] or None.
    Returns:
        [N, Cout, H/2, W/2] in x's dtype and memory format.
    """
    x, weight, bias = ref.autocast_conv_inputs(x, weight, bias)  # conv autocast policy (also csrc/autocast.cpp)
    ref.check_conv(x, weight, bias, gain, act, alpha, kernel_sizes=(3,), op="conv2d_downsample")
    if x.shape[2] % 2 or x.shape[3] % 2:
        return ref.conv2d_downsample(x, weight, bias, gain=gain, act=act, alpha=alpha)  # raises
    kernel = _kernel("conv2d_downsample", x)
    eager = lambda: ref.conv2d_downsample(x, weight, bias, gain=gain, act=act, alpha=alpha)  # noqa: E731
    if kernel is None:
        return eager()
    run = lambda: kernel(x, weight, bias, float(gain), act, float(alpha))  # noqa: E731
    return _run_conv("conv2d_downsample", x, (x, weight, bias, gain, act, alpha), run, eager)
