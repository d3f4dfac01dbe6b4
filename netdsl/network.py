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
from functools import cached_property, wraps
from pathlib import Path

from . import ast
from .errors import (Diagnostic, NetDSLError, NetDSLLimitError, NetDSLNameError, NetDSLShapeError,
                     suggest)
from .expand import ExpandedNet, expand_net
from .ir import Graph, LayoutChain
from .limits import DEFAULT_LIMITS, Limits
from .modules import Module, read_text_file, shipped_networks_dir
from .printer import print_program
from .ops.base import is_symbolic
from .shapes import Shape, check_input_shape, format_shape, infer_shapes, parse_shape
from .symbolic import Size, SizeSet
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
        #: With size names in the input (3xHxW): each name's valid sizes (`SizeSet`), and those
        #: where every window fits exactly (valid under --strict). Empty for a concrete input.
        self.valid_sizes: dict[str, SizeSet] = result.valid
        self.strict_sizes: dict[str, SizeSet] = result.strict_valid
        #: (node id, condition) for each condition the layers put on the sizes.
        self.conditions = result.conditions
        for spec in self.weight_specs:
            if not isinstance(spec.size, int):
                continue  # depends on the input size: see size_dependent_weights
            if spec.size > limits.max_tensor_elements:
                node = self.graph.node(spec.node)
                raise NetDSLLimitError(
                    f"{spec.name} would hold {spec.size:,} values "
                    f"({format_shape(spec.shape)}), over the limit of {limits.max_tensor_elements:,}",
                    node.span, ["raise Limits.max_tensor_elements to accept it"], self.warnings)

    def __repr__(self) -> str:
        if self.symbolic:
            return (f"<Network {self.name}: {format_shape(self.input_shape)} -> "
                    f"{format_shape(self.output_shape)}, {self.describe_sizes().replace(chr(10), '; ')}>")
        return (f"<Network {self.name}: {format_shape(self.input_shape)} -> "
                f"{format_shape(self.output_shape)}, {self.params:,} params, {self.macs:,} MACs>")

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def symbolic(self) -> bool:
        """Whether the input has size names (`input 3xHxW`): shapes and statistics are formulas."""
        return bool(self.valid_sizes)

    @property
    def size_dependent_weights(self) -> list[str]:
        """Layers whose weight shapes depend on the input size (an fc after an HxW-dependent
        tensor): a symbolic net with any cannot be compiled until a size is chosen."""
        return list(dict.fromkeys(spec.node for spec in self.weight_specs
                                  if not isinstance(spec.size, int)))

    def accepts(self, shape) -> bool:
        """Whether a concrete input shape (3x572x572, or (3, 572, 572)) is one of the valid sizes
        (with `strict`, one where every window fits exactly)."""
        shape = tuple(_coerce_input(shape) or ())
        if not self.symbolic:
            return shape == self.input_shape
        return self._size_values(shape) is not None

    def _size_values(self, shape) -> dict | None:
        if len(shape) != len(self.input_shape):
            return None
        sets = self.strict_sizes if self.strict else self.valid_sizes
        values: dict[str, int] = {}
        for want, got in zip(self.input_shape, shape):
            if isinstance(want, int):
                if want != got:
                    return None
                continue
            name = next(iter(want.names()))
            if values.setdefault(name, got) != got or got not in sets[name]:
                return None
        return values

    def at(self, shape) -> "Network":
        """The same network at a concrete input size: `unet.at("1x572x572")`. Raises
        NetDSLShapeError naming the nearest valid sizes when `shape` is not valid."""
        return Network(self._expanded, _checked_input(_coerce_input(shape), None, self.limits), self.path,
                       self.limits, self.strict)

    def example_shape(self, at_least: int = 32):
        """A concrete valid input shape for tracing and examples: each size name at its smallest
        valid value from `at_least` up."""
        if not self.symbolic:
            return self.input_shape
        sets = self.strict_sizes if self.strict else self.valid_sizes
        chosen = {}
        for name, sizes in sets.items():
            below, above = sizes.nearest(at_least)
            chosen[name] = at_least if at_least in sizes else (above if above is not None else below)
        return tuple(d if isinstance(d, int) else d.evaluate(chosen) for d in self.input_shape)

    def describe_sizes(self, strict: bool | None = None) -> str:
        """'H = 16k + 12, H >= 188' for each size name, joined by '; ' (one line per name)."""
        sets = self.strict_sizes if (self.strict if strict is None else strict) else self.valid_sizes
        return "\n".join(sizes.describe() for sizes in sets.values())

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
        return measure(self.graph, self.shapes, self.weight_specs)

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
        if self.size_dependent_weights:
            node = self.graph.node(self.size_dependent_weights[0])
            raise NetDSLShapeError(
                f"{node.name}'s weights depend on the input size ({format_shape(self.input_shape)}), "
                f"so no one module runs every size", node.span,
                ["give a concrete input: net.at('3x224x224'), or --input 3x224x224",
                 "or make the layer before it size-free, such as gap before fc"])
        return get_backend(backend).compile(self, **options)

    def draw(self, depth: int | None = 1, rankdir: str = "TB", stats: bool = False,
             title: str | None = None, max_nodes: int | None = None, opened=()):
        """The network's drawing (see `netdsl.draw.draw`); `depth=None` expands all. It is a
        graphviz.Digraph whose `.pipe()`, `.render()` and Jupyter display need no system Graphviz."""
        from .draw import MAX_DRAWING_NODES, draw
        return draw(self, depth=depth, rankdir=rankdir, stats=stats, title=title,
                    max_nodes=MAX_DRAWING_NODES if max_nodes is None else max_nodes, opened=opened)

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
    return tuple(d if isinstance(d, Size) else int(d) for d in value)


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


