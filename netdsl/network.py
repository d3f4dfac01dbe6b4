"""The Python API: `parse` and `load` give a shape-checked, measured `Network`.

>>> net = netdsl.parse("[(conv3-64)*2 - pool]*5 - fc4096*2 - fc1000", input="3x224x224")
>>> net.params, net.macs
(34061608, 3198418944)
"""
from __future__ import annotations

import gc
import os
import warnings
import threading
from dataclasses import replace
from functools import cached_property, wraps
from pathlib import Path

from . import ast
from .errors import (Diagnostic, NetDSLError, NetDSLLimitError, NetDSLNameError, NetDSLShapeError,
                     suggest)
from .expand import ExpandedNet, expand_net
from .ir import Graph, LayoutChain
from .limits import DEFAULT_LIMITS, Limits
from .modules import Module, load_module, read_text_file, shipped_networks_dir
from .printer import print_program
from .shapes import Shape, check_input_shape, format_shape, infer_shapes, parse_shape
from .stats import NetworkStats, measure
from .weights import WeightSpec, weight_specs


class Network:
    """One expanded, shape-checked network. Build it with `netdsl.parse` or `netdsl.load`."""

    def __init__(self, expanded: ExpandedNet, input_shape: Shape, path: str, limits: Limits,
                 strict: bool):
        self._expanded = expanded
        self.path = path
        self.limits = limits
        self.strict = strict
        self.graph: Graph = expanded.graph
        self.input_shape: Shape = tuple(input_shape)
        result = infer_shapes(self.graph, self.input_shape, limits, strict)
        self.shapes: tuple[Shape, ...] = result.shapes
        self.warnings: tuple[Diagnostic, ...] = result.warnings
        for spec in self.weight_specs:
            if spec.size > limits.max_tensor_elements:
                node = self.graph.node(spec.node)
                raise NetDSLLimitError(
                    f"{spec.name} would hold {spec.size:,} values "
                    f"({format_shape(spec.shape)}), over the limit of {limits.max_tensor_elements:,}",
                    node.span, ["raise Limits.max_tensor_elements to accept it"], self.warnings)

    def __repr__(self) -> str:
        return (f"<Network {self.name}: {format_shape(self.input_shape)} -> "
                f"{format_shape(self.output_shape)}, {self.params:,} params, {self.macs:,} MACs>")

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def layout(self) -> LayoutChain:
        """The program's tree over the node list: definition calls, groups and merges, in order
        (netdsl.ir.LayoutVisitor walks it)."""
        return self._expanded.layout

    @property
    def activation(self) -> str:
        """The net's implicit activation (already resolved into each layer's `act`)."""
        return self._expanded.activation

    @property
    def output_shape(self) -> Shape:
        return self.shapes[-1]

    @cached_property
    def stats(self) -> NetworkStats:
        return measure(self.graph, self.shapes)

    @property
    def params(self) -> int:
        """Trainable parameters: weights, biases, BN scale and shift."""
        return self.stats.params

    @property
    def buffers(self) -> int:
        """Values that are not trained: BN running statistics, `fixed` weights."""
        return self.stats.buffers

    @property
    def macs(self) -> int:
        """Multiply-accumulates of conv, deconv and fc for one input."""
        return self.stats.macs

    @property
    def activations(self) -> int:
        """Values kept for one input: the input plus every conv/deconv/pool/fc/merge output."""
        return self.stats.activations

    @cached_property
    def weight_specs(self) -> list[WeightSpec]:
        """Every parameter and buffer with its canonical name, shape and whether it trains (the
        specification: a compiled module's `weights` holds the values)."""
        return weight_specs(self.graph, self.shapes)

    @property
    def weights(self) -> list[WeightSpec]:
        """Deprecated since 0.2: `weight_specs` (the name said values; these are specifications)."""
        warnings.warn("Network.weights is deprecated and will be removed in 0.3: use "
                      "Network.weight_specs (a compiled module's .weights holds the values)",
                      DeprecationWarning, stacklevel=2)
        return self.weight_specs

    def summary(self, depth: int | None = None, width: int | None = None) -> str:
        """The per-layer table grouped by definition call, with totals (what `netdsl summary` prints).
        With `width`, long layer names are shortened so that rows fit in that many columns."""
        from .report import summary_text
        return summary_text(self, depth, width)

    def summary_dict(self) -> dict:
        from .report import summary_dict
        return summary_dict(self)

    def compile(self, backend: str = "numpy", **options):
        """A runnable module from a backend plugin: `net.compile("numpy", dtype="float64", seed=0)`.

        Options are the backend's (numpy: dtype, seed, weights). `weights` takes a dict of arrays
        under the canonical names; every name and shape is checked.
        """
        from .plugins import get_backend
        return get_backend(backend).compile(self, **options)

    def draw(self, depth: int | None = 1, rankdir: str = "TB", stats: bool = False,
             title: str | None = None, max_nodes: int | None = None):
        """The network's drawing (see `netdsl.draw.draw`); `depth=None` expands all. It is a
        graphviz.Digraph whose `.pipe()`, `.render()` and Jupyter display need no system Graphviz."""
        from .draw import MAX_DRAWING_NODES, draw
        return draw(self, depth=depth, rankdir=rankdir, stats=stats, title=title,
                    max_nodes=MAX_DRAWING_NODES if max_nodes is None else max_nodes)

    def _repr_svg_(self) -> str | None:
        """Jupyter: the drawing (rendered without a system Graphviz), or None if it cannot be."""
        from .draw import render
        try:
            return render(self.draw().source, "svg").decode()
        except (NetDSLError, RuntimeError, OSError):
            return None  # fall back to the other forms rather than fail to display

    def _repr_html_(self) -> str:
        """Jupyter: the summary table (escaped: the path and names are the user's) and the drawing."""
        import html
        warnings = "".join(f"<pre class=\"netdsl-warning\">{html.escape(w.render())}</pre>"
                           for w in self.warnings)
        svg = self._repr_svg_() or ""
        svg = svg[svg.find("<svg"):] if svg else ""  # inline in HTML: without the XML prolog
        return (f"<div class=\"netdsl-network\">{warnings}<pre>{html.escape(self.summary())}</pre>"
                f"{svg}</div>")

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """Jupyter shows a Network as its drawing; _repr_html_ adds the summary beside it."""
        bundle = {"text/plain": repr(self)}
        svg = self._repr_svg_()
        if svg is not None:
            bundle["image/svg+xml"] = svg
        return bundle

    def expand(self) -> str:
        """The fully explicit program; it parses back to the same IR."""
        return print_program(self.graph, self.layout, self.input_shape,
                             named=self._expanded.named, header=f"expanded from {self.path}")


