"""No input crashes the front end: the only outcomes are networks or a NetDSLError that carries a
line and column, within a second. Inputs: programs generated from the grammar itself (with
explicit strategies for names, numbers and layers, without which almost nothing parses),
arbitrary text, and shipped networks with random edits."""
import gc
import time

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
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
    "BLANKS": st.just(" # a comment\n"),  # the ignored run of blanks and comments
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


# -- the command line and the weights readers -----------------------------------------------------

OPTION_VALUES = st.one_of(
    st.sampled_from(["3x32x32", "1x28x28", "784", "0", "-1", "3x", "x", "1x1x2000000000", "224x224x3",
                     "9" * 40, "A", "D", "nosuch", "lenet5", "mlp:mlp2", "vgg:A", "", "\x1b[2J", "1e999"]),
    st.integers(-3, 5).map(str),
    st.text(max_size=12))
OPTIONS = st.sampled_from(["--input", "--net", "--depth", "--json", "-q", "--quiet", "--strict",
                           "--dept", "--seed", "--head", "--batch", "-o", "--weights", "--expand",
                           "--rankdir", "--max-nodes", "--frobnicate"])
ARGV = st.tuples(st.sampled_from(["check", "summary", "expand", "draw", "run", "compile", "chek"]),
                 st.sampled_from(["lenet5", "mlp:mlp2", "mlp", "nosuch", "vgg:Q", "/dev/null", "."]),
                 st.lists(st.tuples(OPTIONS, OPTION_VALUES), max_size=3))


def _cli_outcome(argv, tmp) -> int:
    from netdsl.cli import main
    try:
        return main(argv)
    except SystemExit as stop:  # argparse: --help, --version, a bad command line
        return stop.code


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ARGV)
@example(("run", "lenet5", [("--batch", "1000000000")]))
@example(("check", "lenet5", [("--input", "1x1x2000000000")]))
@example(("compile", "lenet5", [("--head", "0")]))
def test_command_lines(tmp_path_factory, capsys, argv):
    """Any command line ends in 0 or 1, never 70 (an internal error), and prints no raw escape."""
    command, target, options = argv
    if command in ("run", "compile") and target not in ("lenet5", "mlp:mlp2"):
        return  # a big network's forward pass is slow, not interesting
    out_dir = tmp_path_factory.mktemp("cli")
    args = [command, target]
    for option, value in options:
        if option == "-o" or option == "--weights":
            value = str(out_dir / (value.replace("/", "_")[:8] + ".npz"))
        args += [option] if option in ("--json", "-q", "--quiet", "--strict", "--expand") else [option, value]
    if command == "draw" and "-o" not in args:
        args += ["-o", str(out_dir / "d.dot")]
    status = _cli_outcome(args, out_dir)
    out, err = capsys.readouterr()
    event(f"exit {status}")
    assert status in (0, 1, None), (args, err[-2000:])
    assert "Traceback" not in err and "\x1b" not in err, (args, err[-2000:])


def _safetensors_bytes(header: bytes, data: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header + data


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2, 10**12), st.floats(allow_nan=False),
                              st.text(max_size=6)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                    max_leaves=12)
ENTRY = st.fixed_dictionaries({"dtype": st.one_of(st.sampled_from(["F32", "F64", "BF16", "I8", "BOOL", "Q"]),
                                                  JSON),
                               "shape": st.one_of(st.lists(st.integers(-1, 4), max_size=9), JSON),
                               "data_offsets": st.one_of(st.lists(st.integers(-1, 64), min_size=2,
                                                                  max_size=2), JSON)})


@given(st.dictionaries(st.sampled_from(["conv1.weight", "w", "__metadata__", "\x1b"]), ENTRY, max_size=3),
       st.binary(max_size=64))
def test_safetensors_headers(tmp_path_factory, header, data):
    """A crafted header gives tensors whose sizes match their shapes, or a NetDSLWeightsError."""
    import json as json_module

    from netdsl.weights_io import read_weights
    path = tmp_path_factory.mktemp("st") / "w.safetensors"
    path.write_bytes(_safetensors_bytes(json_module.dumps(header).encode(), data))
    try:
        tensors = read_weights(path)
    except netdsl.NetDSLWeightsError as error:
        event("error: " + ("package" if "not a valid safetensors" in error.message else "netdsl"))
        return
    event("read")
    for name, array in tensors.items():
        assert list(array.shape) == header[name]["shape"]


@given(st.binary(max_size=400), st.sampled_from([".safetensors", ".npz"]))
@example(b"PK\x05\x06" + b"\0" * 18, ".npz")
@example(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", ".npz")
def test_arbitrary_weights_bytes(tmp_path_factory, content, suffix):
    from netdsl.weights_io import read_weights
    path = tmp_path_factory.mktemp("wb") / f"w{suffix}"
    path.write_bytes(content)
    try:
        read_weights(path)
    except netdsl.NetDSLWeightsError:
        event("error")
    else:
        event("read")


@given(st.lists(st.tuples(st.sampled_from(["a", "b.c", "conv1.weight"]),
                          st.sampled_from([(), (0,), (2, 3), (1, 1, 1, 1)]),
                          st.sampled_from(["<f4", "<f8", "|u1", "<i8", "|b1"])), max_size=3),
       st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_npz_archives_with_a_corrupted_byte(tmp_path_factory, members, position, patch):
    """Real .npz archives with bytes overwritten: arrays of the claimed shapes, or a clean error."""
    import numpy as np

    from netdsl.weights_io import read_weights
    path = tmp_path_factory.mktemp("npz") / "w.npz"
    np.savez(path, **{name: np.zeros(shape, dtype) for name, shape, dtype in members})
    raw = bytearray(path.read_bytes())
    at = position % len(raw)
    raw[at:at + len(patch)] = patch
    path.write_bytes(bytes(raw))
    try:
        arrays = read_weights(path)
    except netdsl.NetDSLWeightsError:
        event("error")
        return
    event("read")
    for name, array in arrays.items():
        assert array.dtype.kind in "fiub"
