"""Python-side registrations of the compiled ops, one module per op: fake (meta) kernels for
torch.compile and autograd formulas (each backward is itself a registered, differentiable op, so
second derivatives are right). Autocast rules are registered in C++ (csrc/autocast.cpp).

``register(ns)`` registers them for one op namespace: ``progan_ext`` (the compiled module, done
when this package is imported, which ``progan_ext.ops`` does once the compiled module has
defined the schemas) and ``progan_ext_emu`` (the emulated CUDA kernels, progan_ext.emulated).
"""

from .. import _ext
from . import bias_act, conv, minibatch_stddev, pixel_norm

_registered: set[str] = set()


def register(ns: str) -> None:
    """Registers fake kernels and autograd for every op of ``torch.ops.<ns>`` (once per ns)."""
    if ns in _registered:
        return
    for module in (pixel_norm, minibatch_stddev, bias_act, conv):
        module.register(ns)
    _registered.add(ns)


if _ext.available:
    register("progan_ext")
