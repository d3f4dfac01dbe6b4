"""The shipped zoo against torchvision itself (docs/zoo.md is the same comparison as a table):
for each torchvision model a shipped network reproduces, params equal to meta["num_params"], MACs
counted exactly on the built torchvision model equal to netdsl's and to meta["_ops"], and
torchvision's weights (every tensor distinct and random) imported by `netdsl.import_torchvision`
giving torchvision's outputs in float64. Runs in the torchvision environment (.ci/torchvision-env);
skipped elsewhere unless NETDSL_REQUIRE_TORCHVISION=1, which makes a missing torchvision fail.
The default tier builds one model per family file; `-m heavy` builds every one.
"""
import importlib.util
import os
import sys

import pytest

if os.environ.get("NETDSL_REQUIRE_TORCHVISION") == "1":
    import torch
    import torchvision
else:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")

from conftest import ROOT  # noqa: E402

_spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "benchmarks" / "zoo_table.py")
zoo_table = importlib.util.module_from_spec(_spec)
sys.modules["zoo_table"] = zoo_table  # its dataclass looks its module up there
_spec.loader.exec_module(zoo_table)

#: one model per family file in the default tier: the cheapest that has the family's structure
DEFAULT_TIER = {"alexnet", "vgg11", "resnext50_32x4d", "googlenet", "densenet121", "squeezenet1_1",
                "mnasnet0_5", "shufflenet_v2_x0_5", "regnet_y_400mf",
                "convnext_tiny", "inception_v3", "mobilenet_v3_small", "efficientnet_b0", "vit_b_32"}
#: families whose one model is too slow for the default tier's full comparison (DeepLabv3 at
#: 3x520x520: 80 s on two cores): the default tier runs these tests of theirs at a small size
#: instead, and the heavy tier the full comparison
SMALL_DEFAULT_TESTS = {"deeplabv3": "test_deeplabv3_out_and_aux_heads_are_torchvisions_in_both_modes"}


def test_the_table_covers_every_architecture_and_every_family_has_a_default():
    from netdsl.backends.torchvision_weights import ARCHITECTURES
    assert sorted(arch for _, arch in zoo_table.ZOO) == sorted(ARCHITECTURES)
    families = {family for family, _ in zoo_table.ZOO}
    assert {family for family, arch in zoo_table.ZOO if arch in DEFAULT_TIER} | set(SMALL_DEFAULT_TESTS) == families
    assert all(name in globals() for name in SMALL_DEFAULT_TESTS.values())


@pytest.fixture(autouse=True)
def _few_threads():
    # the CI machine has two cores, shared
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("arch", [
    pytest.param(arch, marks=[] if arch in DEFAULT_TIER else [pytest.mark.heavy], id=arch)
    for _, arch in zoo_table.ZOO])
def test_torchvision_model(arch):
    c = zoo_table.compare(arch)  # builds the torchvision model once
    # meta["num_params"] leaves GoogLeNet's auxiliary classifiers out (and counts Inception-v3's)
    assert c.params == c.torchvision_params == c.meta_params + c.aux_params
    assert c.aux_params == 0 or c.arch in zoo_table.META_WITHOUT_AUX
    # torchvision's DeepLabV3 runs its auxiliary head in eval mode too: its MACs are in the count
    assert c.aux_macs == 0 or c.arch in zoo_table.META_MACS_WITH_AUX
    assert c.macs + c.aux_macs == c.torchvision_macs
    assert round((c.macs + c.aux_macs) / 1e9, 3) == c.meta_gflops
    assert c.relative_error <= zoo_table.TOLERANCE, c.relative_error
    assert c.input_difference > zoo_table.DISTINGUISHED, c.input_difference
    assert c.exact


def test_a_misplaced_tensor_shows_in_the_outputs():
    """The comparison can fail: two same-shaped batch-norm tensors swapped in the imported weights
    (running mean and bias of one layer) move the outputs far past the tolerance."""
    import netdsl
    reference = torchvision.models.get_model("mnasnet0_5", weights=None)
    reference = zoo_table.calibrated(zoo_table.randomised(reference)).double().eval()
    network, weights = netdsl.import_torchvision(reference.state_dict(), "mnasnet0_5")
    names = [w.name for w in network.weight_specs if w.suffix in ("bias", "running_mean")]
    weights[names[0]], weights[names[1]] = weights[names[1]], weights[names[0]]
    model = network.compile("torch", dtype="float64", weights=weights).eval()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert float((got - expected).abs().max()) > 1e3 * zoo_table.TOLERANCE * float(expected.abs().max())


