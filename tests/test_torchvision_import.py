"""Torchvision state_dicts onto a network you wrote (no torchvision needed: a state_dict is a dict
of tensors). Matched by position; shape and kind are checked, and a mismatch names both tensors."""
import pytest

import netdsl

torch = pytest.importorskip("torch")

from netdsl.cli import main  # noqa: E402

MINE = "input 3x16x16\nactivation none\nconv3-8(bias=false) - bn - relu - maxpool2/2 - fc10\n"


def _state_dict(**changes):
    """What torch.nn.Sequential(Conv2d(3, 8, 3, padding=1, bias=False), BatchNorm2d(8), ReLU(),
    MaxPool2d(2), Flatten(), Linear(512, 10)).state_dict() holds, every tensor distinct."""
    generator = torch.Generator().manual_seed(0)
    shapes = {"0.weight": (8, 3, 3, 3), "1.weight": (8,), "1.bias": (8,), "1.running_mean": (8,),
              "1.running_var": (8,), "1.num_batches_tracked": (), "5.weight": (10, 512), "5.bias": (10,)}
    shapes.update(changes)
    return {name: torch.rand(shape, generator=generator) for name, shape in shapes.items()
            if shape is not None}


def test_a_state_dict_onto_a_network_of_your_own():
    network = netdsl.parse(MINE, path="mine.net")
    state = _state_dict()
    got, weights = netdsl.import_torchvision(state, network=network)
    assert got is network
    assert list(weights) == [w.name for w in network.weight_specs]
    assert weights["bn1.running_var"] is state["1.running_var"] and weights["fc1.weight"] is state["5.weight"]


def test_the_imported_weights_compute_what_torch_computes():
    network = netdsl.parse(MINE, path="mine.net")
    reference = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
                                    torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                    torch.nn.Linear(512, 10)).double().eval()
    reference.load_state_dict({k: v.double() if v.is_floating_point() else v
                               for k, v in _state_dict().items()}, strict=False)
    _, weights = netdsl.import_torchvision(reference.state_dict(), network=network)
    model = network.compile("torch", dtype="float64", weights=weights).eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("changes,message", [
    ({"5.weight": (10, 256)}, "the state_dict: tensor 5 (5.weight, 10x256) does not fit fc1.weight (10x512) of mine"),
    ({"1.weight": None}, "the state_dict: tensor 1 (1.bias, 8) does not fit bn1.weight (8) of mine"),
    ({"6.weight": (3,)}, "the state_dict: 8 tensors for the 7 weights of mine"),
])
def test_a_mismatch_names_both_tensors(changes, message):
    network = netdsl.parse(MINE, path="mine.net")
    with pytest.raises(netdsl.NetDSLWeightsError) as error:
        netdsl.import_torchvision(_state_dict(**changes), network=network)
    assert error.value.message == message


def test_a_torchvision_name_without_a_shipped_network_is_refused_with_the_way_out():
    with pytest.raises(netdsl.NetDSLWeightsError) as error:
        netdsl.import_torchvision({}, "swin_t")
    assert error.value.message == "no shipped network matches torchvision's swin_t"
    assert "import_torchvision(state_dict, network=net)" in error.value.notes[-1]


def test_compile_your_own_network_with_torchvision_weights(tmp_path, capsys):
    path = tmp_path / "mine.net"
    path.write_text(MINE)
    weights = tmp_path / "mine.pth"
    torch.save(_state_dict(), weights)
    assert main(["compile", str(path), "--torchvision", str(weights), "-o", str(tmp_path / "m.py")]) == 0
    assert "the weights are random" not in capsys.readouterr().out
    torch.save(_state_dict(**{"5.weight": (10, 256)}), weights)
    assert main(["compile", str(path), "--torchvision", str(weights), "--arch", "mine"]) == 1
    err = capsys.readouterr().err
    assert f"{weights}: tensor 5 (5.weight, 10x256) does not fit fc1.weight (10x512) of mine" in err
    assert "is this a mine state_dict?" in err


# A small ConvNeXt written in .net, and the same model written as torchvision writes ConvNeXt
# (torchvision/models/convnext.py: LayerNorm2d, CNBlock with nn.Linear on the channels-last tensor
# and its layer_scale registered before its block), which torchvision itself is not needed for.
SMALL_CONVNEXT = """input 3x32x32
activation none
def block(c) = add{ dwconv7 - layernorm(1e-6) - conv1-{4*c} - gelu - conv1-c - layerscale - stochastic_depth(0.1) | id }
net mine = conv4-8/4(pad=0) - layernorm(1e-6) - block(8) - block(8) - layernorm(1e-6) - conv2-16/2(pad=0)
    - block(16) - gap - layernorm(1e-6) - flatten - fc10
"""


