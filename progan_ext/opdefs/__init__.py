"""Python-side registrations of the compiled ops, one module per op: the fake (meta) kernels for
torch.compile. The autograd formulas (csrc/autograd: each backward is itself a registered,
differentiable op, so second derivatives are right) and the autocast rules (csrc/autocast.cpp)
are C++, registered by the compiled modules themselves.

``register(ns)`` registers them for one op namespace: ``progan_ext`` (the compiled module, done
when this package is imported, which ``progan_ext.ops`` does once the compiled module has
defined the schemas) and ``progan_ext_emu`` (the emulated CUDA kernels, progan_ext.emulated).
"""

import torch

from .. import _ext
from . import bias_act, conv, minibatch_stddev, pixel_norm

_registered: set[str] = set()

# Every op whose fake kernel or autograd is registered here.
OPS = ("pixel_norm", "pixel_norm_backward", "pixel_norm_backward_from_output", "minibatch_stddev", "minibatch_stddev_backward", "bias_act",
       "bias_act_backward", "eq_conv2d", "upsample_conv2d", "conv2d_downsample", "eq_conv2d_pn",
       "upsample_conv2d_pn", "conv2d_resample", "conv2d_resample_grad_weight")


def missing_ops(ns: str) -> list[str]:
    """The ops of OPS that ``torch.ops.<ns>`` does not define (a build from older sources)."""
    namespace = getattr(torch.ops, ns)
    return [op for op in OPS if not hasattr(namespace, op)]


def register(ns: str) -> None:
    """Registers the fake kernels of every op of ``torch.ops.<ns>`` (once per ns)."""
    if ns in _registered:
        return
    missing = missing_ops(ns)
    if missing:
        raise RuntimeError(f"torch.ops.{ns} lacks the ops {missing}: its module was built from older sources")
    for module in (pixel_norm, minibatch_stddev, bias_act, conv):
        module.register(ns)
    _registered.add(ns)


if _ext.available:
    if missing_ops("progan_ext"):  # a build without a sources digest (CMake) from older sources
        _ext.fall_back(f"progan_ext._C lacks the ops {missing_ops('progan_ext')} (built from older sources); "
                       f"{_ext.REBUILD}")
    else:
        register("progan_ext")
