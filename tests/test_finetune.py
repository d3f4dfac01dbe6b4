"""Weights from torchvision (by position), fine-tuning with a new head and frozen layers."""
import numpy as np
import pytest

import netdsl
from conftest import torchvision_resnet18_state

torch = pytest.importorskip("torch")

# That torchvision's own models, imported, give torchvision's outputs is checked for every model of
# docs/zoo.md in the torchvision environment (tests/test_zoo_torchvision.py); here, without
# torchvision, the import is exercised on a state_dict laid out as torchvision's resnet18.


def test_a_torchvision_layout_imports_and_runs():
    net, weights = netdsl.import_torchvision(torchvision_resnet18_state(), "resnet18")
    assert net.name == "resnet18" and len(weights) == len(net.weight_specs)
    state = torchvision_resnet18_state()
    floats = [name for name, value in state.items() if value.is_floating_point()]
    # by position: torchvision's k-th float tensor is netdsl's k-th weight
    assert [np.array_equal(weights[spec.name], state[name].numpy())
            for spec, name in zip(net.weight_specs, floats)] == [True] * len(floats)
    model = net.compile("torch", weights=weights).eval()
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_torchvision_file_is_read_without_unpickling(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": torchvision_resnet18_state(), "epoch": 3}, path)
    net, weights = netdsl.import_torchvision(path, "resnet18")
    assert len(weights) == len(net.weight_specs)
    evil = tmp_path / "evil.pth"
    torch.save({"x": object()}, evil)  # a pickled object weights_only refuses
    with pytest.raises(netdsl.NetDSLWeightsError, match="not a torch weights file"):
        netdsl.import_torchvision(evil, "resnet18")


def test_torchvision_mismatch_names_the_first_tensor():
    state = torchvision_resnet18_state()
    with pytest.raises(netdsl.NetDSLWeightsError) as caught:
        netdsl.import_torchvision(state, "resnet50")
    assert caught.value.message == ("the state_dict: tensor 5 (layer1.0.conv1.weight, 64x64x3x3) does not "
                                    "fit stage1.bottleneck_down1.add1.b1.cbr1.conv1.weight (64x64x1x1) of resnet50")
    with pytest.raises(netdsl.NetDSLWeightsError, match="no shipped network matches torchvision's resnet9"):
        netdsl.import_torchvision(state, "resnet9")


def test_googlenet_auxiliary_classifiers_are_moved_to_where_they_run():
    """torchvision registers aux1 and aux2 after inception5b; they run after 4a and 4d, where
    googlenet's aux{ } heads are: their tensors are taken there. Without them, a clear refusal."""
    net = netdsl.load("googlenet")
    heads = [spec for spec in net.weight_specs if spec.name.startswith(("aux1.", "aux2."))]
    main = [spec for spec in net.weight_specs if not spec.name.startswith(("aux1.", "aux2."))]
    torchvision_order = [*main[:-2], *heads, *main[-2:]]  # ..., inception5b, aux1, aux2, fc
    # tv_inception4 is torchvision's inception4b, tv_inception7 its inception4e
    firsts = {next(s for s in main if s.name.startswith(scope)).name: block
              for scope, block in (("tv_inception4.", "inception4b"), ("tv_inception7.", "inception4e"))}
    state = {}
    for i, spec in enumerate(torchvision_order):
        module = spec.name.split(".")[0] if spec in heads else firsts.get(spec.name, f"m{i}")
        state[f"{module}.t{i}.{spec.suffix}"] = torch.full(spec.shape, float(i))
    _, weights = netdsl.import_torchvision(state, "googlenet")
    assert list(weights) == [spec.name for spec in net.weight_specs]
    assert all(float(weights[spec.name].flatten()[0]) == float(i) for i, spec in enumerate(torchvision_order))
    without = {name: tensor for name, tensor in state.items() if not name.startswith("aux")}
    with pytest.raises(netdsl.NetDSLWeightsError,
                       match=r"no auxiliary classifiers \(aux1\.\*\), but googlenet_tv has 2"):
        netdsl.import_torchvision(without, "googlenet")


def test_finetune_replaces_the_head_and_freezes():
    net = netdsl.load("resnet:resnet18", input="3x64x64")
    pretrained = net.compile("numpy", seed=1).weights
    model = netdsl.finetune(net, pretrained, head=10, freeze="basic_stage2")  # up to conv4_x
    state = model.state_dict()
    assert tuple(state["head1.fc1.weight"].shape) == (10, 512)
    assert np.array_equal(state["basic_stage3.basic_down1.add1.b1.cbr1.conv1.weight"].numpy(),
                          pretrained["basic_stage3.basic_down1.add1.b1.cbr1.conv1.weight"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "stem1.cbr1.conv1.weight" in frozen and "basic_stage2.basic1.add1.b1.cb1.bn1.bias" in frozen
    assert not any(name.startswith(("basic_stage3", "head1")) for name in frozen)
    from netdsl.finetune import trainable_counts
    trainable, fixed = trainable_counts(model)
    assert trainable == sum(v.size for k, v in pretrained.items()
                            if k.startswith("basic_stage3") and "running" not in k) + 512 * 10 + 10
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_finetune_checks_the_pretrained_weights():
    net = netdsl.load("lenet5")
    with pytest.raises(netdsl.NetDSLWeightsError, match="the pretrained weights: 10 weights of lenet5 missing"):
        netdsl.finetune(net, {}, head=2)
    with pytest.raises(netdsl.NetDSLNameError, match="lenet5 has no layer or scope named stage9"):
        netdsl.finetune(net, net.compile("numpy").weights, freeze="stage9")


def test_finetune_with_the_numpy_backend():
    net = netdsl.load("lenet5")
    model = netdsl.finetune(net, net.compile("numpy").weights, head=3, freeze="conv2", backend="numpy")
    assert model(np.zeros((1, 1, 32, 32))).shape == (1, 3)
    assert "conv1.weight" not in model.trainable() and "fc2.weight" in model.trainable()


def test_googlenet_and_inception_weights_come_with_the_transform_input_note(tmp_path, capsys):
    """torchvision's pretrained GoogLeNet and Inception-v3 re-normalise their input first
    (transform_input); the import says how to feed the network instead, in Python and on the CLI."""
    from netdsl.cli import main
    net = netdsl.load("googlenet")
    state = {(spec.name if spec.name.startswith("aux") else f"t{i}"): torch.rand(spec.shape)
             for i, spec in enumerate(net.weight_specs)}  # the heads named as torchvision does
    with pytest.warns(UserWarning, match=r"pretrained googlenet re-normalises its input .*\(x - 0.5\) / 0.5"):
        netdsl.import_torchvision(state, "googlenet")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note for a model without the step
        netdsl.import_torchvision(torchvision_resnet18_state(), "resnet18")
    pth = tmp_path / "googlenet.pth"
    torch.save(state, pth)
    assert main(["compile", "googlenet", "--torchvision", str(pth), "--quiet"]) == 0
    assert "note: torchvision's pretrained googlenet re-normalises its input" in capsys.readouterr().err


@pytest.mark.parametrize("name,heads", [
    ("googlenet", ["aux1.tv_aux1.fc2", "aux2.tv_aux1.fc2", "fc1"]),
    ("inception_v3", ["aux1.aux_logits1.fc1", "fc1"]),
    ("deeplabv3_resnet50", ["aux1.fcn_head1.conv1", "deeplab_head1.conv1"]),
])
def test_a_new_head_replaces_the_auxiliary_heads_output_layers_too(name, heads):
    """Every output is trained on the new classes: GoogLeNet's and Inception-v3's auxiliary
    classifiers, DeepLabv3's FCN head (through its upsample, whose `like=` input is the net's)."""
    net = netdsl.load(name)
    tuned = netdsl.with_head(net, 10)
    changed = [node.name for before, node in zip(net.graph.nodes, tuned.graph.nodes) if before.attrs != node.attrs]
    assert changed == heads
    for aux in tuned.graph.aux_outputs:
        assert tuned.shapes[aux.id][0] == 10 and net.shapes[aux.id][0] in (1000, 21)


def test_finetune_gives_the_auxiliary_head_fresh_weights_and_keeps_the_rest():
    net = netdsl.parse("input 3x12x12\nconv3-8 - aux{ conv1-4 - relu - gap - fc7 } - conv3-8 - gap - fc7")
    pretrained = net.compile("numpy", seed=1).weights
    model = netdsl.finetune(net, pretrained, head=3, backend="numpy", seed=2)
    y, aux = model(np.random.default_rng(0).standard_normal((2, 3, 12, 12)))
    assert y.shape == (2, 3) and aux.shape == (2, 3)
    kept = {name for name in pretrained if np.array_equal(model.weights[name], pretrained[name])}
    assert kept == set(pretrained) - {"fc1.weight", "fc1.bias", "aux1.fc1.weight", "aux1.fc1.bias"}
    # a tensor of the main net that an aux{ } reads as it is has no head of its own
    bare = netdsl.parse("input 3x12x12\nconv3-8 - aux{ relu } - conv3-8 - gap - fc7")
    assert [node.name for node in netdsl.with_head(bare, 3).graph.nodes if node.attrs.get("c") == 3] == ["fc1"]
