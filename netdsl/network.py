"""The Python API: `parse` and `load` give a shape-checked, measured `Network`.

>>> net = netdsl.parse("[(conv3-64)*2 - pool]*5 - fc4096*2 - fc1000", input="3x224x224")
>>> net.params, net.macs
(34061608, 3198418944)
"""
from __future__ import annotations

import gc
import os
from functools import cached_property, wraps
from pathlib import Path

from . import ast
from .errors import Diagnostic, NetDSLError, NetDSLLimitError, NetDSLNameError, NetDSLShapeError
from .expand import ExpandedNet, expand_net
from .ir import Graph
from .limits import DEFAULT_LIMITS, Limits
from .modules import Module, load_module, shipped_networks_dir
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
        for spec in self.weights:
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
    def weights(self) -> list[WeightSpec]:
        """Every parameter and buffer with its canonical name and shape."""
        return weight_specs(self.graph, self.shapes)

    def summary(self, depth: int | None = None) -> str:
        """The per-layer table grouped by definition call, with totals (what `netdsl summary` prints)."""
        from .report import summary_text
        return summary_text(self, depth)

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
             title: str | None = None):
        """A graphviz.Digraph of the network (see `netdsl.draw.draw`); `depth=None` expands all."""
        from .draw import draw
        return draw(self, depth=depth, rankdir=rankdir, stats=stats, title=title)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """Jupyter shows a Network as its drawing (rendered without a system Graphviz)."""
        from .draw import render
        bundle = {"text/plain": repr(self)}
        try:
            bundle["image/svg+xml"] = render(self.draw().source, "svg").decode()
        except (NetDSLError, RuntimeError, OSError):
            pass  # fall back to the text form rather than fail to display
        return bundle

    def expand(self) -> str:
        """The fully explicit program; it parses back to the same IR."""
        return print_program(self.graph, self._expanded.layout, self.input_shape,
                             named=self._expanded.named, header=f"expanded from {self.path}")


def _coerce_input(value) -> Shape | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        return parse_shape(value)
    return tuple(int(d) for d in value)


def _default_name(path: str) -> str:
    return Path(path).stem if path != "<string>" else "net"  # what an unnamed chain is called


def _select(module: Module, net: str | None, path: str) -> list[ast.Net]:
    nets = module.program.nets
    if net is not None:
        for candidate in nets:
            if (candidate.name or _default_name(path)) == net:
                return [candidate]
        names = ", ".join(n.name or _default_name(path) for n in nets) or "none"
        raise NetDSLNameError(f"{path} has no net named {net} (its nets: {names})")
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
    if problem:
        raise NetDSLShapeError(problem, span,
                               [] if span else ["the input shape came from --input or the API"])
    return Network(expanded, shape, path, limits, strict)


def _collector_paused(build):
    """Run `build` with Python's cyclic garbage collector paused.

    Building the IR allocates many small objects and hardly any reference cycles (those there are
    wait for the next collection after the build), and each allocation burst set off collections
    that traverse the whole heap: 40% of the time to compile a 40,000-node
    network. Pausing is skipped when the collector is already off (by the caller, or by another
    thread inside a build), so the collector is never left disabled.
    """
    @wraps(build)
    def paused(*args, **kwargs):
        if not gc.isenabled():
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
        names = ", ".join(d.name for d in decls)
        raise NetDSLNameError(f"{path} defines {len(decls)} nets ({names}); choose one with "
                              f"--net NAME or {path}:NAME")
    return _build(module, decls[0], input, path, limits, strict)


@_collector_paused
def parse_all(text: str, input=None, path: str = "<string>", strict: bool = False,
              limits: Limits = DEFAULT_LIMITS) -> list[Network]:
    """Every net in the text (a file of only definitions gives an empty list)."""
    module = load_module(text, path, limits)
    return [_build(module, decl, input, path, limits, strict) for decl in module.program.nets]


def resolve_path(target: str) -> tuple[str, str | None]:
    """'vgg.net:D' -> ('vgg.net', 'D'); 'vgg16' -> the shipped networks/vgg16.net.

    A name that is not a file is looked up among the shipped networks, with or without `.net`.
    """
    net = None
    path = target
    if ":" in target and not os.path.exists(target):
        path, net = target.rsplit(":", 1)
        net = net or None
    if not os.path.exists(path):
        shipped = shipped_networks_dir()
        name = path if path.endswith(".net") else path + ".net"
        if os.sep not in path and "/" not in path and (shipped / name).is_file():
            path = str(shipped / name)
    return path, net


def read_source(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        raise NetDSLError(f"{path}: no such file",
                          notes=[f"shipped networks: {', '.join(shipped_names())}"]) from None
    except IsADirectoryError:
        raise NetDSLError(f"{path} is a directory, not a .net file") from None
    except UnicodeDecodeError as error:
        raise NetDSLError(f"{path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise NetDSLError(f"{path}: {error.strerror}") from None


def shipped_names() -> list[str]:
    return sorted(p.stem for p in shipped_networks_dir().glob("*.net"))


def load(path: str | os.PathLike, net: str | None = None, input=None, strict: bool = False,
         limits: Limits = DEFAULT_LIMITS) -> Network:
    """Load a .net file (or a shipped network by name, or FILE:NET) into a Network."""
    file, named = resolve_path(str(path))
    return parse(read_source(file), input=input, net=net or named, path=file, strict=strict,
                 limits=limits)