def _torchvision_style_convnext():
    nn = torch.nn

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x):
            x = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight,
                                               self.bias, self.eps)
            return x.permute(0, 3, 1, 2)

    class Permute(nn.Module):
        def __init__(self, dims):
            super().__init__()
            self.dims = dims

        def forward(self, x):
            return x.permute(*self.dims)

    class CNBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)
            self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                       nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                       nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))

        def forward(self, x):
            return self.layer_scale * self.block(x) + x  # stochastic depth: the identity in eval

    class ConvNeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), LayerNorm2d(8, eps=1e-6)),
                nn.Sequential(CNBlock(8), CNBlock(8)),
                nn.Sequential(LayerNorm2d(8, eps=1e-6), nn.Conv2d(8, 16, 2, stride=2)),
                nn.Sequential(CNBlock(16)))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(LayerNorm2d(16, eps=1e-6), nn.Flatten(1), nn.Linear(16, 10))

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)))

    model = ConvNeXt().double().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for value in model.state_dict().values():  # every tensor distinct: no layer scale at 1e-6
            value.copy_(torch.rand(value.shape, generator=generator, dtype=value.dtype) - 0.25)
    return model


def test_convnext_takes_its_layer_scales_and_linear_layers_as_torchvision_orders_them():
    """ConvNeXt's rule (TENSOR_ORDER): each block's layer_scale, listed first by torchvision, goes
    after the block's other tensors; its nn.Linear weights (out x in) fill 1x1 convs (out x in x 1 x 1)."""
    network = netdsl.parse(SMALL_CONVNEXT, path="mine.net")
    reference = _torchvision_style_convnext()
    state = reference.state_dict()
    assert list(state)[4:6] == ["features.1.0.layer_scale", "features.1.0.block.0.weight"]
    _, weights = netdsl.import_torchvision(state, "convnext_tiny", network=network)
    assert weights["block1.add1.b1.layerscale1.weight"] is state["features.1.0.layer_scale"]
    assert weights["block2.add1.b1.layerscale1.weight"] is state["features.1.1.layer_scale"]
    assert weights["block1.add1.b1.dwconv1.weight"] is state["features.1.0.block.0.weight"]
    linear = state["features.1.0.block.3.weight"]
    conv = weights["block1.add1.b1.conv1.weight"]
    assert tuple(linear.shape) == (32, 8) and tuple(conv.shape) == (32, 8, 1, 1)
    assert torch.equal(conv[:, :, 0, 0], linear)
    model = network.compile("torch", dtype="float64", weights=weights).eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert float((got - expected).abs().max()) <= 1e-12 * float(expected.abs().max())
    assert float((expected[0] - expected[1]).abs().max()) > 1e-3 * float(expected.abs().max())


def test_the_layer_scale_rule_moves_each_scale_after_its_own_block_only():
    from netdsl.backends.torchvision_weights import layer_scale_after_its_block
    names = ["features.0.0.weight", "features.1.1.layer_scale", "features.1.1.block.0.weight",
             "features.1.1.block.5.bias", "features.1.10.layer_scale", "features.1.10.block.0.weight",
             "features.2.0.weight"]
    moved = [name for name, _ in layer_scale_after_its_block([(name, None) for name in names])]
    assert moved == ["features.0.0.weight", "features.1.1.block.0.weight", "features.1.1.block.5.bias",
                     "features.1.1.layer_scale", "features.1.10.block.0.weight", "features.1.10.layer_scale",
                     "features.2.0.weight"]


def test_without_convnexts_rule_or_with_a_wrong_linear_the_mismatch_names_both_tensors():
    network = netdsl.parse(SMALL_CONVNEXT, path="mine.net")
    state = _torchvision_style_convnext().state_dict()
    with pytest.raises(netdsl.NetDSLWeightsError) as error:
        netdsl.import_torchvision(state, network=network)  # no architecture: torchvision's order as is
    assert error.value.message == ("the state_dict: tensor 4 (features.1.0.layer_scale, 8x1x1) does not fit "
                                   "block1.add1.b1.dwconv1.weight (8x1x7x7) of mine")
    state["features.1.0.block.3.weight"] = torch.zeros(32, 9, dtype=torch.float64)
    with pytest.raises(netdsl.NetDSLWeightsError) as error:
        netdsl.import_torchvision(state, "convnext_tiny", network=network)
    assert error.value.message == ("the state_dict: tensor 8 (features.1.0.block.3.weight, 32x9) does not fit "
                                   "block1.add1.b1.conv1.weight (32x8x1x1) of mine")
