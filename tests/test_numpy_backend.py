"""The NumPy backend: every op's backward against central finite differences (float64), the
slides' worked examples, weights files, and every shipped network forward and backward."""
import math

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
    ("layerscale", "layerscale(1.5)", "3x4x4", False),
    ("layerscale_flat", "fc4(act=none) - layerscale(-0.5)", "6", False),
    ("stochastic_depth_train", "conv3-3(act=none) - stochastic_depth(0.5)", "2x4x4", True),
    ("stochastic_depth_flat_train", "fc4(act=none) - stochastic_depth(0.5)", "6", True),
    ("relu", "relu", "3x4x4", False),
    ("tanh", "tanh", "3x4x4", False),
    ("sigmoid", "sigmoid", "3x4x4", False),
    ("lrelu", "lrelu(0.2)", "3x4x4", False),
    ("elu", "elu(1.5)", "3x4x4", False),
    # scaled so that both clipped ends are reached
    ("relu6", "layerscale(8.0) - relu6", "3x4x4", False),
    ("hardsigmoid", "layerscale(4.0) - hardsigmoid", "3x4x4", False),
    ("silu", "layerscale(4.0) - silu", "3x4x4", False),
    ("gelu", "layerscale(4.0) - gelu", "3x4x4", False),
    ("gelu_tanh", "layerscale(4.0) - gelu_tanh", "3x4x4", False),
    ("conv_act_gelu", "conv3-3(act=gelu)", "2x5x5", False),
    ("fc_act_silu", "fc4(act=silu)", "6", False),
    ("softmax_image", "softmax", "4x3x3", False),
    ("softmax_flat", "softmax", "6", False),
    ("flatten", "flatten - fc3(act=none)", "2x3x3", False),
    ("crop", "x: conv3-2(pad=0, act=none) - conv3-2(pad=2, act=none) - crop(1, like=@x)", "2x6x6", False),
    ("concat", "cat{ conv1-2(act=none) | conv3-3(act=none) | id }", "2x4x4", False),
    ("add", "add{ conv3-2(act=none) | id | conv1-2(act=none) }", "2x4x4", False),
    ("conv_bn_relu", "conv3-4(bias=false) - bn - fc3", "2x5x5", True),
    ("conv_1x3", "conv1x3-4(act=none)", "2x5x6", False),
    ("conv_per_axis", "conv3x2-4(stride_h=2, pad_h=0, pad_w=1, dilation=2, groups=2, act=none)", "2x9x8", False),
    ("dwconv", "dwconv3(act=none)", "3x5x5", False),
    ("dwconv_multiplier_stride", "dwconv3x2/2(multiplier=2, pad_w=1, dilation=2, act=none)", "2x7x6", False),
    ("dwconv_nobias", "dwconv5(bias=false, stride_w=2, act=none)", "2x6x7", False),
    ("adaptive_avgpool_overlap", "adaptive_avgpool(3)", "2x5x7", False),
    ("adaptive_avgpool_upsample", "adaptive_avgpool(4)", "2x2x3", False),
    ("adaptive_maxpool_overlap", "adaptive_maxpool(3)", "2x5x7", False),
    ("adaptive_maxpool_upsample", "adaptive_maxpool(4)", "2x3x2", False),
    ("gmp", "gmp", "3x4x5", False),
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
    ("vit_block", "conv2-4/2(act=none) - tokens - class_token - pos_embedding - add{ attention(2) | id } "
     "- add{ fc6(act=none) - gelu - fc4(act=none) | id } - token - fc3(act=none)", "3x4x6", False),
    ("attention_one_head_train", "tokens - attention(1) - dropout(0.0)", "3x2x3", True),
    ("fc_tokens_nobias_flatten", "tokens - fc3(bias=false, act=none) - flatten", "2x2x3", False),
    ("token_last", "tokens - fc3(act=tanh) - token(5)", "2x2x3", False),
    ("layernorm_channels", "layernorm - conv3-3(act=none) - layernorm(1e-6)", "4x3x4", False),
    ("layernorm_flat", "layernorm(eps=0.001) - fc3(act=none) - layernorm", "5", False),
]


def _loss_and_grads(module, x, r, seed):
    module.rng = np.random.default_rng(seed)  # the same dropout mask on every call
    y = module(x)
    if isinstance(y, tuple):  # training, with auxiliary outputs: each has its own r
        return float(sum(np.sum(v * w) for v, w in zip(y, r)))
    return float(np.sum(y * r))


