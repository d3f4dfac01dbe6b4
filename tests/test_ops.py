"""The op records: each is complete by construction (every rule is a required field), and these
tests check that the rules are real for every op, not placeholders: each rule runs on a sample
network containing the op and gives the value a hand computation gives."""
import pytest

import netdsl
from netdsl import ops
from netdsl.ops import OPS

#: One small network per op, and what the op's rules must give there:
#: (program, node, output shape, params, MACs, receptive field, counts as activation).
SAMPLES = {
    "input": ("input 3x8x8\nrelu", "input", (3, 8, 8), 0, 0, 1, True),
    "conv": ("input 3x8x8\nconv3-4/2", "conv1", (4, 4, 4), 3 * 4 * 9 + 4, 4 * 4 * 4 * 3 * 9, 3, True),
    "deconv": ("input 2x4x4\ndeconv4-3/2", "deconv1", (3, 8, 8), 2 * 3 * 16 + 3, 2 * 16 * 3 * 16, 2, True),
    "maxpool": ("input 3x8x8\nmaxpool3/2", "maxpool1", (3, 3, 3), 0, 0, 3, True),
    "avgpool": ("input 3x8x8\navgpool2", "avgpool1", (3, 4, 4), 0, 0, 2, True),
    "gap": ("input 3x8x8\ngap", "gap1", (3, 1, 1), 0, 0, 8, True),
    "fc": ("input 3x2x2\nfc5", "fc1", (5,), 12 * 5 + 5, 12 * 5, 2, True),
    "bn": ("input 3x8x8\nbn", "bn1", (3, 8, 8), 6, 0, 1, False),
    "lrn": ("input 3x8x8\nlrn(3)", "lrn1", (3, 8, 8), 0, 0, 1, False),
    "dropout": ("input 3x8x8\ndropout", "dropout1", (3, 8, 8), 0, 0, 1, False),
    "relu": ("input 3x8x8\nrelu", "relu1", (3, 8, 8), 0, 0, 1, False),
    "tanh": ("input 3x8x8\ntanh", "tanh1", (3, 8, 8), 0, 0, 1, False),
    "sigmoid": ("input 3x8x8\nsigmoid", "sigmoid1", (3, 8, 8), 0, 0, 1, False),
    "lrelu": ("input 3x8x8\nlrelu", "lrelu1", (3, 8, 8), 0, 0, 1, False),
    "elu": ("input 3x8x8\nelu", "elu1", (3, 8, 8), 0, 0, 1, False),
    "hardswish": ("input 3x8x8\nhardswish", "hardswish1", (3, 8, 8), 0, 0, 1, False),
    "relu6": ("input 3x8x8\nrelu6", "relu6_1", (3, 8, 8), 0, 0, 1, False),
    "hardsigmoid": ("input 3x8x8\nhardsigmoid", "hardsigmoid1", (3, 8, 8), 0, 0, 1, False),
    "silu": ("input 3x8x8\nsilu", "silu1", (3, 8, 8), 0, 0, 1, False),
    "gelu": ("input 3x8x8\ngelu", "gelu1", (3, 8, 8), 0, 0, 1, False),
    "gelu_tanh": ("input 3x8x8\ngelu_tanh", "gelu_tanh1", (3, 8, 8), 0, 0, 1, False),
    "layerscale": ("input 3x8x8\nlayerscale(0.5)", "layerscale1", (3, 8, 8), 3, 0, 1, False),
    "stochastic_depth": ("input 3x8x8\nstochastic_depth(0.2)", "stochastic_depth1", (3, 8, 8), 0, 0, 1, False),
    "softmax": ("input 3x8x8\nsoftmax", "softmax1", (3, 8, 8), 0, 0, 1, False),
    "flatten": ("input 3x8x8\nflatten", "flatten1", (192,), 0, 0, 1, False),
    "crop": ("input 3x8x8\na: id - conv3-2(pad=2) - crop(1, like=@a)", "crop1", (2, 8, 8), 0, 0, 3, False),
    "concat": ("input 3x8x8\ncat{ conv1-2 | id }", "cat1", (5, 8, 8), 0, 0, 1, True),
    "add": ("input 3x8x8\nadd{ conv1-3 | id }", "add1", (3, 8, 8), 0, 0, 1, True),
    "dwconv": ("input 4x8x8\ndwconv3/2", "dwconv1", (4, 4, 4), 4 * 9 + 4, 4 * 4 * 4 * 9, 3, True),
    "adaptive_avgpool": ("input 3x8x8\nadaptive_avgpool(3)", "adaptive_avgpool1", (3, 3, 3), 0, 0, 8, True),
    "adaptive_maxpool": ("input 3x7x7\nadaptive_maxpool(2)", "adaptive_maxpool1", (3, 2, 2), 0, 0, 7, True),
    "gmp": ("input 3x8x8\ngmp", "gmp1", (3, 1, 1), 0, 0, 8, True),
    "mul": ("input 4x8x8\nmul{ gap - conv1-4 - sigmoid | id }", "mul1", (4, 8, 8), 0, 0, 8, True),
    "channels": ("input 6x8x8\nconv3-6 - channels(2, 5)", "channels1", (3, 8, 8), 0, 0, 3, False),
    "shuffle": ("input 6x8x8\nconv3-6 - shuffle(3)", "shuffle1", (6, 8, 8), 0, 0, 3, True),
    "upsample": ("input 3x4x4\nconv3-3/2 - upsample(2, mode=bilinear)", "upsample1", (3, 4, 4), 0, 0, 5, True),
    "aux": ("input 3x8x8\naux{ conv3-2 } - relu", "aux1", (2, 8, 8), 0, 0, 3, False),
    "tokens": ("input 3x2x2\ntokens", "tokens1", (4, 3), 0, 0, 1, False),
    "class_token": ("input 3x2x2\ntokens - class_token", "class_token1", (5, 3), 3, 0, 1, False),
    "pos_embedding": ("input 3x2x2\ntokens - pos_embedding", "pos_embedding1", (4, 3), 4 * 3, 0, 1, False),
    # T=6 tokens of D=4: 4*D*D + 4*D params; 4*T*D*D + 2*T*T*D MACs; the whole 2x3 grid, taken as
    # isqrt(6) = 2 on a side
    "attention": ("input 4x2x3\ntokens - attention(2)", "attention1", (6, 4), 4 * 16 + 4 * 4,
                  4 * 6 * 16 + 2 * 36 * 4, 2, True),
    "token": ("input 3x2x2\ntokens - token(1)", "token1", (3,), 0, 0, 1, False),
    "layernorm": ("input 3x8x8\nconv3-5 - layernorm(1e-6)", "layernorm1", (5, 8, 8), 10, 0, 3, False),
}


