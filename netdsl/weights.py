"""Parameter and buffer shapes per op: the one table every backend and the statistics agree on.

Weight names are `<node name>.<suffix>` (block1.conv1.weight), identical in every backend, and the
layouts are torch's: conv (out, in/groups, k, k), deconv (in, out/groups, k, k), fc (out, in).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .ir import Graph, Node

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WeightSpec:
    name: str  # canonical: block1.conv1.weight
    node: str  # the IR node's name
    suffix: str  # weight, bias, running_mean, running_var
    shape: Shape
    trainable: bool  # False for buffers: BN running statistics, `fixed` layers

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def _conv(node: Node, inputs: list[Shape]) -> list[tuple[str, Shape, bool]]:
    a = node.attrs
    shape = (a["c"], inputs[0][0] // a["groups"], a["k"], a["k"])
    return _weight_and_bias(a, shape, a["c"])


def _deconv(node: Node, inputs: list[Shape]) -> list[tuple[str, Shape, bool]]:
    a = node.attrs
    shape = (inputs[0][0], a["c"] // a["groups"], a["k"], a["k"])
    return _weight_and_bias(a, shape, a["c"])


def _fc(node: Node, inputs: list[Shape]) -> list[tuple[str, Shape, bool]]:
    a = node.attrs
    return _weight_and_bias(a, (a["c"], math.prod(inputs[0])), a["c"])


def _weight_and_bias(attrs, shape: Shape, out: int) -> list[tuple[str, Shape, bool]]:
    trainable = not attrs["fixed"]
    found = [("weight", shape, trainable)]
    if attrs["bias"]:
        found.append(("bias", (out,), trainable))
    return found


def _bn(node: Node, inputs: list[Shape]) -> list[tuple[str, Shape, bool]]:
    c = inputs[0][0]
    return [("weight", (c,), True), ("bias", (c,), True),
            ("running_mean", (c,), False), ("running_var", (c,), False)]


def _none(node: Node, inputs: list[Shape]) -> list[tuple[str, Shape, bool]]:
    return []


WEIGHT_SHAPES: dict[str, Callable[[Node, list[Shape]], list[tuple[str, Shape, bool]]]] = {
    "input": _none, "conv": _conv, "deconv": _deconv, "maxpool": _none, "avgpool": _none,
    "gap": _none, "fc": _fc, "bn": _bn, "lrn": _none, "dropout": _none, "relu": _none,
    "tanh": _none, "sigmoid": _none, "lrelu": _none, "elu": _none, "softmax": _none,
    "flatten": _none, "crop": _none, "concat": _none, "add": _none,
}


def weight_specs(graph: Graph, shapes: tuple[Shape, ...]) -> list[WeightSpec]:
    """Every parameter and buffer of the network, in node order."""
    specs = []
    for node in graph.nodes:
        inputs = [shapes[i] for i in node.inputs]
        for suffix, shape, trainable in WEIGHT_SHAPES[node.op](node, inputs):
            specs.append(WeightSpec(f"{node.name}.{suffix}", node.name, suffix, shape, trainable))
    return specs


def bilinear_weight(shape: Shape, groups: int):
    """FCN's fixed upsampling filter for a deconv weight (in, out/groups, k, k): bilinear
    interpolation, per channel when in == out (channel i to channel i), else in every pair."""
    import numpy as np  # here, not at the top: the front end (check, summary, draw) needs no numpy
    k = shape[2]
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    line = 1 - np.abs(np.arange(k) - centre) / factor
    kernel = np.outer(line, line)
    weight = np.zeros(shape)
    if shape[0] == shape[1] and groups == 1:
        weight[np.arange(shape[0]), np.arange(shape[0])] = kernel
    else:
        weight[:] = kernel
    return weight