def _coerce_input(value) -> Shape | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        if len(value) > 200:  # no real shape is this long; int() of it could be slow or refused
            raise NetDSLShapeError(f"not a shape: {value[:40]!r}... ({len(value):,} characters)")
        try:
            return parse_shape(value)
        except ValueError as error:
            raise NetDSLShapeError(str(error)) from None
    return tuple(int(d) for d in value)


def _default_name(path: str) -> str:
    return Path(path).stem if path != "<string>" else "net"  # what an unnamed chain is called


def _select(module: Module, net: str | None, path: str) -> list[ast.Net]:
    nets = module.program.nets
    if net is not None:
        for candidate in nets:
            if (candidate.name or _default_name(path)) == net:
                return [candidate]
        known = [n.name or _default_name(path) for n in nets]
        close = suggest(net, known)
        raise NetDSLNameError(f"{path} has no net named {net} (its nets: {', '.join(known) or 'none'})",
                              notes=[f"did you mean {close}?"] if close else [])
    if not nets:
        raise NetDSLNameError(f"{path} defines no network, only definitions",
                              notes=["add a chain, or `net NAME = ...`"])
    return list(nets)


def _build(module: Module, decl: ast.Net, input, path: str, limits: Limits, strict: bool) -> Network:
    expanded = expand_net(module, decl, limits, default_name=_default_name(path))
    shape = _coerce_input(input)
    span = expanded.input_span
    if shape is None:
        shape = expanded.input_shape
    else:
        span = None
    if shape is None:
        raise NetDSLShapeError(f"net {expanded.graph.name} has no input shape", decl.span,
                               ["add `input 3x224x224` (or `input 784`) to the file or the net, "
                                "or pass --input"])
    problem = check_input_shape(shape, limits)
    if problem is None and max(shape, default=0) > limits.max_dimension:
        problem = (f"input dimension {max(shape):,} is over the limit of {limits.max_dimension:,} "
                   f"(raise Limits.max_dimension to accept it)")
    if problem:
        raise NetDSLShapeError(problem, span,
                               [] if span else ["the input shape came from --input or the API"])
    return Network(expanded, shape, path, limits, strict)