HAND_WRITTEN_DENSENET = """
input 3x224x224
activation none
def layer(g) = cat{ id | bn - relu - conv1-{4*g}(bias=false) - bn - relu - conv3-g(bias=false) }
def down(c) = bn - relu - conv1-c(bias=false) - avgpool2/2
net mine = conv7-64/2(bias=false) - bn - relu - maxpool3/2(pad=1)
    - layer(32)*6 - down(128) - layer(32)*12 - down(256) - layer(32)*24 - down(512) - layer(32)*16
    - bn - relu - gap - fc1000
"""


def test_torchvision_weights_onto_a_densenet_you_wrote(tmp_path, capsys):
    """The issue's example: a densenet121 written from docs/language.md with its own names takes
    torchvision's tensors by position (API and command line) and computes torchvision's function."""
    import netdsl
    from netdsl.cli import main
    mine = netdsl.parse(HAND_WRITTEN_DENSENET, path="mine.net")
    reference = torchvision.models.get_model("densenet121", weights=None)
    reference = zoo_table.calibrated(zoo_table.randomised(reference)).double().eval()
    network, weights = netdsl.import_torchvision(reference.state_dict(), network=mine)
    assert network is mine and next(iter(weights)) == "conv1.weight"
    model = mine.compile("torch", dtype="float64", weights=weights).eval()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert float((got - expected).abs().max()) <= zoo_table.TOLERANCE * float(expected.abs().max())
    path, pth = tmp_path / "mine.net", tmp_path / "densenet121.pth"
    path.write_text(HAND_WRITTEN_DENSENET)
    torch.save(reference.float().state_dict(), pth)
    assert main(["compile", str(path), "--torchvision", str(pth), "--head", "10", "--quiet"]) == 0


#: the families whose blocks drop their residual branch with a rate of their own (StochasticDepth)
STOCHASTIC_DEPTH_FAMILIES = ("convnext", "efficientnet")


@pytest.mark.parametrize("arch", [
    pytest.param(arch, marks=[] if arch in DEFAULT_TIER | {"efficientnet_v2_s"} else [pytest.mark.heavy],
                 id=arch)
    for family, arch in zoo_table.ZOO if family in STOCHASTIC_DEPTH_FAMILIES])
def test_stochastic_depth_rates_are_torchvisions_to_the_bit(arch):
    """Each block's drop rate, in order, equals torchvision's StochasticDepth.p exactly: ConvNeXt's
    `rate * j / (n - 1.0)`, EfficientNet's `0.2 * j / n` over the blocks of the whole net (written
    with `/` and indexed repeats). They act only in training, so the output comparison cannot see
    them. EfficientNet builds a StochasticDepth in every block but calls it only in blocks with the
    residual (`use_res_connect`): those are the ones netdsl writes."""
    import netdsl
    reference = torchvision.models.get_model(arch, weights=None)
    theirs = [block.stochastic_depth.p for block in reference.modules()
              if isinstance(getattr(block, "stochastic_depth", None), torchvision.ops.StochasticDepth)
              and getattr(block, "use_res_connect", True)]
    ours = [node.attrs["p"] for node in netdsl.load(arch).graph if node.op == "stochastic_depth"]
    assert len(theirs) > 8 and ours == theirs
    assert [type(p) for p in ours] == [float] * len(ours) and ours[-1] >= 0.1


