"""ProGAN networks and losses: parameter counts, shapes, fade-in algebra, ext == reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from progan_ext.loss import d_loss_wgangp, g_loss_wgan
from progan_ext import networks
from progan_ext.networks import Discriminator, Generator, num_params

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def small(impl="ext", R=16):
    torch.manual_seed(0)
    return (Generator(R, latent_size=16, fmap_max=16, impl=impl),
            Discriminator(R, fmap_max=16, impl=impl))


def test_param_counts_at_1024_match_paper_config():
    G, D = Generator(1024), Discriminator(1024)
    g, d = num_params(G), num_params(D)
    print(f"G 1024: {g:,} params, D 1024: {d:,} params")
    # Computed from the official architecture (all toRGB/fromRGB layers included): both ~23.1M.
    assert g == 23_079_115
    assert d == 23_087_249
    # The channel rule: 512 up to 32x32, then halving.
    assert G.blocks["64"][1].weight.shape[0] == 256 and G.blocks["1024"][1].weight.shape[0] == 16
    assert D.fromrgb["1024"].weight.shape[0] == 16 and D.dense0.weight.shape == (512, 512 * 16)


def test_shapes_every_resolution():
    G, D = small()
    z = torch.randn(8, 16)
    for r in (4, 8, 16):
        for a in (0.0, 0.5, 1.0):
            img = G(z, resolution=r, alpha=a)
            assert img.shape == (8, 3, r, r)
            assert D(img, resolution=r, alpha=a).shape == (8, 1)


def test_fade_in_endpoints():
    G, D = small()
    z = torch.randn(4, 16)
    # alpha 0: the new block is invisible, the output is the previous resolution upsampled.
    torch.testing.assert_close(G(z, resolution=16, alpha=0.0),
                               F.interpolate(G(z, resolution=8, alpha=1.0), scale_factor=2, mode="nearest"))
    img = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(D(img, resolution=16, alpha=0.0), D(F.avg_pool2d(img, 2), resolution=8, alpha=1.0))
    # a fade-in value in between differs from both ends.
    mid = G(z, resolution=16, alpha=0.5)
    assert not torch.allclose(mid, G(z, resolution=16, alpha=1.0))


@pytest.mark.parametrize("impl", ["ext", "reference"])
def test_fade_in_keeps_one_dtype_where_autocast_resamples_in_float32(impl, monkeypatch):
    """CUDA's autocast runs nearest upsampling in float32 (seen on an H200: the bfloat16 generator's
    fade-in lerp failed, 'expected dtype float for `end` but got dtype c10::BFloat16'); the CPU's
    does not. Simulated here: the resampling ops return float32 while the networks run in bfloat16;
    both fade-ins must still lerp one dtype and return the networks' dtype."""
    class Float32Resampling:  # torch.nn.functional as progan_ext.networks sees it
        interpolate = staticmethod(lambda *a, **k: F.interpolate(*a, **k).float())
        avg_pool2d = staticmethod(lambda *a, **k: F.avg_pool2d(*a, **k).float())

        def __getattr__(self, name):
            return getattr(F, name)

    monkeypatch.setattr(networks, "F", Float32Resampling())
    G, D = small(impl)
    G, D = G.to(torch.bfloat16), D.to(torch.bfloat16)
    img = G(torch.randn(4, 16, dtype=torch.bfloat16), resolution=16, alpha=0.5)
    assert img.dtype == torch.bfloat16 and img.shape == (4, 3, 16, 16)
    assert D(img, resolution=16, alpha=0.5).dtype == torch.bfloat16


def test_ext_and_reference_same_outputs_from_same_state_dict():
    Ge, De = small("ext")
    Gr, Dr = small("reference")
    torch.manual_seed(1)
    Ge.load_state_dict({k: torch.randn_like(v) for k, v in Ge.state_dict().items()})
    De.load_state_dict({k: torch.randn_like(v) * 0.5 for k, v in De.state_dict().items()})
    Gr.load_state_dict(Ge.state_dict())
    Dr.load_state_dict(De.state_dict())
    z = torch.randn(8, 16)
    for r, a in ((4, 1.0), (8, 0.3), (16, 1.0)):
        torch.testing.assert_close(Ge(z, resolution=r, alpha=a), Gr(z, resolution=r, alpha=a))
        x = torch.randn(8, 3, r, r)
        torch.testing.assert_close(De(x, resolution=r, alpha=a), Dr(x, resolution=r, alpha=a))
    reals, fakes = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    torch.manual_seed(3)
    le, _ = d_loss_wgangp(De, reals, fakes, resolution=16, alpha=0.5)
    torch.manual_seed(3)
    lr, _ = d_loss_wgangp(Dr, reals, fakes, resolution=16, alpha=0.5)
    torch.testing.assert_close(le, lr)


def test_bad_arguments():
    for r in (4, 12, 2048, 0):
        with pytest.raises(ValueError, match="power of two"):
            Generator(r)
        with pytest.raises(ValueError, match="power of two"):
            Discriminator(r)
    G, D = small()
    with pytest.raises(ValueError, match="resolution"):
        G(torch.randn(2, 16), resolution=32)
    with pytest.raises(ValueError, match="alpha"):
        G(torch.randn(2, 16), resolution=8, alpha=1.5)
    with pytest.raises(ValueError, match="divisible"):
        D(torch.randn(6, 3, 8, 8), resolution=8)


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x>: its input gradient is w, so the penalty is (||w|| - 1)^2 exactly."""

    def __init__(self, r):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3 * r * r) * 0.1)

    def forward(self, x, resolution, alpha):
        return (x.flatten(1) @ self.w)[:, None]


def test_wgangp_loss_values_and_second_derivative():
    D = LinearCritic(8)
    reals, fakes = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    loss, stats = d_loss_wgangp(D, reals, fakes, resolution=8, alpha=1.0, gp_lambda=10.0, drift=1e-3)
    dr, df = D(reals, 8, 1), D(fakes, 8, 1)
    gp = (D.w.norm() - 1) ** 2
    expected = (df - dr).mean() + 10 * gp + 1e-3 * (dr**2).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(stats["gp"], gp.detach())
    loss.backward()  # through create_graph: the penalty's gradient w.r.t. w is nonzero
    g_expected = torch.autograd.grad(expected, D.w)[0]
    torch.testing.assert_close(D.w.grad, g_expected)
    torch.testing.assert_close(g_loss_wgan(D, fakes, resolution=8), -df.mean())


def test_gradient_penalty_reaches_progan_d_params():
    _, D = small()
    reals, fakes = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)
    loss_gp_only, _ = d_loss_wgangp(D, reals, fakes, resolution=8, alpha=0.5, gp_lambda=1.0, drift=0.0)
    loss_no_gp, _ = d_loss_wgangp(D, reals, fakes, resolution=8, alpha=0.5, gp_lambda=0.0, drift=0.0)
    g1 = torch.autograd.grad(loss_gp_only, D.conv4.weight)[0]
    g0 = torch.autograd.grad(loss_no_gp, D.conv4.weight)[0]
    assert math.isfinite(float(loss_gp_only)) and not torch.allclose(g1, g0)
