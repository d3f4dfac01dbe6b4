"""Semantics of the language: names, implicit activations, labels, definitions, files, round trip."""
import re
import time

import pytest

import netdsl
from conftest import NETWORKS
from netdsl import Limits


def ops(net):
    return [(n.name, n.op, n.attrs.get("act")) for n in net.graph if n.op != "input"]


# -- names ------------------------------------------------------------------------------------------

def test_names_follow_definition_calls():
    net = netdsl.load("vgg16")
    names = [n.name for n in net.graph]
    assert names[:4] == ["input", "block1.conv1", "block1.conv2", "block1.maxpool1"]
    assert "block5.conv3" in names and names[-1] == "fc3"


def test_names_in_residual_blocks_are_stable_paths():
    net = netdsl.load("resnet:resnet50")
    names = {n.name for n in net.graph}
    assert "stage2.bottleneck_down1.add1.b1.cbr2.conv1" in names  # the strided 3x3 of stage 2
    assert "stage2.bottleneck_down1.add1.b2.cb1.conv1" in names  # its projection shortcut
    assert "stage4.bottleneck2.relu1" in names


def test_auto_names_skip_names_taken_by_labels():
    net = netdsl.parse("conv2: conv3-8 - conv3-8", input="3x8x8")
    assert [n.name for n in net.graph][1:] == ["conv2", "conv3"]


def test_repeats_share_the_scope():
    net = netdsl.parse("(conv3-8 - relu)*2 - fc10", input="3x8x8", )
    assert [n.name for n in net.graph][1:] == ["conv1", "relu1", "conv2", "relu2", "fc1"]


# -- implicit activations -----------------------------------------------------------------------------

def test_every_hidden_weight_layer_gets_the_activation_and_the_output_layer_none():
    net = netdsl.parse("conv3-8 - pool - fc20 - dropout - fc10", input="3x8x8")
    assert ops(net) == [("conv1", "conv", "relu"), ("maxpool1", "maxpool", None),
                        ("fc1", "fc", "relu"), ("dropout1", "dropout", None), ("fc2", "fc", "none")]


def test_bn_after_a_conv_takes_the_activation():
    net = netdsl.parse("conv3-8(bias=false) - bn - conv3-8 - fc10", input="3x8x8")
    assert ops(net)[:3] == [("conv1", "conv", "none"), ("bn1", "bn", "relu"), ("conv2", "conv", "relu")]


def test_an_explicit_activation_replaces_the_implicit_one():
    net = netdsl.parse("conv3-8 - tanh - conv3-8 - bn - relu - fc10", input="3x8x8")
    assert [a for _, op, a in ops(net) if op in ("conv", "bn")] == ["none", "none", "none"]


def test_act_argument_overrides_and_opts_out():
    net = netdsl.parse("conv3-8(act=none) - conv3-8(act=tanh) - fc10(act=sigmoid)", input="3x8x8")
    assert [a for _, _, a in ops(net)] == ["none", "tanh", "sigmoid"]


def test_activation_setting_per_file_and_per_net():
    text = "activation tanh\ninput 3x8x8\nnet a = conv3-8 - fc10\nnet b activation none = conv3-8 - fc10"
    a, b = netdsl.parse_all(text)
    assert [x for _, _, x in ops(a)] == ["tanh", "none"]
    assert [x for _, _, x in ops(b)] == ["none", "none"]


def test_output_layers_through_merges_get_no_activation():
    net = netdsl.parse("conv3-8 - cat{ conv1-4 | conv1-4 }", input="3x8x8")
    assert [a for _, op, a in ops(net) if op == "conv"] == ["relu", "none", "none"]


def test_a_layer_read_twice_keeps_its_activation():
    net = netdsl.parse("x: conv3-8 - bn - add{ id | @x } - fc10", input="3x8x8")
    assert ops(net)[:2] == [("x", "conv", "relu"), ("bn1", "bn", "none")]


def test_a_layer_whose_value_reaches_the_output_directly_is_an_output_layer():
    net = netdsl.parse("x: conv3-8 - bn - add{ id | @x }", input="3x8x8")
    assert ops(net)[0] == ("x", "conv", "none")


# -- labels and references ------------------------------------------------------------------------------

