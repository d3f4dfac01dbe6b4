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