@pytest.mark.parametrize("arch", ["efficientnet_b0", "convnext_tiny"])
def test_stochastic_depth_in_training_draws_as_torchvisions(arch):
    """In training mode, from one seed, the imported network drops the samples torchvision drops in
    the same blocks (StochasticDepth draws a Bernoulli per sample, block after block, only in blocks
    with the residual) and gives torchvision's outputs; another seed drops others. Dropout is set
    to 0 on both sides, so stochastic depth is the only draw."""
    import dataclasses

    import netdsl
    from netdsl.ir import Graph, freeze_attrs
    reference = torchvision.models.get_model(arch, weights=None)
    reference = zoo_table.calibrated(zoo_table.randomised(reference)).double().train()
    for module in reference.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    network, weights = netdsl.import_torchvision(reference.state_dict(), arch)
    nodes = tuple(dataclasses.replace(n, attrs=freeze_attrs({**n.attrs, "p": 0.0})) if n.op == "dropout"
                  else n for n in network.graph.nodes)
    network = netdsl.Network(dataclasses.replace(network._expanded, graph=Graph(network.graph.name, nodes)),
                             network.input_shape, network.path, netdsl.Limits(), False)
    model = network.compile("torch", dtype="float64", weights=weights).train()
    x = torch.randn(4, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.manual_seed(1)
        expected = reference(x)
        torch.manual_seed(1)
        got = model(x)
        torch.manual_seed(2)
        other = model(x)
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= zoo_table.TOLERANCE * scale
    assert float((other - expected).abs().max()) > zoo_table.DISTINGUISHED * scale


@pytest.mark.parametrize("arch,size,heads", [("inception_v3", 299, ("aux_logits",)),
                                               ("googlenet", 224, ("aux_logits1", "aux_logits2"))])
def test_auxiliary_logits_in_training_are_torchvisions(arch, size, heads):
    """aux{ }: in training mode the module returns (logits, aux1, ...), the heads in the order they
    run (torchvision's GoogLeNetOutputs lists aux2 before aux1); each head, imported with the
    rest, computes torchvision's. Dropout is set to 0 on both sides: in training it draws."""
    import netdsl
    from equivalence import without_dropout
    torch.manual_seed(0)
    reference = torchvision.models.get_model(arch, weights=None, **zoo_table.MODEL_KWARGS[arch])
    reference = zoo_table.calibrated(zoo_table.randomised(reference), 0, size).double().train()
    for module in reference.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    network, weights = netdsl.import_torchvision(reference.state_dict(), arch)
    model = without_dropout(network).compile("torch", dtype="float64", weights=weights).train()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    expected = reference(x)
    outputs = model(x)
    assert len(outputs) == 1 + len(heads) and all(o.shape == (2, 1000) for o in outputs)
    for got, name in zip(outputs[1:], heads):
        want = getattr(expected, name)
        assert float((got - want).abs().max()) <= zoo_table.TOLERANCE * float(want.abs().max()), name
    assert float((outputs[0] - expected.logits).abs().max()) <= zoo_table.TOLERANCE * float(
        expected.logits.abs().max())
    assert isinstance(model.eval()(x), torch.Tensor)


#: the families whose batch-norm settings and dropout differ between members (eval outputs do not
#: see momentum or dropout, so the comparison above cannot tell)
SETTINGS_FAMILIES = ("mobilenet", "efficientnet")


@pytest.mark.parametrize("arch", [
    pytest.param(arch, marks=[] if arch in DEFAULT_TIER else [pytest.mark.heavy], id=arch)
    for family, arch in zoo_table.ZOO if family in SETTINGS_FAMILIES])
def test_batch_norm_and_dropout_settings_are_torchvisions(arch):
    """Every batch norm's eps and momentum and every dropout's p, in order, as torchvision's model
    has them (EfficientNet-B5..B7: eps 0.001, momentum 0.01; V2: eps 0.001; dropout 0.2 to 0.5)."""
    import netdsl

    def settings(model):
        return ([(m.eps, m.momentum) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)],
                [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)])
    reference = torchvision.models.get_model(arch, weights=None)
    ours = netdsl.load(arch).compile("torch", device="meta")
    assert settings(ours) == settings(reference)
    assert len(settings(ours)[0]) > 10 and len(settings(ours)[1]) == 1


@pytest.mark.parametrize("arch", sorted(DEFAULT_TIER))
def test_fine_tuning_works_on_each_family(arch):
    """`--head` and `--freeze` on every family: torchvision's weights imported, a new 7-class head,
    everything up to the first top-level block frozen; the rest of the weights are torchvision's."""
    import netdsl
    reference = torchvision.models.get_model(arch, weights=None, **zoo_table.MODEL_KWARGS.get(arch, {}))
    network, weights = netdsl.import_torchvision(reference.state_dict(), arch)
    first = network.graph.nodes[1].name.split(".")[0]
    model = netdsl.finetune(network, weights, head=7, freeze=first).eval()
    x = torch.zeros(1, *network.input_shape)
    with torch.no_grad():
        assert model(x).shape == (1, 7)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and {name.split(".")[0] for name in frozen} == {first}
    state = model.state_dict()
    kept = [spec.name for spec in network.weight_specs if spec.trainable][-3]  # a weight before the head
    assert torch.equal(state[kept].float(), weights[kept].float())


