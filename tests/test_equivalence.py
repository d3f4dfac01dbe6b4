"""Properties over generated networks (netdsl.testing.programs): the backends agree, the checker's
shapes are the shapes the backends produce, the statistics are what torch measures, `expand`
round-trips, and the generated PyTorch source is the in-process module.

Run more with `pytest --hypothesis-profile=thorough` (10x the examples)."""
import importlib.util
import math

import numpy as np
import pytest
from hypothesis import assume, example, given

import netdsl
from netdsl.testing import Program, programs

torch = pytest.importorskip("torch")

from equivalence import (batch_norm_is_well_conditioned, compare, layer_norm_is_well_conditioned,  # noqa: E402
                         max_pool_maxima_are_unique, without_dropout)


DEAD_RELUS = Program(
    "input 1x3x3\nactivation relu\nconv1-1/1(pad=0, dilation=1, groups=1, bias=false) - "
    "conv1-1/1(pad=0, dilation=1, groups=1, bias=false) - l1: id - conv1-1(pad=1) - crop(0, like=@l1) "
    "- flatten - tanh - softmax\n", (9,), frozenset({"conv", "crop", "flatten", "tanh", "softmax"}))


def agree_where_well_conditioned(program: Program, dtype: str, rtol: float, atol: float) -> None:
    """`compare` in eval and train mode (dropout at p=0) on a batch of 8, for a program whose batch
    norms, max-pools and layer norms are well conditioned (others are assumed away: see each check)."""
    net = without_dropout(netdsl.parse(program.text))
    assume(batch_norm_is_well_conditioned(net, dtype, batch=8))
    assume(max_pool_maxima_are_unique(net, dtype, batch=8))
    assume(layer_norm_is_well_conditioned(net, dtype, batch=8))
    compare(net, dtype=dtype, rtol=rtol, atol=atol, batch=8)


@given(programs())
@example(DEAD_RELUS)  # every gradient is zero in theory: rounding noise must pass
@example(Program("input 1\nactivation relu\nfc1 - fc1 - fc1 - bn\n", (1,), frozenset({"fc", "bn"})))
@example(Program("input 3\nactivation relu\nfc1(act=sigmoid) - fc2(act=sigmoid) - fc2 - bn\n", (2,),
                 frozenset({"fc", "bn"})))
@example(Program(  # exact ties in a max-pool, broken differently by one rounding step
    "input 1x3x3\nactivation relu\ndeconv(k=1, c=1, stride=1, pad=0, output_pad=0, init=bilinear) - "
    "maxpool2/1(pad=1) - deconv(k=4, c=2, stride=2, pad=0, output_pad=0, init=bilinear) - l1: id - "
    "conv1-1(pad=1) - crop(0, like=@l1) - maxpool2/1(pad=0)\n", (1, 9, 9),
    frozenset({"conv", "crop", "deconv", "maxpool"})))
def test_numpy_and_torch_agree_in_float64(program):
    # A batch of 8: batch norm over two nearly equal values amplifies rounding by up to
    # 1/sqrt(eps), past the 1e-12 floor, without any disagreement between the backends.
    agree_where_well_conditioned(program, "float64", rtol=1e-9, atol=1e-12)


@given(programs())
@example(Program("input 2\nactivation relu\nbn - bn\n", (2,), frozenset({"bn"})))  # exact-zero statistics
@example(Program("input 4x8x5\nactivation relu\nfc1 - tanh - bn\n", (1,), frozenset({"fc", "tanh", "bn"})))
@example(Program("input 1\nactivation relu\nfc1 - fc1 - fc1 - bn\n", (1,), frozenset({"fc", "bn"})))
def test_numpy_and_torch_agree_in_float32(program):
    # A batch of 8: batch norm over two values makes its backward cancel to float32 rounding.
    agree_where_well_conditioned(program, "float32", rtol=1e-4, atol=1e-5)


@given(programs())
def test_checker_shapes_are_the_shapes_backends_produce(program):
    net = netdsl.parse(program.text)
    assert net.output_shape == program.output_shape
    x = np.random.default_rng(0).standard_normal((2, *net.input_shape))
    numpy_values = net.compile("numpy", dtype="float64").eval().trace(x)
    torch_values = net.compile("torch", dtype="float64").eval().trace(torch.from_numpy(x))
    for node, expected in zip(net.graph, net.shapes):
        assert numpy_values[node.id].shape == (2, *expected), node.name
        if torch_values[node.id] is not None:  # ops computed inside a block's forward have no hook
            assert tuple(torch_values[node.id].shape) == (2, *expected), node.name


def _torch_macs(model, x) -> int:
    """Multiply-accumulates of conv, deconv, linear and attention layers, counted by forward hooks."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        n = inputs[0].shape[0]
        if isinstance(module, torch.nn.Conv2d):
            k = math.prod(module.kernel_size) * module.in_channels // module.groups
            total += output.numel() // n * k
        elif isinstance(module, torch.nn.ConvTranspose2d):
            k = math.prod(module.kernel_size) * module.out_channels // module.groups
            total += inputs[0].numel() // n * k
        elif isinstance(module, torch.nn.Linear):  # on a token tensor, once per token
            total += output.numel() // n * module.in_features
        elif isinstance(module, torch.nn.MultiheadAttention):
            # its projections are not Linear calls: Q, K, V and output (4*T*D*D), and the two
            # T x T products (2*T*T*D), from the (N, T, D) query
            _, t, d = inputs[0].shape
            total += 4 * t * d * d + 2 * t * t * d

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear,
                                 torch.nn.MultiheadAttention))]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return total


@given(programs())
def test_statistics_are_what_torch_measures(program):
    net = netdsl.parse(program.text)
    model = net.compile("torch").eval()
    assert net.params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert net.buffers == sum(b.numel() for name, b in model.named_buffers()
                              if not name.endswith("num_batches_tracked"))
    assert net.macs == _torch_macs(model, torch.zeros(2, *net.input_shape))


@given(programs())
def test_expand_round_trips_and_is_a_fixed_point(program):
    net = netdsl.parse(program.text)
    text = net.expand()
    again = netdsl.parse(text)
    assert again.graph.structure() == net.graph.structure()
    assert again.expand() == text


@given(program=programs())
def test_generated_source_is_the_module(program, tmp_path_factory):
    from netdsl.backends.torch_codegen import class_name, generate_source
    net = netdsl.parse(program.text)
    path = tmp_path_factory.mktemp("generated") / "model.py"
    path.write_text(generate_source(net))
    spec = importlib.util.spec_from_file_location("generated_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = getattr(module, class_name(net.name))().eval()
    model = net.compile("torch", seed=1).eval()
    generated.load_state_dict(model.state_dict())
    x = torch.randn(2, *net.input_shape)
    with torch.no_grad():
        assert torch.equal(generated(x), model(x))


def test_the_generator_covers_every_op():
    from hypothesis import HealthCheck, settings
    from netdsl.ops import OPS
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(programs())
    def collect(program):
        seen.update(n.op for n in netdsl.parse(program.text).graph)

    collect()
    assert seen == set(OPS)
