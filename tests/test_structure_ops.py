"""The structure ops of the zoo (issue 12): mul{} gates, upsampling, channel slices and shuffles.
Each op's rules are checked in test_ops.py and its backward in test_numpy_backend.py; here, what
each does beyond one sample: shapes both ways round, errors, size names against the concrete
checker, and the torch lowering against what torchvision writes by hand."""
import numpy as np
import pytest

import netdsl
from netdsl.errors import NetDSLShapeError
from netdsl.shapes import infer_shapes
from netdsl.symbolic import Size

torch = pytest.importorskip("torch")

H, W = Size.name("H"), Size.name("W")
SE = "gap - conv1-8 - relu - conv1-32 - sigmoid"


def concrete_ok(graph, size: int, strict: bool = False, channels: int = 3) -> bool:
    try:
        infer_shapes(graph, (channels, size, size), strict=strict)
        return True
    except NetDSLShapeError:
        return False


def agree_with_the_concrete_checker(program: str, channels: int, upto: int) -> None:
    net = netdsl.parse(program, input=f"{channels}xHxW")
    for strict, sets in ((False, net.valid_sizes), (True, net.strict_sizes)):
        found = [s for s in range(1, upto) if concrete_ok(net.graph, s, strict, channels)]
        assert found == sets["H"].values(upto - 1), (program, strict)
    return net


def numpy_and_torch(net, batch=2, seed=0):
    """Outputs and input gradients of the NumPy and torch modules, one set of weights, float64."""
    numpy_module = net.compile("numpy", dtype="float64", seed=seed).eval()
    torch_module = net.compile("torch", dtype="float64", weights=numpy_module.weights).eval()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *net.input_shape))
    y = numpy_module(x)
    dy = rng.standard_normal(y.shape)
    dx = numpy_module.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_module(xt)
    (yt * torch.from_numpy(dy)).sum().backward()
    return (y, dx), (yt.detach().numpy(), xt.grad.numpy())


# -- mul{} ------------------------------------------------------------------------------------------

def test_mul_scales_each_channel_by_its_gate_in_either_order():
    for program in (f"mul{{ id | {SE} }}", f"mul{{ {SE} | id }}"):
        net = netdsl.parse(program, input="32x7x5")
        assert net.output_shape == (32, 7, 5)
        module = net.compile("numpy", dtype="float64", seed=0).eval()
        x = np.random.default_rng(0).standard_normal((2, 32, 7, 5))
        gate = module.trace(x)[next(n.id for n in net.graph.nodes if n.op == "sigmoid")]
        assert gate.shape == (2, 32, 1, 1)
        np.testing.assert_allclose(module(x), x * gate, rtol=1e-15)


def test_mul_of_equal_shapes_is_the_element_wise_product():
    net = netdsl.parse("mul{ id | tanh | id }", input="3x4x4")
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(net.compile("numpy", dtype="float64").eval()(x), x * np.tanh(x) * x, rtol=1e-14)


@pytest.mark.parametrize("program,message", [
    ("mul{ id | gap - conv1-16 }", "mul{} branches differ in channels: branch 1 gives 32x8x8, branch 2 gives 16x1x1"),
    ("mul{ id | maxpool2/2 }", "mul{} branches differ in size: branch 1 gives 32x8x8, branch 2 gives 32x4x4"),
    ("mul{ id | flatten }", "mul{} branches differ in rank: branch 1 gives 32x8x8, branch 2 gives 2048"),
])
def test_mul_branches_that_cannot_broadcast_are_errors(program, message):
    with pytest.raises(NetDSLShapeError) as error:
        netdsl.parse(program, input="32x8x8")
    assert error.value.message == message
    assert "a Cx1x1 gate" in error.value.notes[0]


def test_mul_with_size_names_states_equal_branches_and_matches_the_concrete_checker():
    net = agree_with_the_concrete_checker(
        f"conv3-32/2 - mul{{ id | {SE} }} - mul{{ maxpool2/2 | avgpool2/2 | {SE} }} "
        f"- mul{{ id | conv3-32(pad=0) - conv3-32(pad=2) }}", 3, 80)
    assert net.output_shape == (32, (H + 1) // 4, (W + 1) // 4)
    assert net.valid_sizes["H"].describe() == "H >= 11"  # the valid 3x3 conv needs (H + 1)//4 >= 3


def test_mul_gradients_agree_with_torch_and_the_gate_sums_over_height_and_width():
    net = netdsl.parse(f"conv3-32 - mul{{ id | {SE} }} - conv3-4", input="3x6x7")
    (y, dx), (yt, dxt) = numpy_and_torch(net)
    np.testing.assert_allclose(yt, y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dxt, dx, rtol=1e-9, atol=1e-12)
    # the kernel on its own: d(x * g)/dg = sum over H, W of dy * x
    from netdsl.backends.numpy_backend import KERNELS
    rng = np.random.default_rng(3)
    x, g, dy = rng.standard_normal((4, 2, 5, 3)), rng.standard_normal((4, 2, 1, 1)), rng.standard_normal((4, 2, 5, 3))
    node = netdsl.parse("mul{ id | gap }", input="4x5x3").graph.output
    dxs, _ = KERNELS["mul"].backward(node, dy, [x, g], {})
    np.testing.assert_allclose(dxs[0], dy * g)
    np.testing.assert_allclose(dxs[1], (dy * x).sum(axis=(2, 3), keepdims=True))
