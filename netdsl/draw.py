"""Pictures of networks: IR + layout -> a graphviz.Digraph, and DOT -> SVG/PNG without system Graphviz.

Nodes read as the slides write layers (conv3-64+relu, maxpool3/2, fc4096, cat, add) with their
output shape; edges carry tensor shapes. Definition calls deeper than `depth` collapse into one box,
and consecutive identical calls merge into one (`bottleneck(256) x5`), so ResNet-152 fits on a
screen; shallower calls are drawn as clusters around their layers.

>>> netdsl.load("resnet50").draw(depth=1).source   # DOT text, byte-identical for the same input
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path
from typing import Iterable

import graphviz

from .errors import NetDSLError, NetDSLLimitError
from .ir import LayoutAux, LayoutChain, LayoutMerge, LayoutOp, LayoutScope, LayoutVisitor, node_ids
from .ops import OPS
from .report import notation
from .shapes import format_shape

_BOX_COLOUR = "#9ecae1"


def _text(value: object) -> str:
    """A label line that cannot break the DOT: backslashes and quotes escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def _label(*lines: str) -> str:
    return "\\n".join(_text(line) for line in lines if line)


def _stat_lines(params: int, macs: int, rf=None) -> list[str]:
    lines = []
    if params:
        lines.append(f"{params:,} params" if isinstance(params, int) else f"{params} params")
    if macs:
        lines.append(f"{macs:,} MACs" if isinstance(macs, int) else f"{macs} MACs")
    if rf is not None:
        lines.append(f"rf {rf}")
    return lines


class _Drawing(LayoutVisitor):
    def __init__(self, network, depth: int | None, stats: bool, opened: Counter | None = None):
        self.network = network
        self.opened = Counter(opened or ())
        self.graph_ir = network.graph
        self.layers = network.stats.layers
        self.depth = depth
        self.stats = stats
        self.owner: dict[int, str] = {0: "n0"}  # IR node -> the visual node that shows it

    def op_node(self, graph: graphviz.Digraph, node_id: int) -> None:
        node = self.graph_ir[node_id]
        layer = self.layers[node_id]
        lines = [notation(node), format_shape(layer.shape)]
        if self.stats:
            lines += _stat_lines(layer.params, layer.macs, _plain(layer.rf))
        colour = OPS[node.op].colour
        # the id lets a page map the SVG back to IR nodes (netdsl serve highlights the source)
        graph.node(f"n{node_id}", _label(*lines), fillcolor=colour, id=f"ir{node_id}")
        self.owner[node_id] = f"n{node_id}"

    def box(self, graph: graphviz.Digraph, scopes: list[LayoutScope]) -> None:
        ids = [i for scope in scopes for i in node_ids(scope.body)]
        if not ids:
            return
        title = _scope_title(scopes[0])
        if len(scopes) > 1:
            title += f" x{len(scopes)}"
        members = [self.layers[i] for i in ids]
        lines = [title, format_shape(self.layers[ids[-1]].shape)]
        if self.stats:
            lines += _stat_lines(sum(l.params for l in members), sum(l.macs for l in members))
        name = f"g{ids[0]}"
        graph.node(name, _label(*lines), fillcolor=_BOX_COLOUR, penwidth="1.5", id=f"box{ids[0]}")
        for i in ids:
            self.owner[i] = name

    def visit_chain(self, chain: LayoutChain, graph: graphviz.Digraph, depth: int, prefix: str) -> None:
        for part in _runs(chain.items, self.depth is not None and depth >= self.depth, self.opened):
            if isinstance(part, tuple):  # collapsed calls: one box
                self.box(graph, list(part))
            else:
                self.visit(part, graph, depth, prefix)

    def visit_scope(self, item: LayoutScope, graph: graphviz.Digraph, depth: int, prefix: str) -> None:
        path = prefix + item.name
        with graph.subgraph(name=f"cluster_{path}") as cluster:
            cluster.attr(label=_text(_scope_title(item)), style="rounded,dashed",
                         color="#6b6b6b", fontcolor="#404040")
            self.visit(item.body, cluster, depth + 1, path + ".")

    def visit_op(self, item: LayoutOp, graph: graphviz.Digraph, depth: int, prefix: str) -> None:
        self.op_node(graph, item.node)

    def visit_merge(self, item: LayoutMerge, graph: graphviz.Digraph, depth: int, prefix: str) -> None:
        name = self.graph_ir[item.node].name
        for b, branch in enumerate(item.branches, 1):
            self.visit(branch, graph, depth, f"{name}.b{b}.")
        self.op_node(graph, item.node)

    def visit_aux(self, item: LayoutAux, graph: graphviz.Digraph, depth: int, prefix: str) -> None:
        """The head in a dashed cluster ending in an oval: an output, as the input is an oval."""
        name = self.graph_ir[item.node].name
        with graph.subgraph(name=f"cluster_{name}") as cluster:
            cluster.attr(label=_text(f"{name}: auxiliary output (training)"), style="rounded,dashed",
                         color="#6b6b6b", fontcolor="#404040")
            self.visit(item.head, cluster, depth + 1, name + ".")
            layer = self.layers[item.node]
            cluster.node(f"n{item.node}", _label(name, format_shape(layer.shape)), shape="oval",
                         fillcolor=OPS["aux"].colour, id=f"ir{item.node}")
        self.owner[item.node] = f"n{item.node}"

    def edges(self, graph: graphviz.Digraph) -> None:
        drawn: set[tuple[str, str]] = set()
        for node in self.graph_ir.nodes:
            for position, source in enumerate(node.inputs):
                tail, head = self.owner[source], self.owner[node.id]
                if tail == head or (tail, head) in drawn:
                    continue
                drawn.add((tail, head))
                shape = format_shape(self.layers[source].shape)
                if position in OPS[node.op].shape_only_inputs:  # crop's `like` reads only the size
                    graph.edge(tail, head, label=_text(f"size of {shape}"), style="dashed")
                else:
                    graph.edge(tail, head, label=_text(shape))


