"""The shipped networks reproduce their published figures (../shared/design/ORACLES.md)."""
import pytest

import netdsl
from conftest import NETWORKS

# (target, params, MACs): exact where the source is exact.
ORACLES = [
    # torchvision parameter counts and conv+fc MACs (its "GFLOPS")
    ("alexnet:alexnet_tv", 61_100_840, 714_188_480),
    ("vgg:A", 132_863_336, 7_609_090_048),
    ("vgg:B", 133_047_848, 11_308_466_176),
    ("vgg:D", 138_357_544, 15_470_264_320),
    ("vgg:E", 143_667_240, 19_632_062_464),
    ("vgg:D_BN", 138_365_992, 15_470_264_320),
    ("vgg:A_BN", 132_868_840, 7_609_090_048),
    ("vgg16", 138_357_544, 15_470_264_320),
    ("resnet:resnet18", 11_689_512, 1_814_073_344),
    ("resnet:resnet34", 21_797_672, 3_663_761_408),
    ("resnet:resnet50", 25_557_032, 4_089_184_256),
    ("resnet:resnet101", 44_549_160, 7_801_405_440),
    ("resnet:resnet152", 60_192_808, 11_513_626_624),
    ("resnet50", 25_557_032, 4_089_184_256),
    ("resnext50", 25_028_904, 4_230_479_872),
    ("googlenet:googlenet_tv", 6_624_904, 1_498_376_192),
    # the papers, recomputed exactly
    ("alexnet:alexnet", 60_965_224, 724_406_816),
    ("alexnet:alexnet_1gpu", 62_378_344, 1_135_256_096),
    ("googlenet:googlenet", 6_998_552, 1_582_671_872),
    ("zfnet", 62_357_608, None),
    ("lenet5", 61_706, None),
    ("vgg:C", 133_638_952, None),
    ("vgg:A_LRN", 132_863_336, None),
    # FCN learnable params (bilinear upsampling fixed)
    ("fcn:fcn32s", 134_346_581, None),
    ("fcn:fcn16s", 134_357_354, None),
    ("fcn:fcn8s", 134_362_751, None),
]


@pytest.mark.parametrize("target,params,macs", ORACLES, ids=[o[0] for o in ORACLES])
def test_published_figures(target, params, macs):
    net = netdsl.load(target)
    assert net.params == params
    if macs is not None:
        assert net.macs == macs


# ResNet paper Table 1, "FLOPs" (multiply-adds, v1). The paper's one decimal is truncated for
# some nets (3.664 -> "3.6") and rounded for others (7.570 -> "7.6"): compare within 0.07 G.
@pytest.mark.parametrize("name,gmacs", [("resnet18_v1", 1.8), ("resnet34_v1", 3.6), ("resnet50_v1", 3.8),
                                        ("resnet101_v1", 7.6), ("resnet152_v1", 11.3)])
def test_resnet_paper_flops(name, gmacs):
    assert abs(netdsl.load(f"resnet:{name}").macs / 1e9 - gmacs) < 0.07


def test_resnet_v1_exact_macs():
    # derived figures in ORACLES.md: 3.858 / 7.570 / 11.282 G
    assert netdsl.load("resnet:resnet50_v1").macs == 3_857_973_248
    assert netdsl.load("resnet:resnet152_v1").macs == 11_282_415_616


def test_card_example():
    net = netdsl.parse("[(conv3-64)*2 - pool]*5 - fc4096*2 - fc1000", input="3x224x224")
    assert net.params == 34_061_608
    assert net.macs == 3_198_418_944
    # ReLU after every hidden conv and fc, logits out
    acts = [n.attrs["act"] for n in net.graph if n.op in ("conv", "fc")]
    assert acts == ["relu"] * 12 + ["none"]


def test_vgg16_activations_match_the_slides():
    net = netdsl.load("vgg16")
    assert net.activations == 15_237_608  # "15.2M x 4 bytes ~= 61MB / image"
    assert round(net.stats.activation_bytes / 1e6) == 61


def test_vgg16_per_layer_weights_match_the_slides():
    net = netdsl.load("vgg16")
    weights = [w.size for w in net.weight_specs if w.suffix == "weight"]
    assert weights[:4] == [1_728, 36_864, 73_728, 147_456]
    assert weights[-3:] == [102_760_448, 16_777_216, 4_096_000]
    assert sum(weights) == 138_344_128  # "TOTAL params 138M (not counting biases)"


def test_alexnet_sizes_match_the_slides():
    net = netdsl.load("alexnet:alexnet_1gpu")
    sizes = {n.name: net.shapes[n.id] for n in net.graph}
    assert sizes["conv1"] == (96, 55, 55)
    assert [sizes[f"maxpool{i}"][1] for i in (1, 2, 3)] == [27, 13, 6]
    assert sizes["conv2"] == (256, 27, 27) and 27 * 27 * 256 == 186_624
    assert sizes["conv5"] == (256, 13, 13) and 13 * 13 * 256 == 43_264
    layer = {l.name: l for l in net.stats.layers}
    assert layer["head1.fc1"].params == 9216 * 4096 + 4096  # ~37.7M
    fc_total = sum(layer[f"head1.fc{i}"].params for i in (1, 2, 3))
    assert round(fc_total / 1e6, 1) == 58.6  # "3 FC layers have ~58.6M parameters"
    assert round(net.params / 1e6, 1) == 62.4  # the slides' "~62.3M" is this count, truncated


