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

from .ir import Graph
from .ops import OPS, Field, Shape
from .ops.base import is_symbolic, whole_input_field
from .ops.tokens import attention_field
from .weights import WeightSpec, weight_specs


#: Receptive fields and effective strides beyond these are reported as the bound itself: no real
#: network comes near, and exact fractions through thousands of strided layers grow without limit.
MAX_FIELD = Fraction(10**12)
#: Field rules that reach the whole input: with size names in it, the field is a formula (None).
_WHOLE_INPUT_RULES = (whole_input_field, attention_field)
_MAX_DENOMINATOR = 10**6


def _saturated(field: Field) -> Field:
    # Integer comparisons on numerator and denominator: Fraction's own `>` costs ten times more,
    # and this runs for every layer of every summary.
    bound = MAX_FIELD.numerator
    return tuple(min(value, MAX_FIELD).limit_denominator(_MAX_DENOMINATOR)  # type: ignore[return-value]
                 if value.denominator > _MAX_DENOMINATOR or value.numerator > bound * value.denominator
                 else value
                 for value in field)


@dataclass(frozen=True, slots=True)
class LayerStats:
    name: str
    op: str
    shape: Shape
    params: int  # trainable parameters
    buffers: int  # BN running statistics, fixed weights
    macs: int
    activations: int  # elements counted towards activation memory (0 if the op does not count)
    rf: Fraction | None  # receptive field in input pixels (whole unless upsampling made it
    # fractional); None where it is the whole input of a size given by name (3xHxW)
    stride: Fraction  # effective stride: input pixels between neighbouring outputs


@dataclass(frozen=True, slots=True)
class NetworkStats:
    layers: tuple[LayerStats, ...]
    params: int
    buffers: int
    macs: int  # of the eval forward: auxiliary heads (aux{ }) run in training only
    activations: int
    aux_params: int = 0  # of the auxiliary heads, included in params
    aux_macs: int = 0  # of the auxiliary heads, not in macs

    @property
    def activation_bytes(self) -> int:
        return 4 * self.activations  # fp32


def measure(graph: Graph, shapes: tuple[Shape, ...],
            specs: list[WeightSpec] | None = None) -> NetworkStats:
    """Per-layer and total statistics for a shape-checked graph (`specs`: its weight_specs, if
    the caller has them already)."""
    params: dict[str, int] = {}
    buffers: dict[str, int] = {}
    for spec in weight_specs(graph, shapes) if specs is None else specs:
        table = params if spec.trainable else buffers
        table[spec.node] = table.get(spec.node, 0) + spec.size
    fields: list[Field] = []
    layers = []
    for node in graph.nodes:
        inputs = [shapes[i] for i in node.inputs] or [shapes[0]]
        shape = shapes[node.id]
        op = OPS[node.op]
        before = [fields[i] for i in node.inputs]
        if not node.inputs:
            field = (Fraction(1), Fraction(1))
        elif any(f[0] is None for f in before) or (op.receptive_field in _WHOLE_INPUT_RULES
                                                   and is_symbolic(inputs[0])):
            field = (None, before[0][1])  # the whole input, whose size is a formula
        else:
            field = _saturated(op.receptive_field(node, before, inputs))
        fields.append(field)
        layers.append(LayerStats(
            node.name, node.op, shape, params.get(node.name, 0), buffers.get(node.name, 0),
            op.macs(node, inputs, shape), math.prod(shape) if op.counts_as_activation else 0,
            field[0], field[1]))  # with size names, MACs and activations are polynomials in them
    if not any(node.op == "aux" for node in graph.nodes):
        return NetworkStats(tuple(layers), sum(l.params for l in layers), sum(l.buffers for l in layers),
                            sum(l.macs for l in layers), sum(l.activations for l in layers))
    inference = graph.inference_nodes()
    heads = [layer for node, layer in zip(graph.nodes, layers) if node.id not in inference]
    return NetworkStats(tuple(layers), sum(l.params for l in layers), sum(l.buffers for l in layers),
                        sum(l.macs for l in layers) - sum(l.macs for l in heads),
                        sum(l.activations for l in layers), sum(l.params for l in heads),
                        sum(l.macs for l in heads))
