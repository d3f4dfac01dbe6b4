"""The shipped networks reproduce their published figures (../shared/design/ORACLES.md)."""
from pathlib import Path

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
    # with its two auxiliary classifiers (6,379,984 params; torchvision's 6,624,904 leaves them out)
    ("googlenet:googlenet_tv", 13_004_888, 1_498_376_192),
    ("resnext50_32x4d", 25_028_904, 4_230_479_872),
    ("resnext101_32x8d", 88_791_336, 16_414_015_488),
    ("resnext101_64x4d", 83_455_272, 15_460_270_080),
    ("wide_resnet50_2", 68_883_240, 11_398_021_120),
    ("wide_resnet101_2", 126_886_696, 22_753_050_624),
    ("vgg11", 132_863_336, 7_609_090_048),
    ("vgg13", 133_047_848, 11_308_466_176),
    ("vgg:vgg16", 138_357_544, 15_470_264_320),
    ("vgg19", 143_667_240, 19_632_062_464),
    ("vgg11_bn", 132_868_840, 7_609_090_048),
    ("vgg13_bn", 133_053_736, 11_308_466_176),
    ("vgg16_bn", 138_365_992, 15_470_264_320),
    ("vgg19_bn", 143_678_248, 19_632_062_464),
    ("densenet121", 7_978_856, 2_834_161_664),
    ("densenet161", 28_681_000, 7_727_907_072),
    ("densenet169", 14_149_480, 3_359_843_328),
    ("densenet201", 20_013_928, 4_291_365_888),
    ("squeezenet1_0", 1_248_424, 818_924_576),
    ("squeezenet1_1", 1_235_496, 349_151_936),
    ("mnasnet0_5", 2_218_512, 104_455_968),
    ("mnasnet0_75", 3_170_208, 215_493_104),
    ("mnasnet1_0", 4_383_312, 314_415_872),
    ("mnasnet1_3", 6_282_256, 526_362_432),
    ("convnext_tiny", 28_589_128, 4_455_531_264),
    # with its auxiliary classifier (torchvision's figure includes it); MACs of the eval forward
    ("inception_v3", 27_161_264, 5_713_216_096),
    ("convnext_small", 50_223_688, 8_683_712_256),
    ("convnext_base", 88_591_464, 15_354_729_472),
    ("convnext_large", 197_767_336, 34_361_433_600),
    ("googlenet", 13_004_888, 1_498_376_192),
    ("alexnet", 61_100_840, 714_188_480),
    ("shufflenet_v2_x0_5", 1_366_792, 40_476_448),
    ("shufflenet_v2_x1_0", 2_278_604, 144_907_992),
    ("shufflenet_v2_x1_5", 3_503_624, 295_759_392),
    ("shufflenet_v2_x2_0", 7_393_996, 583_253_464),
    ("regnet_y_400mf", 4_344_144, 401_842_848),
    ("regnet_y_800mf", 6_432_512, 833_856_256),
    ("regnet_y_1_6gf", 11_202_430, 1_612_076_160),
    ("regnet_y_3_2gf", 19_436_338, 3_176_482_752),
    ("regnet_y_8gf", 39_381_472, 8_473_070_592),
    ("regnet_y_16gf", 83_590_140, 15_911_510_272),
    ("regnet_y_32gf", 145_046_770, 32_279_552_832),
    ("regnet_x_400mf", 5_495_976, 413_812_608),
    ("regnet_x_800mf", 7_259_656, 799_699_712),
    ("regnet_x_1_6gf", 9_190_136, 1_602_849_792),
    ("regnet_x_3_2gf", 15_296_552, 3_176_621_952),
    ("regnet_x_8gf", 39_572_648, 7_995_132_416),
    ("regnet_x_16gf", 54_278_536, 15_940_755_456),
    ("regnet_x_32gf", 107_811_560, 31_735_929_792),
    # attention counted as torchvision counts it: 4*T*D*D projections + 2*T*T*D products
    ("vit_b_16", 86_567_656, 17_563_828_224),
    ("vit_b_32", 88_224_232, 4_409_186_304),
    ("vit_l_16", 304_326_632, 61_554_712_576),
    # with its auxiliary FCN head (torchvision's figure includes it); MACs of the eval forward, at
    # 3x520x520 (test_deeplabv3_macs_with_its_head_are_torchvisions adds the head's)
    ("deeplabv3_resnet50", 42_004_074, 168_731_205_888),
    # ... and torchvision's "GFLOPS" (meta["_ops"]), which rounds the same MACs to 3 decimals
    # (tests/test_zoo_torchvision.py counts them exactly on the built torchvision models)
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
    # torchvision's params and MACs at the crop size of the DEFAULT weights (the net's input)
    ("mobilenet_v2", 3_504_872, 300_774_272),
    ("mobilenet_v3_large", 5_483_032, 216_589_760),
    ("mobilenet_v3_small", 2_542_856, 56_510_400),
    ("efficientnet_b0", 5_288_548, 385_814_752),
    ("efficientnet_b1", 7_794_184, 686_802_832),
    ("efficientnet_b2", 9_109_994, 1_087_529_456),
    ("efficientnet_b3", 12_233_232, 1_827_141_392),
    ("efficientnet_b4", 19_341_616, 4_393_771_024),
    ("efficientnet_b5", 30_389_784, 10_266_384_752),
    ("efficientnet_b6", 43_040_704, 19_067_593_536),
    ("efficientnet_b7", 66_347_960, 37_745_884_192),
    ("efficientnet_v2_s", 21_458_488, 8_365_617_152),
    ("efficientnet_v2_m", 54_139_356, 24_582_460_384),
    ("efficientnet_v2_l", 118_515_272, 56_079_699_008),
]


