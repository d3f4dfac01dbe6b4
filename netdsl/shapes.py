"""Shape checking: every tensor's shape from the input shape alone, before any tensor exists.

Each op record carries its shape rule (`OPS[op].shape`); `infer_shapes` is the single loop that
drives them. Shapes leave
the batch out: (C, H, W) for images, (C,) for flat vectors.

>>> infer_shapes(netdsl.parse("conv3-64/2 - pool").graph, (3, 224, 224)).shapes[-1]
(64, 56, 56)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .errors import Diagnostic, NetDSLLimitError, NetDSLShapeError
from .ir import Graph, Node
from .limits import DEFAULT_LIMITS, Limits
from .ops import OPS, Shape, ShapeProblem, format_shape, slide_notation
from .ops.base import Reason, ShapeChecks, is_symbolic
from .symbolic import Constraint, Size, SizeSet, SymbolicError, solve, solve_both

#: A size name in a shape: a letter, then letters, digits or _, but no lowercase x (x separates).
_SIZE_NAME = re.compile(r"[A-Za-wyz_][A-Za-wyz0-9_]*")


@dataclass(frozen=True, slots=True)
class ShapeResult:
    shapes: tuple[Shape, ...]  # one per node, batch excluded
    warnings: tuple[Diagnostic, ...]
    #: For an input with size names: each name's valid sizes, and those with no "doesn't fit".
    valid: dict[str, SizeSet] = field(default_factory=dict)
    strict_valid: dict[str, SizeSet] = field(default_factory=dict)
    #: The conditions the layers put on the sizes, each with the node that put it.
    conditions: tuple[tuple[int, Constraint], ...] = ()


def parse_shape(text: str) -> Shape:
    """'3x224x224' -> (3, 224, 224); '3xHxW' -> (3, H, W) with H and W size names (a name used
    twice is one size: '3xSxS' is square). Raises ValueError on anything else."""
    parts = text.strip().split("x")
    if len(parts) == 3 and parts[0].isdigit() and all(p.isdigit() or _SIZE_NAME.fullmatch(p)
                                                       for p in parts[1:]):
        return (int(parts[0]), *(int(p) if p.isdigit() else Size.name(p) for p in parts[1:]))
    if not all(part.isdigit() for part in parts):
        raise ValueError(f"not a shape: {text!r} (write CxHxW such as 3x224x224 or 3xHxW, or C such "
                         f"as 784)")
    return tuple(int(part) for part in parts)


def size_names(shape: Shape) -> list[str]:
    """The size names of an input shape, in order of appearance."""
    return list(dict.fromkeys(name for d in shape if isinstance(d, Size) for name in sorted(d.names())))


def check_input_shape(shape: Shape, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why `shape` cannot be a network input, or None."""
    if len(shape) not in (1, 3):
        return f"an input is C or CxHxW, got {format_shape(shape)}"
    if is_symbolic(shape[:1]) or (len(shape) == 1 and is_symbolic(shape)):
        return f"only the height and width may be size names, got {format_shape(shape)}"
    if is_symbolic(shape):
        return None
    if any(d <= 0 for d in shape):
        return f"every input dimension must be positive, got {format_shape(shape)}"
    if math.prod(shape) > limits.max_tensor_elements:
        return f"the input has {math.prod(shape):,} elements, over the limit of {limits.max_tensor_elements:,}"
    return None


def infer_shapes(graph: Graph, input_shape: Shape, limits: Limits = DEFAULT_LIMITS,
                 strict: bool = False) -> ShapeResult:
    """The shape of every node. Raises NetDSLShapeError (or NetDSLLimitError) at the first problem.

    With size names in `input_shape` (3xHxW), shapes are formulas in them, and each layer's
    conditions on the sizes (tensors not empty, merge branches equal, crops inside, and for
    `strict` windows that fit) are solved at the end for the valid sizes of each name.
    """
    shapes: list[Shape] = []
    warnings: list[Diagnostic] = []
    conditions: list[tuple[int, Constraint]] = []
    seen: set = set()
    non_empty: set = set()
    for node in graph.nodes:
        checks = ShapeChecks()
        found = checks.messages
        inputs = [shapes[i] for i in node.inputs] if node.inputs else [tuple(input_shape)]
        try:
            shape = OPS[node.op].shape(node, inputs, checks)
            for d in shape:
                if isinstance(d, int):
                    if d <= 0:
                        raise ShapeProblem(f"{slide_notation(node.op, node.attrs)} makes the tensor empty: "
                                           f"{format_shape(inputs[0])} -> {format_shape(shape)}", shape)
                elif isinstance(d, Size) and d not in non_empty:  # stated once; a product of sizes is positive
                    non_empty.add(d)
                    checks.condition(Constraint(d - 1, "ge", reason=Reason(_non_empty, node, shape)))
        except ShapeProblem as problem:
            notes = (*problem.notes, *_context_notes(node), "shapes: " + _chain(graph, shapes, node, problem.result))
            raise NetDSLShapeError(problem.message, node.span, notes, tuple(warnings)) from None
        for c in checks.conditions:
            key = (c.expr, c.kind, c.fit)  # a chain repeats its sizes: keep the first, where it arises
            if key not in seen:
                seen.add(key)
                conditions.append((node.id, c))
        if checks.conditions or is_symbolic(shape):
            pass  # formulas: the tensor's size is bounded once a concrete input size is chosen
        elif (elements := math.prod(shape)) > limits.max_tensor_elements:
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
    if not is_symbolic(input_shape):
        return ShapeResult(tuple(shapes), tuple(warnings))
    names = size_names(input_shape)
    try:
        valid, strict_valid = solve_both([c for _, c in conditions], names)
    except SymbolicError as error:
        raise NetDSLShapeError(f"the input's sizes are tied together: {error}",
                               notes=["netdsl solves each size name on its own; give the sizes as "
                                      "numbers (--input 3x224x224)"]) from None
    for name in names:
        if valid[name].is_empty():
            _culprit(graph, name, conditions, False, warnings)
        if strict and strict_valid[name].is_empty():
            _culprit(graph, name, conditions, True, warnings)
    return ShapeResult(tuple(shapes), tuple(warnings), valid, strict_valid, tuple(conditions))


def _non_empty(node, shape) -> str:
    return f"{slide_notation(node.op, node.attrs)} gives a non-empty tensor: {format_shape(shape)}"


def _culprit(graph: Graph, name: str, conditions: list, strict: bool, warnings: list) -> None:
    """Raise the error for a name with no valid size, at the layer whose condition took the last
    size away (found by bisecting the conditions in program order)."""
    kept = [(i, c) for i, c in conditions if (strict or not c.fit) and name in c.expr.names()]
    lo, hi = 0, len(kept) - 1  # the shortest prefix with no valid size ends at kept[hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if solve([c for _, c in kept[:mid + 1]], [name], strict=True)[name].is_empty():
            hi = mid
        else:
            lo = mid + 1
    node_id, culprit = kept[lo]
    node = graph.nodes[node_id]
    before = solve([c for _, c in kept[:lo]], [name], strict=True)[name]
    what = "fits exactly (--strict)" if strict else "works"
    raise NetDSLShapeError(
        f"no input size {name} {what}: {str(culprit.reason)}",
        node.span, [f"the layers before it take {before.describe()}", *_context_notes(node)],
        tuple(warnings))


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
