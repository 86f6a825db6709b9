"""SWD sanity: same distribution ~0, different distributions clearly > 0."""

import numpy as np
import pytest
import torch

from progan_ext.data import ProceduralImages
from progan_ext.metrics import laplacian_pyramid, swd

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def as_float(u8):
    return torch.from_numpy(np.ascontiguousarray(u8)).float() / 127.5 - 1


def test_laplacian_pyramid_levels():
    x = torch.randn(2, 3, 64, 64)
    levels = laplacian_pyramid(x, 16)
    assert [l.shape[-1] for l in levels] == [64, 32, 16]


def test_swd_same_vs_different():
    src = ProceduralImages(256, 32, seed=0)
    a, b = as_float(src.level(32)[:128]), as_float(src.level(32)[128:])
    noise = torch.rand(128, 3, 32, 32) * 2 - 1
    same = swd(a, a, patches_per_image=32, seed=1)
    near = swd(a, b, patches_per_image=32, seed=1)
    far = swd(a, noise, patches_per_image=32, seed=1)
    assert set(near) == {"32", "16", "avg"}
    assert same["avg"] < near["avg"]  # identical sets: only patch sampling noise
    assert near["avg"] > 0
    for level in ("32", "16"):
        assert far[level] > 3 * near[level], (near, far)


def test_swd_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        swd(torch.zeros(4, 3, 16, 16), torch.zeros(5, 3, 16, 16))
