"""torch.compile: every public op, every layer and both networks trace as ONE graph (issue 13).

`torch._dynamo.explain` counts graphs and graph breaks without compiling (cheap); the value and
gradient checks compile with the "aot_eager" backend (Dynamo + AOTAutograd: fake kernels, autograd
and autocast registrations all take part) and one test runs the default Inductor backend end to end.
The same tests run on CUDA when a GPU is present. Where a device has a compiled kernel, the graph
must call it (a zero-break graph through the reference would hide a routing bug).
"""

import math
import sys
import warnings

import pytest
import torch

from conftest import COMPILED, DEVICES, TOL, assert_close, randn
from progan_ext import layers, ops, reference
from progan_ext.networks import Discriminator, Generator

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

PRECISIONS = [pytest.param(None, id="fp32"), pytest.param(torch.bfloat16, id="bf16-autocast")]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # no cached graphs or recompile counts carried between tests
    yield
    torch._dynamo.reset()


def _autocast(device, dtype):
    return torch.autocast(device, dtype=dtype, enabled=dtype is not None)


def progan_ops_in(graphs, namespace="progan_ext") -> set:
    """Names of the torch.ops.<namespace> ops that the FX graphs call."""
    found = set()
    for gm in graphs:
        for node in gm.graph.nodes:
            target = node.target
            name = getattr(target, "_qualified_op_name", None)  # OpOverloadPacket
            if name is None and isinstance(target, torch._ops.OpOverload):
                name = target.name()
            if node.op == "call_function" and name and name.startswith(namespace + "::"):
                op = name.split("::", 1)[1]
                found.add(op[: -len("_pn")] if op.endswith("_pn") else op)  # the pixel-normed form of an op
    return found


def _check_ops(graphs, device, expect_ops):
    want = {op for op in expect_ops if ops._has_kernel(op, device)}
    # the namespace whose kernels serve the device: progan_ext_emu for an emulated "cuda" case
    namespace = ops.kernel_namespace(torch.device(device).type) or "progan_ext"
    missing = want - progan_ops_in(graphs, namespace)
    assert not missing, f"the graph does not call the compiled {sorted(missing)}"


def assert_no_break(fn, *args, device="cpu", expect_ops=(), **kwargs):
    """Asserts that ``torch._dynamo.explain`` captures ``fn(*args, **kwargs)`` as one graph with no
    break, and that the graph calls the compiled ``expect_ops`` wherever this build has a kernel for
    ``device``. (explain does not count a break that comes before the first captured op: fine for
    the networks, whose first ops come first; the single ops use assert_fullgraph.)"""
    torch._dynamo.reset()
    report = torch._dynamo.explain(fn)(*args, **kwargs)
    reasons = "\n".join(str(b.reason).splitlines()[0] for b in report.break_reasons)
    assert report.graph_count == 1 and report.graph_break_count == 0, (
        f"{report.graph_count} graphs, {report.graph_break_count} graph breaks:\n{reasons}"
    )
    _check_ops(report.graphs, device, expect_ops)


def assert_fullgraph(fn, *args, device="cpu", expect_ops=(), backend="eager", **kwargs):
    """Strict form: ``torch.compile(fn, fullgraph=True, backend=backend)`` must capture one graph
    (any break, even before the first op, raises), and the graph calls the compiled ``expect_ops``
    (as above). Returns fn's output as the compiled function computes it."""
    graphs = []
    compiler = torch._dynamo.lookup_backend(backend)

    def record(gm, example_inputs):
        graphs.append(gm)
        return compiler(gm, example_inputs)

    torch._dynamo.reset()
    try:
        out = torch.compile(fn, backend=record, fullgraph=True)(*args, **kwargs)
    except torch._dynamo.exc.Unsupported as exc:
        raise AssertionError(f"graph break: {str(exc).splitlines()[0]}") from exc
    assert len(graphs) == 1, f"{len(graphs)} graphs"
    _check_ops(graphs, device, expect_ops)
    return out


# ----------------------------------------------------------------------------------------------
# Networks: every resolution, stable and fade-in, fp32 and bf16 autocast.

G_OPS = ("pixel_norm", "bias_act", "eq_conv2d", "upsample_conv2d")
D_OPS = ("eq_conv2d", "conv2d_downsample", "minibatch_stddev", "bias_act")
R = 16  # 4x4 alone, one block with fade-in (8), and the loop over older blocks (16)