def _plain(value):
    return int(value) if value == int(value) else float(value)


def _scope_title(scope: LayoutScope) -> str:
    """bottleneck(256), or p3: block(3, 256) when the call was labelled, or the group's label."""
    if scope.call is None:
        return scope.name
    call = scope.call.removesuffix("()")  # stem, not stem()
    if _is_auto_name(scope.name, scope.call):
        return call
    return f"{scope.name}: {call}"


def _is_auto_name(name: str, call: str) -> bool:
    """block3 for block(...): a name the expander chose, not a label the user wrote."""
    base = call.split("(", 1)[0]
    return name.startswith(base) and name[len(base):].isdigit()


#: Boxes one drawing may hold: past this, a layout takes minutes and a picture shows nothing.
#: Every shipped network fits expanded (ResNet-152: 515 layers).
MAX_DRAWING_NODES = 5000


class NetworkDrawing(graphviz.Digraph):
    """A graphviz.Digraph that renders through netdsl's renderer: `.pipe()`, `.render()` and the
    Jupyter display work with no system Graphviz (graphviz-pure is installed with netdsl)."""

    def pipe(self, format: str | None = None, renderer=None, formatter=None, neato_no_op=None,
             quiet: bool = False, *, engine=None, encoding: str | None = None):
        """The drawing rendered to `format` (svg by default): bytes, or text with `encoding`."""
        data = render(self.source, format or self.format)
        return data.decode(encoding) if encoding else data

    def render(self, filename=None, directory=None, view: bool = False, cleanup: bool = False,
               format: str | None = None, renderer=None, formatter=None, neato_no_op=None,
               quiet: bool = False, quiet_view: bool = False, *, outfile=None, engine=None,
               raise_if_result_exists: bool = False, overwrite_source: bool = False) -> str:
        """Write the rendered drawing and return its path: `outfile`, else FILENAME.FORMAT (the
        DOT source is written beside it unless `cleanup`), as graphviz's own render does."""
        fmt = format or (Path(outfile).suffix.lstrip(".") if outfile else None) or self.format
        if outfile is None:
            base = Path(directory or self.directory or "") / (filename or self.filename or
                                                              f"{self.name or 'network'}.gv")
            if not cleanup:
                base.write_text(self.source, encoding="utf-8")
            outfile = f"{base}.{fmt}"
        Path(outfile).write_bytes(render(self.source, fmt))
        return str(outfile)


