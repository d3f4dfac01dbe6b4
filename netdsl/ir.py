"""The IR: a flat, topologically ordered DAG of frozen nodes.

A `Graph` is plain data. Node 0 is the input; every node's inputs come earlier in the list; the
last node is the output. Attributes are fully explicit (no defaults left to guess, implicit
activations resolved into `act`), so passes and backends never re-derive surface rules.

>>> graph = netdsl.parse("conv3-64 - pool - fc10", input="3x32x32").graph
>>> [node.name for node in graph.nodes]
['input', 'conv1', 'maxpool1', 'fc1']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Union

from .errors import Span


@dataclass(frozen=True, slots=True)
class Frame:
    """Where a node came from beyond its own span: a definition call or a repeat iteration."""

    description: str  # "block(3, 512)" or "repeat 2 of 5"
    span: Span


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    op: str
    attrs: Mapping[str, Any]
    inputs: tuple[int, ...]
    name: str  # stable and hierarchical: stage2.bottleneck1.conv2
    span: Span | None
    context: tuple[Frame, ...] = ()

    def __repr__(self) -> str:
        attrs = ", ".join(f"{key}={value!r}" for key, value in self.attrs.items())
        return f"Node({self.id}, {self.name!r}, {self.op}({attrs}), inputs={self.inputs})"


@dataclass(frozen=True, slots=True)
class Graph:
    name: str
    nodes: tuple[Node, ...]

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    @property
    def aux_outputs(self) -> tuple[Node, ...]:
        """The `aux` nodes, in order: each marks its input as an auxiliary output."""
        return tuple(node for node in self.nodes if node.op == "aux")

    def inference_nodes(self) -> frozenset[int]:
        """The ids of the nodes the output needs (in eval mode, an auxiliary head is not run)."""
        needed = {len(self.nodes) - 1}
        for node in reversed(self.nodes):
            if node.id in needed:
                needed.update(node.inputs)
        return frozenset(needed)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def consumers(self) -> list[list[int]]:
        """For each node id, the ids of the nodes that read it."""
        readers: list[list[int]] = [[] for _ in self.nodes]
        for node in self.nodes:
            for source in node.inputs:
                readers[source].append(node.id)
        return readers

    def structure(self) -> tuple:
        """Everything but spans and context: what 'the same IR' means in round-trip tests."""
        return tuple((n.op, tuple(n.attrs.items()), n.inputs, n.name) for n in self.nodes)


class Attrs(Mapping[str, Any]):
    """A node's attributes: an immutable, hashable, picklable mapping in a fixed order."""

    __slots__ = ("_items", "_hash")
    _items: dict[str, Any]
    _hash: int | None

    def __init__(self, items: Mapping[str, Any] | None = None):
        object.__setattr__(self, "_items", dict(items or {}))
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        found = self._hash
        if found is None:
            found = hash(tuple(self._items.items()))
            object.__setattr__(self, "_hash", found)
        return found

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self._items == dict(other)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("node attributes cannot be changed")

    def __reduce__(self):
        return (Attrs, (self._items,))

    def __repr__(self) -> str:
        return f"Attrs({self._items!r})"


# -- the layout: the program's tree over the flat node list ----------------------------------------
# Every definition call, labelled group and merge of the source is a scope here, holding the nodes
# it made in order; summaries, drawings, the printer and the torch lowering read the tree through
# one walker, LayoutVisitor. A scope's nodes are a contiguous run of the node list.


@dataclass(frozen=True, slots=True)
class LayoutOp:
    node: int
    label: str | None
    refs: tuple[tuple[str, str], ...] = ()  # reference arguments as written: (("like", "p3"),)


@dataclass(frozen=True, slots=True)
class LayoutIdentity:
    label: str | None


@dataclass(frozen=True, slots=True)
class LayoutChain:
    start: str | None  # the label a branch starts from, as written
    items: tuple["LayoutItem", ...]
    input: int  # the node whose value the chain starts from
    output: int  # the node whose value the chain gives


@dataclass(frozen=True, slots=True)
class LayoutScope:
    name: str  # the local name, printed as a label: block1: ( ... )
    body: LayoutChain
    call: str | None = None  # the definition call it came from, "block(3, 256)"; None for a group


@dataclass(frozen=True, slots=True)
class LayoutMerge:
    node: int
    label: str | None
    branches: tuple[LayoutChain, ...]
    input: int  # the node whose value the branches start from (unless one starts from a label)


@dataclass(frozen=True, slots=True)
class LayoutAux:
    """`aux{ head }`: the head starts from `input`, its result feeds the `aux` node `node`; the
    chain goes on from `input`."""

    node: int
    label: str | None
    head: LayoutChain
    input: int


LayoutItem = Union[LayoutOp, LayoutIdentity, LayoutScope, LayoutMerge, LayoutAux]


class LayoutVisitor:
    """The one walker of the layout tree: `visit(item, ...)` calls `visit_op`, `visit_identity`,
    `visit_scope`, `visit_merge` or `visit_chain`, as pycparser's NodeVisitor dispatches by node
    class. The defaults walk into scopes, branches and chains and do nothing else; a pass overrides
    what it needs and calls the default (or `visit_items`) to descend."""

    _METHODS = {LayoutOp: "visit_op", LayoutIdentity: "visit_identity", LayoutScope: "visit_scope",
                LayoutMerge: "visit_merge", LayoutChain: "visit_chain", LayoutAux: "visit_aux"}

    def visit(self, item, *args):
        return getattr(self, self._METHODS[type(item)])(item, *args)

    def visit_items(self, chain: LayoutChain, *args) -> None:
        for item in chain.items:
            self.visit(item, *args)

    def visit_chain(self, chain: LayoutChain, *args):
        self.visit_items(chain, *args)

    def visit_op(self, item: LayoutOp, *args):
        pass

    def visit_identity(self, item: LayoutIdentity, *args):
        pass

    def visit_scope(self, item: LayoutScope, *args):
        return self.visit(item.body, *args)

    def visit_merge(self, item: LayoutMerge, *args):
        for branch in item.branches:
            self.visit(branch, *args)

    def visit_aux(self, item: LayoutAux, *args):
        return self.visit(item.head, *args)


class _NodeIds(LayoutVisitor):
    def __init__(self):
        self.ids: list[int] = []

    def visit_op(self, item: LayoutOp, *args):
        self.ids.append(item.node)

    def visit_merge(self, item: LayoutMerge, *args):
        super().visit_merge(item)
        self.ids.append(item.node)

    def visit_aux(self, item: LayoutAux, *args):
        super().visit_aux(item)
        self.ids.append(item.node)


def node_ids(item: "LayoutItem | LayoutChain") -> list[int]:
    """Every node made inside a layout item, in node order."""
    collector = _NodeIds()
    collector.visit(item)
    return collector.ids


def freeze_attrs(attrs: Mapping[str, Any]) -> Attrs:
    return Attrs(attrs)