def test_references_start_branches_from_labels_and_the_input():
    net = netdsl.parse("a: conv3-8 - conv3-8 - add{ id | @a } - cat{ id | @input }", input="3x8x8")
    graph = net.graph
    add = next(n for n in graph if n.op == "add")
    assert [graph[i].name for i in add.inputs] == ["conv2", "a"]
    assert net.output_shape == (11, 8, 8)


def test_dotted_references_reach_into_named_scopes():
    text = "def body = conv3-8 - p: pool - conv3-8\nf: body - add{ id | @f.p - conv1-8 }"
    net = netdsl.parse(text, input="3x8x8")
    conv = net.graph.node("add1.b2.conv1")
    assert net.graph[conv.inputs[0]].name == "f.p"


def test_labels_inside_a_definition_are_local_to_its_call():
    with pytest.raises(netdsl.NetDSLNameError, match="unknown label @p"):
        netdsl.parse("def body = p: conv3-8\nbody - add{ id | @p }", input="3x8x8")


# -- definitions and expressions ------------------------------------------------------------------------

def test_definitions_with_defaults_keywords_and_arithmetic():
    text = "def b(c, k=3, s=1) = conv(k=k, c=c, stride=s) - conv1-{4*c} - fc{c // 2 + c % 3}\nb(8, s=2)"
    net = netdsl.parse(text, input="3x16x16")
    convs = [n for n in net.graph if n.op == "conv"]
    assert [(c.attrs["k"], c.attrs["c"], c.attrs["stride"]) for c in convs] == [(3, 8, 2), (1, 32, 1)]
    assert net.output_shape == (4 + 2,)


def test_repeat_counts_are_expressions_and_zero_is_identity():
    net = netdsl.parse("def s(n) = conv3-8*(n-1)\ns(1) - s(3) - fc10*0", input="3x8x8")
    assert [n.op for n in net.graph] == ["input", "conv", "conv"]


def test_slide_notation_and_keyword_form_are_the_same():
    a = netdsl.parse("conv7-64/2 - maxpool3/2(pad=1, ceil) - fc10", input="3x64x64")
    b = netdsl.parse("conv(k=7, c=64, stride=2, pad=3) - maxpool(k=3, stride=2, pad=1, ceil=true) - fc(c=10)",
                     input="3x64x64")
    assert a.graph.structure() == b.graph.structure()


def test_positional_arguments_of_ops():
    net = netdsl.parse("dropout(0.3) - lrelu(0.2) - elu(2.0) - fc10", input="8")
    attrs = [dict(n.attrs) for n in net.graph][1:4]
    assert attrs == [{"p": 0.3}, {"slope": 0.2}, {"alpha": 2.0}]


def test_merges_concatenate_and_add():
    net = netdsl.load("googlenet:googlenet")
    first = next(n for n in net.graph if n.op == "concat")
    assert [net.shapes[i][0] for i in first.inputs] == [64, 128, 32, 32]


def test_several_nets_need_a_choice():
    text = (NETWORKS / "vgg.net").read_text()
    count = len(netdsl.parse_all(text))
    with pytest.raises(netdsl.NetDSLNameError, match=f"vgg.net defines {count} nets \\(A, A_LRN, B"):
        netdsl.parse(text, path="vgg.net")
    assert netdsl.load(NETWORKS / "vgg.net", net="A").params == 132_863_336
    assert netdsl.load("vgg:A").params == 132_863_336


def test_input_override():
    net = netdsl.load("resnet50", input="3x32x32")
    assert net.input_shape == (3, 32, 32) and net.output_shape == (1000,)
    assert netdsl.load("resnet50", input=(3, 64, 64)).shapes[1] == (64, 32, 32)


# -- use ------------------------------------------------------------------------------------------------

def test_use_imports_definitions_beside_the_file_and_shipped(tmp_path):
    (tmp_path / "lib.net").write_text("def twice(c) = conv3-c*2")
    main = tmp_path / "main.net"
    main.write_text('use "lib.net"\nuse "resnet.net"\ninput 3x32x32\ntwice(8) - stem - fc10')
    net = netdsl.load(main)
    assert [n.name for n in net.graph][1:3] == ["twice1.conv1", "twice1.conv2"]