def draw(network, depth: int | None = 1, rankdir: str = "TB", stats: bool = False,
         title: str | None = None, max_nodes: int = MAX_DRAWING_NODES,
         opened: Iterable[int] = ()) -> NetworkDrawing:
    """The network as a NetworkDrawing (a graphviz.Digraph). `depth=None` draws every layer;
    `depth=0` only the top-level layers and one box per top-level definition call. `opened`
    names boxes to draw open below that depth, each by its first layer's node id (the SVG's
    `box<id>`): the playground opens the box a user clicks and leaves the others shut. A drawing
    of more than `max_nodes` boxes is refused (NetDSLLimitError) before it is laid out."""
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"rankdir must be TB, LR, BT or RL, got {rankdir!r}")
    opened = Counter(opened)
    boxes = _count_boxes(network.layout, depth, max_nodes, opened)
    if boxes > max_nodes:
        raise _too_big(max_nodes, expanded=depth is None)
    graph = NetworkDrawing(name=_text(network.name), format="svg")
    heading = title if title is not None else (
        f"{network.name}: {format_shape(network.input_shape)} -> {format_shape(network.output_shape)}, "
        + (f"{network.params:,} params, {network.macs:,} MACs" if not network.symbolic else
           "; ".join(s.describe() for s in network.valid_sizes.values())))
    graph.attr(rankdir=rankdir, label=_text(heading), labelloc="t", fontname="Helvetica",
               fontsize="16", nodesep="0.25", ranksep="0.35")
    graph.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="11",
               color="#4d4d4d", margin="0.12,0.04")
    graph.attr("edge", fontname="Helvetica", fontsize="9", color="#4d4d4d", fontcolor="#404040",
               arrowsize="0.7")
    drawing = _Drawing(network, depth, stats, opened)
    graph.node("n0", _label("input", format_shape(network.input_shape)), shape="oval",
               fillcolor=OPS["input"].colour, id="ir0")
    drawing.visit(network.layout, graph, 0, "")
    drawing.edges(graph)
    return graph


class _BoxCount(LayoutVisitor):
    """How many boxes the drawing will have, walked as _Drawing walks (the same runs), without
    building anything; stops once past the budget."""

    def __init__(self, depth: int | None, budget: int, opened: Counter | None = None):
        self.depth = depth
        self.budget = budget
        self.opened = Counter(opened or ())
        self.boxes = 1  # the input

    def visit_chain(self, chain: LayoutChain, level: int) -> None:
        for part in _runs(chain.items, self.depth is not None and level >= self.depth, self.opened):
            if self.boxes > self.budget:
                return
            if isinstance(part, tuple):
                self.boxes += 1
            else:
                self.visit(part, level)

    def visit_scope(self, item: LayoutScope, level: int) -> None:
        self.visit(item.body, level + 1)

    def visit_op(self, item: LayoutOp, level: int) -> None:
        self.boxes += 1

    def visit_merge(self, item: LayoutMerge, level: int) -> None:
        self.boxes += 1
        super().visit_merge(item, level)

    def visit_aux(self, item: LayoutAux, level: int) -> None:
        self.boxes += 1
        super().visit_aux(item, level)


def _count_boxes(layout: LayoutChain, depth: int | None, budget: int,
                 opened: Counter | None = None) -> int:
    counter = _BoxCount(depth, budget, opened)
    counter.visit(layout, 0)
    return counter.boxes