def test_zfnet_sizes():
    net = netdsl.load("zfnet")
    spatial = [net.shapes[n.id][1] for n in net.graph if n.op in ("conv", "maxpool")]
    assert spatial == [110, 55, 26, 13, 13, 13, 13, 6]


def test_lenet5_table():
    net = netdsl.load("lenet5")
    shapes = [net.shapes[n.id] for n in net.graph if n.op != "input"]
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (84,), (10,)]
    assert {n.attrs["act"] for n in net.graph if n.op in ("conv", "fc")} == {"tanh", "none"}


def test_googlenet_inception_sizes():
    net = netdsl.load("googlenet:googlenet")
    cats = [net.shapes[n.id] for n in net.graph if n.op == "concat"]
    assert cats[0] == (256, 28, 28) and cats[1] == (480, 28, 28)
    assert [c[0] for c in cats[2:7]] == [512, 512, 512, 528, 832]
    assert cats[-1] == (1024, 7, 7)


def test_fcn_receptive_field_and_stride():
    # Paper Table 1: FCN-VGG16 receptive field 404, max stride 32 (at the score layer)
    net = netdsl.load("fcn:fcn8s")
    score = net.stats.layers[net.graph.node("features.score").id]
    assert (score.rf, score.stride) == (404, 32)
    assert net.output_shape == (21, 500, 500)


def test_receptive_fields_of_stacked_convs():
    assert netdsl.parse("conv3-8 - conv3-8", input="1x32x32").stats.layers[-1].rf == 5
    assert netdsl.parse("conv3-8*3", input="1x32x32").stats.layers[-1].rf == 7
    assert netdsl.parse("conv5-8*2", input="1x32x32").stats.layers[-1].rf == 9


def test_three_3x3_cost_27_c_squared_vs_49():
    c = 64
    three = netdsl.parse(f"conv3-{c}(bias=false)*3", input=f"{c}x16x16")
    one = netdsl.parse(f"conv7-{c}(bias=false)", input=f"{c}x16x16")
    assert (three.params, one.params) == (27 * c * c, 49 * c * c)


def test_slide_conv_arithmetic():
    # 32x32x3, ten 5x5 filters, stride 1, pad 2 -> 32x32x10, 760 params
    net = netdsl.parse("conv5-10(pad=2)", input="3x32x32")
    assert net.output_shape == (10, 32, 32) and net.params == 760
    # 64x64x8, 32 kernels 3x3x8, no padding, stride 1 -> 62x62x32, 2,304 weights + 32 biases
    net = netdsl.parse("conv3-32(pad=0)", input="8x64x64")
    assert net.output_shape == (32, 62, 62)
    assert [w.size for w in net.weight_specs] == [2_304, 32]
    # 7x7 input, 3x3 filter: stride 1 -> 5, stride 2 -> 3, pad 1 keeps 7
    assert netdsl.parse("conv3-1(pad=0)", input="1x7x7").output_shape == (1, 5, 5)
    assert netdsl.parse("conv3-1/2(pad=0)", input="1x7x7").output_shape == (1, 3, 3)
    assert netdsl.parse("conv3-1(pad=1)", input="1x7x7").output_shape == (1, 7, 7)


def test_doesnt_fit_is_a_warning_then_an_error_under_strict():
    net = netdsl.parse("conv3-1/3(pad=0)", input="1x7x7")
    assert [w.message for w in net.warnings] == [
        "conv3-1/3 leaves 1 row and 1 column of the input unused: (7 + 2*0 - 3) is not a multiple "
        "of stride 3"]
    with pytest.raises(netdsl.NetDSLShapeError):
        netdsl.parse("conv3-1/3(pad=0)", input="1x7x7", strict=True)


def test_googlenet_reduction_arithmetic():
    # the slide: naive 3x3 on 28x28x192 -> 256 vs a 1x1 reduction to 64 first
    naive = netdsl.parse("conv3-256(bias=false)", input="192x28x28").macs
    reduced = netdsl.parse("conv1-64(bias=false) - conv3-256(bias=false)", input="192x28x28").macs
    assert naive == 28 * 28 * 3 * 3 * 192 * 256
    assert reduced == 28 * 28 * 1 * 1 * 192 * 64 + 28 * 28 * 3 * 3 * 64 * 256


@pytest.mark.parametrize("path", sorted(NETWORKS.glob("*.net")), ids=lambda p: p.name)
def test_every_shipped_file_checks_without_warnings(path):
    networks = netdsl.parse_all(path.read_text(), path=str(path))
    assert networks
    for net in networks:
        assert net.warnings == ()
        assert net.params > 0
