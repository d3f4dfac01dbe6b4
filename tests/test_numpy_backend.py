"""The NumPy backend: every op's backward against central finite differences (float64), the
slides' worked examples, weights files, and every shipped network forward and backward."""
import numpy as np
import pytest

import netdsl
from conftest import shipped_networks
from test_ops import SAMPLES

# (id, program, input shape, train mode)
OP_CASES = [
    ("conv", "conv3-4(act=none)", "3x7x7", False),
    ("conv_stride_pad", "conv3-4/2(pad=1, act=none)", "3x8x7", False),
    ("conv_dilation", "conv3-4(dilation=2, act=none)", "2x9x9", False),
    ("conv_groups_nobias", "conv3-4(groups=2, bias=false, act=none)", "4x6x6", False),
    ("conv_1x1_stride", "conv1-3/2(act=none)", "2x7x7", False),
    ("conv_act_tanh", "conv3-3(act=tanh)", "2x5x5", False),
    ("deconv", "deconv4-3/2(act=none)", "2x4x4", False),
    ("deconv_k3", "deconv3-3(act=none)", "2x4x5", False),
    ("deconv_groups", "deconv4-4/2(groups=2, act=none)", "4x3x3", False),
    ("deconv_output_pad", "deconv3-2/2(pad=1, output_pad=1, act=none)", "2x3x3", False),
    ("deconv_dilation", "deconv3-2(dilation=2, pad=0, act=none)", "2x4x4", False),
    ("maxpool", "maxpool2/2", "2x6x6", False),
    ("maxpool_ceil_pad", "maxpool3/2(pad=1, ceil)", "2x8x7", False),
    ("avgpool", "avgpool2/2", "2x6x6", False),
    ("avgpool_ceil_pad", "avgpool3/2(pad=1, ceil)", "2x8x7", False),
    ("avgpool_no_count_pad", "avgpool3/2(pad=1, count_pad=false)", "2x7x7", False),
    ("gap", "gap", "3x4x5", False),
    ("fc_image", "fc5(act=none)", "2x3x3", False),
    ("fc_flat", "fc4(act=sigmoid)", "6", False),
    ("bn_train", "bn", "3x4x4", True),
    ("bn_eval", "bn", "3x4x4", False),
    ("bn_flat_train", "bn", "5", True),
    ("lrn", "lrn", "7x3x3", False),
    ("lrn_even", "lrn(4, alpha=0.1, beta=0.6, k=1.5)", "6x2x2", False),
    ("dropout_train", "dropout(0.3)", "3x4x4", True),
    ("dropout_eval", "dropout(0.3)", "3x4x4", False),
    ("relu", "relu", "3x4x4", False),
    ("tanh", "tanh", "3x4x4", False),
    ("sigmoid", "sigmoid", "3x4x4", False),
    ("lrelu", "lrelu(0.2)", "3x4x4", False),
    ("elu", "elu(1.5)", "3x4x4", False),
    ("softmax_image", "softmax", "4x3x3", False),
    ("softmax_flat", "softmax", "6", False),
    ("flatten", "flatten - fc3(act=none)", "2x3x3", False),
    ("crop", "x: conv3-2(pad=0, act=none) - conv3-2(pad=2, act=none) - crop(1, like=@x)", "2x6x6", False),
    ("concat", "cat{ conv1-2(act=none) | conv3-3(act=none) | id }", "2x4x4", False),
    ("add", "add{ conv3-2(act=none) | id | conv1-2(act=none) }", "2x4x4", False),
    ("conv_bn_relu", "conv3-4(bias=false) - bn - fc3", "2x5x5", True),
    ("mul_gate_first_and_three_branches",
     "mul{ gap - conv1-3(act=none) | conv3-3(act=none) | id | gap - conv1-3(act=tanh) }", "3x4x5", False),
    ("mul_equal_shapes_flat", "mul{ fc4(act=none) | fc4(act=tanh) | id }", "4", False),
    ("channel_split_and_shuffle",
     "cat{ channels(0, 2) | channels(2, 4) - conv3-2(act=tanh) } - shuffle(2) - conv1-4(act=none)", "4x3x4", False),
    ("channels_flat", "channels(1, 4) - fc3(act=none)", "5", False),
    ("shuffle_flat", "fc6(act=none) - shuffle(3)", "4", False),
    ("upsample_nearest_3", "upsample(3) - conv3-2(act=none)", "2x3x4", False),
    ("upsample_bilinear_align_corners", "upsample(2, mode=bilinear, align_corners=true)", "2x3x4", False),
    ("upsample_like_bilinear", "x: conv3-2(act=none) - avgpool2/2(ceil) - upsample(like=@x, mode=bilinear) "
     "- conv1-2(act=none)", "2x5x7", False),
    ("upsample_like_nearest", "x: conv1-2(act=none) - avgpool3/3(ceil) - upsample(like=@x)", "2x7x5", False),
]


