import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
GOLDEN = Path(__file__).resolve().parent / "golden"
#: Set NETDSL_UPDATE_GOLDEN=1 to rewrite golden files from the current output (then review the diff).
UPDATE_GOLDEN = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"


def check_golden(path: Path, actual: str) -> None:
    if UPDATE_GOLDEN or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        if not UPDATE_GOLDEN:
            pytest.fail(f"golden file {path.name} was missing and has been written; review it")
    assert actual == path.read_text(encoding="utf-8")


#: Small inputs that still fit every shipped network (AlexNet's stride-4 conv needs more than 32).
SMALL_INPUTS = {"alexnet": "3x67x67", "zfnet": "3x67x67", "lenet5": None, "mlp": None,
                "unet": "1x188x188",  # U-Net's smallest valid size
                "inception": None}  # 299: its auxiliary head needs the 17x17 grid


def shipped_networks(inputs: dict | None = None, default: str = "3x32x32") -> list:
    """pytest params (path, net name, small input) for every net of every shipped file.

    Nets that repeat another's structure (same kinds of layer, connected the same ways: ResNet-101
    and -152 beside ResNet-50, VGG-E beside VGG-D), or whose structure lies inside another's
    (FCN-16s inside FCN-8s), add time and no coverage; they carry the `heavy` mark, so the default
    tier runs one representative per structure (the smallest) and `pytest --heavy` or
    `pytest -m heavy` runs them all.
    """
    inputs = SMALL_INPUTS if inputs is None else inputs
    params = []
    for path, name, heavy in _shipped_catalogue():
        marks = [pytest.mark.heavy] if heavy else []
        params.append(pytest.param(str(path), name, inputs.get(path.stem, default), marks=marks,
                                   id=f"{path.stem}:{name}"))
    return params


_CATALOGUE: list = []
#: Representatives that cost much and add little beside another: FCN-32s and FCN-16s differ from
#: FCN-8s only in their upsampling tail (each runs a 230x230 VGG even at a small input).
#: U-Net at its smallest size, 188x188, still costs 11 GMACs a forward pass (every generated program
#: and tests/data/every_op.net cover its centre crop in the default tier).
#: The torchvision families' other members differ from their representative (densenet121,
#: mnasnet0_5, resnext50_32x4d, squeezenet1_1, vit_b_32) only in widths and depths (ViT's also in
#: patch size), which the shapes of their layers make a different structure;
#: tests/test_zoo_torchvision.py holds each to torchvision. Inception-v3's smallest size is 299
#: (its auxiliary head), 5.7 GMACs a pass: its modules are GoogLeNet's and conv1x7's, its aux{ }
#: head is tests/test_aux_outputs.py's, and the torchvision environment's default tier compares
#: it with torchvision on every CI run.
_HEAVY_BY_CHOICE = {("fcn", "fcn32s"), ("fcn", "fcn16s"), ("unet", "unet"), ("inception", "inception_v3"),
                    ("densenet", "densenet161"), ("densenet", "densenet169"), ("densenet", "densenet201"),
                    ("mnasnet", "mnasnet0_75"), ("mnasnet", "mnasnet1_0"), ("mnasnet", "mnasnet1_3"),
                    ("resnet", "resnext101_32x8d"), ("resnet", "resnext101_64x4d"),
                    ("resnet", "wide_resnet50_2"), ("squeezenet", "squeezenet1_0"),
                    *{("shufflenet", f"shufflenet_v2_{w}") for w in ("x1_0", "x1_5", "x2_0")},
                    *{("regnet", f"regnet_{xy}_{size}") for xy in ("y", "x")
                      for size in ("800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")},
                    ("convnext", "convnext_small"), ("convnext", "convnext_base"), ("convnext", "convnext_large"),
                    # mobilenet_v3_small and efficientnet_b0 stand for these (mobilenet_v2's relu6 and
                    # EfficientNet-v2's fused blocks are ops and merges the others cover; the heavy tier
                    # runs them; regnet_y_400mf has every layer regnet_x_400mf has, and its gate)
                    ("mobilenet", "mobilenet_v3_large"), ("mobilenet", "mobilenet_v2"),
                    ("efficientnet", "efficientnet_v2_s"), ("regnet", "regnet_x_400mf"),
                    *(("efficientnet", f"efficientnet_{v}")
                      for v in ("b1", "b2", "b3", "b4", "b5", "b6", "b7", "v2_m", "v2_l")),
                    ("vit", "vit_b_16"), ("vit", "vit_l_16")}
