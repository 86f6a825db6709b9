"""Python-side registrations of the compiled ops, one module per op: fake (meta) kernels for
torch.compile, autograd formulas (each backward is itself a registered, differentiable op, so
second derivatives are right) and autocast rules. Imported by ``progan_ext.ops`` once the
compiled module has defined the schemas."""

from . import bias_act, conv, minibatch_stddev, pixel_norm  # noqa: F401