def _loss_and_grads(module, x, r, seed):
    module.rng = np.random.default_rng(seed)  # the same dropout mask on every call
    return float(np.sum(module(x) * r))


def _check(program, shape, train, entries=12, tol=1e-6):
    net = netdsl.parse(program, input=shape)
    module = net.compile("numpy", dtype="float64", seed=0).train(train)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, *net.input_shape))
    module.rng = np.random.default_rng(7)
    y = module(x)
    r = rng.standard_normal(y.shape)
    dx = module.backward(r)
    grads = dict(module.grads)
    assert set(grads) == {s.name for s in net.weight_specs if s.trainable}

    def numeric(array, index, eps=1e-6):
        old = array[index]
        array[index] = old + eps
        plus = _loss_and_grads(module, x, r, 7)
        array[index] = old - eps
        minus = _loss_and_grads(module, x, r, 7)
        array[index] = old
        return (plus - minus) / (2 * eps)

    targets = [("input", x, dx)] + [(name, module.weights[name], grads[name]) for name in grads]
    for name, array, analytic in targets:
        assert analytic.shape == array.shape, name
        picks = rng.choice(array.size, size=min(entries, array.size), replace=False)
        for flat in picks:
            index = np.unravel_index(flat, array.shape)
            expected = numeric(array, index)
            assert abs(analytic[index] - expected) <= tol * max(1.0, abs(expected)), \
                f"{name}{index}: backward {analytic[index]!r}, finite differences {expected!r}"


@pytest.mark.parametrize("program,shape,train", [c[1:] for c in OP_CASES], ids=[c[0] for c in OP_CASES])
def test_backward_matches_finite_differences(program, shape, train):
    _check(program, shape, train)


@pytest.mark.parametrize("op", list(SAMPLES))
def test_backward_of_each_op_sample_matches_finite_differences(op):
    """Every op's sample program (tests/test_ops.py: the one test row a new op needs)."""
    _check(SAMPLES[op][0], None, False)


def test_every_op_has_a_kernel_and_a_gradient_test():
    from netdsl.backends.numpy_backend import KERNELS
    from netdsl.ops import OPS
    assert set(KERNELS) == set(OPS)
    tested = set()
    for _, program, shape, _ in OP_CASES:
        tested |= {n.op for n in netdsl.parse(program, input=shape).graph}
    for program, *_ in SAMPLES.values():
        tested |= {n.op for n in netdsl.parse(program).graph}
    assert tested == set(OPS)


def test_slide_example_vertical_edge_kernel_gives_6():
    image = np.array([[7, 2, 3, 3, 8], [4, 5, 3, 8, 4], [3, 3, 2, 8, 4], [2, 8, 7, 2, 7], [5, 4, 4, 5, 4]])
    kernel = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]])
    net = netdsl.parse("conv3-1(pad=0, bias=false, act=none)", input="1x5x5")
    module = net.compile("numpy", dtype="float64", weights={"conv1.weight": kernel[None, None]})
    out = module(image[None, None].astype(float))[0, 0]
    assert out[0, 0] == 6
    expected = [[sum(image[i + a, j + b] * kernel[a, b] for a in range(3) for b in range(3))
                 for j in range(3)] for i in range(3)]
    assert out.tolist() == expected