def small_nets(device, R=R, seed=0):
    torch.manual_seed(seed)
    G = Generator(R, latent_size=16, fmap_max=8).to(device)
    D = Discriminator(R, fmap_max=8).to(device)
    with torch.no_grad():  # non-zero biases, so that every epilogue term matters
        for p in list(G.parameters()) + list(D.parameters()):
            if p.dim() == 1:
                p.normal_(0, 0.5)
    return G, D


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", PRECISIONS)
def test_networks_trace_as_one_graph(device, dtype):
    G, D = small_nets(device)
    z = randn((4, 16), device=device)
    for r in G.resolutions:
        img = randn((4, 3, r, r), device=device, seed=r)
        for alpha in (1.0, 0.5) if r > 4 else (1.0,):
            with _autocast(device, dtype):
                assert_no_break(G, z, resolution=r, alpha=alpha, device=device,
                                 expect_ops=G_OPS if r > 4 else G_OPS[:3])
                assert_no_break(D, img, resolution=r, alpha=alpha, device=device,
                                 expect_ops=D_OPS if r > 4 else D_OPS[:1] + D_OPS[2:])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", PRECISIONS)
def test_networks_fullgraph_equal_eager_and_backward(device, dtype):
    G, D = small_nets(device, R=8)
    z = randn((4, 16), device=device)
    img = randn((4, 3, 8, 8), device=device, seed=1)
    cg = torch.compile(G, fullgraph=True, backend="aot_eager")
    cd = torch.compile(D, fullgraph=True, backend="aot_eager")
    out_dtype = dtype or torch.float32
    with _autocast(device, dtype):  # fade-in: both paths of the blend (the inductor test is stable)
        y, y_eager = cg(z, resolution=8, alpha=0.5), G(z, resolution=8, alpha=0.5)
        s, s_eager = cd(img, resolution=8, alpha=0.5), D(img, resolution=8, alpha=0.5)
    assert y.dtype == y_eager.dtype == out_dtype
    assert_close(y, y_eager, out_dtype)
    assert_close(s, s_eager, out_dtype)
    # Backward through the compiled G (and D on top of it, as the G step of training does).
    grads = []
    for g_net, d_net in ((cg, cd), (G, D)):
        with _autocast(device, dtype):
            loss = -d_net(g_net(z, resolution=8, alpha=0.5), resolution=8, alpha=0.5).float().mean()
        grads.append(torch.autograd.grad(loss, list(G.parameters())))
    rtol, atol = TOL[out_dtype]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * max(1.0, b.abs().max().item()))


def test_fade_in_alpha_does_not_recompile_every_step():
    G, _ = small_nets("cpu", R=8)
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    cg = torch.compile(G, backend=record, fullgraph=True)
    z = randn((4, 16))
    for alpha in (0.1, 0.2, 0.3, 0.4):
        assert_close(cg(z, resolution=8, alpha=alpha), G(z, resolution=8, alpha=alpha), torch.float32)
    assert len(graphs) <= 2  # specialised on the first alpha, then alpha becomes a graph input


def test_one_compiled_network_through_progressive_growth():
    """Compiled once, called as a progressive run calls it: the resolution changes (it arrives as a
    symbolic int after the first change) and alpha moves; one graph per (resolution, phase)."""
    G, D = small_nets("cpu")
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    cg = torch.compile(G, backend=record, fullgraph=True)
    cd = torch.compile(D, backend=record, fullgraph=True)
    z = randn((4, 16))
    states = [(4, 1.0), (8, 0.3), (8, 0.6), (8, 1.0), (16, 0.5)]
    for r, a in states:
        img = cg(z, resolution=r, alpha=a)
        assert_close(img, G(z, resolution=r, alpha=a), torch.float32)
        assert_close(cd(img, resolution=r, alpha=a), D(img, resolution=r, alpha=a), torch.float32)
    assert len(graphs) <= 2 * 4  # G and D: 4x4, fade-in and stable at 8, fade-in at 16