def test_every_op_has_a_sample():
    assert set(SAMPLES) == set(OPS)


@pytest.mark.parametrize("op", list(SAMPLES))
def test_the_rules_of_each_op(op):
    text, name, shape, params, macs, rf, counts = SAMPLES[op]
    net = netdsl.parse(text)
    node = net.graph.node(name)
    assert node.op == op
    layer = net.stats.layers[node.id]
    assert layer.shape == shape
    assert layer.params == params
    assert layer.macs == macs
    assert layer.rf == rf
    assert (layer.activations > 0) == counts
    assert OPS[op].notation(node.attrs)  # every op can be written in slide notation


def test_positional_arguments_name_attributes():
    for spec in OPS.values():
        assert set(spec.positional) <= set(spec.attr_names), spec.name


def test_aliases_name_real_ops_and_attributes():
    for alias, (op, preset) in ops.ALIASES.items():
        assert set(preset) <= set(OPS[op].attr_names), alias


def test_merge_words_parse_and_print_back():
    for word, op in ops.MERGE_WORDS.items():
        net = netdsl.parse(f"input 3x4x4\n{word}{{ id | relu }}")
        assert net.graph.output.op == op
        assert f"{OPS[op].merge_word}{{" in net.expand()


def test_only_the_input_has_no_generator():
    assert [op.name for op in OPS.values() if op.generate is None] == ["input"]


def test_non_square_layers_per_axis_and_their_receptive_field_bound():
    net = netdsl.parse("input 3x17x17\nconv1x7-8 - conv7x1-8(stride_w=2) - dwconv1x3(multiplier=2)")
    first, second, third = (net.stats.layers[i] for i in (1, 2, 3))
    assert (first.shape, first.params, first.macs) == ((8, 17, 17), 8 * 3 * 7 + 8, 17 * 17 * 8 * 3 * 7)
    assert (second.shape, second.params) == ((8, 17, 9), 8 * 8 * 7 + 8)
    assert (third.shape, third.params, third.macs) == ((16, 17, 9), 16 * 3 + 16, 16 * 17 * 9 * 3)
    assert [layer.rf for layer in (first, second)] == [7, 13]  # docs/language.md: an upper bound
    assert net.graph.nodes[1].attrs["k"] is None and net.graph.nodes[2].attrs["stride"] is None