def _check(program, shape, train, entries=12, tol=1e-6, random_weights=False):
    net = netdsl.parse(program, input=shape)
    module = net.compile("numpy", dtype="float64", seed=0).train(train)
    rng = np.random.default_rng(1)
    if random_weights:  # scales other than 1 and shifts other than 0, which would hide a missing term
        module.load_weights({s.name: rng.standard_normal(s.shape) for s in net.weight_specs})
    x = rng.standard_normal((2, *net.input_shape))
    module.rng = np.random.default_rng(7)
    y = module(x)
    r = tuple(rng.standard_normal(v.shape) for v in y) if isinstance(y, tuple) else rng.standard_normal(y.shape)
    dx = module.backward(r)
    grads = dict(module.grads)
    # in eval mode an auxiliary head (aux{ }) is not run: its weights get no gradient
    run = net.graph.inference_nodes() if not train else range(len(net.graph.nodes))
    assert set(grads) == {s.name for s in net.weight_specs if s.trainable and net.graph.node(s.node).id in run}

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
    if op == "aux":  # in training mode the head's output is an output: its gradients too
        _check(SAMPLES[op][0], None, True)


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
    # training mode: a net with auxiliary outputs (inception_v3) gives them too, each gets a gradient
    outputs = y if isinstance(y, tuple) else (y,)
    assert len(outputs) == 1 + len(net.graph.aux_outputs)
    assert outputs[0].shape == (2, *net.output_shape)
    assert all(np.all(np.isfinite(v)) for v in outputs)
    dx = module.backward(tuple(np.ones_like(v) for v in outputs) if isinstance(y, tuple) else np.ones_like(y))
    assert dx.shape == x.shape and np.all(np.isfinite(dx))
    assert set(module.grads) == {s.name for s in net.weight_specs if s.trainable}


def _ulps(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.abs(actual - expected) / np.spacing(np.abs(expected))


def test_erf_and_erfc_are_the_c_librarys_to_an_ulp_or_a_few():
    """The exact GELU's erf and erfc (fdlibm's, vectorised) against math.erf and math.erfc on
    220,000 points across every region of the approximation, its boundaries and the tails.
    Measured against 200-bit mpmath, ours are within 0.77 ulp (erf) and 2.25 ulp (erfc) of the
    true value and glibc 2.36's within 0.98 and 3.09: the bounds allow both errors at once."""
    import math
    from netdsl.backends.numpy_backend import erf, erfc
    rng = np.random.default_rng(0)
    bounds = [0.25, 0.84375, 1.25, 1 / 0.35, 6.0, 28.0]
    x = np.concatenate([
        rng.uniform(-30, 30, 60_000), rng.standard_normal(60_000) * 3,
        np.geomspace(1e-300, 1, 20_000), -np.geomspace(1e-300, 1, 20_000),
        *[rng.uniform(b - 0.05, b + 0.05, 10_000) * sign for b in bounds[1:4] for sign in (1, -1)],
        *[np.nextafter(b, [-np.inf, np.inf]) * sign for b in bounds for sign in (1, -1)],
        [0.0, -0.0, 1e-320, -1e-320, 27.999, 40.0, -40.0]])
    for ours, theirs, bound in ((erf, math.erf, 2), (erfc, math.erfc, 6)):
        expected = np.array([theirs(v) for v in x])
        nonzero = expected != 0
        assert np.max(_ulps(ours(x)[nonzero], expected[nonzero])) <= bound, ours.__name__
        assert np.all(ours(x)[~nonzero] == 0)
    assert np.array_equal(erf(np.array([np.inf, -np.inf])), [1.0, -1.0])
    assert np.array_equal(erfc(np.array([np.inf, -np.inf])), [0.0, 2.0])
    assert np.isnan(erf(np.array([np.nan]))).all() and np.isnan(erfc(np.array([np.nan]))).all()


@pytest.mark.parametrize("op,definition,floor", [
    ("relu6", lambda v: min(max(v, 0.0), 6.0), 0),
    ("hardsigmoid", lambda v: min(max(v + 3, 0.0), 6.0) / 6, 0),
    ("silu", lambda v: v / (1 + math.exp(-v)), 0),
    # the argument as both compute it: an ulp of x/sqrt(2) moves erfc(-12/sqrt(2)) by 144 ulp
    ("gelu", lambda v: v / 2 * math.erfc(-v * math.sqrt(0.5)), 0),
    # torch's formula, whose 1 + tanh cancels in the negative tail: an ulp of tanh is 1e-16 there
    ("gelu_tanh", lambda v: v / 2 * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))), 1e-14),
])
def test_each_activation_is_its_definition(op, definition, floor):
    """The forward pass against the formula, element by element in Python's float64 math, from
    -12 to 12 (through both ends of relu6 and hardsigmoid, and the gelus' far negative tail)."""
    x = np.linspace(-12, 12, 2401)
    y = netdsl.parse(op, input="2401").compile("numpy", dtype="float64").eval()(x[None])[0]
    expected = np.array([definition(v) for v in x])
    error = np.abs(y - expected)
    assert np.all(error <= 1e-14 * np.abs(expected) + floor), np.max(error / (np.abs(expected) + floor + 1e-300))
    if op in ("relu6", "hardsigmoid"):
        assert np.array_equal(y, expected)  # clipping and one division: exact