def test_layers_with_different_hyperparameters_compile_separately():
    """Several layers of one class share forward's code: a float hyperparameter that differs between
    them (gain, alpha, eps) becomes a symbolic float, and the argument checks must trace it too."""
    x = randn((2, 6, 5, 5))
    convs = [layers.EqualizedConv2d(6, 5, 3), layers.EqualizedConv2d(6, 3, 1, gain=1.0, act="linear"),
             layers.EqualizedConv2d(6, 3, 3, gain=0.5, alpha=0.1)]
    norms = [layers.PixelNorm(eps) for eps in (1e-8, 1e-6, 1e-4)]
    for layer in convs + norms:
        y = torch.compile(layer, fullgraph=True, backend="eager")(x)
        assert_close(y, layer(x), torch.float32)
    fn = torch.compile(ops.pixel_norm, fullgraph=True, backend="eager")
    for eps in (1e-8, 1e-6, 1e-4):
        assert_close(fn(x, eps), reference.pixel_norm(x, eps), torch.float32)
    for bad in (0.0, -1.0, math.inf, math.nan):  # checked on the symbolic eps too
        with pytest.raises(Exception, match="eps must be a positive"):
            fn(x, bad)


@pytest.mark.slow  # Inductor generates and compiles C++ (CPU) or Triton (CUDA): ~1 min cold on 2 cores
@pytest.mark.parametrize("device", DEVICES)
def test_networks_fullgraph_inductor(device):
    """The default backend end to end: Inductor generates code around the compiled ops."""
    G, D = small_nets(device, R=8)
    z = randn((4, 16), device=device)
    cg = torch.compile(G, fullgraph=True)
    cd = torch.compile(D, fullgraph=True)
    y = cg(z, resolution=8)
    assert_close(y, G(z, resolution=8), torch.float32)
    img = y.detach()
    assert_close(cd(img, resolution=8), D(img, resolution=8), torch.float32)
    params = [p for name, p in G.named_parameters() if not name.startswith("torgb.4")]  # unused at alpha 1
    for g_compiled, g_eager in zip(torch.autograd.grad(y.square().mean(), params),
                                   torch.autograd.grad(G(z, resolution=8).square().mean(), params)):
        assert_close(g_compiled, g_eager, torch.float32)


# ----------------------------------------------------------------------------------------------
# Each public op on its own.


def op_cases(device):
    x = randn((4, 6, 8, 8), device=device, requires_grad=True)
    w3 = randn((5, 6, 3, 3), device=device, seed=1, requires_grad=True)
    w1 = randn((5, 6, 1, 1), device=device, seed=2, requires_grad=True)
    b = randn((5,), device=device, seed=3, requires_grad=True)
    b6 = randn((6,), device=device, seed=4, requires_grad=True)
    return [
        ("pixel_norm", lambda: ops.pixel_norm(x), (x,)),
        ("pixel_norm", lambda: ops.pixel_norm(x[:, :, 0, 0], 1e-4), (x,)),  # rank 2
        ("minibatch_stddev", lambda: ops.minibatch_stddev(x, 2, 2), (x,)),
        ("bias_act", lambda: ops.bias_act(x, b6), (x, b6)),
        ("bias_act", lambda: ops.bias_act(x, None, "linear"), (x,)),
        ("eq_conv2d", lambda: ops.eq_conv2d(x, w3, b, pixel_norm=True), (x, w3, b)),
        ("eq_conv2d", lambda: ops.eq_conv2d(x, w1, None, gain=1.0, act="linear"), (x, w1)),
        ("upsample_conv2d", lambda: ops.upsample_conv2d(x, w3, b, pixel_norm=True), (x, w3, b)),
        ("conv2d_downsample", lambda: ops.conv2d_downsample(x, w3, b), (x, w3, b)),
    ]


def test_every_public_op_has_a_case():
    assert {name for name, _, _ in op_cases("cpu")} == set(ops.OPS)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", PRECISIONS)
def test_ops_trace_as_one_graph_and_equal_eager(device, dtype):
    for name, call, inputs in op_cases(device):
        with _autocast(device, dtype):
            y = assert_fullgraph(call, device=device, expect_ops=(name,), backend="aot_eager")
            y_eager = call()
        assert y.dtype == y_eager.dtype
        assert_close(y, y_eager, y_eager.dtype)
        g = randn(y.shape, device=device, seed=9).to(y.dtype)
        for a, e in zip(torch.autograd.grad(y, inputs, g), torch.autograd.grad(y_eager, inputs, g)):
            assert_close(a, e, y_eager.dtype)


# ----------------------------------------------------------------------------------------------
# Each layer on its own.


