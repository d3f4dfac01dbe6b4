"""IR -> .net text: the fully explicit program that `netdsl expand` prints.

Every op is written in keyword form with every attribute, every implicit activation shows as the
layer's `act=`, and every definition call becomes a labelled group named as in the IR, so the
output parses back to the same IR (names included) and printing that again gives the same text.
"""
from __future__ import annotations

from .ir import (Graph, LayoutAux, LayoutChain, LayoutIdentity, LayoutMerge, LayoutOp, LayoutScope, LayoutVisitor,
                 Node)
from .ops import OPS
from .ops.base import stated_attrs
from .shapes import format_shape

_INDENT = "    "


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text if any(ch in text for ch in ".e") else text + ".0"
    return str(value)


def format_op(node: Node, refs: tuple[tuple[str, str], ...] = ()) -> str:
    """conv(k=3, c=64, stride=1, ...): the keyword form with every attribute (but the per-axis
    ones where both axes agree, and conv1x7's k, which is None: its kh and kw say it)."""
    parts = [f"{key}={format_value(value)}" for key, value in stated_attrs(OPS[node.op], node.attrs).items()]
    parts.extend(f"{key}=@{label}" for key, label in refs)
    return f"{node.op}({', '.join(parts)})" if parts else node.op


def print_program(graph: Graph, layout: LayoutChain, input_shape: tuple[int, ...],
                  named: bool, header: str = "") -> str:
    """The whole program: settings, then the net (named, or the file's one unnamed chain)."""
    lines = [f"# {header}"] if header else []
    lines += [f"input {format_shape(input_shape)}", "activation none"]
    if named:
        lines.append(f"net {graph.name} =")
    lines.extend(_chain(graph, layout, 1 if named else 0))
    return "\n".join(lines) + "\n"


def _labelled(label: str | None, text: str) -> str:
    return f"{label}: {text}" if label else text


def _chain(graph: Graph, chain: LayoutChain, depth: int) -> list[str]:
    """The chain's items, one per line, joined by '-' at the start of continuation lines."""
    pieces: list[list[str]] = []
    if chain.start is not None:
        pieces.append([f"@{chain.start}"])
    for item in chain.items:
        pieces.append(_item(graph, item, depth))
    if not pieces:
        pieces.append(["id"])
    lines: list[str] = []
    pad = _INDENT * depth
    for i, piece in enumerate(pieces):
        first, *rest = piece
        lines.append(pad + ("- " if i else "") + first)
        lines.extend(rest)
    return lines


class _Lines(LayoutVisitor):
    """Each layout item as its lines of text."""

    def __init__(self, graph: Graph):
        self.graph = graph

    def visit_op(self, item: LayoutOp, depth: int) -> list[str]:
        return [_labelled(item.label, format_op(self.graph[item.node], item.refs))]

    def visit_identity(self, item: LayoutIdentity, depth: int) -> list[str]:
        return [_labelled(item.label, "id")]

    def visit_scope(self, item: LayoutScope, depth: int) -> list[str]:
        inner = _chain(self.graph, item.body, depth + 1)
        return [f"{item.name}: (", *inner, _INDENT * depth + ")"]

    def visit_merge(self, item: LayoutMerge, depth: int) -> list[str]:
        op = OPS[self.graph[item.node].op]
        lines = [_labelled(item.label, (op.merge_word or op.name) + "{")]
        for i, branch in enumerate(item.branches):
            if i:
                lines.append(_INDENT * depth + "|")
            lines.extend(_chain(self.graph, branch, depth + 1))
        lines.append(_INDENT * depth + "}")
        return lines


    def visit_aux(self, item: LayoutAux, depth: int) -> list[str]:
        return [_labelled(item.label, "aux{"), *_chain(self.graph, item.head, depth + 1), _INDENT * depth + "}"]


def _item(graph: Graph, item, depth: int) -> list[str]:
    return _Lines(graph).visit(item, depth)
