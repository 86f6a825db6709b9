"""progan_ext: fused CUDA/C++ operators for Progressive Growing GAN training.

``progan_ext.ops`` holds the public functions, ``progan_ext.layers`` the nn.Modules over them and
``progan_ext.reference`` their plain-PyTorch definitions. ``progan_ext.ops.backend_info()`` tells
which implementation each op uses.
"""

from . import _ext  # loads the compiled module first, before anything touches the ops
from . import ops, reference, layers

__version__ = "0.1.0"
__all__ = ["ops", "reference", "layers", "__version__"]
