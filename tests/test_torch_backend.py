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
                  "densenet": "3x64x64", "mnasnet": "3x64x64"}


@pytest.mark.parametrize("path,name,shape", shipped_networks(BN_SAFE_INPUTS))
def test_torch_matches_numpy_on_every_shipped_network(path, name, shape):
    # FCN pads its input by 100: even a small input makes a 230x230 VGG, so one image will do.
    batch = 1 if "fcn" in path else 2
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
