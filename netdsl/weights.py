"""Parameter and buffer shapes (each op record's `weights` rule): what every backend and the
statistics agree on.

Weight names are `<node name>.<suffix>` (block1.conv1.weight), identical in every backend, and the
layouts are torch's: conv (out, in/groups, k, k), deconv (in, out/groups, k, k), fc (out, in).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .ir import Graph
from .ops import OPS

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


def weight_specs(graph: Graph, shapes: tuple[Shape, ...]) -> list[WeightSpec]:
    """Every parameter and buffer of the network, in node order."""
    specs = []
    for node in graph.nodes:
        inputs = [shapes[i] for i in node.inputs]
        for suffix, shape, trainable in OPS[node.op].weights(node, inputs):
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