def test_slide_stride_example():
    # the slide's 7x7 grid is a 5x5 image with a 1-pixel zero border; 3x3 kernel, stride 2 -> 3x3
    net = netdsl.parse("conv3-1/2(pad=1, bias=false, act=none)", input="1x5x5")
    x = np.arange(25, dtype=float).reshape(1, 1, 5, 5)
    w = np.arange(9, dtype=float).reshape(1, 1, 3, 3)
    out = net.compile("numpy", dtype="float64", weights={"conv1.weight": w})(x)[0, 0]
    padded = np.pad(x[0, 0], 1)
    manual = [[np.sum(padded[2 * i:2 * i + 3, 2 * j:2 * j + 3] * w[0, 0]) for j in range(3)] for i in range(3)]
    assert out.shape == (3, 3) and out.tolist() == manual


@pytest.mark.parametrize("program,size", [("conv3-1(pad=0)", 5), ("conv3-1/2(pad=0)", 3),
                                          ("conv3-1(pad=1)", 7), ("conv3-1/3(pad=0)", 2)])
def test_slide_7x7_sizes_at_run_time(program, size):
    # 7x7 input, 3x3 filter: stride 1 -> 5, stride 2 -> 3, pad 1 keeps 7; stride 3 "doesn't fit"
    net = netdsl.parse(program, input="1x7x7")
    assert net.compile("numpy")(np.zeros((1, 1, 7, 7))).shape == (1, 1, size, size)
    assert bool(net.warnings) == (size == 2)


def test_im2col_is_the_slides_alexnet_product():
    from netdsl.backends.numpy_backend import _im2col
    x = np.zeros((3, 1, 227, 227), dtype=np.float32)
    cols = _im2col(x, 11, 4, 1, 55, 55, 1)
    assert cols.shape == (1, 363, 3025)  # X_col [363 x 3025]; W_row [96 x 363]


def test_bn_running_statistics():
    net = netdsl.parse("bn", input="2x3x3")
    module = net.compile("numpy", dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)) * 3 + 1
    module(x)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3), ddof=1)
    assert np.allclose(module.weights["bn1.running_mean"], 0.1 * mean)
    assert np.allclose(module.weights["bn1.running_var"], 0.9 + 0.1 * var)
    module.eval()
    y = module(x)
    expected = (x - 0.1 * mean[None, :, None, None]) / np.sqrt(0.9 + 0.1 * var[None, :, None, None] + 1e-5)
    assert np.allclose(y, expected)


def test_dropout_is_seeded_and_off_in_eval():
    net = netdsl.parse("dropout(0.5)", input="100")
    a = net.compile("numpy", seed=3)(np.ones((4, 100)))
    b = net.compile("numpy", seed=3)(np.ones((4, 100)))
    assert np.array_equal(a, b) and set(np.unique(a)) == {0.0, 2.0}
    assert np.array_equal(net.compile("numpy").eval()(np.ones((4, 100))), np.ones((4, 100)))


def test_initialisation_follows_torch_defaults():
    net = netdsl.parse("conv3-64 - bn - fc10", input="16x8x8")
    w = net.compile("numpy", seed=0).weights
    bound = 1 / np.sqrt(16 * 9)
    assert np.abs(w["conv1.weight"]).max() <= bound and np.abs(w["conv1.weight"]).max() > 0.9 * bound
    assert np.all(w["bn1.weight"] == 1) and np.all(w["bn1.running_var"] == 1)


def test_bilinear_deconv_upsamples_smoothly():
    net = netdsl.parse("deconv4-1/2(init=bilinear, bias=false, act=none)", input="1x4x4")
    y = net.compile("numpy", dtype="float64")(np.ones((1, 1, 4, 4)))
    assert y.shape == (1, 1, 8, 8)
    assert np.allclose(y[0, 0, 1:-1, 1:-1], 1.0)  # a constant stays constant inside the border