@pytest.mark.parametrize("target,params,macs", ORACLES, ids=[o[0] for o in ORACLES])
def test_published_figures(target, params, macs):
    net = netdsl.load(target)
    assert net.params == params
    if target in ("googlenet", "googlenet:googlenet_tv"):  # torchvision's own figure, without the heads
        assert net.params - net.stats.aux_params == 6_624_904
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


#: Warnings that are the network's truth: torchvision's SqueezeNet strides its unpadded first conv
#: by 2 over 224 rows, so the last row and column are never read (at 227, the paper's size, they are).
EXPECTED_WARNINGS = {
    ("squeezenet", "squeezenet1_0"): ["conv7-96/2 leaves 1 row and 1 column of the input unused: "
                                      "(224 + 2*0 - 7) is not a multiple of stride 2"],
    ("squeezenet", "squeezenet1_1"): ["conv3-64/2 leaves 1 row and 1 column of the input unused: "
                                      "(224 + 2*0 - 3) is not a multiple of stride 2"],
}


@pytest.mark.parametrize("path", sorted(NETWORKS.glob("*.net")), ids=lambda p: p.name)
def test_every_shipped_file_checks_without_warnings(path):
    networks = netdsl.parse_all(path.read_text(), path=str(path))
    assert networks
    for net in networks:
        assert [w.message for w in net.warnings] == EXPECTED_WARNINGS.get((path.stem, net.name), [])
        assert net.params > 0


def test_squeezenet_fits_at_the_papers_227():
    for name in ("squeezenet1_0", "squeezenet1_1"):
        assert netdsl.load(name, input="3x227x227").warnings == ()


def _bare_names() -> set:
    from netdsl.zoo import TORCHVISION_IN_PAPER_FILES, shipped_nets
    return {p.stem for p in NETWORKS.glob("*.net")} | set(shipped_nets()) | set(TORCHVISION_IN_PAPER_FILES)


def _nets_by_file() -> dict:
    """Each shipped file's net names, from one parse (nothing built)."""
    return {p.stem: netdsl.parse_module(p.read_text(), str(p)).nets for p in NETWORKS.glob("*.net")}


