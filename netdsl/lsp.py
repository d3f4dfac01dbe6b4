"""`netdsl lsp`: a Language Server for .net files over stdio (pygls).

Diagnostics (every error and warning, at its exact range), hover (the op, its attributes with
defaults filled in, input -> output shape, params, receptive field, and the layer's worked
arithmetic as `netdsl summary --explain` prints it), completion (ops, aliases,
definitions, labels, attribute and parameter names), go to definition (definitions, labels, `use`
files), document symbols (nets and definitions) and rename (a definition or a label, within a file).

The analysis is the compiler's own: the document is parsed with `netdsl.parser`, loaded with its
`use`s by `netdsl.modules`, and each net built as `netdsl.parse` builds it, so the editor says what
`netdsl check` says. Offsets are converted to LSP positions (0-based lines, UTF-16 columns) by
`LineIndex`. Only `netdsl lsp` imports this module (and pygls).
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from urllib.parse import unquote, urlparse

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer

from . import __version__, ast
from .errors import Diagnostic, NetDSLError, Span
from .explain import explain_layer
from .limits import DEFAULT_LIMITS
from .modules import Module, resolve_use as find_used_file
from .network import Network
from .ops import ALIASES, DERIVED, IDENTITY, OPS, REQUIRED, RESERVED
from .ops.base import stated_attrs
from .parser import parse_program
from .shapes import format_shape
from .source import parse_module

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
KEYWORDS = ("net", "def", "use", "input", "activation")
#: The op kind a slide token starts with: conv3-64/2 -> conv.
SLIDE_KIND = re.compile(r"(deconv|conv|maxpool|avgpool|fc)(?=[0-9{])")
HOVER_INSTANCES = 6  # layers listed for an op that a definition expands many times


# -- positions ------------------------------------------------------------------------------------

class LineIndex:
    """Character offsets of a text <-> LSP positions (0-based line, column in UTF-16 code units)."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def position(self, offset: int) -> lsp.Position:
        offset = max(0, min(offset, len(self.text)))
        line = bisect_right(self.starts, offset) - 1
        prefix = self.text[self.starts[line]:offset]
        return lsp.Position(line, len(prefix.encode("utf-16-le")) // 2)

    def offset(self, position: lsp.Position) -> int:
        if position.line >= len(self.starts):
            return len(self.text)
        start = self.starts[position.line]
        end = self.starts[position.line + 1] - 1 if position.line + 1 < len(self.starts) else len(self.text)
        units = 0
        for i in range(start, end):
            if units >= position.character:
                return i
            units += 2 if ord(self.text[i]) > 0xFFFF else 1
        return end

    def range(self, start: int, end: int) -> lsp.Range:
        return lsp.Range(self.position(start), self.position(end))


def uri_to_path(uri: str) -> str:
    """file:///a/b.net -> /a/b.net; an unsaved buffer (untitled:...) reads as "<string>"."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return "<string>"
    return unquote(parsed.path)


def path_to_uri(path: str) -> str:
    return Path(path).resolve().as_uri()


# -- the surface AST, walked ----------------------------------------------------------------------

def _elements(chain: ast.Chain):
    """Every element, reference and atom of a chain, depth first."""
    if chain.start is not None:
        yield chain.start
    for item in chain.items:
        yield from _element(item)


def _element(element):
    yield element
    if isinstance(element, ast.Atom):
        for arg in element.args:
            if isinstance(arg.value, ast.Ref):
                yield arg.value
    elif isinstance(element, ast.Group):
        yield from _elements(element.body)
    elif isinstance(element, ast.Merge):
        for branch in element.branches:
            yield from _elements(branch)
    elif isinstance(element, (ast.Repeat, ast.Labelled)):
        yield from _element(element.body)
    elif isinstance(element, ast.AuxOutput):
        yield from _elements(element.body)
    elif isinstance(element, ast.Choice):
        yield from _element(element.then)
        if element.otherwise is not None:
            yield from _element(element.otherwise)


def _name_span(atom: ast.Atom) -> Span:
    """The span of the name an atom starts with (an op, alias or definition), without arguments."""
    return Span(atom.span.source, atom.span.start, atom.span.start + len(atom.name))


def _label_span(labelled: ast.Labelled) -> Span:
    return Span(labelled.span.source, labelled.span.start, labelled.span.start + len(labelled.label))


def _ref_part_spans(ref: ast.Ref) -> list[tuple[str, Span]]:
    """`@a.b.p`: each dotted part with its span (after the @)."""
    parts, start = [], ref.span.start + 1
    for part in ref.label.split("."):
        parts.append((part, Span(ref.span.source, start, start + len(part))))
        start += len(part) + 1
    return parts


@dataclass
class Statement:
    """A definition or net of the document, with every element of its body."""

    kind: str  # "def" or "net"
    name: str
    name_span: Span
    body: ast.Chain
    elements: list = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.body.span.end


def statements(program: ast.Program, default_name: str) -> list[Statement]:
    found = [Statement("def", d.name, d.span, d.body) for d in program.defs]
    found += [Statement("net", n.name or default_name, n.span, n.body) for n in program.nets]
    for statement in found:
        statement.elements = list(_elements(statement.body))
    return sorted(found, key=lambda s: s.name_span.start)


# -- analysis -------------------------------------------------------------------------------------

@dataclass
class Analysis:
    """What the compiler says about one version of a document."""

    text: str
    path: str
    index: LineIndex
    uri: str = ""
    program: ast.Program | None = None
    module: Module | None = None
    networks: list[Network] = field(default_factory=list)
    problems: list[Diagnostic] = field(default_factory=list)
    statements: list[Statement] = field(default_factory=list)

    def statement_at(self, offset: int) -> Statement | None:
        for statement in self.statements:
            if statement.name_span.start <= offset <= statement.end:
                return statement
        return None


def analyse(text: str, path: str) -> Analysis:
    """Parse, load and build every net of the text, collecting every error and warning."""
    result = Analysis(text, path, LineIndex(text))
    default_name = Path(path).stem if path != "<string>" else "net"
    try:
        # The program alone first: statements, hover and go to definition still work when a
        # `use` cannot be loaded. parse_module then reuses this parse (netdsl.parser keeps it).
        result.program = parse_program(text, path, DEFAULT_LIMITS)
        result.statements = statements(result.program, default_name)
        parsed = parse_module(text, path, DEFAULT_LIMITS)
    except NetDSLError as error:
        _collect(result, error)
        return result
    result.module = parsed.module
    checked = parsed.check()
    result.networks = list(checked.networks.values())
    result.problems = checked.diagnostics
    return result


def _collect(result: Analysis, error: NetDSLError) -> None:
    result.problems.extend(error.warnings)
    result.problems.append(error.diagnostic)


def _in_document(span: Span | None, analysis: Analysis) -> bool:
    return span is not None and span.source.path == analysis.path and span.source.text == analysis.text


def diagnostics(analysis: Analysis) -> list[lsp.Diagnostic]:
    """LSP diagnostics; a problem in a `use`d file is shown on the `use` that reads it."""
    found = []
    for problem in analysis.problems:
        message = problem.message
        if _in_document(problem.span, analysis):
            where = analysis.index.range(problem.span.start, max(problem.span.end, problem.span.start))
        else:
            where = _elsewhere_range(problem.span, analysis)
            if problem.span is not None:
                message = f"{problem.span.location()}: {message}"
        if problem.notes:
            message += "".join(f"\nnote: {note}" for note in problem.notes)
        severity = lsp.DiagnosticSeverity.Error if problem.severity == "error" \
            else lsp.DiagnosticSeverity.Warning
        found.append(lsp.Diagnostic(range=where, message=message, severity=severity, source="netdsl"))
    return found


def _elsewhere_range(span: Span | None, analysis: Analysis) -> lsp.Range:
    if analysis.program is not None and analysis.program.uses:
        chosen = analysis.program.uses[0]
        for use in analysis.program.uses:
            target = resolve_use(use, analysis.path)
            if span is not None and target is not None and str(target) == span.source.path:
                chosen = use
        return analysis.index.range(chosen.span.start, chosen.span.end)
    return analysis.index.range(0, 0)


def resolve_use(use: ast.Use, importer: str) -> Path | None:
    """The file a `use` reads, found as netdsl.modules finds it (None if it is missing or refused)."""
    try:
        return find_used_file(use, importer)
    except NetDSLError:
        return None


# -- hover ----------------------------------------------------------------------------------------

def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _format_field(value: Fraction | None) -> str:
    if value is None:
        return "the whole input"  # its size is a formula (`input 3xHxW`)
    return str(value) if value.denominator != 1 else f"{int(value)}"


def op_signature(op: str, attrs: dict) -> str:
    return f"{op}(" + ", ".join(f"{k}={_format_value(v)}" for k, v in attrs.items()) + ")"


def hover_text(analysis: Analysis, offset: int) -> tuple[str, Span] | None:
    """Markdown for the thing at `offset`, and the span it describes."""
    statement = analysis.statement_at(offset)
    atoms = [e for e in statement.elements if isinstance(e, ast.Atom) and _contains(e.span, offset)] \
        if statement else []
    if statement is not None and not atoms:  # on a label: describe what it labels
        atoms = [e.body for e in statement.elements if isinstance(e, ast.Labelled)
                 and isinstance(e.body, ast.Atom) and _contains(_label_span(e), offset)]
    if atoms:
        atom = min(atoms, key=lambda a: a.span.end - a.span.start)  # the innermost
        defs = analysis.module.defs if analysis.module else {}
        if atom.name in defs and atom.name not in OPS and atom.name not in ALIASES:
            return _call_hover(analysis, atom), atom.span
        layers = _layers_at(analysis, atom.span)
        if layers:
            return _layers_hover(layers)
        name = ALIASES.get(atom.name, (atom.name, {}))[0]
        if name in OPS:
            return _op_doc(name), atom.span
    layers = _layers_at(analysis, Span(None, offset, offset))  # a merge: its span is its braces
    if layers:
        return _layers_hover(layers)
    if statement is not None and _contains(statement.name_span, offset):
        return _statement_hover(analysis, statement), statement.name_span
    return None


def _contains(span: Span, offset: int) -> bool:
    return span.start <= offset <= span.end


def _layers_at(analysis: Analysis, where: Span) -> list[tuple[Network, int]]:
    """The graph nodes (of every net) made by the atom at `where` (an empty span: the innermost
    node span holding that offset)."""
    best, found = None, []
    for network in analysis.networks:
        for node in network.graph.nodes[1:]:
            span = node.span
            if span is None or span.source.path != analysis.path:
                continue
            if where.end > where.start:
                if (span.start, span.end) == (where.start, where.end):
                    found.append((network, node.id))
                continue
            if not span.start <= where.start <= span.end:
                continue
            width = span.end - span.start
            if best is None or width < best:
                best, found = width, [(network, node.id)]
            elif width == best:
                found.append((network, node.id))
    return found


def _op_doc(op: str) -> str:
    spec = OPS[op]
    lines = [f"**{op}**: {spec.doc}", ""]
    for attr in spec.attrs:
        default = "required" if attr.default is REQUIRED else \
            "derived" if attr.default is DERIVED else _format_value(attr.default)
        lines.append(f"- `{attr.name}` ({attr.kind}, {default}): {attr.doc}")
    return "\n".join(lines)


def _layers_hover(layers: list[tuple[Network, int]]) -> tuple[str, Span]:
    network, node_id = layers[0]
    node = network.graph[node_id]
    spec = OPS[node.op]
    lines = [f"**{node.op}**: {spec.doc}", "", "```", op_signature(node.op, stated_attrs(spec, node.attrs)), "```", ""]
    several_nets = len({id(n) for n, _ in layers}) > 1
    if len(layers) > 1:
        lines[5] = "(the attributes of the first)\n"
        lines.append(f"{len(layers)} layers come from this op:")
        lines.append("")
    for network, node_id in layers[:HOVER_INSTANCES]:
        node = network.graph[node_id]
        layer = network.stats.layers[node_id]
        inputs = " + ".join(format_shape(network.shapes[i]) for i in node.inputs)
        name = f"{network.name}: {node.name}" if several_nets else node.name
        lines.append(f"- `{name}`: {inputs} -> {format_shape(network.shapes[node_id])}, "
                     f"{_count(layer.params)} params, {_count(layer.macs)} MACs, receptive field "
                     f"{_format_field(layer.rf)} (stride {_format_field(layer.stride)})")
    if len(layers) > HOVER_INSTANCES:
        lines.append(f"- ... and {len(layers) - HOVER_INSTANCES} more")
    network, node_id = layers[0]
    explanation = explain_layer(network, node_id)
    name = f"{network.name}: {explanation.name}" if several_nets else explanation.name
    lines += ["", f"Worked arithmetic of `{name}`:", "", "```text", *explanation.body(""), "```"]
    return "\n".join(lines), node.span


def _call_hover(analysis: Analysis, atom: ast.Atom) -> str:
    definition = analysis.module.defs[atom.name]
    params = ", ".join(p.name + (f"={p.default.span.text}" if p.default else "") for p in definition.params)
    lines = [f"**def {atom.name}**({params})", ""]
    calls: list[tuple[Network, str, list[int]]] = []
    for network in analysis.networks:
        by_frame: dict[int, tuple[str, list[int]]] = {}
        for node in network.graph.nodes:
            for frame in node.context:
                if frame.span.start == atom.span.start and frame.span.source.path == analysis.path:
                    by_frame.setdefault(id(frame), (frame.description, []))[1].append(node.id)
                    break
        calls += [(network, description, ids) for description, ids in by_frame.values()]
    several_nets = len({id(network) for network, _, _ in calls}) > 1
    for network, description, ids in calls[:HOVER_INSTANCES]:
        first, last = network.graph[ids[0]], ids[-1]
        inputs = " + ".join(format_shape(network.shapes[i]) for i in first.inputs)
        params = sum(network.stats.layers[i].params for i in ids)
        where = f"{network.name}: {description}" if several_nets else description
        lines.append(f"- `{where}`: {inputs} -> {format_shape(network.shapes[last])}, "
                     f"{len(ids)} layers, {_count(params)} params")
    if len(calls) > HOVER_INSTANCES:
        lines.append(f"- ... and {len(calls) - HOVER_INSTANCES} more calls")
    return "\n".join(lines)


def _statement_hover(analysis: Analysis, statement: Statement) -> str:
    if statement.kind == "def":
        return _definition_hover(analysis, statement)
    for network in analysis.networks:
        if network.name == statement.name:
            return (f"**net {network.name}**: {format_shape(network.input_shape)} -> "
                    f"{format_shape(network.output_shape)}, {_count(network.params)} params, "
                    f"{_count(network.macs)} MACs, {len(network.graph.nodes) - 1} layers")
    return f"**net {statement.name}** (does not check)"


def _definition_hover(analysis: Analysis, statement: Statement) -> str:
    definition = next(d for d in analysis.program.defs if d.name == statement.name)
    params = ", ".join(p.name + (f"={p.default.span.text}" if p.default else "") for p in definition.params)
    calls = sum(1 for s in analysis.statements for e in s.elements
                if isinstance(e, ast.Atom) and e.name == statement.name)
    return f"**def {statement.name}**({params})\n\ncalled {calls} time{'s' * (calls != 1)} in this file"


# -- completion -----------------------------------------------------------------------------------

def _open_call(text: str, offset: int) -> str | None:
    """The name before the innermost unclosed '(' of the cursor's line part, if the cursor is in
    an argument list: `conv3-64(pa|` -> "conv3-64"."""
    depth = 0
    i = offset - 1
    while i >= 0 and text[i] != "\n":
        if text[i] == ")":
            depth += 1
        elif text[i] == "(":
            if depth == 0:
                match = re.search(r"([A-Za-z_][A-Za-z0-9_]*(?:[-/][A-Za-z0-9_{}]+)*)\s*$", text[:i])
                return match.group(1) if match else None
            depth -= 1
        i -= 1
    return None


def completions(analysis: Analysis, last_good: Analysis | None, offset: int) -> list[lsp.CompletionItem]:
    text = analysis.text
    known = analysis if analysis.program is not None else last_good
    prefix_start = offset
    while prefix_start > 0 and (text[prefix_start - 1].isalnum() or text[prefix_start - 1] in "_."):
        prefix_start -= 1
    if prefix_start > 0 and text[prefix_start - 1] == "@":
        labels = {e.label for s in (known.statements if known else []) for e in s.elements
                  if isinstance(e, ast.Labelled)}
        if analysis.program is None:  # mid-typing: the labels written now (NAME: ...)
            labels |= set(LABEL.findall(COMMENT.sub("", text)))
        labels = sorted((labels - RESERVED) | {"input"})
        return [lsp.CompletionItem(label, kind=lsp.CompletionItemKind.Reference,
                                   detail="label") for label in labels]
    callee = _open_call(text, prefix_start)
    if callee is not None:
        slide = SLIDE_KIND.match(callee)
        op = slide.group(1) if slide else ALIASES.get(callee, (callee, {}))[0]
        if op in OPS:
            return [lsp.CompletionItem(attr.name, kind=lsp.CompletionItemKind.Property,
                                       detail=f"{op} attribute ({attr.kind})", documentation=attr.doc,
                                       insert_text=f"{attr.name}=")
                    for attr in OPS[op].attrs]
        params = _definitions(analysis, known).get(callee)
        if params is not None:
            return [lsp.CompletionItem(param, kind=lsp.CompletionItemKind.Variable,
                                       detail=f"parameter of {callee}", insert_text=f"{param}=")
                    for param in params]
    items = [lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Function, detail="op",
                                documentation=spec.doc)
             for name, spec in OPS.items() if spec.writable]
    items += [lsp.CompletionItem(alias, kind=lsp.CompletionItemKind.Function,
                                 detail=f"alias of {op_signature(op, preset)}")
              for alias, (op, preset) in ALIASES.items()]
    items.append(lsp.CompletionItem(IDENTITY, kind=lsp.CompletionItemKind.Function,
                                    detail="passes its input through"))
    items += [lsp.CompletionItem(word, kind=lsp.CompletionItemKind.Keyword) for word in KEYWORDS]
    for name, params in sorted(_definitions(analysis, known).items()):
        items.append(lsp.CompletionItem(name, kind=lsp.CompletionItemKind.Class,
                                        detail=f"def {name}({', '.join(params)})"))
    return items


LABEL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*:")
COMMENT = re.compile(r"#[^\n]*")
DEF_HEAD = re.compile(r"\bdef\s+([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^)]*)\))?")


def _definitions(analysis: Analysis, known: Analysis | None) -> dict[str, list[str]]:
    """Definition names and their parameters: from the last text that parsed, plus (while the text
    does not parse, as it mostly does not mid-typing) the `def` heads written in it now."""
    found: dict[str, list[str]] = {}
    if known is not None and known.module is not None:
        found = {name: [p.name for p in d.params] for name, d in known.module.defs.items()}
    if analysis.program is None:
        for match in DEF_HEAD.finditer(analysis.text):
            params = [part.split("=")[0].strip() for part in (match.group(2) or "").split(",")]
            found[match.group(1)] = [p for p in params if NAME.match(p)]
    return found


# -- go to definition, symbols, rename ------------------------------------------------------------

def _location(span: Span, analysis: Analysis) -> lsp.Location:
    if span.source.path == analysis.path:
        return lsp.Location(_document_uri(analysis), analysis.index.range(span.start, span.end))
    index = LineIndex(span.source.text)
    return lsp.Location(path_to_uri(span.source.path), index.range(span.start, span.end))


def _document_uri(analysis: Analysis) -> str:
    return analysis.uri or path_to_uri(analysis.path)  # the URI as the client sent it


def _label_definition(statement: Statement, label: str, before: int) -> ast.Labelled | None:
    """The labelled element a reference in `statement` names: the last one before it."""
    found = None
    for element in statement.elements:
        if isinstance(element, ast.Labelled) and element.label == label:
            if found is None or element.span.start < before:
                found = element
    return found


def definition_at(analysis: Analysis, offset: int) -> lsp.Location | None:
    if analysis.program is None:
        return None
    for use in analysis.program.uses:
        if _contains(use.span, offset):
            target = resolve_use(use, analysis.path)
            return lsp.Location(target.as_uri(), lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))) \
                if target else None
    statement = analysis.statement_at(offset)
    if statement is None:
        return None
    for element in statement.elements:
        if isinstance(element, ast.Atom) and _contains(_name_span(element), offset):
            defs = analysis.module.defs if analysis.module else \
                {d.name: d for d in analysis.program.defs}
            if element.name in defs:
                return _location(defs[element.name].span, analysis)
        if isinstance(element, ast.Ref) and _contains(element.span, offset):
            for part, span in _ref_part_spans(element):
                if _contains(span, offset) or span.start - 1 == offset:
                    target = _label_definition(statement, part, element.span.start)
                    if target is not None:
                        return _location(_label_span(target), analysis)
    return None


def document_symbols(analysis: Analysis) -> list[lsp.DocumentSymbol]:
    symbols = []
    for statement in analysis.statements:
        kind = lsp.SymbolKind.Function if statement.kind == "def" else lsp.SymbolKind.Module
        detail = ""
        if statement.kind == "net":
            for network in analysis.networks:
                if network.name == statement.name:
                    detail = (f"{format_shape(network.input_shape)} -> {format_shape(network.output_shape)}, "
                              f"{_count(network.params)} params")
        symbols.append(lsp.DocumentSymbol(
            name=statement.name, kind=kind, detail=detail or statement.kind,
            range=analysis.index.range(statement.name_span.start, statement.end),
            selection_range=analysis.index.range(statement.name_span.start, statement.name_span.end)))
    return symbols


class RenameRefused(Exception):
    """A rename that would not give a correct program (the message says why)."""


def rename_spans(analysis: Analysis, offset: int) -> tuple[str, list[Span]] | None:
    """The thing at `offset` (a definition or a label) and every span that names it in the file."""
    if analysis.program is None:
        return None
    statement = analysis.statement_at(offset)
    own_defs = {d.name for d in analysis.program.defs}
    target_def = None
    if statement is not None and statement.kind == "def" and _contains(statement.name_span, offset):
        target_def = statement.name
    label, label_statement = None, None
    if statement is not None:
        for element in statement.elements:
            if isinstance(element, ast.Atom) and element.slide is None \
                    and _contains(_name_span(element), offset) and element.name in own_defs:
                target_def = element.name
            elif isinstance(element, ast.Labelled) and _contains(_label_span(element), offset):
                label, label_statement = element.label, statement
            elif isinstance(element, ast.Ref) and _contains(element.span, offset):
                for i, (part, span) in enumerate(_ref_part_spans(element)):
                    if (_contains(span, offset) or i == 0 and offset == span.start - 1) \
                            and part != "input":
                        label, label_statement = part, statement
    if label is not None:
        spans = [_label_span(e) for e in label_statement.elements
                 if isinstance(e, ast.Labelled) and e.label == label]
        spans += [span for e in label_statement.elements if isinstance(e, ast.Ref)
                  for part, span in _ref_part_spans(e) if part == label]
        return label, sorted(spans, key=lambda s: s.start)
    if target_def is not None:
        spans = [next(d.span for d in analysis.program.defs if d.name == target_def)]
        spans += [_name_span(e) for s in analysis.statements for e in s.elements
                  if isinstance(e, ast.Atom) and e.slide is None and e.name == target_def]
        return target_def, sorted(spans, key=lambda s: s.start)
    return None


def rename_edits(analysis: Analysis, offset: int, new_name: str) -> list[lsp.TextEdit] | None:
    found = rename_spans(analysis, offset)
    if found is None:
        return None
    old, spans = found
    labels = {e.label for s in analysis.statements for e in s.elements
              if isinstance(e, ast.Labelled) and _contains(s.name_span.to(s.body.span), spans[0].start)}
    if not NAME.match(new_name):
        raise RenameRefused(f"{new_name!r} is not a name (letters, digits and _, not starting with a digit)")
    if new_name in RESERVED:
        raise RenameRefused(f"{new_name} is a reserved word")
    if analysis.module is not None and new_name in analysis.module.defs and new_name != old:
        raise RenameRefused(f"a definition named {new_name} already exists")
    if old in labels and new_name in labels and new_name != old:
        raise RenameRefused(f"a label named {new_name} already exists there")
    return [lsp.TextEdit(analysis.index.range(s.start, s.end), new_name) for s in spans]


# -- the server -----------------------------------------------------------------------------------

class NetDSLServer(LanguageServer):
    def __init__(self):
        super().__init__("netdsl", __version__)
        self.analyses: dict[str, Analysis] = {}
        self.last_good: dict[str, Analysis] = {}

    def analysis(self, uri: str) -> Analysis:
        document = self.workspace.get_text_document(uri)
        text = document.source
        current = self.analyses.get(uri)
        if current is None or current.text != text:
            current = analyse(text, uri_to_path(uri))
            current.uri = uri
            self.analyses[uri] = current
            if current.program is not None:
                self.last_good[uri] = current
        return current

    def publish(self, uri: str) -> None:
        found = diagnostics(self.analysis(uri))
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=found))


def build_server() -> NetDSLServer:
    server = NetDSLServer()

    @server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: NetDSLServer, params: lsp.DidOpenTextDocumentParams):
        ls.publish(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: NetDSLServer, params: lsp.DidChangeTextDocumentParams):
        ls.publish(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: NetDSLServer, params: lsp.DidSaveTextDocumentParams):
        ls.analyses.pop(params.text_document.uri, None)  # a `use`d file may have changed
        ls.publish(params.text_document.uri)

    @server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: NetDSLServer, params: lsp.DidCloseTextDocumentParams):
        uri = params.text_document.uri
        ls.analyses.pop(uri, None)
        ls.last_good.pop(uri, None)
        ls.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    @server.feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(ls: NetDSLServer, params: lsp.HoverParams):
        analysis = ls.analysis(params.text_document.uri)
        found = hover_text(analysis, analysis.index.offset(params.position))
        if found is None:
            return None
        markdown, span = found
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=markdown),
                         range=analysis.index.range(span.start, span.end))

    @server.feature(lsp.TEXT_DOCUMENT_COMPLETION,
                    lsp.CompletionOptions(trigger_characters=["@", "(", ","]))
    def completion(ls: NetDSLServer, params: lsp.CompletionParams):
        uri = params.text_document.uri
        analysis = ls.analysis(uri)
        items = completions(analysis, ls.last_good.get(uri), analysis.index.offset(params.position))
        return lsp.CompletionList(is_incomplete=False, items=items)

    @server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: NetDSLServer, params: lsp.DefinitionParams):
        analysis = ls.analysis(params.text_document.uri)
        return definition_at(analysis, analysis.index.offset(params.position))

    @server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def symbols(ls: NetDSLServer, params: lsp.DocumentSymbolParams):
        return document_symbols(ls.analysis(params.text_document.uri))

    @server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
    def prepare_rename(ls: NetDSLServer, params: lsp.PrepareRenameParams):
        analysis = ls.analysis(params.text_document.uri)
        offset = analysis.index.offset(params.position)
        found = rename_spans(analysis, offset)
        if found is None:
            return None
        for span in found[1]:
            if _contains(span, offset):
                return lsp.PrepareRenamePlaceholder(range=analysis.index.range(span.start, span.end),
                                                    placeholder=found[0])
        return None

    @server.feature(lsp.TEXT_DOCUMENT_RENAME)
    def rename(ls: NetDSLServer, params: lsp.RenameParams):
        uri = params.text_document.uri
        analysis = ls.analysis(uri)
        try:
            edits = rename_edits(analysis, analysis.index.offset(params.position), params.new_name)
        except RenameRefused as refused:
            from pygls.exceptions import JsonRpcInvalidParams
            raise JsonRpcInvalidParams(str(refused)) from None
        return None if edits is None else lsp.WorkspaceEdit(changes={uri: edits})

    return server


def main() -> int:
    build_server().start_io()
    return 0


def _count(value) -> str:
    """34,944, or a formula in the input's size names (`input 3xHxW`)."""
    return f"{value:,}" if isinstance(value, int) else str(value)