def test_compile_checks_given_weights():
    net = netdsl.parse("conv3-4 - fc2", input="1x4x4")
    weights = net.compile("numpy").weights
    bad = dict(weights, **{"conv1.weight": np.zeros((4, 1, 5, 5))})
    with pytest.raises(netdsl.NetDSLWeightsError) as caught:
        net.compile("numpy", weights=bad)
    assert caught.value.message == "the weights: conv1.weight has shape 4x1x5x5, net needs 4x1x3x3"
    missing = {k: v for k, v in weights.items() if k != "fc1.bias"}
    with pytest.raises(netdsl.NetDSLWeightsError) as caught:
        net.compile("numpy", weights=missing)
    assert caught.value.message == "the weights: 1 weight of net missing, first fc1.bias (2)"
    with pytest.raises(netdsl.NetDSLWeightsError) as caught:
        net.compile("numpy", weights=dict(weights, extra=np.zeros(1)))
    assert caught.value.message == "the weights: extra is not a weight of net"


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_weights_files_round_trip(tmp_path, suffix):
    net = netdsl.load("lenet5")
    module = net.compile("numpy", seed=1)
    path = tmp_path / f"w{suffix}"
    module.save(path)
    other = net.compile("numpy", seed=2)
    other.load(path)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32))
    assert np.array_equal(module(x), other(x))


def test_safetensors_layout_is_the_standard_one(tmp_path):
    from netdsl.weights_io import read_weights, save_weights
    path = tmp_path / "w.safetensors"
    save_weights(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2)})
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    import json
    header = json.loads(raw[8:8 + length])
    # the safetensors package lays out the most aligned dtypes first
    assert header["b"] == {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}
    assert header["a"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [16, 40]}
    assert read_weights(path)["a"].tolist() == [[0, 1, 2], [3, 4, 5]]


def _with_header(header: str, data: bytes = b"") -> bytes:
    return len(header).to_bytes(8, "little") + header.encode() + data


@pytest.mark.parametrize("content,message", [
    (b"abc", "shorter than its 8-byte header length"),
    ((10**9).to_bytes(8, "little") + b"{}", "header length 1,000,000,000 exceeds the file"),
    (_with_header("nope"), "its header is not JSON"),
    (_with_header("[]"), "its header is not a JSON object"),
    (_with_header('{"w":{"dtype":"F32","shape":[2],"x":1}}'), "w: malformed entry"),
    (_with_header('{"w":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}', b"0000"), "unsupported dtype 'Q9'"),
    (_with_header('{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,4]}}', b"0000"), "malformed shape"),
    (_with_header('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,999]}}', b"0000"), "fall outside"),
    (_with_header('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', b"0000"),
     "w: 4 bytes of data for shape 2 of F32"),
])
def test_malformed_safetensors_give_clean_errors(tmp_path, content, message):
    from netdsl.weights_io import read_weights
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(netdsl.NetDSLWeightsError, match=message):
        read_weights(path)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    from netdsl.weights_io import read_weights
    path = tmp_path / "evil.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(netdsl.NetDSLWeightsError, match="refusing to read it"):
        read_weights(path)


def test_weights_file_for_another_network(tmp_path):
    netdsl.load("lenet5").compile("numpy").save(tmp_path / "lenet.safetensors")
    with pytest.raises(netdsl.NetDSLWeightsError) as caught:
        netdsl.load("mlp:mlp2").compile("numpy").load(tmp_path / "lenet.safetensors")
    assert caught.value.message.endswith("lenet.safetensors: conv1.bias is not a weight of mlp2")
    netdsl.load("mlp:mlp2").compile("numpy").save(tmp_path / "mlp.npz")
    with pytest.raises(netdsl.NetDSLWeightsError) as caught:
        netdsl.load("lenet5").compile("numpy").load(tmp_path / "mlp.npz")
    assert caught.value.message.endswith("mlp.npz: 6 weights of lenet5 missing, first conv1.weight (6x1x5x5)")


@pytest.mark.parametrize("path,name,shape", shipped_networks())
def test_every_shipped_network_runs_forward_and_backward(path, name, shape):
    net = netdsl.load(path, net=name, input=shape)
    module = net.compile("numpy", dtype="float32", seed=0)
    x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
    y = module(x)
    assert y.shape == (2, *net.output_shape) and np.all(np.isfinite(y))
    dx = module.backward(np.ones_like(y))
    assert dx.shape == x.shape and np.all(np.isfinite(dx))
    assert set(module.grads) == {s.name for s in net.weight_specs if s.trainable}