@pytest.mark.parametrize("path,message", [
    ("/etc/passwd", "use takes a relative path to a .net file"),
    ("../x.net", "use cannot leave the importing file's folder ('..')"),
    ("notes.txt", "use reads only .net files"),
    ("missing.net", "cannot find missing.net"),
])
def test_use_refuses_other_files(tmp_path, path, message):
    main = tmp_path / "main.net"
    main.write_text(f'use "{path}"\ninput 3x8x8\nconv3-8')
    with pytest.raises(netdsl.NetDSLNameError) as error:
        netdsl.load(main)
    assert error.value.message == message
    assert (error.value.line, error.value.column) == (1, 5)


def test_use_cycles_are_errors(tmp_path):
    (tmp_path / "a.net").write_text('use "b.net"\ndef x = relu')
    (tmp_path / "b.net").write_text('use "a.net"\ndef y = relu')
    with pytest.raises(netdsl.NetDSLNameError, match="use cycle: a.net -> b.net -> a.net"):
        netdsl.load(tmp_path / "a.net")


# -- expand round trip ----------------------------------------------------------------------------------

def _all_shipped():
    for path in sorted(NETWORKS.glob("*.net")):
        for net in netdsl.parse_all(path.read_text(), path=str(path)):
            yield pytest.param(str(path), net.name, id=f"{path.stem}:{net.name}")


@pytest.mark.parametrize("path,name", list(_all_shipped()))
def test_expand_parses_back_to_the_same_ir_and_is_a_fixed_point(path, name):
    net = netdsl.load(path, net=name)
    text = net.expand()
    again = netdsl.parse(text, path="expanded.net")
    assert again.graph.structure() == net.graph.structure()
    assert again.shapes == net.shapes
    assert again.expand().splitlines()[1:] == text.splitlines()[1:]  # line 0 names the source


# -- limits: bad input stays cheap ----------------------------------------------------------------------

def _fails_fast(text, error=netdsl.NetDSLLimitError, limits=Limits(), **kwargs):
    start = time.process_time()  # CPU time: other processes cannot inflate it
    with pytest.raises(error) as caught:
        netdsl.parse(text, input="3x8x8", limits=limits, **kwargs)
    assert time.process_time() - start < 1.0
    return caught.value


def test_deep_nesting_is_refused_before_parsing():
    error = _fails_fast("(" * 100_000 + "relu" + ")" * 100_000)
    assert error.message == "brackets nested more than 64 deep"


def test_deep_but_allowed_nesting_does_not_hit_the_recursion_limit():
    net = netdsl.parse("(" * 64 + "conv3-8" + ")" * 64, input="3x8x8")
    assert net.output_shape == (8, 8, 8)


def test_deeply_nested_definition_calls():
    defs = "\n".join(f"def d{i} = d{i - 1}" for i in range(1, 200))
    error = _fails_fast("def d0 = relu\n" + defs + "\nd199")
    assert error.message == "definition calls nested more than 64 deep"


def test_repeat_bombs_stop_at_the_node_limit():
    error = _fails_fast("[[[conv3-8*1000]*1000]*1000]")
    assert error.message == "the network expands to more than 100,000 nodes"


def test_empty_repeat_bombs_stop_at_the_step_limit():
    error = _fails_fast("[[[id*0]*10000]*10000]*10000")
    assert error.message == "expansion takes more than 1,000,000 steps"


def test_huge_repeat_count():
    assert _fails_fast("relu*99999999").message == "repeat count 99,999,999 is over the limit of 10,000"


def test_huge_tensors():
    error = _fails_fast("conv3-999999 - conv3-999999")
    assert "over the limit of 2,147,483,647" in error.message


def test_source_size_limit():
    error = _fails_fast("relu - " * 10 + "relu", limits=Limits(max_source_chars=20))
    assert error.message == "source is 74 characters, over the limit of 20"


def test_recursion_is_an_error():
    with pytest.raises(netdsl.NetDSLNameError, match=r"definition a calls itself \(a -> b -> a\)"):
        netdsl.parse("def a = b\ndef b = a\na", input="3x8x8")


