"""Parse a file once, then build one of its nets, or each: what editors and servers need.

`netdsl.parse` and `netdsl.load` give one shape-checked Network and raise at the first mistake.
An editor wants more from one text: the names of its nets, one net built on demand (the one the
user is looking at), and every problem in the file at once. `parse_module` reads the text and its
`use`s once; the result builds nets from that one parse.

>>> parsed = netdsl.parse_module("def block(c) = conv3-c - pool\\n"
...                              "net small = block(8) - fc10\\nnet large = block(64) - fc10\\n",
...                              path="two.net")
>>> parsed.nets
['small', 'large']
>>> parsed.build("large", input="3x32x32").params
165642
>>> [d.render() for d in parsed.check(input="3x32x32").diagnostics]
[]

Parsing is cached (netdsl.parser keeps recent files by path and text, and unchanged statements of
an edited text), so building a second net, or the same net again, costs no parse.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import ast
from .errors import Diagnostic, NetDSLError, NetDSLLimitError, NetDSLNameError
from .limits import DEFAULT_LIMITS, Limits
from .modules import Module, load_module
from .network import Network, _build, _collector_paused, _default_name, _select


@dataclass
class ModuleCheck:
    """Every net of a file built on its own, so that one net's mistake hides no other's."""

    networks: dict[str, Network] = field(default_factory=dict)  # the nets that built, by name
    #: The errors of the nets that did not build and the warnings of those that did, in file order
    #: (problems in other files first), each once: a definition's warning is the same in every net.
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


class ParsedModule:
    """One parsed .net text with its `use`s loaded. Build it with `netdsl.parse_module`."""

    def __init__(self, text: str, path: str, limits: Limits, module: Module):
        self.text = text
        self.path = path
        self.limits = limits
        self.module = module

    def __repr__(self) -> str:
        return f"<ParsedModule {self.path}: nets {', '.join(self.nets) or 'none'}>"

    @property
    def program(self) -> ast.Program:
        """The file's surface AST (netdsl.ast)."""
        return self.module.program

    @property
    def nets(self) -> list[str]:
        """The names of the file's nets, in order; an unnamed chain is called after the file."""
        default = _default_name(self.path)
        return [decl.name or default for decl in self.program.nets]

    @property
    def definitions(self) -> list[str]:
        """Every definition visible in the file: its own and those its `use`s bring in."""
        return list(self.module.defs)

    @_collector_paused
    def build(self, net: str | None = None, input=None, strict: bool = False) -> Network:
        """Expand, shape-check and measure one net (as `netdsl.parse` does); only that net is
        expanded. `net` may be left out when the file has one. Raises NetDSLError."""
        decls = _select(self.module, net, self.path)
        if len(decls) > 1:
            names = ", ".join(str(d.name) for d in decls)
            raise NetDSLNameError(f"{self.path} defines {len(decls)} nets ({names}); choose one with "
                                  f"--net NAME or {self.path}:NAME")
        return _build(self.module, decls[0], input, self.path, self.limits, strict)

    @_collector_paused
    def build_all(self, input=None, strict: bool = False) -> list[Network]:
        """Every net, in order, sharing the file's node budget (`Limits.max_file_nodes`), as
        `netdsl.parse_all` does. Raises at the first net with a mistake."""
        limits, path = self.limits, self.path
        networks: list[Network] = []
        used = 0  # nodes built so far: the file's budget is shared by its nets
        for decl in self.program.nets:
            remaining = limits.max_file_nodes - used
            own = limits if remaining >= limits.max_nodes else replace(limits, max_nodes=max(0, remaining))
            try:
                network = _build(self.module, decl, input, path, limits=own, strict=strict)
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

    def check(self, input=None, strict: bool = False) -> ModuleCheck:
        """Build every net and gather every problem instead of raising: all nets together first
        (their shared budget), then, if that fails, each net alone, each failure a diagnostic."""
        result = ModuleCheck()
        names = self.nets
        try:
            result.networks = dict(zip(names, self.build_all(input, strict)))
        except NetDSLError:
            for name, decl in zip(names, self.program.nets):
                try:
                    result.networks[name] = _build(self.module, decl, input, self.path, self.limits,
                                                   strict)
                except NetDSLError as error:
                    result.diagnostics.extend((*error.warnings, error.diagnostic))
        for network in result.networks.values():
            result.diagnostics.extend(network.warnings)
        result.diagnostics = self._in_file_order(result.diagnostics)
        return result

    def _in_file_order(self, problems: list[Diagnostic]) -> list[Diagnostic]:
        source = self.program.source

        def place(problem: Diagnostic) -> int:
            span = problem.span
            if span is None or not (span.source is source or (
                    span.source.path == source.path and span.source.text == source.text)):
                return -1  # in another file, or nowhere: first
            return span.start
        unique, seen = [], set()
        for problem in sorted(problems, key=place):
            span = problem.span
            key = (problem.severity, problem.message, span.start if span else None,
                   span.end if span else None)
            if key not in seen:
                seen.add(key)
                unique.append(problem)
        return unique


def parse_module(text: str, path: str = "<string>", limits: Limits = DEFAULT_LIMITS) -> ParsedModule:
    """Parse .net text and load its `use`s (looked up beside `path`, then among the shipped
    networks), without building any net. Raises NetDSLError for a syntax error or a bad `use`."""
    return ParsedModule(text, path, limits, load_module(text, path, limits))


__all__ = ["parse_module", "ParsedModule", "ModuleCheck"]
