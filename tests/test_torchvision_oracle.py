"""torchvision as the oracle: tests that need torchvision itself, run in the second environment
that .ci/torchvision-env builds (torch 2.14.1 + torchvision 0.29.1 + torchinfo; torchvision does
not import beside the CPU torch 2.13.0 of the main environment). Skipped where torchvision is
missing, unless NETDSL_REQUIRE_TORCHVISION=1 (as .ci/run sets it there), which makes a skip fail.
"""
import os

import pytest

import netdsl

if os.environ.get("NETDSL_REQUIRE_TORCHVISION") == "1":
    import torch
    import torchinfo
    import torchvision
else:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torchinfo = pytest.importorskip("torchinfo")

from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names  # noqa: E402


def _randomised(model):
    """Every tensor of the state_dict made distinct and random: torchvision's own initialisation
    keeps multi-dimensional weights (random, and scaled so the signal survives 50 layers), while
    the constant ones (batch-norm scales, shifts and statistics, zero biases) would hide a swap of
    two same-shaped tensors, so they are redrawn."""
    generator = torch.Generator().manual_seed(0)
    for name, value in model.state_dict().items():
        if not value.is_floating_point() or value.dim() > 1:
            continue
        low, high = (0.5, 1.5) if name.endswith(("running_var", "weight")) else (-0.1, 0.1)
        value.copy_(torch.rand(value.shape, generator=generator, dtype=value.dtype) * (high - low) + low)
    return model


def test_create_feature_extractor_on_netdsl_blocks_by_their_names():
    model = netdsl.load("resnet50").compile("torch", seed=0).eval()
    _, eval_nodes = get_graph_node_names(model)
    assert {"stage1", "stage2", "stage3", "stage4"} <= {n.split(".")[0] for n in eval_nodes}
    extractor = create_feature_extractor(model, return_nodes={"stage2": "c3", "stage3": "c4", "stage4": "c5"})
    with torch.no_grad():
        features = extractor(torch.randn(1, 3, 224, 224))
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "c3": (1, 512, 28, 28), "c4": (1, 1024, 14, 14), "c5": (1, 2048, 7, 7)}


def test_create_feature_extractor_reaches_inside_blocks_and_across_scopes():
    model = netdsl.load("fcn:fcn8s", input="3x64x64").compile("torch", seed=0).eval()
    nodes = {"features.p3": "pool3", "features.p4": "pool4", "features.score": "score"}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    with torch.no_grad():
        shapes = {k: tuple(v.shape)[1] for k, v in extractor(torch.randn(1, 3, 64, 64)).items()}
    assert shapes == {"pool3": 256, "pool4": 512, "score": 21}


def test_torchinfo_shows_every_block_with_its_output_shape():
    net = netdsl.load("resnet50")
    model = net.compile("torch", seed=0)
    info = torchinfo.summary(model, input_size=(1, 3, 224, 224), depth=2, verbose=0,
                             col_names=("output_size", "num_params"))
    rows = {(layer.class_name, layer.depth, tuple(layer.output_size)) for layer in info.summary_list}
    assert ("Stage_256_6_2", 1, (1, 1024, 14, 14)) in rows
    assert ("Bottleneck_256", 2, (1, 1024, 14, 14)) in rows
    assert ("Stem", 1, (1, 64, 56, 56)) in rows
    assert info.total_params == net.params


@pytest.mark.parametrize("arch", ["resnet50", "googlenet", "vgg11_bn", "alexnet"])
def test_torchvision_weights_give_torchvisions_function(arch):
    """Imported by position into the shipped network, every tensor distinct and random: the
    netdsl module computes what the real torchvision model computes, in float64."""
    kwargs = {"aux_logits": True, "init_weights": False, "transform_input": False} if arch == "googlenet" else {}
    reference = _randomised(torchvision.models.get_model(arch, weights=None, **kwargs)).double().eval()
    network, weights = netdsl.import_torchvision(reference.state_dict(), arch)
    model = network.compile("torch", dtype="float64", weights=weights).eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x)
        expected = expected.logits if hasattr(expected, "logits") else expected
        got = model(x)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))
    assert not torch.allclose(model(torch.randn_like(x)), got)
