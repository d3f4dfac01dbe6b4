"""Shape checking: every tensor's shape from the input shape alone, before any tensor exists.

Each op record carries its shape rule (`OPS[op].shape`); `infer_shapes` is the single loop that
drives them. Shapes leave
the batch out: (C, H, W) for images, (C,) for flat vectors.

>>> infer_shapes(netdsl.parse("conv3-64/2 - pool").graph, (3, 224, 224)).shapes[-1]
(64, 56, 56)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import Diagnostic, NetDSLLimitError, NetDSLShapeError
from .ir import Graph, Node
from .limits import DEFAULT_LIMITS, Limits
from .ops import OPS, Shape, ShapeProblem, format_shape, slide_notation



@dataclass(frozen=True, slots=True)
class ShapeResult:
    shapes: tuple[Shape, ...]  # one per node, batch excluded
    warnings: tuple[Diagnostic, ...]


def parse_shape(text: str) -> Shape:
    """'3x224x224' -> (3, 224, 224); raises ValueError on anything else."""
    parts = text.strip().lower().split("x")
    if not all(part.isdigit() for part in parts):
        raise ValueError(f"not a shape: {text!r} (write CxHxW such as 3x224x224, or C such as 784)")
    return tuple(int(part) for part in parts)


def check_input_shape(shape: Shape, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why `shape` cannot be a network input, or None."""
    if len(shape) not in (1, 3):
        return f"an input is C or CxHxW, got {format_shape(shape)}"
    if any(d <= 0 for d in shape):
        return f"every input dimension must be positive, got {format_shape(shape)}"
    if math.prod(shape) > limits.max_tensor_elements:
        return f"the input has {math.prod(shape):,} elements, over the limit of {limits.max_tensor_elements:,}"
    return None


def infer_shapes(graph: Graph, input_shape: Shape, limits: Limits = DEFAULT_LIMITS,
                 strict: bool = False) -> ShapeResult:
    """The shape of every node. Raises NetDSLShapeError (or NetDSLLimitError) at the first problem."""
    shapes: list[Shape] = []
    warnings: list[Diagnostic] = []
    for node in graph.nodes:
        found: list[str] = []
        inputs = [shapes[i] for i in node.inputs] if node.inputs else [tuple(input_shape)]
        try:
            shape = OPS[node.op].shape(node, inputs, found.append)
            if any(d <= 0 for d in shape):
                raise ShapeProblem(f"{slide_notation(node.op, node.attrs)} makes the tensor empty: "
                                   f"{format_shape(inputs[0])} -> {format_shape(shape)}", shape)
        except ShapeProblem as problem:
            notes = (*problem.notes, *_context_notes(node), "shapes: " + _chain(graph, shapes, node, problem.result))
            raise NetDSLShapeError(problem.message, node.span, notes, tuple(warnings)) from None
        elements = math.prod(shape)
        if elements > limits.max_tensor_elements:
            raise NetDSLLimitError(
                f"{node.name} gives a tensor of {elements:,} elements ({format_shape(shape)}), over the "
                f"limit of {limits.max_tensor_elements:,}", node.span,
                [*_context_notes(node), "raise Limits.max_tensor_elements to accept it"], tuple(warnings))
        for message in found:
            diagnostic = Diagnostic("error" if strict else "warning", message, node.span,
                                    (*_context_notes(node), "the slides call this \"doesn't fit\"; "
                                     "change the padding or stride, or use ceil mode for pools"))
            if strict:
                raise NetDSLShapeError(message, node.span, diagnostic.notes, tuple(warnings))
            warnings.append(diagnostic)
        shapes.append(shape)
    return ShapeResult(tuple(shapes), tuple(warnings))


def _context_notes(node: Node) -> list[str]:
    return [f"in {frame.description} at {frame.span.location()}" for frame in reversed(node.context)]


def _chain(graph: Graph, shapes: list[Shape], node: Node, result: Shape | None) -> str:
    """'3x224x224 -> ... -> 512x1x1 -> pool: 512x0x0': the path of first inputs into `node`."""
    path: list[int] = []
    current = node.inputs[0] if node.inputs else None
    while current is not None:
        path.append(current)
        inputs = graph.nodes[current].inputs
        current = inputs[0] if inputs else None
    path.reverse()
    shown = [format_shape(shapes[i]) for i in path]
    if len(shown) > 5:
        shown = [shown[0], "...", *shown[-3:]]
    end = slide_notation(node.op, node.attrs) + ": " + (format_shape(result) if result else "?")
    return " -> ".join([*shown, end])