def test_a_bad_argument_inside_a_definition_names_the_calls_that_led_there():
    text = "def block(c) = conv3-c\ndef stage(c) = block(c)*2\nstage(2000000)"
    with pytest.raises(netdsl.NetDSLLimitError) as caught:
        netdsl.parse(text, input="3x8x8")
    assert caught.value.notes == ("in block(2000000) at <string>:2:16",
                                  "in repeat iteration 1 of 2 at <string>:2:16",
                                  "in stage(2000000) at <string>:3:1",
                                  "raise Limits.max_dimension to accept it")


@pytest.mark.parametrize("text", ["conv3-8 - fc10", "conv3-8 - @nowhere"])
def test_the_garbage_collector_is_paused_only_while_building(text):
    import gc
    assert gc.isenabled()
    try:
        netdsl.parse(text, input="3x8x8")
    except netdsl.NetDSLError:
        pass
    assert gc.isenabled()
    gc.disable()  # a caller's choice is left alone
    try:
        try:
            netdsl.parse(text, input="3x8x8")
        except netdsl.NetDSLError:
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_network_weights_is_a_deprecated_name_for_weight_specs():
    net = netdsl.load("lenet5")
    with pytest.warns(DeprecationWarning, match="weight_specs"):
        old = net.weights
    assert old == net.weight_specs and old[0].name == "conv1.weight"


def test_integer_functions_follow_torchvisions_width_rounding_and_python():
    def channels(expr):
        return netdsl.parse(f"conv1-{{{expr}}}", input="3x4x4").output_shape[0]
    # torchvision's _make_divisible: MobileNet-v2's first conv at width 0.75, 1.4 and 0.35
    assert [channels(f"make_divisible(32 * {w}, 8)") for w in (0.75, 1.4, 0.5, 0.35)] == [24, 48, 16, 16]
    assert channels("make_divisible(1280 * 1.4, 8)") == 1792
    # least 2: int(3 + 4)//8*8 = 0, raised to 2, below 90% of 3, so one step of 8 up
    assert channels("make_divisible(3, 8, 2)") == 10
    assert [channels("ceil(3 * 1.1)"), channels("floor(3.9)"), channels("ceildiv(7, 2)"),
            channels("min(9, 4, 6)"), channels("max(2, 5 - 1)")] == [4, 3, 4, 4, 4]
    net = netdsl.parse("def b(n) = conv1-2*(ceil(n * 1.2))\nnet a input 3x4x4 = b(3)")
    assert len(net.graph.nodes) == 1 + 4


# -- true division and indexed repeats ---------------------------------------------------------------

def drop_rates(net):
    return [n.attrs["p"] for n in net.graph if n.op in ("dropout", "stochastic_depth")]


def test_true_division_gives_pythons_decimal_and_binds_like_multiplication():
    net = netdsl.parse("dropout(1/4) - dropout(3/4/3) - dropout(2*3/8) - dropout(1 - 3/4) - dropout(-1/-5)"
                       " - dropout(0.1*7/17) - dropout(7 // 2 / 7) - dropout(1/3)", input="8")
    assert drop_rates(net) == [0.25, 0.25, 0.75, 0.25, 0.2, 0.1 * 7 / 17, 3 / 7, 1 / 3]
    assert 0.1 * 7 / 17 != 0.1 * (7 / 17)  # left to right, as Python: (0.1*7)/17, torchvision's order


def test_slash_in_slide_notation_is_still_the_stride():
    text = "def f(c, s) = conv3-c/s - conv1-{c // 2}/{s} - maxpool3/2 - avgpool2/1 - deconv2-c/2 - dwconv3/2\nf(8, 2)"
    net = netdsl.parse(text, input="3x32x32")
    strides = [(n.op, n.attrs.get("stride")) for n in net.graph][1:]
    assert strides == [("conv", 2), ("conv", 2), ("maxpool", 2), ("avgpool", 1), ("deconv", 2), ("dwconv", 2)]
    assert net.graph.node("f1.conv2").attrs["c"] == 4


@pytest.mark.parametrize("text", ["conv(k=3, c=8, stride=4/2)", "conv3-{16/2}", "relu*(4/2)",
                                  "conv(k=3, c=8, stride=2.0)"])
