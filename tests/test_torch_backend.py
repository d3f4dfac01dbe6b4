"""The torch backend: equivalent to the NumPy reference on every shipped network (outputs and all
gradients, float64, train and eval), canonical state_dict names, dtypes, torch.compile."""
import numpy as np
import pytest

import netdsl
from conftest import shipped_networks

torch = pytest.importorskip("torch")

from equivalence import compare, without_dropout  # noqa: E402  (needs torch)

# Small inputs, but large enough that batch norm never normalises over a handful of values (at 1x1
# with batch 2, its float64 rounding is amplified past 1e-9 by the near-zero variance).
BN_SAFE_INPUTS = {"alexnet": "3x67x67", "zfnet": "3x67x67", "lenet5": None, "mlp": None,
                  "resnet": "3x64x64", "resnet50": "3x64x64", "resnext50": "3x64x64", "googlenet": "3x64x64",
                  "densenet": "3x64x64", "mnasnet": "3x64x64", "unet": "1x188x188",
                  "shufflenet": "3x64x64", "regnet": "3x64x64",
                  "mobilenet": "3x64x64", "efficientnet": "3x64x64", "inception": None}  # U-Net's smallest; Inception-v3's (aux head) is its 299


@pytest.mark.parametrize("path,name,shape", shipped_networks(BN_SAFE_INPUTS))
def test_torch_matches_numpy_on_every_shipped_network(path, name, shape):
    # FCN pads its input by 100: even a small input makes a 230x230 VGG, so one image will do
    # (and for U-Net, whose smallest input is 188x188).
    batch = 1 if "fcn" in path or "unet" in path else 2
    compare(without_dropout(netdsl.load(path, net=name, input=shape)), batch=batch)


def test_state_dict_keys_are_the_canonical_weight_names():
    net = netdsl.load("resnet50")
    model = net.compile("torch")
    keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert keys == [spec.name for spec in net.weight_specs]
    assert isinstance(model.stage2.bottleneck_down1.add1.b1.cbr2.conv1, torch.nn.Conv2d)
    assert model.stage2.bottleneck_down1.add1.b1.cbr2.conv1.stride == (2, 2)


def test_standard_modules_and_parameter_count():
    net = netdsl.load("vgg16")
    model = net.compile("torch", device="meta") if hasattr(torch, "device") else None
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"Conv2d", "Linear", "MaxPool2d", "Dropout"} <= kinds
    assert sum(p.numel() for p in model.parameters()) == net.params == 138_357_544


def test_fixed_layers_do_not_train():
    net = netdsl.load("fcn:fcn8s")
    model = net.compile("torch", device="meta")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == net.params == 134_362_751


def test_bilinear_deconvs_match_numpy():
    net = netdsl.parse("deconv4-3/2(init=bilinear)", input="3x4x4")
    a = net.compile("numpy").weights
    b = net.compile("torch").state_dict()
    assert np.array_equal(a["deconv1.weight"], b["deconv1.weight"].numpy())


def test_float32_matches_numpy_float32():
    net = without_dropout(netdsl.load("resnet:resnet18", input="3x64x64"))
    compare(net, dtype="float32", rtol=1e-4, batch=4)


