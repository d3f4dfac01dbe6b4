"""The arithmetic behind every layer, as the slides show it (`netdsl summary --explain`, hovers).

Each op record's `explain` rule writes its worked formulas with the layer's numbers filled in:
output size `(227 + 2*0 - 11)/4 + 1 = 55` (floor or ceil mode, "doesn't fit"), params
`11*11*3*96 + 96 = 34,944`, MACs, the im2col matrix of a convolution and the receptive field with
its jump. The values come from the records' own rules (window(), weights, macs, receptive field),
so an explanation cannot disagree with the summary. This module adds what needs the whole graph:
the activation fused into a layer and why, and which attributes the user wrote (so a rule can say
that it derived a default).

>>> net = netdsl.parse("conv11-96/4(pad=0) - maxpool3/2", input="3x227x227")
>>> print(explain_layer(net, 1).text())
conv1  conv11-96/4  3x227x227 -> 96x55x55
  out size    (227 + 2*0 - 11)/4 + 1 = 55   (floor mode)
  params      11*11*3*96 + 96 = 34,944
  MACs        55*55*96 * 11*11*3 = 105,415,200   (output values * taps per output)
  im2col      [3*11*11 x 55*55] = [363 x 3025]   (per image: C*k*k rows, Ho*Wo columns)
  rf          1 + (11-1)*1 = 11
  jump        1*4 = 4
  act         none   (no implicit activation: an output layer, no weight layer follows it)
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from . import ast
from .errors import NetDSLError
from .ops import ALIASES, OPS, Shape, format_shape
from .ops.base import Worked, format_value

#: How each quantity is labelled in text.
LABELS = {"size": "out size", "height": "out height", "width": "out width", "channels": "channels",
          "features": "features", "params": "params", "buffers": "buffers", "MACs": "MACs",
          "im2col": "im2col", "rf": "rf", "jump": "jump", "pad": "pad", "stride": "stride",
          "act": "act", "tokens": "tokens"}
_LABEL_WIDTH = max(len(label) for label in LABELS.values())


@dataclass(frozen=True, slots=True)
class LayerExplanation:
    node: int
    name: str
    notation: str  # conv11-96/4+relu
    inputs: tuple[Shape, ...]
    shape: Shape
    lines: tuple[Worked, ...]

    def header(self) -> str:
        inputs = " + ".join(format_shape(s) for s in self.inputs)
        return f"{self.name}  {self.notation}  {inputs} -> {format_shape(self.shape)}"

    def body(self, indent: str = "  ") -> list[str]:
        return [f"{indent}{LABELS.get(line.quantity, line.quantity):<{_LABEL_WIDTH}}  {line.text()}"
                for line in self.lines]

    def text(self) -> str:
        return "\n".join([self.header(), *self.body()])

    def to_dict(self) -> dict:
        return {"node": self.node, "name": self.name, "notation": self.notation,
                "inputs": [list(s) for s in self.inputs], "shape": list(self.shape),
                "lines": [{"quantity": line.quantity, "label": LABELS.get(line.quantity, line.quantity),
                           "formula": line.formula, "value": _json_value(line.value),
                           "note": line.note, "text": line.text()} for line in self.lines],
                "text": self.text()}


def _json_value(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else str(value)
    return value


def explain_layer(network, node_id: int, readers: list[list[int]] | None = None) -> LayerExplanation:
    """The worked arithmetic of one layer of a checked `Network`. For a net with size names
    (3xHxW) it is worked at the example size (`Network.example_shape`): the slides' arithmetic is
    on numbers, and `summary` shows the formulas."""
    if network.symbolic:
        network = _worked_size(network)
    graph, shapes, stats = network.graph, network.shapes, network.stats
    node = graph[node_id]
    inputs = [shapes[i] for i in node.inputs] or [shapes[0]]
    fields = [(stats.layers[i].rf, stats.layers[i].stride) for i in node.inputs] \
        or [(Fraction(1), Fraction(1))]
    written = written_attributes(node.span.text, node.op) if node.span is not None and node.inputs \
        else None
    lines = list(OPS[node.op].explain(node, inputs, shapes[node_id], fields, written))
    act = _activation_line(network, node, written, readers)
    if act is not None:
        lines.append(act)
    from .report import notation
    return LayerExplanation(node.id, node.name, notation(node), tuple(inputs), shapes[node_id],
                            tuple(lines))


def _worked_size(network):
    cached = getattr(network, "_netdsl_worked", None)
    if cached is None:
        cached = network.at(network.example_shape())
        network._netdsl_worked = cached
    return cached


def explain_network(network) -> list[LayerExplanation]:
    """Every layer's explanation, in node order."""
    if network.symbolic:
        network = _worked_size(network)
    readers = _value_readers(network.graph)
    return [explain_layer(network, node.id, readers) for node in network.graph.nodes]