def test_a_decimal_from_division_is_not_a_whole_number_even_when_exact(text):
    # as 2.0 always was: a whole number is written whole, or made by //
    with pytest.raises(netdsl.NetDSLNameError, match=r"must be a whole number, got 2\.0|got 8\.0") as error:
        netdsl.parse(text, input="3x8x8")
    assert any("4//2 is 2" in note for note in error.value.notes)
    netdsl.parse(text.replace("/", "//").replace("2.0", "2"), input="3x8x8")


@pytest.mark.parametrize("text,column", [("dropout(1/0)", 9), ("def f(n) = dropout(0.5/(n - 2))\nf(2)", 20)])
def test_true_division_by_zero_is_an_error_at_the_division(text, column):
    with pytest.raises(netdsl.NetDSLNameError, match="division by zero") as error:
        netdsl.parse(text, input="8")
    assert error.value.span.location().endswith(f":1:{column}")


def test_an_indexed_repeat_gives_each_iteration_its_index_from_zero():
    net = netdsl.parse("dropout(i/10)*4 for i - fc{3 + k}*2 for k", input="8")
    assert drop_rates(net) == [0.0, 0.1, 0.2, 0.3]
    assert net.output_shape == (4,) and [n.attrs["c"] for n in net.graph if n.op == "fc"] == [3, 4]


def test_an_indexed_repeat_names_its_layers_as_the_plain_repeat_does():
    definitions = "def block(c, p) = add{ conv3-c - bn - stochastic_depth(p) | id } - relu\n"
    indexed = netdsl.parse(definitions + "conv3-8 - s: block(8, 0.3*i/3)*3 for i - block(8, 0.5)", input="3x8x8")
    plain = netdsl.parse(definitions + "conv3-8 - s: block(8, 0.1)*3 - block(8, 0.5)", input="3x8x8")
    assert [n.name for n in indexed.graph] == [n.name for n in plain.graph]
    assert "s.block3.add1.b1.stochastic_depth1" in [n.name for n in indexed.graph]
    assert drop_rates(indexed) == [0.0, 0.3 / 3, 0.3 * 2 / 3, 0.5]
    assert indexed.params == plain.params


def test_indexed_repeats_nest_and_reach_into_definitions_through_arguments():
    text = ("def row(j, n) = dropout((j*n + i)/100)*n for i\n"
            "row(j, 3)*2 for j - (if i == 1 then fc5 else fc6)*3 for i - fc{1 + 1}*0 for i")
    net = netdsl.parse(text, input="8")
    assert drop_rates(net) == [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]
    assert [n.attrs["c"] for n in net.graph if n.op == "fc"] == [6, 5, 6]
    assert [n.name for n in net.graph][1:4] == ["row1.dropout1", "row1.dropout2", "row1.dropout3"]


@pytest.mark.parametrize("text,message,column", [
    ("def f(i) = relu*2 for i\nf(1)", "the repeat index i would hide the i already defined here", 23),
    ("(relu*2 for i)*2 for i", "the repeat index i would hide the i already defined here", 13),
    ("relu*2 for in_channels", "the repeat index cannot be called in_channels", 12),
    ("relu*2 for pool", "pool is a reserved word and cannot be a repeat index", 12),
    ("dropout(i/10)*2 for i - dropout(i/10)", "unknown name i", 33),
])
def test_indexed_repeat_mistakes_are_errors_at_their_place(text, message, column):
    with pytest.raises(netdsl.NetDSLNameError, match=re.escape(message)) as error:
        netdsl.parse(text, input="8")
    assert error.value.span.location().endswith(f":1:{column}")


def test_for_is_a_keyword_only_after_a_repeat_count():
    # `for` ends a repeat; a name that contains it is a name
    net = netdsl.parse("def form(c) = fc{c}\nform(4) - dropout(0.5)*2", input="8")
    assert net.output_shape == (4,)
    with pytest.raises(netdsl.NetDSLSyntaxError):
        netdsl.parse("relu*2 for", input="8")
    with pytest.raises(netdsl.NetDSLSyntaxError):
        netdsl.parse("relu for i", input="8")


def test_an_indexed_repeat_bomb_is_refused_before_expanding():
    # iterations that do not read the index are sized once; those that do, until over the limit
    error = _fails_fast("(fc{1 + i}*10000 for i)*10000 for j")
    assert error.message == "the network expands to more than 100,000 nodes"
    assert "it would have 100,000,001 nodes" in error.notes
    error = _fails_fast("(fc{1 + i + j}*10000 for i)*10000 for j")
    assert error.message == "the network expands to more than 100,000 nodes"
    assert "it would have at least 110,001 nodes" in error.notes