def _checked_input(shape, span, limits: Limits):
    problem = check_input_shape(shape, limits)
    numbers = [d for d in shape if isinstance(d, int)]
    if problem is None and max(numbers, default=0) > limits.max_dimension:
        problem = (f"input dimension {max(numbers):,} is over the limit of {limits.max_dimension:,} "
                   f"(raise Limits.max_dimension to accept it)")
    if problem:
        raise NetDSLShapeError(problem, span,
                               [] if span else ["the input shape came from --input or the API"])
    return shape


def _build(module: Module, decl: ast.Net, input, path: str, limits: Limits, strict: bool) -> Network:
    shape = _coerce_input(input)
    if shape is not None:  # checked first: definitions that read in_channels expand with it
        shape = _checked_input(shape, None, limits)
    expanded = expand_net(module, decl, limits, default_name=_default_name(path), input_shape=shape)
    span = expanded.input_span
    if shape is None:
        shape = expanded.input_shape
    else:
        span = None
    if shape is None:
        raise NetDSLShapeError(f"net {expanded.graph.name} has no input shape", decl.span,
                               ["add `input 3x224x224` (or `input 784`) to the file or the net, "
                                "or pass --input"])
    shape = _checked_input(shape, span, limits)
    try:
        return Network(expanded, shape, path, limits, strict)
    except NetDSLShapeError as error:
        note = _nearest_sizes_note(expanded, shape, path, limits, strict)
        if note is None:
            raise
        raise type(error)(error.message, error.span, [*error.notes, note], error.warnings) from None


def _nearest_sizes_note(expanded: ExpandedNet, shape, path: str, limits: Limits, strict: bool) -> str | None:
    """For a concrete CxHxW input that fails: "570x570 does not fit: 556 and 572 do", found by
    checking the net with size names and asking the valid sets; None when that says nothing."""
    if len(shape) != 3 or is_symbolic(shape):
        return None
    c, h, w = shape
    try:
        named = Network(expanded, (c, Size.name("H"), Size.name("W")), path, limits, strict)
    except NetDSLError:
        return None
    sets = named.strict_sizes if strict else named.valid_sizes
    wrong = [(what, value, sets[name]) for what, value, name in (("height", h, "H"), ("width", w, "W"))
             if value not in sets[name]]
    if not wrong:
        return None
    alike = sets["H"].describe() == sets["W"].describe().replace("W", "H")
    if h == w and len(wrong) == 2 and alike:
        wrong = [(f"{h}x{w}", h, sets["H"])]
    parts = []
    for what, value, sizes in wrong:
        below, above = sizes.nearest(value)
        near = " and ".join(str(v) for v in (below, above) if v is not None)
        label = what if "x" in what else f"{what} {value}"
        parts.append(f"{label} does not fit" + (f": {near} {'do' if below and above else 'does'}"
                                                  if near else ": no size does"))
    described = (f"{sets['H'].describe()}, and W alike" if alike
                 else "; ".join(s.describe() for s in sets.values()))
    return "; ".join(parts) + f" (the valid sizes: {described})"


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
    from .source import parse_module  # it builds on this module
    return parse_module(text, path, limits).build(net, input, strict)


@_collector_paused
def parse_all(text: str, input=None, path: str = "<string>", strict: bool = False,
              limits: Limits = DEFAULT_LIMITS) -> list[Network]:
    """Every net in the text (a file of only definitions gives an empty list)."""
    from .source import parse_module
    return parse_module(text, path, limits).build_all(input, strict)


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
