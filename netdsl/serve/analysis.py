"""What the playground shows for one text: nets, diagnostics, summary, drawing and source spans.

Kept apart from the web app (no starlette here) so benchmarks/serve_latency.py times exactly the
work one edit costs the server.

>>> result = analyse("conv3-8 - pool - fc10", input_shape="3x32x32")
>>> result["ok"], result["summary"]["params"]
(True, 20714)
"""
from __future__ import annotations

import gc
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..draw import render
from ..errors import Diagnostic, NetDSLError, NetDSLNameError, Span
from ..limits import Limits
from ..report import summary_dict
from ..source import parse_module

#: A stricter budget than the command line's: the text comes from a browser, and the server must
#: stay responsive while someone types (the largest shipped network, GoogLeNet, has under 600 nodes).
SERVE_LIMITS = Limits(
    max_source_chars=200_000, max_nesting=32, max_call_depth=32, max_repeat=1_000,
    max_nodes=5_000, max_expansion_steps=200_000, max_tensor_elements=2**28,
    max_dimension=100_000, max_uses=8)

#: Drawing every layer of a big network takes the renderer seconds; past this many nodes the
#: playground draws collapsed (depth 1) and says so.
MAX_EXPANDED_NODES = 1_500

#: The renderer is a subprocess: it runs while this process builds the summary.
_RENDERING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="netdsl-render")


class _RecentBuilds:
    """The last few (module, names) and networks by text: expanding a block or choosing another
    net re-checks the same text, which then costs no parse."""

    def __init__(self, size: int = 4):
        self.size = size
        self.entries: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.entries[key] = value
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)


_RECENT = _RecentBuilds()

_SVG_NODE = re.compile(r'<g id="(ir|box)(\d+)" class="node"')


def _utf16_converter(text: str):
    """Python offsets count code points, CodeMirror's count UTF-16 units: convert for the page."""
    if text.isascii():
        return lambda offset: offset
    units, total = [0] * (len(text) + 1), 0
    for i, char in enumerate(text):
        total += 2 if ord(char) > 0xFFFF else 1
        units[i + 1] = total
    return lambda offset: units[max(0, min(offset, len(text)))]


class _Spans:
    """Spans of the edited text as [from, to] in UTF-16 units; spans of other files are None."""

    def __init__(self, text: str, path: str):
        self.path = path
        self.convert = _utf16_converter(text)

    def here(self, span: Span | None) -> list[int] | None:
        if span is None or span.source.path != self.path:
            return None
        return [self.convert(span.start), self.convert(span.end)]

    def diagnostic(self, diagnostic: Diagnostic) -> dict:
        place = self.here(diagnostic.span)
        message = diagnostic.message
        if place is None and diagnostic.span is not None:  # in a file read through `use`
            message = f"{diagnostic.span.location()}: {message}"
        return {"severity": diagnostic.severity, "message": message,
                "notes": list(diagnostic.notes), "from": place[0] if place else 0,
                "to": place[1] if place else 0, "placed": place is not None}


def analyse(text: str, net: str | None = None, depth: int | None = 1, path: str = "<string>",
            input_shape=None, limits: Limits = SERVE_LIMITS, draw: bool = True,
            opened: tuple[int, ...] = ()) -> dict:
    """Check `text` and gather everything the page shows; a mistake becomes a diagnostic, never
    an exception. `path` is where `use` looks (FILE's folder); `net` picks one of several nets;
    `opened` lists the boxes the user clicked open (netdsl.draw.draw's `opened`)."""
    spans = _Spans(text, path)
    result: dict = {"ok": False, "nets": [], "net": None, "diagnostics": [], "summary": None,
                    "svg": None, "nodes": [], "owners": [], "boxes": {}, "depth": depth}
    collecting = gc.isenabled()
    gc.disable()  # as netdsl.parse does: building the IR sets off needless full collections
    try:
        network = _network(text, net, path, input_shape, limits, result)
    except NetDSLError as error:
        result["diagnostics"] = [spans.diagnostic(d) for d in (*error.warnings, error.diagnostic)]
        return result
    finally:
        if collecting:
            gc.enable()
    result["ok"] = True
    result["diagnostics"] = [spans.diagnostic(w) for w in network.warnings]
    if depth is None and len(network.graph) > MAX_EXPANDED_NODES:
        depth = 1
        result["diagnostics"].append({
            "severity": "info", "from": 0, "to": 0, "placed": False, "notes": [],
            "message": f"drawn collapsed: {len(network.graph):,} layers are too many to draw one by "
                       f"one here (at most {MAX_EXPANDED_NODES:,}); `netdsl draw --expand` can"})
    result["depth"] = depth
    try:
        source = network.draw(depth=depth, opened=opened).source if draw else None
    except NetDSLError:  # opened boxes past the drawing budget: shut them again
        source = network.draw(depth=depth).source
        result["diagnostics"].append({
            "severity": "info", "from": 0, "to": 0, "placed": False, "notes": [],
            "message": "the opened boxes would make the drawing too large: drawn shut"})
    svg = _RENDERING.submit(render, source, "svg") if draw else None
    # without groups: the page shows layers, and each group repeats its layers' names
    summary = summary_dict(network, groups=False)
    summary["file"] = Path(path).name  # the page needs no absolute path
    result["summary"] = summary
    # The nodes of one call share their context, and nested calls share their outer frames: each
    # context and each frame is placed once (the graph keeps them alive, so ids are not reused).
    frames: dict[int, list] = {}
    placed: dict[int, list[int] | None] = {}

    def place(frame) -> list[int] | None:
        found = placed.get(id(frame), frame)
        if found is frame:
            found = placed[id(frame)] = spans.here(frame.span)
        return found

    def frames_of(context: tuple) -> list:
        found = frames.get(id(context))
        if found is None:
            found = frames[id(context)] = [s for s in map(place, context) if s]
        return found

    result["nodes"] = [{"id": node.id, "span": spans.here(node.span), "frames": frames_of(node.context)}
                       for node in network.graph.nodes]
    if svg is not None:
        try:
            _drawing(network, svg.result().decode("utf-8"), result, spans)
        except (NetDSLError, RuntimeError, OSError) as error:
            result["diagnostics"].append({"severity": "info", "message": f"cannot draw: {error}",
                                          "from": 0, "to": 0, "placed": False, "notes": []})
    return result


def explain(text: str, node: int, net: str | None = None, path: str = "<string>",
            input_shape=None, limits: Limits = SERVE_LIMITS) -> dict:
    """The worked arithmetic of layer `node` (netdsl.explain), what the page shows on hover. Asked
    for one layer at a time: every layer of ResNet-152 would add 40 ms and 600 KB to each edit.
    The network is the one the last check built, from the cache, so a hover costs no parse."""
    result: dict = {}
    try:
        network = _network(text, net, path, input_shape, limits, result)
    except NetDSLError as error:
        return {"error": error.message}
    if not 0 <= node < len(network.graph):
        return {"error": f"no layer {node} in {network.name}"}
    from ..explain import explain_layer
    return explain_layer(network, node).to_dict()


def _network(text: str, net: str | None, path: str, input_shape, limits: Limits, result: dict):
    parsed = _RECENT.get(("module", text, path, limits))
    if parsed is None:  # one parse serves both the list of nets and the chosen one
        parsed = parse_module(text, path, limits)
        _RECENT.put(("module", text, path, limits), parsed)
    names = parsed.nets
    result["nets"] = names
    if not names:
        raise NetDSLNameError("this text defines no network, only definitions",
                              notes=["add a chain, or `net NAME = ...`"])
    chosen = net if net in names else names[0]
    result["net"] = chosen
    key = ("network", text, path, limits, chosen, input_shape)
    network = _RECENT.get(key)
    if network is None:
        network = parsed.build(chosen, input_shape)
        _RECENT.put(key, network)
    return network


def _drawing(network, svg: str, result: dict, spans: _Spans) -> None:
    result["svg"] = svg
    # Each drawn element shows a run of consecutive nodes: a layer (ir<id>) or a collapsed box
    # (box<first id>) holding every node up to the next element's first.
    starts = sorted((int(number), kind) for kind, number in _SVG_NODE.findall(svg))
    owners = [""] * len(network.graph)
    boxes = {}
    for index, (first, kind) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(owners)
        element = f"{kind}{first}"
        for node_id in range(first, end):
            owners[node_id] = element
        if kind == "box":
            boxes[element] = {"first": first, "last": end - 1,
                              "span": _common_call(network.graph.nodes[first:end], spans)}
    result["owners"] = owners
    result["boxes"] = boxes


def _common_call(nodes, spans: _Spans) -> list[int] | None:
    """The innermost definition call every node of a box came from: what the box stands for."""
    common = list(nodes[0].context)
    for node in nodes[1:]:
        length = 0
        while length < min(len(common), len(node.context)) and common[length] == node.context[length]:
            length += 1
        del common[length:]
    for frame in reversed(common):
        place = spans.here(frame.span)
        if place:
            return place
    return spans.here(nodes[0].span)