@pytest.mark.parametrize("text,message", [
    ("conv1-{mak(3, 8)}", "unknown function mak"),
    ("conv1-{min(3)}", "min takes 2 to 16 arguments, got 1"),
    ("conv1-{ceildiv(3, 0)}", "ceildiv: division by zero"),
    ("conv1-{make_divisible(3, 0)}", "make_divisible: the divisor must be positive"),
    ("def f(c, t) = conv1-{c * t}\nnet a = f(2, @input)", "t is a tensor (@input), not a number"),
])
def test_function_and_reference_argument_mistakes_are_errors(text, message):
    with pytest.raises(netdsl.NetDSLError, match=re.escape(message)):
        netdsl.parse(text, input="3x4x4")


def test_a_definition_takes_a_reference_and_unet_written_with_it_is_the_labelled_form():
    labelled = netdsl.parse("""
input 1x188x188
activation none
def convs(c) = (conv3-c(pad=0) - relu)*2
def down(c) = maxpool2/2 - convs(c)
net unet = s1: convs(64) - s2: down(128) - s3: down(256) - s4: down(512) - down(1024)
    - u4: deconv2-512/2 - cat{ @s4 - crop(center, like=@u4) | id } - convs(512)
    - u3: deconv2-256/2 - cat{ @s3 - crop(center, like=@u3) | id } - convs(256)
    - u2: deconv2-128/2 - cat{ @s2 - crop(center, like=@u2) | id } - convs(128)
    - u1: deconv2-64/2 - cat{ @s1 - crop(center, like=@u1) | id } - convs(64) - conv1-2
""")
    shipped = netdsl.load("unet", input="1x188x188")
    assert [n.op for n in shipped.graph.nodes] == [n.op for n in labelled.graph.nodes]
    assert [n.inputs for n in shipped.graph.nodes] == [n.inputs for n in labelled.graph.nodes]
    assert shipped.shapes == labelled.shapes and shipped.params == labelled.params == 31_030_658
    assert "up1.u" in [n.name for n in shipped.graph.nodes]  # the call's own label, in its scope


# -- choosing a block's form, and reading the input's channel count (docs/language.md, section 7) --

INVERTED_RESIDUAL = """
input 3x32x32
activation none
def cbr(k, c, s=1, g=1) = conv(k=k, c=c, stride=s, groups=g, bias=false) - bn - relu6
def inverted(o, s, e) = (if e != 1 then cbr(1, in_channels * e))
    - cbr(3, in_channels * e, s, in_channels * e) - conv1-o(bias=false) - bn
def block(o, s, e=6) = if s == 1 and in_channels == o then add{ inverted(o, s, e) | id }
    else inverted(o, s, e)
"""


def test_a_block_reads_its_input_channels_and_picks_its_residual_form():
    net = netdsl.parse(INVERTED_RESIDUAL + "net a = cbr(3, 32, 2) - block(16, 1, 1) - block(24, 2)"
                       " - block(24, 1)*2 - block(32, 1)")
    names = [node.name for node in net.graph.nodes]
    # e == 1: no expansion conv; the first 24-wide block halves the size: no residual
    assert "block1.inverted1.cbr1.conv1" in names and "block1.inverted1.cbr2.conv1" not in names
    assert not any(name.startswith("block2.add") for name in names)
    # the two repeated 24 -> 24 blocks are residual; the 24 -> 32 one is not
    assert sum(node.op == "add" for node in net.graph.nodes) == 2
    assert [n.name for n in net.graph.nodes if n.op == "add"] == ["block3.add1", "block4.add1"]
    assert not any(name.startswith("block5.add") for name in names)
    # the expansion convs are in_channels * 6 wide: 16 * 6, then 24 * 6 in each repeat
    expansion = {node.name: net.shapes[node.id][0] for node in net.graph.nodes
                 if node.name.endswith("inverted1.cbr1.conv1")}
    assert expansion == {"block1.inverted1.cbr1.conv1": 32, "block2.inverted1.cbr1.conv1": 96,
                         "block3.add1.b1.inverted1.cbr1.conv1": 144,
                         "block4.add1.b1.inverted1.cbr1.conv1": 144,
                         "block5.inverted1.cbr1.conv1": 144}
    # the same as writing each block's input width out by hand
    explicit = netdsl.parse("""
input 3x32x32
activation none
def cbr(k, c, s=1, g=1) = conv(k=k, c=c, stride=s, groups=g, bias=false) - bn - relu6
def proj(o) = conv1-o(bias=false) - bn
net a = cbr(3, 32, 2) - cbr(3, 32, 1, 32) - proj(16) - cbr(1, 96) - cbr(3, 96, 2, 96) - proj(24)
    - add{ cbr(1, 144) - cbr(3, 144, 1, 144) - proj(24) | id }*2
    - cbr(1, 144) - cbr(3, 144, 1, 144) - proj(32)""")
    assert (net.params, net.macs, net.output_shape) == (explicit.params, explicit.macs, explicit.output_shape)