def _collector_paused(build):
    """Run `build` with Python's cyclic garbage collector paused, when that is safe.

    Building the IR allocates many small objects and hardly any reference cycles (those there are
    wait for the next collection after the build), and each allocation burst set off collections
    that traverse the whole heap: 40% of the time to compile a 40,000-node network.

    The collector's switch is process-wide, so the pause is taken only while this is the only
    thread: with another thread alive, turning the collector off would change that thread's
    memory behaviour, and its own gc.disable() could be undone by our gc.enable(). The pause is
    also skipped when the collector is already off, so it is never left disabled.
    """
    @wraps(build)
    def paused(*args, **kwargs):
        if not gc.isenabled() or threading.active_count() > 1:
            return build(*args, **kwargs)
        gc.disable()
        try:
            return build(*args, **kwargs)
        finally:
            gc.enable()
    return paused


@_collector_paused
def parse(text: str, input=None, net: str | None = None, path: str = "<string>", strict: bool = False,
          limits: Limits = DEFAULT_LIMITS) -> Network:
    """Parse .net text into a Network. `input` ("3x224x224", 784 or a tuple) overrides the file's.

    A file with several nets needs `net`. Raises NetDSLError on any mistake in the text.
    """
    module = load_module(text, path, limits)
    decls = _select(module, net, path)
    if len(decls) > 1:
        names = ", ".join(str(d.name) for d in decls)
        raise NetDSLNameError(f"{path} defines {len(decls)} nets ({names}); choose one with "
                              f"--net NAME or {path}:NAME")
    return _build(module, decls[0], input, path, limits, strict)


@_collector_paused
def parse_all(text: str, input=None, path: str = "<string>", strict: bool = False,
              limits: Limits = DEFAULT_LIMITS) -> list[Network]:
    """Every net in the text (a file of only definitions gives an empty list)."""
    module = load_module(text, path, limits)
    networks: list[Network] = []
    used = 0  # nodes built so far: the file's budget is shared by its nets
    for decl in module.program.nets:
        remaining = limits.max_file_nodes - used
        own = limits if remaining >= limits.max_nodes else replace(limits, max_nodes=max(0, remaining))
        try:
            network = _build(module, decl, input, path, limits=own, strict=strict)
        except NetDSLLimitError as error:
            if own is limits or not error.message.startswith("the network expands to more than"):
                raise
            name = decl.name or _default_name(path)
            raise NetDSLLimitError(
                f"the nets of {path} expand to more than {limits.max_file_nodes:,} nodes together",
                decl.span, [f"{used:,} nodes before net {name}, which needs more than the "
                            f"{remaining:,} left", "raise Limits.max_file_nodes to accept it"]) from None
        network.limits = limits
        used += len(network.graph.nodes)
        networks.append(network)
    return networks


def resolve_path(target: str) -> tuple[str, str | None]:
    """'vgg.net:D' -> ('vgg.net', 'D'); 'vgg16' -> the shipped networks/vgg16.net;
    'resnext101_32x8d' -> (networks/resnet.net, 'resnext101_32x8d').

    A name that is not a file is looked up among the shipped networks by the rule of netdsl/zoo.py:
    a shipped file's name (with or without `.net`), else the name of a net in one shipped file.
    """
    from .zoo import resolve_bare
    net = None
    path = target
    if ":" in target and not os.path.exists(target):
        path, net = target.rsplit(":", 1)
        net = net or None
    if not os.path.exists(path) and os.sep not in path and "/" not in path:
        found = resolve_bare(path)
        if found is not None:
            path, net = found[0], net or found[1]
    return path, net


def read_source(path: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """The text of a .net file: regular files only, size-bounded, UTF-8 (see read_text_file)."""
    try:
        return read_text_file(path, limits)
    except NetDSLError as error:
        if error.message.endswith(": no such file"):
            raise NetDSLError(error.message,
                              notes=[f"shipped networks: {', '.join(shipped_names())}"]) from None
        raise


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_networks_dir().glob("*.net"))


def load(path: str | os.PathLike, net: str | None = None, input=None, strict: bool = False,
         limits: Limits = DEFAULT_LIMITS) -> Network:
    """Load a .net file (or a shipped network by name, or FILE:NET) into a Network."""
    file, named = resolve_path(str(path))
    return parse(read_source(file, limits), input=input, net=net or named, path=file, strict=strict,
                 limits=limits)
