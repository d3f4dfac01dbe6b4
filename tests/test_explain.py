"""`netdsl summary --explain` and netdsl.explain: each layer's arithmetic, as the slides show it.

The slides' numbers are pinned (AlexNet's conv1, VGG-16's stacks of 3x3 convs), and for every layer
of every shipped network each printed formula must evaluate to the value printed beside it, and
that value must be what the op records' rules compute (shapes, weights, MACs, receptive field).
"""
from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from fractions import Fraction

import pytest
from hypothesis import given

import netdsl
from conftest import shipped_networks
from netdsl.cli import main
from netdsl.explain import explain_layer, explain_network, written_attributes
from netdsl.ops import ACTIVATIONS, OPS
from netdsl.testing import programs


# -- a small evaluator for the printed formulas (numbers, + - * / //, floor, ceil, max) ----------

_FUNCTIONS = {"floor": math.floor, "ceil": math.ceil, "max": max}
_OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
              ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: Fraction(a) / Fraction(b),
              ast.FloorDiv: lambda a, b: a // b}


def evaluate(formula: str):
    if " x " in formula:  # an im2col matrix: rows x columns
        return tuple(evaluate(part) for part in formula.split(" x "))

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
            return Fraction(_FUNCTIONS[node.func.id](*(value(a) for a in node.args)))
        raise AssertionError(f"not plain arithmetic: {ast.dump(node)}")
    return value(ast.parse(formula, mode="eval").body)


def lines_of(explanation) -> dict[str, list]:
    found: dict[str, list] = {}
    for line in explanation.lines:
        found.setdefault(line.quantity, []).append(line)
    return found


def only(explanation, quantity: str):
    (line,) = lines_of(explanation)[quantity]
    return line


# -- the slides' numbers -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def alexnet():
    return netdsl.load("alexnet", net="alexnet")


def test_alexnet_conv1_as_the_slides_work_it(alexnet):
    conv1 = explain_layer(alexnet, alexnet.graph.node("conv1").id)
    size = only(conv1, "size")
    assert (size.formula, size.value) == ("(227 + 2*0 - 11)/4 + 1", 55)
    assert size.note == "floor mode"
    params = only(conv1, "params")
    assert (params.formula, params.value) == ("11*11*3*96 + 96", 34944)
    macs = only(conv1, "MACs")
    assert (macs.formula, macs.value) == ("55*55*96 * 11*11*3", 105_415_200)
    im2col = only(conv1, "im2col")
    assert im2col.value == (363, 3025)
    text = conv1.text()
    assert "(227 + 2*0 - 11)/4 + 1 = 55" in text
    assert "11*11*3*96 + 96 = 34,944" in text
    assert "55*55*96 * 11*11*3 = 105,415,200" in text
    assert "[3*11*11 x 55*55] = [363 x 3025]" in text
    assert "1 + (11-1)*1 = 11" in text and "1*4 = 4" in text


def test_alexnet_receptive_field_grows_1_11_19(alexnet):
    by_name = {e.name: e for e in explain_network(alexnet)}
    assert only(by_name["input"], "rf").value == 1
    assert only(by_name["conv1"], "rf").value == 11
    pool1 = by_name["maxpool1"]
    assert only(pool1, "rf").formula == "11 + (3-1)*4" and only(pool1, "rf").value == 19
    assert only(pool1, "jump").formula == "4*2" and only(pool1, "jump").value == 8
    assert only(pool1, "size").formula == "(55 + 2*0 - 3)/2 + 1" and only(pool1, "size").value == 27


def test_alexnet_groups_show_in_params_macs_and_im2col(alexnet):
    conv2 = explain_layer(alexnet, alexnet.graph.node("conv2").id)
    assert only(conv2, "params").formula == "5*5*(96/2)*256 + 256"
    assert only(conv2, "params").value == 307_456
    assert only(conv2, "im2col").value == (1200, 729)
    assert "2 groups" in only(conv2, "im2col").note