def _value_readers(graph) -> list[list[int]]:
    """For each node, the nodes reading its values (crop's `like` reads only a size)."""
    readers: list[list[int]] = [[] for _ in graph.nodes]
    for node in graph.nodes:
        shape_only = OPS[node.op].shape_only_inputs
        for position, source in enumerate(node.inputs):
            if position not in shape_only:
                readers[source].append(node.id)
    return readers


def _activation_line(network, node, written, readers) -> Worked | None:
    """The activation fused into a weight layer or bn, and which rule put it there (or left it out:
    docs/language.md, "Implicit activations")."""
    op = OPS[node.op]
    if not (op.takes_activation or node.op == "bn"):
        return None
    act = node.attrs["act"]
    if written is not None and "act" in written:
        return Worked("act", "", act, f"written: act={act}" + (", fused into the layer" if act != "none" else ""))
    if act != "none":
        if node.op == "bn":
            return Worked("act", "", act, "the implicit activation of the layer before, fused after the bn")
        return Worked("act", "", act, "the net's implicit activation, fused into the layer")
    if not op.takes_activation:
        return None
    if network.activation == "none":
        return Worked("act", "", "none", "no implicit activation: the net's activation is none")
    readers = readers if readers is not None else _value_readers(network.graph)

    def sole_reader(node_id: int):
        return network.graph[readers[node_id][0]] if len(readers[node_id]) == 1 else None

    reader = sole_reader(node.id)
    if reader is not None and reader.op == "bn":
        if reader.attrs["act"] != "none":
            return Worked("act", "", "none", f"the implicit {reader.attrs['act']} goes after the bn "
                                             f"that reads it ({reader.name})")
        reader = sole_reader(reader.id)
    if reader is not None and (OPS[reader.op].activation or reader.op == "softmax"):
        return Worked("act", "", "none", f"no implicit activation: an explicit {reader.op} follows")
    return Worked("act", "", "none", "no implicit activation: an output layer, no weight layer "
                                     "follows it")


@lru_cache(maxsize=4096)
def written_attributes(text: str, op: str) -> frozenset[str] | None:
    """The attributes the atom `text` (a layer's span: `conv3-64(pad=0)`) sets itself, or None if
    the text is not one atom of `op`. Aliases count their presets as written (`pool` sets k and
    stride)."""
    from .parser import parse_program
    try:
        program = parse_program(text)
    except NetDSLError:
        return None
    if len(program.nets) != 1 or len(program.nets[0].body.items) != 1:
        return None
    atom = program.nets[0].body.items[0]
    if not isinstance(atom, ast.Atom):
        return None
    name, preset = ALIASES.get(atom.name, (atom.name, {}))
    if name != op:
        return None
    spec = OPS[op]
    given = set(preset)
    if atom.slide is not None:
        for attr, expr in (("k", atom.slide.kernel), ("c", atom.slide.channels),
                           ("stride", atom.slide.stride)):
            if expr is not None and spec.attr(attr) is not None:
                given.add(attr)
    positional = list(spec.positional)
    for arg in atom.args:
        if arg.name is not None:
            given.add(arg.name)
            continue
        flag = spec.attr(arg.value.name) if isinstance(arg.value, ast.Var) else None
        if flag is not None and flag.kind == "bool":
            given.add(flag.name)
            continue
        while positional and positional[0] in given:
            positional.pop(0)
        if positional:
            given.add(positional.pop(0))
    return frozenset(given)


def explanation_text(network) -> str:
    """Every layer's explanation, one block per layer."""
    return "\n\n".join(e.text() for e in explain_network(network)) + "\n"


__all__ = ["LayerExplanation", "Worked", "explain_layer", "explain_network", "explanation_text",
           "written_attributes", "format_value"]