def test_every_bare_name_names_exactly_one_net():
    """`netdsl summary NAME` with a bare name: every net name and file name of networks/ finds one
    net (a file of several nets asks for one by FILE:NET, as vgg and resnet do)."""
    from netdsl.network import resolve_path
    from netdsl.zoo import shipped_nets
    by_file = _nets_by_file()
    declared = {(stem, name) for stem, names in by_file.items() for name in names}
    # the index reads `net NAME` statements; it must see every named net the parser sees
    assert {(f.stem, name) for name, files in shipped_nets().items() for f in files} == \
        {(stem, name) for stem, name in declared if name != stem or stem in ("googlenet", "alexnet")}
    several = {stem for stem, names in by_file.items() if len(names) > 1}
    for name in sorted(_bare_names() - several):
        path, net = resolve_path(name)
        assert Path(path).parent == NETWORKS, name
        only = by_file.get(Path(path).stem)
        # a file of one net gives that net (inception.net's inception_v3), named or not
        expected = net or (only[0] if only and len(only) == 1 and only[0] else Path(path).stem)
        assert netdsl.load(name).name == expected, name
    # nets named alike in two files: only where a file's name decides (rule 2 of netdsl/zoo.py)
    for name, files in shipped_nets().items():
        assert len(files) == 1 or (NETWORKS / f"{name}.net").exists(), (name, files)


@pytest.mark.parametrize("file_name,net", [("vgg16", "vgg:vgg16"), ("resnet50", "resnet:resnet50"),
                                           ("resnext50", "resnet:resnext50_32x4d")])
def test_a_file_and_a_net_of_the_same_network_agree(file_name, net):
    one, other = netdsl.load(file_name), netdsl.load(net)
    assert [w.shape for w in one.weight_specs] == [w.shape for w in other.weight_specs]
    assert (one.params, one.macs) == (other.params, other.macs)


@pytest.mark.parametrize("target,expected", [
    ("googlenet", ("googlenet", "googlenet_tv")), ("googlenet:googlenet", ("googlenet", "googlenet")),
    ("alexnet", ("alexnet", "alexnet_tv")), ("alexnet:alexnet", ("alexnet", "alexnet")),
    ("alexnet:alexnet_tv", ("alexnet", "alexnet_tv")), ("vgg16", ("vgg16", None)),
    ("vgg:D", ("vgg", "D")), ("resnext101_32x8d", ("resnet", "resnext101_32x8d")),
    ("densenet121", ("densenet", "densenet121")), ("googlenet.net", ("googlenet", None)),
])
def test_bare_names_and_file_names(target, expected):
    from netdsl.network import resolve_path
    path, net = resolve_path(target)
    assert (Path(path).stem, net) == expected


def test_an_unknown_bare_name_is_an_error_naming_the_shipped_files():
    with pytest.raises(netdsl.NetDSLError, match="no_such_net: no such file"):
        netdsl.load("no_such_net")


def test_every_torchvision_architecture_is_a_bare_name_for_the_same_network():
    from netdsl.backends.torchvision_weights import ARCHITECTURES
    for arch, target in ARCHITECTURES.items():
        one, other = netdsl.load(arch), netdsl.load(target)
        assert [w.shape for w in one.weight_specs] == [w.shape for w in other.weight_specs], arch