#: DeepLabv3's 42 M weights cost 25 s in the backend tests at any input size; its layers are
#: ResNet-50's plus dilated convs, bilinear upsampling to another tensor's size and an aux{ } head,
#: each covered by the op tests, every_op.net and test_aux_outputs.py, and the torchvision
#: environment's default tier compares the whole net, both outputs, with torchvision's.
_HEAVY_BY_CHOICE.add(("deeplabv3", "deeplabv3_resnet50"))


def _shipped_catalogue() -> list:
    """(path, net name, heavy) for every shipped net, computed once per test run."""
    import netdsl
    if not _CATALOGUE:
        seen: dict = {}  # structure -> the smallest net that has it
        nets = []
        for path in sorted(NETWORKS.glob("*.net")):
            for net in netdsl.parse_all(path.read_text(), path=str(path)):
                key = structure(net)
                nets.append((path, net.name, key, len(net.graph.nodes)))
                if key not in seen or len(net.graph.nodes) < seen[key][1]:
                    seen[key] = ((path, net.name), len(net.graph.nodes))
        # a structure inside another (FCN-16s inside FCN-8s: every kind of layer and connection of
        # the one is in the other) is covered by the other's representative
        covered = {key for key in seen if any(key < other for other in seen)}
        _CATALOGUE.extend((path, name, key in covered or seen[key][0] != (path, name)
                           or (path.stem, name) in _HEAVY_BY_CHOICE)
                          for path, name, key, _ in nets)
    return _CATALOGUE


def torchvision_resnet18_state(seed: int = 0) -> dict:
    """A state_dict laid out as torchvision's resnet18 (names, shapes, dtypes and order recorded in
    tests/data/torchvision_resnet18.json; test_torchvision_oracle.py checks the record against
    torchvision itself), filled with seeded random values: import tests that need no torchvision."""
    import json

    import torch
    record = json.loads((ROOT / "tests" / "data" / "torchvision_resnet18.json").read_text())
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape, dtype in record["state_dict"]:
        if dtype == "int64":
            state[name] = torch.tensor(0)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[name] = torch.rand(shape, generator=generator) - 0.5
    return state


def structure(net) -> frozenset:
    """What a net is made of, blind to how often each part repeats: every kind of node (op,
    attributes, input and output shapes) and every kind of edge between two kinds of node."""
    def kind(node_id: int):
        node = net.graph.nodes[node_id]
        attrs = tuple(sorted((k, repr(v)) for k, v in dict(node.attrs).items()))
        return node.op, attrs, tuple(net.shapes[i] for i in node.inputs), net.shapes[node_id]
    kinds = {node.id: kind(node.id) for node in net.graph.nodes}
    edges = {(kinds[source], kinds[node.id]) for node in net.graph.nodes for source in node.inputs}
    return frozenset(kinds.values()) | frozenset(edges)


def pytest_addoption(parser):
    parser.addoption("--heavy", action="store_true",
                     help="also run the heavy tier: every shipped network, not one per structure")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--heavy") or "heavy" in (config.getoption("-m") or ""):
        return  # --heavy runs everything; -m heavy (or any -m naming it) selects as asked
    kept, heavy = [], []
    for item in items:
        (heavy if item.get_closest_marker("heavy") else kept).append(item)
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = kept


# Hypothesis profiles: the default runs in CI, derandomized so that a submission's result does not
# depend on luck; `pytest --hypothesis-profile=thorough` explores 10x more examples at random
# (add every failure it finds as an @example).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")