def test_gelu_keeps_relative_accuracy_in_its_negative_tail():
    """Phi(x) = erfc(-x/sqrt(2))/2, not (1 + erf(x/sqrt(2)))/2, whose sum cancels to nothing."""
    x = np.array([[-8.0, -20.0, -30.0]])
    y = netdsl.parse("gelu", input="3").compile("numpy", dtype="float64")(x)[0]
    exact = -8 / 2 * math.erfc(8 * math.sqrt(0.5))
    cancelled = -8 / 2 * (1 + math.erf(-8 * math.sqrt(0.5)))
    assert y[0] == pytest.approx(exact, rel=1e-13, abs=0)
    assert cancelled != pytest.approx(exact, rel=1e-3, abs=0)  # 2% off
    for value, got in zip((-20.0, -30.0), y[1:]):  # -5.5e-88 and -1.5e-196
        assert got == pytest.approx(value / 2 * math.erfc(-value * math.sqrt(0.5)), rel=1e-12, abs=0)


def test_stochastic_depth_drops_whole_samples_by_its_seed_and_is_off_in_eval():
    net = netdsl.parse("stochastic_depth(0.3)", input="2x3x3")
    x = np.ones((4000, 2, 3, 3))
    y = net.compile("numpy", dtype="float64", seed=3)(x)
    per_sample = y.reshape(len(x), -1)
    assert np.all(per_sample == per_sample[:, :1])  # a sample is kept or dropped as a whole
    assert set(np.unique(y)) == {0.0, 1 / 0.7}
    dropped = float(np.mean(per_sample[:, 0] == 0))
    assert abs(dropped - 0.3) < 0.03  # 4000 draws: the standard deviation is 0.007
    assert np.array_equal(y, net.compile("numpy", dtype="float64", seed=3)(x))
    assert not np.array_equal(y, net.compile("numpy", dtype="float64", seed=4)(x))
    assert np.array_equal(net.compile("numpy").eval()(x), x)


@pytest.mark.parametrize("program,shape", [("layernorm(1e-6) - conv1-3(act=none) - layernorm", "4x3x5"),
                                           ("layernorm - fc3(act=tanh) - layernorm(0.1)", "6")])
def test_layernorm_backward_with_random_scale_and_shift(program, shape):
    _check(program, shape, False, random_weights=True)


def test_layernorm_normalises_channels_per_position_and_tokens_per_feature():
    """Over the channels at each pixel (torchvision's LayerNorm2d) for CxHxW and flat tensors; over
    the last axis, each token's features, for a token tensor (internally T x N x D)."""
    from types import SimpleNamespace
    from netdsl.backends.numpy_backend import KERNELS
    rng = np.random.default_rng(0)
    net = netdsl.parse("layernorm(1e-6)", input="5x3x4")
    module = net.compile("numpy", dtype="float64")
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    module.load_weights({"layernorm1.weight": w, "layernorm1.bias": b})
    x = rng.standard_normal((2, 5, 3, 4)) * 3 + 1
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)  # the biased variance, as torch's
    expected = (x - mean) / np.sqrt(var + 1e-6) * w[:, None, None] + b[:, None, None]
    assert np.allclose(module(x), expected, rtol=1e-12, atol=1e-12)
    kernel = KERNELS["layernorm"]
    node = SimpleNamespace(attrs={"eps": 1e-5})
    tokens = rng.standard_normal((7, 2, 6))  # 7 tokens, batch 2, 6 features
    w, b = rng.standard_normal(6), rng.standard_normal(6)
    y, cache = kernel.forward(node, [tokens], {"weight": w, "bias": b}, None)
    centred = tokens - tokens.mean(axis=-1, keepdims=True)
    assert np.allclose(y, centred / np.sqrt((centred ** 2).mean(axis=-1, keepdims=True) + 1e-5) * w + b,
                       rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    (dx,), grads = kernel.backward(node, dy, cache, {"weight": w, "bias": b})

    def loss(t, w, b):
        return float(np.sum(kernel.forward(node, [t], {"weight": w, "bias": b}, None)[0] * dy))
    for array, analytic in ((tokens, dx), (w, grads["weight"]), (b, grads["bias"])):
        for flat in rng.choice(array.size, size=4, replace=False):
            index = np.unravel_index(flat, array.shape)
            old = array[index]
            array[index] = old + 1e-6
            plus = loss(tokens, w, b)
            array[index] = old - 1e-6
            minus = loss(tokens, w, b)
            array[index] = old
            assert abs(analytic[index] - (plus - minus) / 2e-6) < 1e-6


def test_layernorm_starts_as_torch_scale_1_shift_0():
    w = netdsl.parse("conv3-4 - layernorm", input="3x4x4").compile("numpy", seed=0).weights
    assert np.all(w["layernorm1.weight"] == 1) and np.all(w["layernorm1.bias"] == 0)
    assert w["layernorm1.weight"].shape == w["layernorm1.bias"].shape == (4,)


def test_layerscale_starts_at_its_init_in_torchvisions_shape():
    w = netdsl.parse("layerscale - fc3 - layerscale(0.5)", input="4x2x2").compile("numpy").weights
    assert w["layerscale1.weight"].shape == (4, 1, 1) and np.all(w["layerscale1.weight"] == np.float32(1e-6))
    assert w["layerscale2.weight"].shape == (3,) and np.all(w["layerscale2.weight"] == 0.5)
