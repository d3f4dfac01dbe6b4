"""Statistics without running anything: params, buffers, MACs, activations, receptive field.

Conventions (docs/language.md, "Statistics"): MACs are the multiply-accumulates of conv, deconv and
fc (torchvision's "GFLOPS", the ResNet paper's "FLOPs"); activations count the input and the output
of every conv, deconv, pool, fc and merge (in-place activations and dropout excluded), the
slides' "15.2M x 4 bytes ~= 61 MB" for VGG-16; the receptive field through a merge is the largest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from .ir import Graph, Node
from .weights import WEIGHT_SHAPES, weight_specs

Shape = tuple[int, ...]


def _conv_macs(node: Node, inputs: list[Shape], out: Shape) -> int:
    a = node.attrs
    return math.prod(out) * (inputs[0][0] // a["groups"]) * a["k"] * a["k"]


def _deconv_macs(node: Node, inputs: list[Shape], out: Shape) -> int:
    a = node.attrs  # every input value is scattered through a k x k x (c/groups) kernel
    return math.prod(inputs[0]) * (a["c"] // a["groups"]) * a["k"] * a["k"]


def _fc_macs(node: Node, inputs: list[Shape], out: Shape) -> int:
    return math.prod(inputs[0]) * node.attrs["c"]


def _no_macs(node: Node, inputs: list[Shape], out: Shape) -> int:
    return 0


MACS: dict[str, Callable[[Node, list[Shape], Shape], int]] = {
    op: _no_macs for op in WEIGHT_SHAPES} | {"conv": _conv_macs, "deconv": _deconv_macs, "fc": _fc_macs}

#: Whether an op's output counts towards activation memory.
COUNTS_ACTIVATION: dict[str, bool] = {op: False for op in WEIGHT_SHAPES} | {
    op: True for op in ("input", "conv", "deconv", "maxpool", "avgpool", "gap", "fc", "concat", "add")}


# Receptive field: (size, jump) where jump is the distance in input pixels between neighbouring
# outputs (the effective stride; a Fraction after upsampling).
Field = tuple[Fraction, Fraction]


def _window_field(k: int, stride: int, dilation: int, field: Field) -> Field:
    rf, jump = field
    return rf + (dilation * (k - 1)) * jump, jump * stride


def _conv_rf(node: Node, fields: list[Field], inputs: list[Shape]) -> Field:
    a = node.attrs
    return _window_field(a["k"], a["stride"], a["dilation"], fields[0])


def _pool_rf(node: Node, fields: list[Field], inputs: list[Shape]) -> Field:
    return _window_field(node.attrs["k"], node.attrs["stride"], 1, fields[0])


def _deconv_rf(node: Node, fields: list[Field], inputs: list[Shape]) -> Field:
    a = node.attrs
    rf, jump = fields[0]
    taps = -(-(a["dilation"] * (a["k"] - 1) + 1) // a["stride"])  # inputs that reach one output
    return rf + (taps - 1) * jump, jump / a["stride"]


def _whole_input_rf(node: Node, fields: list[Field], inputs: list[Shape]) -> Field:
    """fc and gap see the whole input: like a valid conv whose kernel is the input's size."""
    rf, jump = fields[0]
    if len(inputs[0]) == 3:
        rf += (max(inputs[0][1:]) - 1) * jump
    return rf, jump


def _same_rf(node: Node, fields: list[Field], inputs: list[Shape]) -> Field:
    return fields[0]


def _merge_rf(node: Node, fields: list[Field], inputs: list[Shape]) -> Field:
    return max(rf for rf, _ in fields), max(jump for _, jump in fields)


RECEPTIVE_FIELD: dict[str, Callable[[Node, list[Field], list[Shape]], Field]] = {
    op: _same_rf for op in WEIGHT_SHAPES} | {
    "conv": _conv_rf, "deconv": _deconv_rf, "maxpool": _pool_rf, "avgpool": _pool_rf,
    "gap": _whole_input_rf, "fc": _whole_input_rf, "concat": _merge_rf, "add": _merge_rf}


@dataclass(frozen=True, slots=True)
class LayerStats:
    name: str
    op: str
    shape: Shape
    params: int  # trainable parameters
    buffers: int  # BN running statistics, fixed weights
    macs: int
    activations: int  # elements counted towards activation memory (0 if the op does not count)
    rf: Fraction  # receptive field in input pixels (whole unless upsampling made it fractional)
    stride: Fraction  # effective stride: input pixels between neighbouring outputs


@dataclass(frozen=True, slots=True)
class NetworkStats:
    layers: tuple[LayerStats, ...]
    params: int
    buffers: int
    macs: int
    activations: int

    @property
    def activation_bytes(self) -> int:
        return 4 * self.activations  # fp32


def measure(graph: Graph, shapes: tuple[Shape, ...]) -> NetworkStats:
    """Per-layer and total statistics for a shape-checked graph."""
    params: dict[str, int] = {}
    buffers: dict[str, int] = {}
    for spec in weight_specs(graph, shapes):
        table = params if spec.trainable else buffers
        table[spec.node] = table.get(spec.node, 0) + spec.size
    fields: list[Field] = []
    layers = []
    for node in graph.nodes:
        inputs = [shapes[i] for i in node.inputs] or [shapes[0]]
        shape = shapes[node.id]
        field = RECEPTIVE_FIELD[node.op](node, [fields[i] for i in node.inputs], inputs) \
            if node.inputs else (Fraction(1), Fraction(1))
        fields.append(field)
        layers.append(LayerStats(
            node.name, node.op, shape, params.get(node.name, 0), buffers.get(node.name, 0),
            MACS[node.op](node, inputs, shape),
            math.prod(shape) if COUNTS_ACTIVATION[node.op] else 0, field[0], field[1]))
    return NetworkStats(tuple(layers), sum(l.params for l in layers), sum(l.buffers for l in layers),
                        sum(l.macs for l in layers), sum(l.activations for l in layers))