def test_vgg16_conv1_1_and_stacked_3x3_receptive_fields():
    vgg = netdsl.load("vgg16")
    first, second = (explain_layer(vgg, i) for i in (1, 2))
    assert only(first, "params").formula == "3*3*3*64 + 64" and only(first, "params").value == 1792
    assert [only(e, "rf").value for e in (first, second)] == [3, 5]
    pad = only(first, "pad")  # conv3-64 writes no pad: the record derives it
    assert (pad.formula, pad.value) == ("1*(3-1)//2", 1) and "default" in pad.note
    stack = netdsl.parse("(conv3-64)*3", input="3x32x32")  # the slides: two 3x3 = 5x5, three = 7x7
    assert [only(explain_layer(stack, i), "rf").value for i in (1, 2, 3)] == [3, 5, 7]


# -- every number equals what the rules compute ---------------------------------------------------

def check_explanation(network) -> int:
    """Assert every line of every layer against the rules; returns the lines checked."""
    checked = 0
    for node, layer, explanation in zip(network.graph.nodes, network.stats.layers,
                                        explain_network(network)):
        found = lines_of(explanation)
        shape = network.shapes[node.id]
        text = explanation.text()
        for line in explanation.lines:
            if line.formula:
                assert evaluate(line.formula) == (line.value if isinstance(line.value, tuple)
                                                  else Fraction(line.value)), (node.name, line)
            assert line.text() in text
            checked += 1
        assert sum(l.value for l in found.get("params", [])) == layer.params, node.name
        assert sum(l.value for l in found.get("buffers", [])) == layer.buffers, node.name
        assert sum(l.value for l in found.get("MACs", [])) == layer.macs, node.name
        assert only(explanation, "rf").value == layer.rf, node.name
        assert only(explanation, "jump").value == layer.stride, node.name
        for line in found.get("size", []):
            assert line.value == shape[1] == shape[2], node.name
        for quantity, axis in (("height", 1), ("width", 2), ("channels", 0), ("features", 0)):
            for line in found.get(quantity, []):
                assert line.value == shape[axis], (node.name, quantity)
        for line in found.get("tokens", []):
            assert line.value == shape[0], node.name
        for line in found.get("pad", []) + found.get("pad_h", []) + found.get("pad_w", []) + found.get("stride", []):
            assert line.value == node.attrs[line.quantity], node.name
        for line in found.get("act", []):
            assert line.value == node.attrs["act"], node.name
        if node.op in ("conv", "deconv", "dwconv", "maxpool", "avgpool"):
            assert {"size"} <= set(found) or {"height", "width"} <= set(found), node.name
        if node.op == "conv":
            rows, columns = only(explanation, "im2col").value
            c_in, groups = network.shapes[node.inputs[0]][0], node.attrs["groups"]
            assert rows == c_in // groups * node.attrs["kh"] * node.attrs["kw"] and columns == shape[1] * shape[2]
            assert rows * columns * shape[0] == layer.macs  # the matrix product is the layer
        if OPS[node.op].takes_activation:
            assert "act" in found, node.name
    return checked


@pytest.mark.parametrize("path, name, _small", shipped_networks(inputs={}, default=None))
def test_every_number_explain_prints_is_what_the_rules_compute(path, name, _small):
    network = netdsl.load(path, net=name)
    assert check_explanation(network) >= 2 * len(network.graph.nodes)


@given(programs())
def test_every_number_explain_prints_is_what_the_rules_compute_on_generated_networks(program):
    # generated layers have every attribute: dilation, groups, ceil mode, padding, strides
    check_explanation(netdsl.parse(program.text))