LAYER_CASES = {  # id: (the compiled op it must call, constructor, input shape)
    "PixelNorm": ("pixel_norm", lambda: layers.PixelNorm(), (4, 6, 5, 5)),
    "MinibatchStdDev": ("minibatch_stddev", lambda: layers.MinibatchStdDev(2), (4, 6, 5, 5)),
    "Conv3x3-pn": ("eq_conv2d", lambda: layers.EqualizedConv2d(6, 5, 3, pixel_norm=True), (4, 6, 5, 5)),
    "Conv1x1-toRGB": ("eq_conv2d", lambda: layers.EqualizedConv2d(6, 3, 1, gain=1.0, act="linear"), (4, 6, 5, 5)),
    "Conv-up": ("upsample_conv2d", lambda: layers.EqualizedConv2d(6, 5, 3, resample="up", pixel_norm=True), (4, 6, 5, 5)),
    "Conv-down": ("conv2d_downsample", lambda: layers.EqualizedConv2d(6, 5, 3, resample="down"), (4, 6, 6, 6)),
    "Linear": ("bias_act", lambda: layers.EqualizedLinear(6, 5), (4, 6)),
    "Linear-nobias": (None, lambda: layers.EqualizedLinear(6, 5, act="linear", bias=False), (4, 6)),
}