def test_deeplabv3_out_and_aux_heads_are_torchvisions_in_both_modes():
    """DeepLabv3's FCN head on layer3 is an aux{ } output: in training mode the module returns
    (out, aux), torchvision's {"out", "aux"}, both upsampled to the input's size; in eval mode the
    scores alone, torchvision's "out". At 3x64x80 (features of 8x10; every ASPP rate pads past
    them): the full comparison at 520x520 is the heavy tier's. Dropout is set to 0 on both sides."""
    import netdsl
    from equivalence import without_dropout
    arch = "deeplabv3_resnet50"
    torch.manual_seed(0)
    reference = torchvision.models.get_model(arch, weights=None, **zoo_table.MODEL_KWARGS[arch])
    reference = zoo_table.calibrated(zoo_table.randomised(reference), 0, 64).double()
    for module in reference.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    small = netdsl.load(arch, input="3x64x80")
    network, weights = netdsl.import_torchvision(reference.state_dict(), arch, network=small)
    model = without_dropout(network).compile("torch", dtype="float64", weights=weights)
    x = torch.randn(2, 3, 64, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # eval first: a training forward moves the running statistics
        expected, got = reference.eval()(x)["out"], model.eval()(x)
        assert isinstance(got, torch.Tensor)
        scale = float(expected.abs().max())
        assert float((got - expected).abs().max()) <= zoo_table.TOLERANCE * scale
        assert float((got[0] - got[1]).abs().max()) > zoo_table.DISTINGUISHED * scale
        expected = reference.train()(x)
        outputs = model.train()(x)
    assert len(outputs) == 2 and all(o.shape == (2, 21, 64, 80) for o in outputs)
    for got, name in zip(outputs, ("out", "aux")):
        want = expected[name]
        assert float((got - want).abs().max()) <= zoo_table.TOLERANCE * float(want.abs().max()), name
    assert float((outputs[0] - outputs[1]).abs().max()) > zoo_table.DISTINGUISHED * float(
        expected["out"].abs().max())


def test_deeplabv3_compiles_with_torchvisions_weights_and_needs_the_aux_head(tmp_path, capsys):
    """`netdsl compile deeplabv3_resnet50 --torchvision FILE` takes a state_dict with the auxiliary
    classifier (torchvision's aux_loss=True, as its pretrained weights have it); one built without
    it (torchvision's default when no weights are asked for) is refused, saying how to build it."""
    import numpy as np

    import netdsl
    from netdsl.cli import main
    from netdsl.weights_io import read_weights
    arch = "deeplabv3_resnet50"
    with_head = torchvision.models.get_model(arch, weights=None, **zoo_table.MODEL_KWARGS[arch])
    path = tmp_path / "deeplabv3.pth"
    torch.save(with_head.state_dict(), path)
    saved = tmp_path / "deeplabv3.safetensors"
    assert main(["compile", arch, "--torchvision", str(path), "--save-weights", str(saved), "--quiet"]) == 0
    # the head's tensors, last in torchvision's state_dict, are the aux{ } head's after layer3
    theirs, ours = with_head.state_dict(), read_weights(saved)
    for mine, torchvisions in (("aux1.fcn_head1.cbr1.conv1.weight", "aux_classifier.0.weight"),
                               ("aux1.fcn_head1.conv1.bias", "aux_classifier.4.bias"),
                               ("layer4.bottleneck_down1.add1.b1.cbr1.conv1.weight", "backbone.layer4.0.conv1.weight"),
                               ("deeplab_head1.conv1.bias", "classifier.4.bias")):
        assert np.array_equal(ours[mine], theirs[torchvisions].numpy()), mine
    without = torchvision.models.get_model(arch, weights=None, weights_backbone=None)
    assert without.aux_classifier is None
    with pytest.raises(netdsl.NetDSLWeightsError) as error:
        netdsl.import_torchvision(without.state_dict(), arch)
    assert error.value.message == ("the state_dict: no auxiliary classifiers (aux_classifier.*), "
                                   "but deeplabv3_resnet50 has 1")
    assert "with aux_loss=True" in error.value.notes[0]
