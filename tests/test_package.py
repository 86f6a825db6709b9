"""The package itself: build metadata, backend selection, the reference fallback, layers."""

import json
import os
import subprocess
import sys

import pytest
import torch

import progan_ext
from conftest import COMPILED, randn, requires_compiled
from progan_ext import _ext, layers, ops, reference


def run_python(code: str, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


@requires_compiled
def test_backend_info_reports_compiled_cpu_kernels():
    info = ops.backend_info()
    assert info["extension"] == "loaded"
    assert info["build"]["torch_version"].split("+")[0] == torch.__version__.split("+")[0]
    for op in ("pixel_norm", "minibatch_stddev", "bias_act"):
        assert info["ops"][op]["cpu"] == "compiled C++ kernel"
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"progan_ext::{op}", "CPU")
        if info["build"]["with_cuda"]:
            assert info["ops"][op]["cuda"] == "compiled CUDA kernel"


def test_fallback_without_extension_warns_once_and_works():
    code = (
        "import warnings, json, torch\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import progan_ext\n"
        "    from progan_ext import ops\n"
        "    x = torch.randn(4, 6, 3, 3)\n"
        "    y = ops.minibatch_stddev(ops.pixel_norm(ops.bias_act(x, torch.randn(6))))\n"
        "print(json.dumps({'n': len([m for m in w if 'Falling back' in str(m.message)]),"
        " 'shape': list(y.shape), 'backend': ops.backend_info()['ops']['pixel_norm']['cpu']}))\n"
    )
    res = run_python(code, PROGAN_EXT_DISABLE_EXT="1", PROGAN_EXT_REQUIRE_EXT="0")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"n": 1, "shape": [4, 7, 3, 3], "backend": "reference (PyTorch)"}


def test_require_ext_makes_missing_extension_an_error():
    res = run_python("import progan_ext", PROGAN_EXT_DISABLE_EXT="1", PROGAN_EXT_REQUIRE_EXT="1")
    assert res.returncode != 0
    assert "PROGAN_EXT_REQUIRE_EXT=1" in res.stderr and "disabled" in res.stderr


def test_version_mismatch_is_one_clear_sentence():
    msg = _ext.version_mismatch({"torch_version": "2.11.0+cu130", "with_cuda": True, "torch_cuda": "13.0"},
                                "2.14.1+cu130", "13.0")
    assert "built against torch 2.11.0+cu130" in msg and "2.14.1" in msg and "`pip install .`" in msg
    msg = _ext.version_mismatch({"torch_version": "2.14.1", "with_cuda": True, "torch_cuda": "12.8"},
                                "2.14.1+cu130", "13.0")
    assert "CUDA 12.8" in msg
    assert _ext.version_mismatch({"torch_version": "2.14.1+cpu", "with_cuda": False}, "2.14.1", None) is None


def test_public_api():
    assert set(ops.OPS) <= set(dir(ops))
    for name in ops.OPS:
        assert getattr(ops, name).__doc__ and getattr(reference, name).__doc__
    assert progan_ext.__version__


@pytest.mark.parametrize("impl", ["ext", "reference"])
def test_layers_pixel_norm_and_mbstd(impl):
    x = randn((8, 6, 4, 4))
    torch.testing.assert_close(layers.PixelNorm(impl=impl)(x), reference.pixel_norm(x))
    m = layers.MinibatchStdDev(group_size=4, num_features=2, impl=impl)
    torch.testing.assert_close(m(x), reference.minibatch_stddev(x, 4, 2))
    assert "group_size=4" in repr(m)


def test_layers_reject_bad_arguments():
    with pytest.raises(ValueError, match="impl"):
        layers.PixelNorm(impl="cuda")
    with pytest.raises(ValueError, match="eps"):
        layers.PixelNorm(eps=0)
    with pytest.raises(ValueError, match="odd"):
        layers.EqualizedConv2d(4, 4, 2)
    with pytest.raises(ValueError, match="resample"):
        layers.EqualizedConv2d(4, 4, 3, resample="sideways")
    with pytest.raises(ValueError, match="act"):
        layers.EqualizedLinear(4, 4, act="tanh")


def test_build_info_recorded():
    if not COMPILED:
        pytest.skip("compiled extension not built")
    info = _ext.build_info
    for key in ("torch_version", "torch_cuda", "with_cuda", "arch_list", "builder"):
        assert key in info


@pytest.mark.parametrize("impl", ["ext", "reference"])
def test_layers_deepcopy_and_autocast(impl):
    import copy

    torch.manual_seed(0)  # the layers draw their weights from the global generator
    conv = layers.EqualizedConv2d(6, 5, 3, resample="up", pixel_norm=True, impl=impl)
    dense = layers.EqualizedLinear(6, 7, impl=impl)
    twin = copy.deepcopy(conv)  # EMA generators are deep copies
    x = randn((2, 6, 4, 4))
    torch.testing.assert_close(twin(x), conv(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
        z = dense(randn((3, 6)))
        w = ops.bias_act(y, torch.zeros(5))  # float32 bias meets bfloat16 activations
    assert y.dtype == torch.bfloat16 and z.dtype == torch.bfloat16 and w.dtype == torch.bfloat16
    # Compared norm-wise: rounding x and the weight to bfloat16 moves the conv output by about
    # 2^-8 of the terms it sums, and where a pixel's channels nearly cancel, pixel norm divides that
    # by a small rms, so single elements may land far off (0.13 of a unit-rms output, seen in one
    # of 300 weight draws). Over 5000 draws the norm-wise error had median 0.004, max 0.026.
    expected = conv(x)
    error = (y.float() - expected).norm() / expected.norm()
    assert error < 5e-2, f"bfloat16 autocast output off by {error:.3g} of its norm"


def test_bias_dtype_mismatch_outside_autocast_is_an_error():
    with pytest.raises(TypeError, match="bias has dtype"):
        ops.bias_act(torch.randn(2, 3, dtype=torch.bfloat16), torch.randn(3))