def test_every_layer_has_a_case():
    assert {type(make()).__name__ for _, make, _ in LAYER_CASES.values()} == set(layers.__all__) - {"IMPLS"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", LAYER_CASES)
def test_layers_trace_as_one_graph_and_equal_eager(device, case):
    op, make, shape = LAYER_CASES[case]
    torch.manual_seed(0)
    layer = make().to(device)
    if getattr(layer, "bias", None) is not None:
        with torch.no_grad():
            layer.bias.normal_()
    x = randn(shape, device=device, requires_grad=True)
    expect = (op,) if op else ()
    with _autocast(device, torch.bfloat16):
        assert_fullgraph(layer, x, device=device, expect_ops=expect)
    y = assert_fullgraph(layer, x, device=device, expect_ops=expect, backend="aot_eager")
    y_eager = layer(x)
    assert_close(y, y_eager, torch.float32)
    g = randn(y.shape, device=device, seed=5)
    params = [x, *layer.parameters()]
    for a, e in zip(torch.autograd.grad(y, params, g), torch.autograd.grad(y_eager, params, g)):
        assert_close(a, e, torch.float32)


# ----------------------------------------------------------------------------------------------
# The check itself can fail, and the implementation table is decided outside traced code.


def _old_style_kernel(op, x):
    """The wrapper of issue 13: asks the dispatcher on every call (a bool-returning torch._C call,
    which Dynamo cannot put in a graph)."""
    if torch._C._dispatch_has_kernel_for_dispatch_key(f"progan_ext::{op}", x.device.type.upper()):
        return getattr(torch.ops.progan_ext, op)
    return None


def test_untraceable_wrapper_is_caught():
    """Both checks fail on a wrapper that asks the dispatcher inside traced code."""
    x = randn((2, 4, 3, 3))

    def query_first(t):
        if torch._C._dispatch_has_kernel_for_dispatch_key("aten::add.Tensor", "CPU"):
            t = t + 1
        return ops.pixel_norm(t)

    def query_between(t):
        return query_first(t * 2)

    with pytest.raises(AssertionError, match="graph break"):
        assert_fullgraph(query_first, x)
    with pytest.raises(AssertionError, match="graph break"):
        assert_no_break(query_between, x)


@pytest.mark.skipif(not COMPILED, reason="compiled extension not built")
def test_issue_13_regression_is_caught(monkeypatch):
    monkeypatch.setattr(ops, "_kernel", _old_style_kernel)
    G, _ = small_nets("cpu", R=8)
    with pytest.raises(AssertionError, match="graph break"):
        assert_no_break(G, randn((4, 16)), resolution=4, expect_ops=G_OPS[:3])
    with pytest.raises(AssertionError, match="graph break"):
        assert_fullgraph(ops.pixel_norm, randn((2, 4, 3, 3)), expect_ops=("pixel_norm",))


def test_routing_to_the_reference_is_caught(monkeypatch):
    """A one-graph capture that skips the compiled kernels fails the check too."""
    if not ops._has_kernel("pixel_norm", "cpu"):
        pytest.skip("no compiled CPU kernel in this build")
    monkeypatch.setattr(ops, "_kernel", lambda op, x: None)
    with pytest.raises(AssertionError, match="does not call the compiled"):
        assert_fullgraph(ops.pixel_norm, randn((2, 4, 3, 3)), expect_ops=("pixel_norm",))


def test_progan_ext_makes_no_dispatcher_queries_per_call(monkeypatch):
    """The implementation table is read, never rebuilt, when ops run or are traced."""
    real = torch._C._dispatch_has_kernel_for_dispatch_key
    callers = []

    def spy(*args):
        callers.append(sys._getframe(1).f_globals.get("__name__", ""))
        return real(*args)

    G, D = small_nets("cpu", R=8)
    monkeypatch.setattr(torch._C, "_dispatch_has_kernel_for_dispatch_key", spy)
    fn = torch.compile(lambda z: D(G(z, resolution=8, alpha=0.5), resolution=8, alpha=0.5),
                       fullgraph=True, backend="eager")
    assert fn(randn((4, 16))).shape == (4, 1)
    assert D(G(randn((4, 16)), resolution=8), resolution=8).shape == (4, 1)
    assert not [c for c in callers if c.startswith("progan_ext")]


@pytest.fixture
def restore_kernels():
    saved = dict(ops.KERNELS)
    yield
    ops.KERNELS.clear()
    ops.KERNELS.update(saved)


def _no_kernel_warnings(caught):
    return [str(c.message) for c in caught if "no compiled" in str(c.message)]


@pytest.mark.skipif(not COMPILED, reason="compiled extension not built")
def test_device_without_kernel_warns_and_still_traces(restore_kernels, monkeypatch):
    monkeypatch.setattr(ops, "_warned", set())
    ops.KERNELS["cpu"] = (ops.NAMESPACE, {})  # as if this build had no CPU kernels
    assert ops.backend_info()["ops"]["eq_conv2d"]["cpu"] == "reference (PyTorch)"
    x, w = randn((2, 4, 6, 6)), randn((5, 4, 3, 3), seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = assert_fullgraph(ops.eq_conv2d, x, w)  # warned while tracing, no graph break
        ops.eq_conv2d(x, w)
    assert _no_kernel_warnings(caught) == [
        "progan_ext: no compiled eq_conv2d kernel for cpu tensors in this build; using the pure-PyTorch reference"
    ]
    assert_close(y, reference.eq_conv2d(x, w), torch.float32)


@pytest.mark.skipif(not COMPILED, reason="compiled extension not built")
def test_use_kernels_reroutes_compiled_code(restore_kernels):
    x = randn((2, 4, 3, 3))
    graphs = []

    def record(gm, example_inputs):
        graphs.append(progan_ops_in([gm]))
        return gm.forward

    fn = torch.compile(lambda t: ops.pixel_norm(t) * 2, backend=record, fullgraph=True)
    fn(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ops.use_kernels("cpu", None) == ops.NAMESPACE  # the reference, chosen: no warning
        assert ops.backend_info()["ops"]["pixel_norm"]["cpu"] == "reference (PyTorch)"
        fn(x)
    assert not _no_kernel_warnings(caught)
    assert ops.use_kernels("cpu", ops.NAMESPACE) is None
    assert ops.backend_info()["ops"]["pixel_norm"]["cpu"] == "compiled C++ kernel"
    fn(x)
    # The change to the reference re-traced; the change back reuses the first graph (its guards
    # on the table pass again).
    assert graphs == [{"pixel_norm"}, set()]


def test_use_kernels_validates():
    with pytest.raises(ValueError, match="defines none of the progan_ext ops"):
        ops.use_kernels("cpu", "progan_ext_no_such_namespace")
    with pytest.raises(ValueError, match="device_type must be"):
        ops.use_kernels("", ops.NAMESPACE)


def test_device_types_without_dispatch_key_use_the_reference(restore_kernels):
    assert ops.kernel_namespace("mps") is None and not ops._has_kernel("pixel_norm", "mps")
    if COMPILED:
        ops.use_kernels("mps")
        assert ops.kernel_namespace("mps") == ops.NAMESPACE and not ops._has_kernel("pixel_norm", "mps")


@pytest.mark.skipif(not COMPILED, reason="compiled extension not built")
def test_argument_checks_keep_their_messages_when_compiled():
    """Without fullgraph a failing check falls back to eager and raises the same error; with
    fullgraph Dynamo names the check it could not trace past."""
    bad = torch.randn(2, 4, 5, 6)
    w = torch.randn(5, 4, 3, 3)
    fn = torch.compile(ops.conv2d_downsample, backend="eager")
    with pytest.raises(ValueError, match="height and width must be even"):
        fn(bad, w)
    fn_full = torch.compile(ops.conv2d_downsample, backend="eager", fullgraph=True)
    with pytest.raises(Exception, match="height and width must be even"):
        fn_full(bad, w)
    assert math.isfinite(float(fn_full(torch.randn(2, 4, 6, 6), w).sum()))
