"""Shape checking: every tensor's shape from the input shape alone, before any tensor exists.

One rule per op in `SHAPE_RULES`; `infer_shapes` is the single loop that drives them. Shapes leave
the batch out: (C, H, W) for images, (C,) for flat vectors.

>>> infer_shapes(netdsl.parse("conv3-64/2 - pool").graph, (3, 224, 224)).shapes[-1]
(64, 56, 56)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .errors import Diagnostic, NetDSLLimitError, NetDSLShapeError
from .ir import Graph, Node
from .limits import DEFAULT_LIMITS, Limits
from .ops import slide_notation

Shape = tuple[int, ...]


class ShapeProblem(Exception):
    """Raised by a shape rule; `infer_shapes` turns it into a NetDSLShapeError at the node's span."""

    def __init__(self, message: str, result: Shape | None = None, notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.result = result  # the impossible shape, when there is one (512x0x0)
        self.notes = notes


def format_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _image(op: str, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ShapeProblem(f"{op} needs a CxHxW input, got a flat tensor of {shape[0]}",
                           notes=("only fc, bn, dropout, activations and merges take flat input",))
    return shape


def _window(size: int, k: int, stride: int, pad: int, dilation: int, ceil: bool) -> tuple[int, int]:
    """Output length of a sliding window, and how many trailing input rows no window reaches."""
    span = dilation * (k - 1) + 1
    room = size + 2 * pad - span
    if room < 0 and not ceil:
        return room // stride + 1, 0  # <= 0: reported as an empty tensor
    out = (-(-room // stride) if ceil else room // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or its left padding (torch, Caffe)
    last_covered = (out - 1) * stride - pad + span - 1
    # A stride larger than the window skips rows on purpose (a 1x1 stride-2 shortcut): only a
    # window that does not fit at the end is the slides' "doesn't fit".
    unused = size - 1 - last_covered if span >= stride else 0
    return out, max(0, unused)


def _sliding(op: str, shape: Shape, k: int, stride: int, pad: int, dilation: int, ceil: bool,
             warn: Callable[[str], None]) -> tuple[int, int]:
    """Output height and width; warns once if the window leaves input rows or columns unused."""
    _, h, w = shape
    out_h, rows = _window(h, k, stride, pad, dilation, ceil)
    out_w, cols = _window(w, k, stride, pad, dilation, ceil)
    if rows or cols:
        parts = [f"{n} {word}{'s' * (n != 1)}" for n, word in ((rows, "row"), (cols, "column")) if n]
        size = h if rows else w
        warn(f"{op} leaves {' and '.join(parts)} of the input unused: "
             f"({size} + 2*{pad} - {dilation * (k - 1) + 1}) is not a multiple of stride {stride}")
    return out_h, out_w


def _conv(node: Node, inputs: list[Shape], warn) -> Shape:
    a = node.attrs
    c, _, _ = _image("conv", inputs[0])
    _groups("conv", c, a["c"], a["groups"])
    return (a["c"], *_sliding(slide_notation("conv", a), inputs[0], a["k"], a["stride"], a["pad"],
                              a["dilation"], False, warn))


def _groups(op: str, c_in: int, c_out: int, groups: int) -> None:
    if c_in % groups:
        raise ShapeProblem(f"{op} with groups={groups} needs input channels divisible by {groups}, "
                           f"got {c_in}")
    if c_out % groups:
        raise ShapeProblem(f"{op} with groups={groups} needs output channels divisible by {groups}, "
                           f"got {c_out}")


def _deconv(node: Node, inputs: list[Shape], warn) -> Shape:
    a = node.attrs
    c, h, w = _image("deconv", inputs[0])
    _groups("deconv", c, a["c"], a["groups"])
    if a["output_pad"] >= max(a["stride"], a["dilation"]):
        raise ShapeProblem(f"deconv output_pad must be smaller than its stride or dilation, "
                           f"got {a['output_pad']}")

    def grow(n: int) -> int:
        return (n - 1) * a["stride"] - 2 * a["pad"] + a["dilation"] * (a["k"] - 1) + 1 + a["output_pad"]
    return (a["c"], grow(h), grow(w))


def _pool(node: Node, inputs: list[Shape], warn) -> Shape:
    a = node.attrs
    c, _, _ = _image(node.op, inputs[0])
    if a["pad"] > a["k"] // 2:
        raise ShapeProblem(f"{node.op} pad must be at most half the window ({a['k'] // 2}), "
                           f"got {a['pad']}")
    return (c, *_sliding(slide_notation(node.op, a), inputs[0], a["k"], a["stride"], a["pad"], 1,
                         a["ceil"], warn))


def _gap(node: Node, inputs: list[Shape], warn) -> Shape:
    return (_image("gap", inputs[0])[0], 1, 1)


def _fc(node: Node, inputs: list[Shape], warn) -> Shape:
    return (node.attrs["c"],)


def _same(node: Node, inputs: list[Shape], warn) -> Shape:
    return inputs[0]


def _same_image(node: Node, inputs: list[Shape], warn) -> Shape:
    return _image(node.op, inputs[0])


def _flatten(node: Node, inputs: list[Shape], warn) -> Shape:
    return (math.prod(inputs[0]),)


def _crop(node: Node, inputs: list[Shape], warn) -> Shape:
    c, h, w = _image("crop", inputs[0])
    like = _image("crop's like", inputs[1])
    offset = node.attrs["offset"]
    if offset + like[1] > h or offset + like[2] > w:
        raise ShapeProblem(f"crop of {format_shape(inputs[0])} at offset {offset} to "
                           f"{like[1]}x{like[2]} runs past the input")
    return (c, like[1], like[2])


def _add(node: Node, inputs: list[Shape], warn) -> Shape:
    first = inputs[0]
    for i, shape in enumerate(inputs[1:], 2):
        if shape != first:
            raise ShapeProblem(
                f"add{{}} branches differ in shape: branch 1 gives {format_shape(first)}, "
                f"branch {i} gives {format_shape(shape)}",
                notes=("add needs every branch to give the same shape; a 1x1 conv with a stride "
                       "can match a shortcut to its residual branch",))
    return first


def _concat(node: Node, inputs: list[Shape], warn) -> Shape:
    first = inputs[0]
    for i, shape in enumerate(inputs[1:], 2):
        if len(shape) != len(first) or shape[1:] != first[1:]:
            raise ShapeProblem(
                f"cat{{}} branches differ in size: branch 1 gives {format_shape(first)}, "
                f"branch {i} gives {format_shape(shape)}",
                notes=("cat joins channels, so every other dimension must agree",))
    return (sum(shape[0] for shape in inputs), *first[1:])


ShapeRule = Callable[[Node, list, Callable[[str], None]], Shape]

SHAPE_RULES: dict[str, ShapeRule] = {
    "input": _same,
    "conv": _conv,
    "deconv": _deconv,
    "maxpool": _pool,
    "avgpool": _pool,
    "gap": _gap,
    "fc": _fc,
    "bn": _same,
    "lrn": _same_image,
    "dropout": _same,
    "relu": _same,
    "tanh": _same,
    "sigmoid": _same,
    "lrelu": _same,
    "elu": _same,
    "softmax": _same,
    "flatten": _flatten,
    "crop": _crop,
    "concat": _concat,
    "add": _add,
}


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
            shape = SHAPE_RULES[node.op](node, inputs, found.append)
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
