"""docs/language.md matches the implementation: every op and attribute, the limits, the transcript."""
import re

import pytest

import netdsl
from conftest import ROOT
from netdsl import Limits
from netdsl.ops import OPS

DOC = (ROOT / "docs" / "language.md").read_text()


def _op_rows() -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", DOC, re.M)}


@pytest.mark.parametrize("op", [name for name, spec in OPS.items() if spec.writable])
def test_every_op_and_attribute_is_documented(op):
    row = _op_rows()[op]
    for attr in OPS[op].attr_names:
        assert f"`{attr}`" in row, f"{op}.{attr} is missing from docs/language.md"


def test_documented_limits_are_the_defaults():
    limits = Limits()
    for value in (limits.max_source_chars, limits.max_nesting, limits.max_call_depth,
                  limits.max_repeat, limits.max_nodes, limits.max_expansion_steps,
                  limits.max_dimension, limits.max_uses):
        assert f"({value:,}" in DOC


def test_doc_examples_check():
    snippets = re.findall(r"^    (def inception.*?)(?=\n\n)", DOC, re.M | re.S)
    text = snippets[0] + "\nconv3-192 - inception(64, 96, 128, 16, 32, 32)"
    assert netdsl.parse(text, input="3x28x28").output_shape == (256, 28, 28)
    resnet = DOC[DOC.index("ResNet-50 (torchvision's v1.5):"):DOC.index("FCN-8s's skip")]
    code = "\n".join(line[4:] for line in resnet.splitlines() if line.startswith("    "))
    assert netdsl.parse(code, input="3x224x224").params == 25_557_032
    assert netdsl.parse("[(conv3-64)*2 - pool]*5 - fc4096*2 - fc1000", input="3x224x224").params \
        == 34_061_608


def test_doc_window_ops_example_takes_any_size():
    snippet = DOC[DOC.index("input 3xHxW\nconv3-32/2 - dwconv3"):]
    snippet = snippet[:snippet.index("```")]
    net = netdsl.parse(snippet)
    assert net.output_shape == (10,)
    assert net.valid_sizes["H"].describe() == "H >= 1" and net.valid_sizes["W"].describe() == "W >= 1"
    assert netdsl.parse("conv1x7-192", input="3x17x17").output_shape == (192, 17, 17)


def test_the_choice_example_does_what_the_text_says():
    import netdsl
    section = DOC[DOC.index("### A block's input width"):]
    lines = section.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("    def cbr"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("    "))
    net = netdsl.parse("\n".join(line[4:] for line in lines[start:end]))
    assert [node.name for node in net.graph.nodes if node.op == "add"] == ["block3.add1", "block4.add1"]
    first = next(node for node in net.graph.nodes if node.name.startswith("block2.inverted1.cbr1.conv1"))
    assert net.shapes[first.id][0] == 16 * 6 and "(its input has 16 channels)" in section
    assert "block3.add1.b1.inverted1.cbr1.conv1" in {node.name for node in net.graph.nodes}