def test_docs_zoo_table_lists_every_torchvision_model_with_netdsls_figures():
    """docs/zoo.md is benchmarks/zoo_table.py's output (run in the torchvision environment); its
    netdsl columns are still what netdsl computes, and every model is marked exact."""
    import re
    from netdsl.backends.torchvision_weights import ARCHITECTURES
    from netdsl.network import resolve_path
    text = (NETWORKS.parent / "docs" / "zoo.md").read_text()
    rows = re.findall(r"^\| (\w+) \| (\w+) \| `([\w:]+)` \| ([\d,]+)(?: \(([\d,]+) without the auxiliary "
                      r"heads, as meta\))? \| ([\d,]+)(?: \(([\d,]+) with the auxiliary head, as torchvision "
                      r"runs it\))? \| ([\d,]+) \| ([\d.]+) \| .* \| (\w+) \|$", text, re.M)
    assert sorted(row[1] for row in rows) == sorted(ARCHITECTURES)
    for family, arch, where, params, without_heads, macs, with_heads, torchvision_macs, gflops, exact in rows:
        net = netdsl.load(arch)
        path, named = resolve_path(arch)
        assert where == (f"{Path(path).stem}:{named}" if named else Path(path).stem), arch
        # DeepLabv3: torchvision's eval forward runs the auxiliary head, netdsl's does not
        torchvisions = net.macs + (net.stats.aux_macs if with_heads else 0)
        assert (f"{net.params:,}", f"{net.macs:,}") == (params, macs), arch
        assert with_heads in ("", f"{torchvisions:,}") and torchvision_macs == f"{torchvisions:,}", arch
        assert without_heads in ("", f"{net.params - net.stats.aux_params:,}"), arch
        assert f"{round(torchvisions / 1e9, 3):.3f}" == gflops and exact == "yes", arch
    assert f"{len(ARCHITECTURES)} of {len(ARCHITECTURES)} models exact." in text


@pytest.mark.parametrize("name,blocks,rate", [("convnext_tiny", 18, 0.1), ("convnext_small", 36, 0.4),
                                              ("convnext_base", 36, 0.5), ("convnext_large", 36, 0.5)])
def test_convnext_stochastic_depth_rises_linearly_to_torchvisions_rate(name, blocks, rate):
    """0 at the first block, `rate` at the last, linear between (torchvision's rate*i/(n-1); within
    one unit in the last place of each, tests/test_zoo_torchvision.py checks against torchvision)."""
    rates = [node.attrs["p"] for node in netdsl.load(name).graph if node.op == "stochastic_depth"]
    assert len(rates) == blocks and rates[0] == 0.0 and rates[-1] == pytest.approx(rate, rel=1e-15)
    assert rates == pytest.approx([rate * i / (blocks - 1) for i in range(blocks)], rel=1e-15)


def test_deeplabv3_macs_with_its_head_are_torchvisions():
    """torchvision's DeepLabV3 runs its auxiliary FCN head in eval mode too, so the hooks on the
    built model count 178,721,945,088 MACs at 3x520x520 and meta["_ops"] is 178.722; netdsl's eval
    forward leaves the aux{ } head out and reports it apart. The backbone is ResNet-50's weights
    with output stride 8: 2048x65x65 features."""
    net = netdsl.load("deeplabv3_resnet50")
    assert net.stats.aux_macs == 9_990_739_200 and net.stats.aux_params == 2_365_205
    assert net.macs + net.stats.aux_macs == 178_721_945_088
    assert round((net.macs + net.stats.aux_macs) / 1e9, 3) == 178.722
    assert net.output_shape == (21, 520, 520) and [net.shapes[node.id] for node in net.graph.aux_outputs] == [
        (21, 520, 520)]
    assert net.shapes[[node for node in net.graph if node.name.startswith("layer4.")][-1].id] == (2048, 65, 65)
    threes = [node for node in net.graph if node.op == "conv" and node.attrs["kh"] == 3]
    # layer3: 1 (the previous stage's), then 2 x5; the aux head's 1; layer4: 2, then 4 x2; the ASPP's
    # 12, 24, 36; the DeepLab head's 1. Each padded by its dilation: the size stays 65x65.
    assert [node.attrs["dilation"] for node in threes[-14:]] == [1, 2, 2, 2, 2, 2, 1, 2, 4, 4, 12, 24, 36, 1]
    assert all(node.attrs["pad"] == node.attrs["dilation"] and node.attrs["stride"] == 1 for node in threes[-14:])