def test_seed_is_reproducible_and_leaves_the_global_rng_alone():
    net = netdsl.load("lenet5")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = net.compile("torch", seed=7).state_dict()
    after = torch.rand(1)
    b = net.compile("torch", seed=7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(before, after)


def test_bfloat16_and_channels_last_and_autocast():
    net = netdsl.load("resnet:resnet18", input="3x32x32")
    x = torch.randn(2, 3, 32, 32)
    y = net.compile("torch", dtype=torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == (2, 1000)
    model = net.compile("torch", channels_last=True).eval()
    assert model(x.to(memory_format=torch.channels_last)).shape == (2, 1000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16


def test_torch_compile_fullgraph():
    net = netdsl.load("resnet:resnet18", input="3x32x32")
    model = net.compile("torch").eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(x), model(x))


def test_weights_from_a_file_and_errors(tmp_path):
    net = netdsl.load("lenet5")
    reference = net.compile("numpy", seed=3)
    reference.save(tmp_path / "w.safetensors")
    from netdsl.weights_io import read_weights
    model = net.compile("torch", weights=read_weights(tmp_path / "w.safetensors"))
    assert torch.equal(model.state_dict()["conv1.weight"], torch.from_numpy(reference.weights["conv1.weight"]))
    with pytest.raises(netdsl.NetDSLWeightsError, match="conv1.weight has shape 2x2"):
        net.compile("torch", weights={**reference.weights, "conv1.weight": np.zeros((2, 2))})


def test_the_modern_activations_lower_to_the_modules_torchvision_uses():
    """relu6, hardsigmoid, silu and gelu as torchvision builds MobileNet, EfficientNet, ViT and
    ConvNeXt (ReLU6 and SiLU in place after a conv), fused ones in their functional form."""
    net = netdsl.parse("conv3-4(act=none) - relu6 - hardsigmoid - silu - gelu - gelu_tanh - "
                       "conv3-4(act=silu) - conv3-4(act=gelu) - conv3-4(act=relu6) - "
                       "conv3-4(act=hardsigmoid) - conv3-4(act=gelu_tanh)", input="3x8x8")
    model = net.compile("torch")
    nn = torch.nn
    assert type(model.relu6_1) is nn.ReLU6 and model.relu6_1.inplace  # reads a conv's fresh output
    assert type(model.hardsigmoid1) is nn.Hardsigmoid and not model.hardsigmoid1.inplace
    assert type(model.silu1) is nn.SiLU and not model.silu1.inplace
    assert type(model.gelu1) is nn.GELU and model.gelu1.approximate == "none"
    assert type(model.gelu_tanh1) is nn.GELU and model.gelu_tanh1.approximate == "tanh"
    source = model.source()
    for fused in ("x = F.silu(self.conv2(x), inplace=True)", "x = F.gelu(self.conv3(x))",
                  "x = F.relu6(self.conv4(x), inplace=True)", "x = F.hardsigmoid(self.conv5(x), inplace=True)",
                  "x = F.gelu(self.conv6(x), approximate='tanh')"):
        assert fused in source
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 4
    model = model.double().eval()
    f = torch.nn.functional
    with torch.no_grad():
        y = f.hardsigmoid(f.relu6(model.conv1(x)))
        y = f.gelu(f.gelu(f.silu(y)), approximate="tanh")
        for conv, act in ((model.conv2, f.silu), (model.conv3, f.gelu), (model.conv4, f.relu6),
                          (model.conv5, f.hardsigmoid), (model.conv6, lambda v: f.gelu(v, approximate="tanh"))):
            y = act(conv(y))
        assert torch.equal(model(x), y)


def test_torch_float64_hardsigmoid_gradient_is_float32_exact_only():
    """Why netdsl.testing.KERNEL_GRADIENT_TOLERANCES lets torch's float64 gradients through
    hardsigmoid differ by 3e-8: aten multiplies by 1/6 rounded to float32. Should torch fix it,
    this fails, and the allowance goes."""
    from netdsl.testing import kernel_gradient_tolerance
    x = torch.tensor([0.5, -2.0], dtype=torch.float64, requires_grad=True)
    torch.nn.functional.hardsigmoid(x).sum().backward()
    assert x.grad.tolist() == [float(np.float32(1 / 6))] * 2 != [1 / 6] * 2
    net = netdsl.parse("conv3-3(act=hardsigmoid) - fc2(act=none)", input="2x4x4")
    assert kernel_gradient_tolerance("torch", net, "float64") == 1e-6
    assert kernel_gradient_tolerance("jax", net, "float64") == kernel_gradient_tolerance("torch", net, "float32") == 0
    compare(net)  # within the allowance; the NumPy reference and JAX keep the exact 1/6


def torchvision_stochastic_depth(input, p: float, training: bool = True):
    """torchvision.ops.stochastic_depth(input, p, mode="row", training), restated from
    torchvision 0.29's source (netdsl does not import torchvision)."""
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1)
    noise = torch.empty(size, dtype=input.dtype, device=input.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


@pytest.mark.parametrize("shape", ["4x3x3", "6"])
def test_stochastic_depth_is_torchvisions_row_mode_draw_for_draw(shape):
    net = netdsl.parse("stochastic_depth(0.4)", input=shape)
    model = net.compile("torch", dtype="float64")
    assert type(model.stochastic_depth1).__name__ == "StochasticDepth" and model.stochastic_depth1.p == 0.4
    x = torch.randn(64, *net.input_shape, dtype=torch.float64)
    for seed in (0, 1, 2):
        generator_state = torch.manual_seed(seed).get_state()
        y = model(x)
        torch.random.set_rng_state(generator_state)
        assert torch.equal(y, torchvision_stochastic_depth(x, 0.4))
    kept = (y.reshape(64, -1) != 0).all(dim=1)
    assert 0 < int(kept.sum()) < 64 and torch.equal(y[kept], x[kept] / 0.6)
    assert (y[~kept] == 0).all()
    model.eval()
    assert model(x) is x  # the identity, as torchvision's in eval mode


def test_layerscale_is_convnexts_layer_scale():
    """torchvision's CNBlock computes `layer_scale * block(x)` with a C x 1 x 1 parameter: netdsl's
    layerscale weight has that shape, so the tensor loads unchanged and gives the same result."""
    net = netdsl.parse("conv7-8(groups=8, act=none) - layerscale", input="8x5x5")
    model = net.compile("torch", dtype="float64")
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == [
        ("conv1.weight", (8, 1, 7, 7)), ("conv1.bias", (8,)), ("layerscale1.weight", (8, 1, 1))]
    # torchvision's initial value, made in float32 as torchvision makes it, then converted
    assert torch.all(model.layerscale1.weight == torch.tensor(1e-6, dtype=torch.float32).double())
    layer_scale = torch.rand(8, 1, 1, dtype=torch.float64) + 0.5
    model.load_weights({"layerscale1.weight": layer_scale}, strict=False)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model(x), layer_scale * model.conv1(x))
    flat = netdsl.parse("fc3 - layerscale(0.5)", input="4").compile("torch")
    assert tuple(flat.layerscale1.weight.shape) == (3,) and torch.all(flat.layerscale1.weight == 0.5)


def test_stochastic_depth_and_layerscale_trace_export_and_pickle():
    import copy
    import pickle
    net = netdsl.parse("conv3-4 - layerscale(0.5) - stochastic_depth(0.2) - fc3", input="3x6x6")
    model = net.compile("torch").eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(torch.fx.symbolic_trace(model)(x), expected)
        assert torch.equal(torch.export.export(model, (x,)).module()(x), expected)
        assert torch.equal(pickle.loads(pickle.dumps(model))(x), expected)
        assert torch.equal(copy.deepcopy(model)(x), expected)
    model.train()
    traced = torch.fx.symbolic_trace(model)  # training mode: the draw is traced too
    torch.manual_seed(0)
    y = traced(x)
    torch.manual_seed(0)
    assert torch.equal(y, model(x))


def test_a_definition_named_like_a_support_class_does_not_clash():
    net = netdsl.parse("def layer_scale(c) = conv3-c - layerscale\nlayer_scale(4) - stochastic_depth(0.1)",
                       input="3x6x6")
    source = net.compile("torch").source()
    assert "class LayerScale(nn.Module):" in source and "class LayerScale_2(nn.Module):" in source


def test_layernorm_is_convnexts_layernorm2d_and_torchs_layernorm():
    """Over a CxHxW tensor the module is torchvision's LayerNorm2d (nn.LayerNorm over the channels
    at each pixel, by permuting them last and back), with nn.LayerNorm's `weight` and `bias`; over a
    flat tensor it is nn.LayerNorm itself."""
    net = netdsl.parse("conv3-6 - layernorm(1e-6) - gap - fc4 - layernorm", input="3x5x5")
    model = net.compile("torch", dtype="float64")
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()][2:4] == [
        ("layernorm1.weight", (6,)), ("layernorm1.bias", (6,))]
    norm = model.layernorm1
    assert type(norm).__name__ == "LayerNorm2d" and isinstance(norm, torch.nn.LayerNorm) and norm.eps == 1e-6
    assert type(model.layernorm2) is torch.nn.LayerNorm and model.layernorm2.normalized_shape == (4,)
    assert model.layernorm2.eps == 1e-5
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6, dtype=torch.float64))
        norm.bias.copy_(torch.randn(6, dtype=torch.float64))
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64) * 3 + 1
    reference = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-6)
    with torch.no_grad():
        assert torch.equal(norm(x), reference.permute(0, 3, 1, 2))
    numpy_module = net.compile("numpy", dtype="float64", weights=model.weights)
    image = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    assert np.allclose(numpy_module(image.numpy()), model(image).detach().numpy(), rtol=1e-12, atol=1e-12)


def test_layernorm_over_tokens_lowers_to_layernorm_over_the_last_axis():
    """A token tensor (T x D, rank 2: the token tensors of ViT) normalises each token's D features:
    the rules give D scales and shifts and torch's nn.LayerNorm(D), which normalises the last axis."""
    from types import SimpleNamespace
    from netdsl.backends.torch_codegen import KERNELS
    from netdsl.ops import OPS
    record = OPS["layernorm"]
    node = SimpleNamespace(op="layernorm", attrs={"eps": 1e-6})
    assert record.shape(node, [(197, 768)], None) == (197, 768)
    assert record.weights(node, [(197, 768)]) == [("weight", (768,), True), ("bias", (768,), True)]
    assert KERNELS["layernorm"].module(node, [(197, 768)]) == "nn.LayerNorm(768, eps=1e-06)"
    assert KERNELS["layernorm"].module(node, [(768, 14, 14)]) == "LayerNorm2d(768, eps=1e-06)"