def _runs(items, collapsed: bool, opened: Counter | None = None):
    """A chain's items as drawn: each item, except that where calls are `collapsed`, a definition
    call is a tuple run of the consecutive calls it merges with into one box (block x3).

    A run whose box is in `opened` (by its first node id) is drawn as its calls, each shut inside.
    A box and the first box inside it start at the same node, so each mention opens one level,
    outermost first, and is used up: naming an id twice opens two levels."""
    i = 0
    while i < len(items):
        item = items[i]
        if collapsed and isinstance(item, LayoutScope):
            j = i + 1
            if item.call is not None and _is_auto_name(item.name, item.call):
                while (j < len(items) and isinstance(items[j], LayoutScope)
                       and items[j].call == item.call and _is_auto_name(items[j].name, item.call)):
                    j += 1
            first = _first_node(items[i]) if opened else None
            if first is not None and opened[first] > 0:
                opened[first] -= 1
                yield from items[i:j]
            else:
                yield tuple(items[i:j])
            i = j
        else:
            yield item
            i += 1


def _first_node(scope: LayoutScope) -> int | None:
    found = node_ids(scope.body)
    return found[0] if found else None


def _too_big(max_nodes: int, expanded: bool) -> NetDSLLimitError:
    notes = ["draw collapsed instead (--depth 1, the default, or --depth 0)"] if expanded else \
        ["draw fewer boxes with --depth 0, or put the repeated layers in a definition"]
    return NetDSLLimitError(
        f"the drawing would have more than {max_nodes:,} boxes", None,
        [*notes, "raise the limit with --max-nodes N (draw(max_nodes=N) in Python)"])


# -- rendering ------------------------------------------------------------------------------------

#: What each renderer can write. graphviz-pure is a declared dependency, so svg and png always work.
PURE_FORMATS = ("svg", "png", "jpg", "jpeg", "json", "plain")
DOT_FORMATS = ("svg", "png", "jpg", "jpeg", "pdf", "json", "plain", "ps", "eps")


def _pure_binary() -> str | None:
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = folder / ("graphviz-pure.exe" if os.name == "nt" else "graphviz-pure")
        if candidate.is_file():
            return str(candidate)
    return shutil.which("graphviz-pure")


def find_renderer(fmt: str, prefer: str = "auto") -> list[str]:
    """The command that renders DOT to `fmt`: the system `dot` if present, else graphviz-pure."""
    system = shutil.which("dot") if prefer in ("auto", "dot") else None
    if system and fmt in DOT_FORMATS:
        return [system, f"-T{fmt}"]
    if prefer == "dot":
        raise NetDSLError("no system Graphviz (`dot`) found",
                          notes=["use --renderer pure (svg, png, jpg) or install Graphviz"])
    pure = _pure_binary()
    if pure is None:
        raise NetDSLError("cannot find the graphviz-pure renderer",
                          notes=["reinstall netdsl (pip install netdsl) or install Graphviz"])
    if fmt not in PURE_FORMATS:
        raise NetDSLError(f"graphviz-pure cannot write {fmt}",
                          notes=[f"it writes {', '.join(PURE_FORMATS)}; for {fmt}, install Graphviz "
                                 "(its `dot` is used when present) or write svg and convert it"])
    return [pure, f"-T{fmt}"]


#: Seconds a renderer may take; a drawing within MAX_DRAWING_NODES takes a few.
RENDER_TIMEOUT = 300


def render(source: str, fmt: str, prefer: str = "auto", timeout: float = RENDER_TIMEOUT) -> bytes:
    """Render DOT text to `fmt` bytes."""
    command = find_renderer(fmt, prefer)
    try:
        result = subprocess.run(command, input=source.encode(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NetDSLError(f"{Path(command[0]).name} did not finish drawing within {timeout:g} s",
                          notes=["draw fewer boxes (--depth 0), or write .dot and render it with "
                                 "Graphviz yourself"]) from None
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout
