"""The structure ops of the zoo (issue 12): mul{} gates, upsampling, channel slices and shuffles.
Each op's rules are checked in test_ops.py and its backward in test_numpy_backend.py; here, what
each does beyond one sample: shapes both ways round, errors, size names against the concrete
checker, and the torch lowering against what torchvision writes by hand."""
from fractions import Fraction

import numpy as np
import pytest

import netdsl
from netdsl.errors import NetDSLShapeError
from netdsl.shapes import infer_shapes
from netdsl.symbolic import Size

torch = pytest.importorskip("torch")

from equivalence import compare  # noqa: E402

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


def agrees_with_torch(net):
    """NumPy and torch in eval mode, one set of weights, float64: outputs and gradients within
    1e-10 relative. compare's floor is atol times the largest value (at most 55 in these
    nets), so 1e-14 keeps it below the absolute 1e-12 these tests held before."""
    compare(net, modes=("eval",), dtype="float64", rtol=1e-10, atol=1e-14)


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
    agrees_with_torch(net)
    # the kernel on its own: d(x * g)/dg = sum over H, W of dy * x
    from netdsl.backends.numpy_backend import KERNELS
    rng = np.random.default_rng(3)
    x, g, dy = rng.standard_normal((4, 2, 5, 3)), rng.standard_normal((4, 2, 1, 1)), rng.standard_normal((4, 2, 5, 3))
    node = netdsl.parse("mul{ id | gap }", input="4x5x3").graph.output
    dxs, _ = KERNELS["mul"].backward(node, dy, [x, g], {})
    np.testing.assert_allclose(dxs[0], dy * g)
    np.testing.assert_allclose(dxs[1], (dy * x).sum(axis=(2, 3), keepdims=True))


# -- channels() and shuffle() -----------------------------------------------------------------------

def channel_shuffle(x, groups):
    """torchvision.models.shufflenetv2.channel_shuffle, as written there."""
    batchsize, num_channels, height, width = x.size()
    x = x.view(batchsize, groups, num_channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_shuffle_is_torchvisions_channel_shuffle_in_every_backend(groups):
    net = netdsl.parse(f"shuffle({groups})", input="6x2x3")
    x = np.arange(2 * 6 * 2 * 3, dtype=np.float64).reshape(2, 6, 2, 3)
    expected = channel_shuffle(torch.from_numpy(x), groups).numpy()
    for backend in ("numpy", "torch", "jax"):
        module = net.compile(backend, dtype="float64").eval()
        assert np.array_equal(module.run(x), expected), backend
    if groups == 2:  # 6 channels as 2 groups of 3: 0 3 1 4 2 5
        assert [int(v) for v in expected[0, :, 0, 0] // 6] == [0, 3, 1, 4, 2, 5]


def test_channels_takes_start_to_end_minus_one_in_every_backend():
    net = netdsl.parse("cat{ channels(3, 5) | channels(0, 1) }", input="6x2x2")
    assert net.output_shape == (3, 2, 2)
    x = np.random.default_rng(0).standard_normal((2, 6, 2, 2))
    for backend in ("numpy", "torch", "jax"):
        y = net.compile(backend, dtype="float64").eval().run(x)
        assert np.array_equal(y, np.concatenate([x[:, 3:5], x[:, 0:1]], axis=1)), backend


def test_shufflenet_block_gradients_agree_with_torch_and_sizes_are_free():
    block = ("cat{ channels(0, 4) | channels(4, 8) - conv1-4 - bn - conv3-4(groups=4) - bn - conv1-4 } "
             "- shuffle(2)")
    agrees_with_torch(netdsl.parse(f"conv3-8/2 - {block} - {block}", input="3x9x6"))
    net = agree_with_the_concrete_checker(f"conv3-8/2 - {block} - pool - {block}", 3, 60)
    assert net.output_shape == (8, (H + 1) // 4, (W + 1) // 4)


@pytest.mark.parametrize("program,message", [
    ("channels(2, 9)", "channels(2, 9) runs past the input: 8x4x4 has 8 channels"),
    ("channels(3, 3)", "channels(3, 3) takes no channel: the end must be above the start"),
    ("shuffle(3)", "shuffle(3) needs channels divisible by 3, got 8"),
])
def test_channel_errors(program, message):
    with pytest.raises(NetDSLShapeError) as error:
        netdsl.parse(program, input="8x4x4")
    assert error.value.message == message


# -- upsample() -----------------------------------------------------------------------------------

F = torch.nn.functional
MODES = [("nearest", None), ("bilinear", False), ("bilinear", True)]


def _interpolate_args(mode, corners):
    return f", mode={mode}" + (", align_corners=true" if corners else "")


@pytest.mark.parametrize("mode,corners", MODES)
@pytest.mark.parametrize("factor", [2, 3, 7])
def test_upsample_by_a_factor_is_torchs_interpolate_in_every_backend(mode, corners, factor):
    net = netdsl.parse(f"upsample({factor}{_interpolate_args(mode, corners)})", input="2x5x3")
    assert net.output_shape == (2, 5 * factor, 3 * factor)
    for dtype in ("float64", "float32"):
        x = np.random.default_rng(factor).standard_normal((2, 2, 5, 3)).astype(dtype)
        expected = F.interpolate(torch.from_numpy(x), scale_factor=factor, mode=mode, align_corners=corners).numpy()
        for backend in ("numpy", "torch", "jax"):
            got = net.compile(backend, dtype=dtype).eval().run(x)
            if mode == "nearest":
                assert np.array_equal(got, expected), (backend, dtype)  # the same pixels, copied
            else:
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14 if dtype == "float64" else 1e-5)


@pytest.mark.parametrize("mode,corners", MODES)
def test_upsample_to_another_tensors_size_takes_any_ratio_as_torch_does(mode, corners):
    # 7 and 11 from 3 and 4 (ceil pools), 13 from 3: sizes that are not multiples, where torch's
    # nearest reads floor(out * in/out) computed in float32
    for h, w, k in ((7, 11, 3), (13, 8, 4), (6, 6, 2)):
        net = netdsl.parse(f"x: id - maxpool{k}/{k}(ceil) - upsample(like=@x{_interpolate_args(mode, corners)})",
                           input=f"3x{h}x{w}")
        assert net.output_shape == (3, h, w)
        x = np.random.default_rng(h).standard_normal((2, 3, h, w))
        small = F.max_pool2d(torch.from_numpy(x), k, k, ceil_mode=True)
        expected = F.interpolate(small, size=(h, w), mode=mode, align_corners=corners).numpy()
        for backend in ("numpy", "torch", "jax"):
            got = net.compile(backend, dtype="float64").eval().run(x)
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14, err_msg=f"{backend} {h}x{w}")


@pytest.mark.parametrize("program", [
    "conv3-4/2 - upsample(2, mode=bilinear) - conv3-2",
    "x: conv3-4 - maxpool2/2(ceil) - upsample(like=@x, mode=bilinear, align_corners=true) - conv3-2",
    "x: conv3-4 - avgpool3/3(ceil) - conv1-4 - upsample(like=@x) - conv3-2"])
def test_upsample_gradients_agree_with_torch(program):
    agrees_with_torch(netdsl.parse(program, input="3x7x10"))


def test_upsample_field_and_jump_are_deconvs():
    net = netdsl.parse("conv3-4/2 - conv3-4/2 - upsample(2) - upsample(2, mode=bilinear)", input="3x16x16")
    fields = [(layer.rf, layer.stride) for layer in net.stats.layers]
    assert fields[3] == (7, 2)  # nearest: each output copies one input pixel; jump 4/2
    assert fields[4] == (9, 1)  # bilinear: two pixels per axis, one input step more
    deconv = netdsl.parse("conv3-4/2 - conv3-4/2 - deconv2-4/2", input="3x16x16").stats.layers[3]
    assert (deconv.rf, deconv.stride) == fields[3]
    like = netdsl.parse("x: conv3-4/2 - conv3-4/2 - upsample(like=@x)", input="3x16x16").stats.layers[-1]
    assert (like.rf, like.stride) == (7, 2)  # 4 -> 8: in/out = 1/2
    odd = netdsl.parse("x: conv3-4/2 - maxpool2/2(ceil) - upsample(like=@x)", input="3x9x9").stats.layers[-1]
    assert odd.stride == 4 * Fraction(3, 5)  # 3 -> 5


def test_upsample_with_size_names_matches_the_concrete_checker():
    net = agree_with_the_concrete_checker(
        "l1: conv3-8 - pool - conv3-8(pad=0) - upsample(2) - l2: conv3-8 - pool - "
        "upsample(like=@l2, mode=bilinear) - cat{ id | @l2 } - upsample(like=@l1)", 3, 70)
    assert net.output_shape == (16, H, W)
    assert net.shapes[net.graph.node("upsample1").id] == (8, (H // 2 - 2) * 2, (W // 2 - 2) * 2)
    assert net.valid_sizes["H"].describe() == "H >= 6"  # 6 -> 3 -> 1 -> 2 -> 1
    agrees_with_torch(net.at("3x13x9"))


@pytest.mark.parametrize("program,message", [
    ("upsample", "upsample needs a factor above 1 or a tensor to match"),
    ("x: id - upsample(2, like=@x)", "upsample takes a factor or like, not both (factor 2)"),
    ("upsample(2, align_corners=true)", "align_corners applies to bilinear upsampling only"),
    ("flatten - upsample(2)", "upsample needs a CxHxW input, got a flat tensor of 48"),
])
def test_upsample_errors(program, message):
    with pytest.raises(NetDSLShapeError) as error:
        netdsl.parse(program, input="3x4x4")
    assert error.value.message == message


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_the_conformance_kit_passes_on_the_structure_ops(backend):
    """tests/data/structure_ops.net (every op above, both upsample modes) in the kit, both modes and
    dtypes: the heavy tier adds it to the shipped networks, whose generated programs need not draw
    these ops."""
    from conftest import ROOT
    from netdsl.testing import check_backend
    if backend == "jax":
        pytest.importorskip("jax")
    path = str(ROOT / "tests" / "data" / "structure_ops.net")
    for dtype in ("float64", "float32"):
        report = check_backend(backend, networks=((path, None),), examples=0, dtype=dtype)
        assert {"mul", "channels", "shuffle", "upsample"} <= report.ops