def test_in_channels_follows_the_input_given_on_the_command_line_and_a_parameter_shadows_it():
    text = "def widen(k=2) = conv1-{in_channels * k}\nnet a input 3x8x8 = widen - widen(3)"
    assert netdsl.parse(text).output_shape == (18, 8, 8)
    assert netdsl.parse(text, input="5x8x8").output_shape == (30, 8, 8)
    assert netdsl.parse(text, input="1xHxW").output_shape[0] == 6
    shadowed = "def widen(in_channels) = conv1-{in_channels * 2}\nnet a input 3x8x8 = widen(7)"
    assert netdsl.parse(shadowed).output_shape == (14, 8, 8)
    # a default may read it; a vector's count is its features, a token-free net's fc reads it too
    assert netdsl.parse("def half(c=in_channels // 2) = fc{c}\nnet a input 64 = half - half").output_shape == (16,)


def test_a_choice_without_else_passes_its_input_and_a_flag_parameter_is_a_condition():
    text = ("def maybe(on=true) = if on then relu\n"
            "net a input 3x4x4 = conv3-8 - maybe - maybe(false) - maybe(on=true)")
    net = netdsl.parse(text)
    assert [node.op for node in net.graph.nodes] == ["input", "conv", "relu", "relu"]
    nested = netdsl.parse("def pick(n) = if n > 2 then if n > 4 then tanh else sigmoid else relu\n"
                          "net a input 4 = pick(5) - pick(3) - pick(1)")
    assert [node.op for node in nested.graph.nodes][1:] == ["tanh", "sigmoid", "relu"]
    logic = netdsl.parse("def f(a, b) = if a == 1 or not b >= 2 and a != 3 then relu else tanh\n"
                         "net n input 4 = f(1, 5) - f(2, 1) - f(3, 1) - f(2, 5)")
    assert [node.op for node in logic.graph.nodes][1:] == ["relu", "relu", "tanh", "tanh"]


@pytest.mark.parametrize("text,message,column", [
    ("def b(c) = if c then relu\nnet a = b(3)", "a condition must be true or false, got 3", 15),
    ("net a = conv1-{in_channels}", "unknown name in_channels", 16),
    ("def b = fc{in_channels}\nnet a = flatten - b", "b reads in_channels, but its input", 19),
    ("def b(c) = if c = 1 then relu\nnet a = b(1)", "unexpected '='", 17),
    ("def b(c) = if c == 1 relu\nnet a = b(1)", "unexpected 'relu'", 22),
])
def test_choice_and_in_channels_mistakes_name_the_place(text, message, column):
    with pytest.raises(netdsl.NetDSLError, match=re.escape(message)) as raised:
        netdsl.parse(text, input="3xHxW")
    assert raised.value.span.column == column, raised.value.span.location()


def test_in_channels_without_an_input_shape_says_how_to_give_one():
    with pytest.raises(netdsl.NetDSLError, match="needs the net's input shape"):
        netdsl.parse("def b = conv1-{in_channels}\nnet a = b")


def test_keywords_of_choices_stay_usable_inside_longer_names():
    net = netdsl.parse("def iffy(thenx, notes=2) = conv1-{thenx * notes}\nnet a input 3x4x4 = iffy(4)")
    assert net.output_shape == (8, 4, 4)