EVERY_OP = """
input 3x16x16
activation tanh
net every = conv3-8(dilation=2) - bn - lrn(3) - relu - maxpool3/2(pad=1, ceil)
    - p: avgpool3/1(pad=1) - cat{ conv1-4 | conv3-4(act=lrelu) | id }
    - add{ conv3-16 - elu | id } - sigmoid - conv1x3-16 - dwconv3(multiplier=1)
    - u: deconv4-16/2 - crop(1, like=@p) - dropout(0.3) - layerscale - stochastic_depth(0.2) - ACTIVATIONS
    - mul{ id | gap - conv1-16 - sigmoid } - cat{ channels(0, 8) | channels(8, 16) - conv1-8 } - shuffle(2)
    - v: upsample(2, mode=bilinear) - maxpool2/2 - upsample(like=@v) - aux{ gap - fc3 }
    - adaptive_avgpool(3) - adaptive_maxpool(2) - gmp - gap
    - tokens - class_token - pos_embedding - attention(4) - fc16 - token(1) - flatten - fc10 - layerscale(0.5) - softmax
    - layernorm
"""


def test_every_op_record_explains_itself():
    network = netdsl.parse(EVERY_OP.replace("ACTIVATIONS", " - ".join(ACTIVATIONS)))
    assert {node.op for node in network.graph.nodes} == set(OPS), \
        "a new op: add it to EVERY_OP so its explain rule is checked"
    check_explanation(network)
    deconv = explain_layer(network, next(n.id for n in network.graph.nodes if n.op == "deconv"))
    assert (only(deconv, "jump").formula, only(deconv, "jump").value) == ("2/2", 1)
    upsampled = layer("deconv4-8/2 - conv3-8 - fc10", "conv1")  # a fractional jump after upsampling
    assert only(upsampled, "jump").value == Fraction(1, 2)
    assert only(upsampled, "rf").formula == "2 + (3-1)*(1/2)" and only(upsampled, "rf").value == 3


def test_a_non_square_kernel_is_explained_per_axis():
    conv = layer("conv1x7-192 - fc10", "conv1", input="3x17x17")
    assert [(l.quantity, l.formula, l.value) for l in conv.lines[:4]] == [
        ("pad_h", "1*(1-1)//2", 0), ("pad_w", "1*(7-1)//2", 3),
        ("height", "(17 + 2*0 - 1)/1 + 1", 17), ("width", "(17 + 2*3 - 7)/1 + 1", 17)]
    assert only(conv, "params").formula == "1*7*3*192 + 192"
    assert only(conv, "MACs").value == 17 * 17 * 192 * 7 * 3
    depthwise = layer("dwconv3/2(multiplier=2) - fc10", "dwconv1", input="4x8x8")
    assert (only(depthwise, "channels").formula, only(depthwise, "channels").value) == ("4*2", 8)
    assert only(depthwise, "params").value == 8 * 9 + 8
    adaptive = layer("adaptive_avgpool(3) - fc10", "adaptive_avgpool1", input="3x7x7")
    assert only(adaptive, "size").value == 3 and "floor(i*7/3)" in only(adaptive, "size").note


def layer(text: str, name: str, input: str = "3x32x32"):
    network = netdsl.parse(text, input=input)
    return explain_layer(network, network.graph.node(name).id)


def test_floor_mode_says_what_was_rounded_and_what_does_not_fit():
    conv = layer("conv3-8/2(pad=0) - fc10", "conv1")
    size = only(conv, "size")
    assert (size.formula, size.value) == ("floor((32 + 2*0 - 3)/2) + 1", 15)
    assert size.note == "floor mode: 29/2 rounds down; doesn't fit: the last 1 input row and column unused"
    tall = layer("conv3-8/2(pad=0) - fc10", "conv1", input="3x33x32")
    assert [(l.quantity, l.value) for l in tall.lines[:2]] == [("height", 16), ("width", 15)]
    assert "doesn't fit" not in tall.lines[0].note and "1 input column unused" in tall.lines[1].note


