"""No input crashes the front end: the only outcomes are networks or a NetDSLError that carries a
line and column, within a second. Inputs: programs generated from the grammar itself (with
explicit strategies for names, numbers and layers, without which almost nothing parses),
arbitrary text, and shipped networks with random edits."""
import gc
import time

import pytest
from hypothesis import currently_in_test_context, event, example, given
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

import netdsl
from conftest import NETWORKS

GRAMMAR = Lark.open_from_package("netdsl.grammars", "netdsl.lark", parser="lalr",
                                 start=["program", "expr"])

# Each word-like terminal carries a space after it: from_lark joins terminals with nothing between
# them, and without it `def` `a` reads as the name `defa` and a comment runs to the end of the text.
# (Glued tokens are still fuzzed: by arbitrary text and by the edits of shipped networks.)
WORDS = {
    "NAME": st.sampled_from(["a", "b", "c", "n", "p3", "block", "head", "x", "relu", "conv", "pool",
                             "fc", "id", "bn", "tanh", "gap", "dropout", "lrn", "flatten", "crop",
                             "softmax", "ceil", "k", "stride", "pad", "groups", "act", "none",
                             "true", "false", "like", "features"]),
    "INT": st.integers(0, 70).map(str),
    "FLOAT": st.sampled_from(["0.5", "1e-4", "2.0", ".25", "0.0"]),
    "SHAPE": st.sampled_from(["3x32x32", "1x8x8", "3x0x8", "2x4", "3x16x16"]),
    "SLIDE": st.sampled_from(["conv3-8", "conv1-4/2", "conv5-c", "conv1-{2*c}", "conv{k}-8/{n}",
                              "maxpool2/2", "maxpool3/2", "avgpool3/1", "avgpool2", "fc10", "fc{n}",
                              "deconv4-4/2", "deconv3-c"]),
    "STRING": st.sampled_from(['"resnet.net"', '"vgg.net"', '"x.net"', '"../a.net"', '"/etc/a.net"']),
    "INPUT_KW": st.just("input"), "ACTIVATION": st.just("activation"), "USE": st.just("use"),
    "DEF": st.just("def"), "NET": st.just("net"),
}
TERMINALS = {
    **{name: words.map(lambda word: word + " ") for name, words in WORDS.items()},
    "MERGE": st.sampled_from(["cat{", "add{", "concat{"]),
    "COMMENT": st.just("# a comment\n"),
}


# The front end is linear in what it builds: 25-30 us per IR node on the 2-core development machine
# (benchmarks/front_end.py). Any input must be done within a second, except that an edit
# can make a valid network of up to Limits.max_nodes (100,000) nodes: those get 50 us a node.
SECONDS = 1.0
SECONDS_PER_NODE = 50e-6


def check_front_end(text: str) -> None:
    nodes = 0
    error_seen = None
    # The time is this thread's CPU time with the garbage collector off: neither other processes
    # nor a collection of the test run's own heap (hypothesis's: 2.6 s once) is the front end's.
    gc.disable()
    try:
        start = time.thread_time()
        try:
            networks = netdsl.parse_all(text, input="3x16x16")
        except netdsl.NetDSLError as error:
            error_seen = error
            assert isinstance(error.line, int) and isinstance(error.column, int), str(error)
            # the location is in the text, or in a file it imports (the call site in the notes)
            assert str(error).startswith(f"{error.span.source.path}:{error.line}:{error.column}: error: ")
        else:
            for net in networks:
                assert net.graph.nodes[0].op == "input" and len(net.shapes) == len(net.graph)
                nodes += len(net.graph)
        elapsed = time.thread_time() - start
    finally:
        gc.enable()
    if currently_in_test_context():  # statistics show how far inputs get, not just that they parse
        event("outcome: " + (type(error_seen).__name__ if error_seen else "networks"))
    assert elapsed < max(SECONDS, SECONDS_PER_NODE * nodes), (elapsed, nodes, text)


@given(from_lark(GRAMMAR, start="program", explicit=TERMINALS))
def test_programs_from_the_grammar(text):
    check_front_end(text)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
@example("")
@example("(" * 70)
@example("conv3-8 - ")
@example("def a = a\na")
@example('use "use.net"')
def test_arbitrary_text(text):
    check_front_end(text)


SHIPPED = [path.read_text() for path in sorted(NETWORKS.glob("*.net"))]
PIECES = ["-", "(", ")", "[", "]", "{", "}", "|", "*", "@", ":", ",", "=", "0", "1", "x", "conv3-8",
          "pool", "fc", "\n", " ", "#", "input", "def", "net", "add{", "cat{", "@input", "999999"]


@given(st.sampled_from(SHIPPED), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 4),
                                                    st.sampled_from(PIECES)), max_size=4))
@example((NETWORKS / "resnext50.net").read_text(), [(459, 0, "999999")])  # an error inside resnet.net
# Took 3 s once: a full garbage collection of the test process's heap landed inside the call.
# The compiler now pauses the collector while it builds (netdsl/network.py).
@example((NETWORKS / "resnet.net").read_text(), [(354, 3, "]")] * 3)
def test_shipped_networks_with_random_edits(source, edits):
    text = source
    for position, deleted, inserted in edits:
        at = position % (len(text) + 1)
        text = text[:at] + inserted + text[at + deleted:]
    check_front_end(text)


@pytest.mark.parametrize("path", sorted(NETWORKS.glob("*.net")), ids=lambda p: p.name)
def test_every_prefix_of_a_shipped_network(path):
    source = path.read_text()
    for end in range(0, len(source), max(1, len(source) // 60)):
        check_front_end(source[:end])
