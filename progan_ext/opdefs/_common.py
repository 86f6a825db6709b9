"""Helpers shared by the op registrations."""

import torch

try:
    from torch._prims_common import suggest_memory_format as _suggest
except ImportError:  # older torch
    _suggest = None


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format the compiled kernels write their output in (csrc/common.h, layout_of)."""
    if x.dim() not in (4, 5):
        return torch.contiguous_format
    if _suggest is not None:
        return _suggest(x)
    cl = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    return cl if x.is_contiguous(memory_format=cl) and not x.is_contiguous() else torch.contiguous_format


def empty_like_layout(x: torch.Tensor, shape=None) -> torch.Tensor:
    shape = x.shape if shape is None else shape
    return torch.empty(shape, dtype=x.dtype, device=x.device).to(memory_format=memory_format(x))


def acc(t: torch.Tensor) -> torch.Tensor:
    """t in the accumulation dtype (float32, or float64 for float64)."""
    return t if t.dtype == torch.float64 else t.float()