def test_ceil_mode_and_the_window_that_would_start_in_the_padding():
    pool = layer("maxpool3/2(ceil) - fc10", "maxpool1", input="3x112x112")
    size = only(pool, "size")
    assert (size.formula, size.value, size.note) == ("ceil((112 + 2*0 - 3)/2) + 1", 56,
                                                     "ceil mode: 109/2 rounds up")
    dropped = only(layer("maxpool2/2(pad=1, ceil) - fc10", "maxpool1", input="3x7x7"), "size")
    assert (dropped.formula, dropped.value) == ("ceil((7 + 2*1 - 2)/2) + 1 - 1", 4)
    assert "start in the padding" in dropped.note
    stride = only(layer("maxpool3 - fc10", "maxpool1"), "stride")
    assert stride.value == 3 and "default" in stride.note


def test_which_activation_rule_applied():
    def act(text: str, name: str) -> str:
        return only(layer(text, name), "act").note
    assert act("conv3-8 - fc10", "conv1") == "the net's implicit activation, fused into the layer"
    assert act("conv3-8 - fc10", "fc1") == ("no implicit activation: an output layer, no weight layer "
                                            "follows it")
    assert act("conv3-8(act=tanh) - fc10", "conv1") == "written: act=tanh, fused into the layer"
    assert act("conv3-8 - tanh - fc10", "conv1") == "no implicit activation: an explicit tanh follows"
    assert act("conv3-8 - bn - fc10", "conv1").startswith("the implicit relu goes after the bn")
    assert act("conv3-8 - bn - fc10", "bn1").startswith("the implicit activation of the layer before")
    assert act("activation none\nconv3-8 - fc10", "conv1").endswith("the net's activation is none")
    assert "pad" not in lines_of(layer("conv3-8(pad=0) - fc10", "conv1"))  # written: not a default


def test_written_attributes_read_the_layers_own_text():
    assert written_attributes("conv3-64", "conv") == {"k", "c"}
    assert written_attributes("conv3-64/2(pad=0, act=relu)", "conv") == {"k", "c", "stride", "pad", "act"}
    assert written_attributes("maxpool(3, 2, ceil)", "maxpool") == {"k", "stride", "ceil"}
    assert written_attributes("pool", "maxpool") == {"k", "stride"}  # the alias's presets
    assert written_attributes("conv3-64", "fc") is None


# -- the command ----------------------------------------------------------------------------------

def test_summary_explain_prints_formulas_under_each_row(capsys):
    assert main(["summary", "alexnet:alexnet"]) == 0
    plain = capsys.readouterr().out
    assert main(["summary", "alexnet:alexnet", "--explain"]) == 0
    explained = capsys.readouterr().out
    lines = explained.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("conv1 "))
    assert "34,944" in lines[at] and "(227 + 2*0 - 11)/4 + 1 = 55" in lines[at + 1]
    assert any("[363 x 3025]" in line for line in lines[at:at + 8])
    # the table itself is unchanged: dropping the explanation lines gives the plain summary
    table = [line for line in lines if not line.startswith("    ") or not line.strip()[:1].isalpha()
             or line.split()[0] not in ("out", "params", "MACs", "im2col", "rf", "jump", "act",
                                        "pad", "stride", "buffers", "channels", "features")]
    assert "\n".join(table) + "\n" == plain
    assert "(227 + 2*0 - 11)" not in plain


def test_summary_explain_json_carries_the_lines(capsys):
    assert main(["summary", "alexnet:alexnet", "--explain", "--json"]) == 0
    layers = {layer["name"]: layer for layer in json.loads(capsys.readouterr().out)["layers"]}
    im2col = next(l for l in layers["conv1"]["explain"] if l["quantity"] == "im2col")
    assert im2col["value"] == [363, 3025] and im2col["formula"] == "3*11*11 x 55*55"


def test_summary_explain_does_not_import_torch():
    code = ("import sys; from netdsl.cli import main; "
            "assert main(['summary', 'alexnet:alexnet', '--explain']) == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "105,415,200" in result.stdout
