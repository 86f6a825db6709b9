"""ProGAN generator and discriminator over the progan_ext layers (official configuration).

Both networks are built once for their final resolution and run at any resolution 4..R of the
progressive schedule: ``G(z, resolution=r, alpha=a)`` uses the blocks up to ``r``; while ``a < 1``
the newest block is faded in by a linear blend with the previous resolution's output (G) or input
path (D). Channels follow the paper's rule ``nf(stage) = min(fmap_base / 2**stage, fmap_max)``; the
block at resolution ``2**k`` has ``nf(k - 1)`` channels. A small ``fmap_max`` caps the width for
quick runs.

``impl="ext"`` runs the fused ops of ``progan_ext.ops`` (compiled kernels where available),
``impl="reference"`` the plain-PyTorch definitions; parameter names are identical, so their
state_dicts are interchangeable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import IMPLS, EqualizedConv2d, EqualizedLinear, MinibatchStdDev, PixelNorm, _backend

__all__ = ["Generator", "Discriminator", "check_resolution", "num_params", "resolutions_up_to"]

MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024


def check_resolution(max_resolution: int) -> int:
    """Returns log2(max_resolution); raises ValueError unless it is a power of two in 8..1024."""
    r = max_resolution
    if not isinstance(r, int) or isinstance(r, bool) or r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
        raise ValueError(
            f"resolution must be a power of two between {MIN_RESOLUTION} and {MAX_RESOLUTION}, got {r!r}"
        )
    return int(math.log2(r))


def resolutions_up_to(max_resolution: int) -> list[int]:
    """[4, 8, ..., max_resolution]."""
    return [2**k for k in range(2, check_resolution(max_resolution) + 1)]


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _channels(fmap_base: int, fmap_max: int):
    if fmap_base < 1 or fmap_max < 1:
        raise ValueError(f"fmap_base and fmap_max must be positive, got {fmap_base} and {fmap_max}")
    return lambda stage: max(1, min(int(fmap_base / 2.0**stage), fmap_max))


class _Network(nn.Module):
    """Shared checks of the progressive forward arguments."""

    def _check_call(self, resolution: int, alpha: float) -> tuple[int, int]:
        """(log2 r, r) with r a plain int. Under torch.compile, a resolution that changed between
        calls (progressive growing) arrives as a symbolic int; comparing it with each known
        resolution specialises the graph on it, as it must: each resolution is another network."""
        for r in self.resolutions:
            if resolution == r:
                break
        else:
            raise ValueError(f"resolution must be one of {self.resolutions}, got {resolution!r}")
        if not (0.0 <= float(alpha) <= 1.0):
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        return int(math.log2(r)), r


class Generator(_Network):
    """ProGAN generator: latent [N, latent_size] -> image [N, 3, r, r] (linear output, no tanh).

    Args:
        max_resolution: final resolution R, a power of two in 8..1024.
        latent_size: dimension of z (pixel-normalised on input).
        fmap_base, fmap_max: channel rule nf(stage) = min(fmap_base / 2**stage, fmap_max).
        impl: ``"ext"`` or ``"reference"``.
    """

    def __init__(
        self,
        max_resolution: int = 1024,
        latent_size: int = 512,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        impl: str = "ext",
    ):
        super().__init__()
        self.log2_max = check_resolution(max_resolution)
        if latent_size < 1:
            raise ValueError(f"latent_size must be positive, got {latent_size}")
        nf = _channels(fmap_base, fmap_max)
        self.max_resolution, self.latent_size, self.impl = max_resolution, latent_size, impl
        self.resolutions = resolutions_up_to(max_resolution)
        self._f = _backend(impl)
        self.latent_norm = PixelNorm(impl=impl)
        # 4x4: dense latent -> 16 * nf(1), gain sqrt(2)/4, bias added after the reshape (per channel).
        self.c4 = nf(1)
        self.dense = EqualizedLinear(latent_size, 16 * self.c4, gain=math.sqrt(2) / 4, act="linear", bias=False, impl=impl)
        self.dense_bias = nn.Parameter(torch.zeros(self.c4))
        self.dense_norm = PixelNorm(impl=impl)
        self.blocks = nn.ModuleDict({"4": EqualizedConv2d(self.c4, self.c4, 3, pixel_norm=True, impl=impl)})
        self.torgb = nn.ModuleDict({"4": EqualizedConv2d(self.c4, 3, 1, gain=1.0, act="linear", impl=impl)})
        for k in range(3, self.log2_max + 1):
            cin, cout = nf(k - 2), nf(k - 1)
            self.blocks[str(2**k)] = nn.Sequential(
                EqualizedConv2d(cin, cout, 3, resample="up", pixel_norm=True, impl=impl),
                EqualizedConv2d(cout, cout, 3, pixel_norm=True, impl=impl),
            )
            self.torgb[str(2**k)] = EqualizedConv2d(cout, 3, 1, gain=1.0, act="linear", impl=impl)

    def forward(self, z: torch.Tensor, resolution: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        resolution = self.max_resolution if resolution is None else resolution
        k_out, resolution = self._check_call(resolution, alpha)
        if z.dim() != 2 or z.shape[1] != self.latent_size:
            raise ValueError(f"z must have shape [N, {self.latent_size}], got {tuple(z.shape)}")
        x = self.dense(self.latent_norm(z)).reshape(z.shape[0], self.c4, 4, 4)
        x = self.dense_norm(self._f.bias_act(x, self.dense_bias.to(x.dtype), "lrelu", 0.2))
        x = self.blocks["4"](x)
        prev = x
        for k in range(3, k_out + 1):
            prev, x = x, self.blocks[str(2**k)](x)
        img = self.torgb[str(resolution)](x)
        if alpha < 1.0 and k_out > 2:
            low = self.torgb[str(resolution // 2)](prev)
            # CUDA's autocast runs nearest upsampling in float32: back to the image's dtype for lerp
            img = torch.lerp(F.interpolate(low, scale_factor=2, mode="nearest").to(img.dtype), img, float(alpha))
        return img


class Discriminator(_Network):
    """ProGAN discriminator (WGAN critic): image [N, 3, r, r] -> score [N, 1].

    Args:
        max_resolution: final resolution R, a power of two in 8..1024.
        fmap_base, fmap_max: channel rule as in Generator.
        mbstd_group_size: minibatch-stddev group (the batch must be divisible by min(group, N)).
        impl: ``"ext"`` or ``"reference"``.
    """

    def __init__(
        self,
        max_resolution: int = 1024,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        mbstd_group_size: int = 4,
        impl: str = "ext",
        mbstd_num_features: int = 1,
    ):
        super().__init__()
        self.log2_max = check_resolution(max_resolution)
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        nf = _channels(fmap_base, fmap_max)
        self.max_resolution, self.impl = max_resolution, impl
        self.mbstd_group_size = mbstd_group_size
        self.resolutions = resolutions_up_to(max_resolution)
        self.fromrgb = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for k in range(2, self.log2_max + 1):
            self.fromrgb[str(2**k)] = EqualizedConv2d(3, nf(k - 1), 1, impl=impl)
        for k in range(self.log2_max, 2, -1):
            self.blocks[str(2**k)] = nn.Sequential(
                EqualizedConv2d(nf(k - 1), nf(k - 1), 3, impl=impl),
                EqualizedConv2d(nf(k - 1), nf(k - 2), 3, resample="down", impl=impl),
            )
        c4 = nf(1)
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_num_features, impl=impl)
        self.conv4 = EqualizedConv2d(c4 + mbstd_num_features, c4, 3, impl=impl)
        self.dense0 = EqualizedLinear(c4 * 16, nf(0), impl=impl)
        self.dense1 = EqualizedLinear(nf(0), 1, gain=1.0, act="linear", impl=impl)

    def forward(self, img: torch.Tensor, resolution: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        resolution = self.max_resolution if resolution is None else resolution
        k_in, resolution = self._check_call(resolution, alpha)
        if img.dim() != 4 or img.shape[1] != 3 or img.shape[2] != resolution or img.shape[3] != resolution:
            raise ValueError(f"images must have shape [N, 3, {resolution}, {resolution}], got {tuple(img.shape)}")
        x = self.fromrgb[str(resolution)](img)
        if k_in > 2:
            x = self.blocks[str(resolution)](x)
            if alpha < 1.0:
                # dtypes kept as in the generator (an autocast policy may resample in float32)
                low = self.fromrgb[str(resolution // 2)](F.avg_pool2d(img, 2).to(img.dtype))
                x = torch.lerp(low.to(x.dtype), x, float(alpha))
            for k in range(k_in - 1, 2, -1):
                x = self.blocks[str(2**k)](x)
        x = self.conv4(self.mbstd(x))
        x = self.dense0(x.flatten(1))
        return self.dense1(x)
