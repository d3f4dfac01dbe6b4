"""Text -> surface AST. The grammar is grammars/netdsl.lark; this module turns its parse tree into
`netdsl.ast` nodes and lark's exceptions into `NetDSLSyntaxError`s with spans.

>>> program = parse_program("conv3-64 - pool - fc10")
>>> program.nets[0].body.items[0].slide.kind
'conv'
"""
from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast
from .errors import NetDSLLimitError, NetDSLNameError, NetDSLSyntaxError, Source, Span, suggest
from .limits import DEFAULT_LIMITS, Limits
from .ops import MERGE_WORDS
from .symbolic import Size


def grammar_text() -> str:
    """grammars/netdsl.lark with its merge words taken from the op records (add{, cat{, ...)."""
    text = resources.files("netdsl.grammars").joinpath("netdsl.lark").read_text(encoding="utf-8")
    words = "|".join(sorted(map(re.escape, MERGE_WORDS), key=len, reverse=True))
    merge = re.compile(r"^MERGE\.3: .*$", re.MULTILINE)
    if not merge.search(text):  # pragma: no cover - the grammar file and this code go together
        raise ImportError("grammars/netdsl.lark has no MERGE terminal")
    return merge.sub(lambda _: f"MERGE.3: /(?:{words})\\{{/", text)


@lru_cache(maxsize=1)
def _lark() -> Lark:
    # cache=True keeps the LALR tables on disk, keyed by the grammar text, so a CLI call does not
    # rebuild them.
    return Lark(grammar_text(), parser="lalr", start=["program", "expr"], propagate_positions=True,
                maybe_placeholders=True, cache=True)


def parse_program(text: str, path: str = "<string>", limits: Limits = DEFAULT_LIMITS) -> ast.Program:
    """Parse one .net file into a `Program`. Raises `NetDSLSyntaxError` or `NetDSLLimitError`.

    A leading UTF-8 byte-order mark is dropped and CR LF or lone CR line ends read as LF (files
    saved by Windows and classic Mac editors), so positions count lines as an editor shows them.
    """
    if len(text) > limits.max_source_chars:
        source = Source(path, text[:limits.max_source_chars])
        raise NetDSLLimitError(
            f"source is {len(text):,} characters, over the limit of {limits.max_source_chars:,}",
            Span(source, 0, 1), ["raise Limits.max_source_chars to accept it"])
    text = normalize_text(text)
    source = Source(path, text)
    _check_nesting(source, limits.max_nesting)
    key = (path, text)
    program = _PROGRAMS.get(key)
    if program is None:
        statements: list = []
        for offset, tree in _statement_trees(source):
            statements.extend(_to_ast(source, offset, tree))
        program = _ProgramBuilder(source).build(statements)
        _PROGRAMS.put(key, program, len(text))
    return program


class RecentlyUsed:
    """A thread-safe LRU mapping bounded in entries and in the total `size` of its values."""

    def __init__(self, max_entries: int, max_size: int):
        self.max_entries = max_entries
        self.max_size = max_size
        self.entries: OrderedDict = OrderedDict()  # key -> (value, size)
        self.size = 0
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            found = self.entries.get(key)
            if found is None:
                return None
            self.entries.move_to_end(key)
            return found[0]

    def put(self, key, value, size: int = 1) -> None:
        if size > self.max_size:
            return
        with self.lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.size -= old[1]
            self.entries[key] = (value, size)
            self.size += size
            while len(self.entries) > self.max_entries or self.size > self.max_size:
                _, (_, dropped) = self.entries.popitem(last=False)
                self.size -= dropped

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.size = 0


#: Parsed files by (path, text): the AST is immutable, so loading a file again (`netdsl.load` of
#: the same network, a hover in the editor) costs no parse. Keyed by the whole text, not a digest
#: of it, so two texts never share an entry. Bounded in files and in characters: an AST and its
#: parse trees take about 200 bytes a character (resnet.net: 2,570 characters, 0.5 MB), so these
#: two caches hold at most about 100 MB; a larger file is parsed each time, as before.
_PROGRAMS = RecentlyUsed(max_entries=32, max_size=250_000)

#: lark's parse trees of single statements by their text. Positions in a tree count from the start
#: of its statement, so a statement that an edit left alone (anywhere in the file) is not parsed
#: again; only the conversion to the AST, which places it in the new text, runs again.
_TREES = RecentlyUsed(max_entries=1_024, max_size=250_000)

def clear_caches() -> None:
    """Forget every parsed file and statement (benchmarks use it to time parsing itself)."""
    _PROGRAMS.clear()
    _TREES.clear()


#: Where a statement can start: a line beginning with a statement keyword. (A line can also begin
#: inside a statement: `net a` then `input 3x8x8 = ...`; see _statement_trees.)
_STATEMENT_LINE = re.compile(r"^(?=(?:def|net|use|input|activation)(?![A-Za-z0-9_]))", re.MULTILINE)


def _statement_trees(source: Source) -> list[tuple[int, Tree]]:
    """The file's parse trees, as (offset, tree) pieces that together hold every statement in order.

    The text is cut before each line that starts with a statement keyword and the pieces are
    parsed alone. The grammar is LALR(1), so unambiguous, and a program is any sequence of
    statements: when every piece parses on its own, the whole text parses to the same statements,
    in the same order (no token spans a line end, and a keyword never continues a complete
    statement). When a piece does not parse (a syntax error, or a cut inside a statement), the
    whole text is parsed as one, so errors read exactly as they always have.
    """
    text = source.text
    cuts = [match.start() for match in _STATEMENT_LINE.finditer(text) if match.start() > 0]
    bounds = list(zip([0, *cuts], [*cuts, len(text)]))
    pieces: list[tuple[int, Tree]] = []
    for start, end in bounds:
        piece = text[start:end]
        tree = _TREES.get(piece)
        if tree is None:
            try:
                tree = _lark().parse(piece, start="program")
            except UnexpectedInput:
                return [(0, _parse(source, text, "program", 0))]
            _TREES.put(piece, tree, len(piece))
        pieces.append((start, tree))
    return pieces


def normalize_text(text: str) -> str:
    """Drop a byte-order mark; turn CR LF and lone CR line ends into LF."""
    text = text.removeprefix("\ufeff")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


#: Digits in one integer literal: far past any real size, and far below the point where Python
#: refuses to convert a string (4300 digits).
MAX_LITERAL_DIGITS = 30


def literal_int(text: str, span: Span) -> int:
    """An integer literal's value, refusing literals too long to be a size."""
    if len(text) > MAX_LITERAL_DIGITS:
        raise NetDSLLimitError(f"number too large ({len(text):,} digits)", span,
                               [f"integer literals have at most {MAX_LITERAL_DIGITS} digits"])
    return int(text)


def literal_float(text: str, span: Span) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NetDSLLimitError("number too large", span, ["numbers must be finite"])
    return value


def _to_ast(source: Source, offset: int, tree: Tree):
    return _ToAst(source, offset).transform(tree)


def _parse(source: Source, text: str, start: str, offset: int) -> Tree:
    try:
        return _lark().parse(text, start=start)
    except UnexpectedInput as error:
        raise _syntax_error(source, error, offset, offset + len(text)) from None


_OPENERS = {"(": ")", "[": "]", "{": "}"}


# What the nesting check looks at: comments and strings (skipped whole) and brackets.
_BRACKETS_OUTSIDE_TEXT = re.compile(r'#[^\n]*|"[^"]*"?|[()\[\]{}]')


def _check_nesting(source: Source, max_nesting: int) -> None:
    """Refuse deeply nested brackets before parsing, so no later stage can exhaust the Python stack."""
    depth = 0
    for match in _BRACKETS_OUTSIDE_TEXT.finditer(source.text):
        char = match.group()
        if char in _OPENERS:
            depth += 1
            if depth > max_nesting:
                raise NetDSLLimitError(
                    f"brackets nested more than {max_nesting} deep",
                    Span(source, match.start(), match.start() + 1),
                    ["raise Limits.max_nesting to accept it"])
        elif char in ")]}":
            depth -= 1


# -- syntax errors --------------------------------------------------------------------------------

_TERMINAL_NAMES = {
    "NAME": "a name", "SLIDE": "a layer such as conv3-64", "INT": "an integer", "FLOAT": "a number",
    "SHAPE": "a shape such as 3x224x224", "STRING": 'a quoted path such as "vgg.net"',
    "MERGE": "cat{, add{ or mul{", "$END": "end of input", "INPUT_KW": "'input'",
    "COMPARE": "a comparison (==, !=, <, <=, >, >=)", "AUX": "aux{",
}


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name
    return f"'{pattern.value}'" if pattern.type == "str" else name


def _syntax_error(source: Source, error: UnexpectedInput, offset: int, end: int) -> NetDSLSyntaxError:
    notes: list[str] = []
    if isinstance(error, UnexpectedCharacters):
        pos = offset + (error.pos_in_stream or 0)
        char = source.text[pos] if pos < len(source.text) else ""
        message = f"unexpected character {char!r}"
        span = Span(source, pos, pos + 1)
        hint = _typo_hint(source.text, pos)
        if hint:
            notes.append(hint)
        elif char == "{":
            notes.append("an expression in braces belongs inside a layer, as in conv1-{4*c} or fc{n}")
    elif isinstance(error, (UnexpectedToken, UnexpectedEOF)):
        token = getattr(error, "token", None)
        if token is None or token.type == "$END":
            pos = end
            message = "unexpected end of input"
            span = Span(source, max(0, pos - 1), pos)
        else:
            pos = offset + token.start_pos
            message = f"unexpected {token.value!r}"
            span = Span(source, pos, pos + max(1, len(token.value)))
            hint = _typo_hint(source.text, pos)
            if hint:
                notes.append(hint)
        expected = sorted({_describe_terminal(t) for t in error.expected if not t.startswith("__")})
        if expected:
            notes.append("expected " + _join_or(expected))
    else:  # pragma: no cover - lark raises only the kinds above
        message, span = str(error), None
    return NetDSLSyntaxError(message, span, notes)


_SLIDE_KINDS = ("conv", "deconv", "dwconv", "maxpool", "avgpool", "fc")
_NON_SQUARE_KINDS = ("conv", "dwconv")  # conv1x7-192, dwconv1x7
_MERGE_WORDS = ("cat", "add", "mul")
# The word that ends just before an error: a layer typed wrongly (cnov3-64, conv3x3-64, maxpol2/2,
# Conv3-64) splits into a name and leftovers the grammar rejects one token later.
_WORD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*?)([0-9]+(?:x[0-9]+)*)?(-[A-Za-z0-9_]*)?(/[A-Za-z0-9_]*)?"
                          r"[ \t]*$")
_WORD_AFTER = re.compile(r"[A-Za-z0-9_]*(?:/[A-Za-z0-9_]*)?")
_MAX_HINT_WINDOW = 80


def _typo_hint(text: str, pos: int) -> str | None:
    """A did-you-mean for the slip most likely to cause a syntax error at `pos`, or None."""
    before = text[max(0, pos - _MAX_HINT_WINDOW):pos]
    after = _WORD_AFTER.match(text, pos, min(len(text), pos + _MAX_HINT_WINDOW))
    rest = after.group() if after else ""
    if text.startswith("{", pos):
        word = re.search(r"([A-Za-z_][A-Za-z0-9_]*)$", before)
        if word and not any(c.isdigit() for c in word.group(1)):
            close = suggest(word.group(1), _MERGE_WORDS)
            merge = f"did you mean {close}{{? " if close else ""
            return f"{merge}{word.group(1)}{{ is not a merge: the merges are cat{{ a | b }} " \
                   f"(channels side by side), add{{ a | b }} (elementwise sum) and mul{{ a | b }} " \
                   f"(elementwise product)"
        return None
    if re.search(r"\}\s*\(\s*[A-Za-z_0-9]*\s*$", before):
        return "a merge takes no arguments: cat{ a | b }, add{ a | b } and mul{ a | b } are written bare"
    match = _WORD_BEFORE.search(before)
    if match is None or match.start() > 0 and before[match.start() - 1] not in " \t\n([{|-:*":
        return None
    written = before[match.start():]
    written = written + rest if written == written.rstrip() else written.rstrip()
    parts = re.match(r"([A-Za-z_][A-Za-z0-9_]*?)([0-9]+(?:x[0-9]+)*)(.*)$", written)
    if parts is None:
        return None
    name, size, tail = parts.groups()
    kind = name if name in _SLIDE_KINDS else suggest(name, _SLIDE_KINDS)
    if kind is None:
        return None
    if kind == name == "dwconv" and tail.startswith("-"):
        return (f"a depthwise conv keeps its input's channels: write dwconv{size}, or "
                f"dwconv{size}(multiplier=2) for twice as many")
    if "x" in size and kind in _NON_SQUARE_KINDS:
        sides = size.split("x")
        if len(sides) > 2:
            return (f"a {kind} kernel has a height and a width: {name}{size} cannot be written; "
                    f"a {sides[0]}x{sides[1]} kernel is {kind}{sides[0]}x{sides[1]}{tail}")
        if kind == name:
            return None
    elif "x" in size:
        sides = size.split("x")
        if len(set(sides)) > 1:
            return (f"{kind} kernels are square in netdsl: {name}{size} cannot be written; "
                    f"a {sides[-1]}x{sides[-1]} kernel is {kind}{sides[-1]}{tail}")
        size = sides[0]
    elif kind == name:
        return None
    return f"did you mean {kind}{size}{tail}? ({written} is not a layer)"


def _join_or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


# -- parse tree -> AST ----------------------------------------------------------------------------

_SLIDE_PARTS = re.compile(
    r"(?P<kind>deconv|dwconv|conv|maxpool|avgpool|fc)(?P<k>[0-9]+|\{[^{}]*\})(?:x(?P<kw>[0-9]+|\{[^{}]*\}))?"
    r"(?:-(?P<c>[0-9]+|[A-Za-z_]\w*|\{[^{}]*\}))?(?:/(?P<s>[0-9]+|[A-Za-z_]\w*|\{[^{}]*\}))?$")


def _binop(op: str):
    """The transformer method for one arithmetic rule."""
    def build(self, meta, children):
        return ast.BinOp(op, children[0], children[1], self._span(meta))
    return build


class _ToAst:
    """Builds AST nodes bottom-up without recursion (deep programs must not hit the stack limit).

    Each rule's method takes (meta, children), as lark's `v_args(meta=True)` passes them; the walk
    is lark's Transformer_NonRecursive's, with the methods looked up once per class rather than
    through lark's wrappers once per node (a third of the time to read a file).
    """

    _methods: dict = {}

    def __init__(self, source: Source, offset: int):
        self.source = source
        self.offset = offset

    def transform(self, tree: Tree):
        methods = type(self)._methods
        order: list = []
        pending: list = [tree]
        while pending:  # the nodes in reverse postfix order
            node = pending.pop()
            order.append(node)
            if isinstance(node, Tree):
                pending.extend(node.children)
        stack: list = []
        for node in reversed(order):
            if isinstance(node, Tree):
                size = len(node.children)
                if size:
                    children = stack[-size:]
                    del stack[-size:]
                else:
                    children = []
                method = methods.get(node.data)
                if method is None:
                    method = methods[node.data] = getattr(type(self), node.data, None) or (
                        lambda self, meta, children, data=node.data: Tree(data, children, meta))
                stack.append(method(self, node.meta, children))
            else:
                stack.append(node)
        return stack[0]

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.source, self.offset, self.offset)
        return Span(self.source, self.offset + meta.start_pos, self.offset + meta.end_pos)

    def _tok(self, token: Token) -> Span:
        return Span(self.source, self.offset + (token.start_pos or 0), self.offset + (token.end_pos or 0))

    # expressions
    def int_lit(self, meta, children):
        span = self._tok(children[0])
        return ast.Num(literal_int(str(children[0]), span), span)

    def float_lit(self, meta, children):
        span = self._tok(children[0])
        return ast.Num(literal_float(str(children[0]), span), span)

    def name_ref(self, meta, children):
        return ast.Var(str(children[0]), self._tok(children[0]))

    add_expr, sub_expr, mul_expr, div_expr = _binop("+"), _binop("-"), _binop("*"), _binop("/")
    floordiv_expr, mod_expr = _binop("//"), _binop("%")
    and_cond, or_cond = _binop("and"), _binop("or")

    def comparison(self, meta, children):
        left, operator, right = children
        return ast.BinOp(str(operator), left, right, self._span(meta))

    def not_cond(self, meta, children):
        return ast.Not(children[0], self._span(meta))

    def neg_expr(self, meta, children):
        return ast.Neg(children[0], self._span(meta))

    def call_expr(self, meta, children):
        return ast.Call(str(children[0]), tuple(children[1:]), self._span(meta))

    # chains
    def ref(self, meta, children):
        return ast.Ref(".".join(str(child) for child in children), self._span(meta))

    def keyword_arg(self, meta, children):
        return ast.Arg(str(children[0]), children[1], self._span(meta))

    def positional_arg(self, meta, children):
        return ast.Arg(None, children[0], self._span(meta))

    def args(self, meta, children):
        return tuple(child for child in children if child is not None)

    def atom(self, meta, children):
        head, args = children
        args = args or ()
        span = self._span(meta)
        if head.type == "SLIDE":
            slide = self._slide(head)
            return ast.Atom(slide.kind, slide, args, span)
        return ast.Atom(str(head), None, args, span)

    def _slide(self, token: Token) -> ast.Slide:
        match = _SLIDE_PARTS.match(str(token))
        if match is None:  # the lexer's pattern and this one are written to agree
            raise NetDSLSyntaxError(f"cannot read layer {str(token)!r}", self._tok(token))
        base = self.offset + (token.start_pos or 0)

        def value(group: str):
            text = match.group(group)
            if text is None:
                return None
            start = base + match.start(group)
            span = Span(self.source, start, start + len(text))
            if text.isdigit():
                return ast.Num(literal_int(text, span), span)
            if text.startswith("{"):
                inner = text[1:-1]
                if not inner.strip():
                    raise NetDSLSyntaxError("empty expression in braces", span)
                tree = _parse(self.source, inner, "expr", start + 1)
                return _to_ast(self.source, start + 1, tree)
            return ast.Var(text, span)

        kind = match.group("kind")
        if kind == "fc":  # fc4096: the number is the output features
            if match.group("s") is not None:
                raise NetDSLSyntaxError("fc has no stride", self._tok(token), ["write fc4096"])
            return ast.Slide(kind, None, value("k"), None)
        if match.group("kw") is not None:  # conv1x7-192: height 1, width 7
            return ast.Slide(kind, None, value("c"), value("s"), value("k"), value("kw"))
        return ast.Slide(kind, value("k"), value("c"), value("s"))

    def count(self, meta, children):
        child = children[0]
        if isinstance(child, Token):
            if child.type == "INT":
                span = self._tok(child)
                return ast.Num(literal_int(str(child), span), span)
            return ast.Var(str(child), self._tok(child))
        return child

    def repeat(self, meta, children):
        return ast.Repeat(children[0], children[1], self._span(meta))

    def indexed_repeat(self, meta, children):
        body, count, index = children
        return ast.Repeat(body, count, self._span(meta), ast.Var(str(index), self._tok(index)))

    def group(self, meta, children):
        return ast.Group(children[0], self._span(meta))

    def merge(self, meta, children):
        kind = MERGE_WORDS[str(children[0])[:-1]]
        return ast.Merge(kind, tuple(children[1:]), self._span(meta))

    def aux_output(self, meta, children):
        return ast.AuxOutput(children[1], self._span(meta))

    def choice(self, meta, children):
        condition, then, otherwise = children
        return ast.Choice(condition, then, otherwise, self._span(meta))

    def labelled(self, meta, children):
        return ast.Labelled(str(children[0]), children[1], self._span(meta))

    def chain(self, meta, children):
        start = children[0] if isinstance(children[0], ast.Ref) else None
        items = tuple(children[1:] if start is not None else children)
        return ast.Chain(start, items, self._span(meta))

    # statements: tagged tuples, assembled by _ProgramBuilder
    def shape(self, meta, children):
        token = children[0]
        span = self._tok(token)
        return tuple(literal_int(part, span) if part.isdigit() else Size.name(part)
                     for part in str(token).split("x")), span

    def input_stmt(self, meta, children):
        return ("input", children[0], self._span(meta))

    def activation_stmt(self, meta, children):
        return ("activation", (str(children[0]), self._tok(children[0])), self._span(meta))

    def use_stmt(self, meta, children):
        token = children[0]
        return ("use", ast.Use(str(token)[1:-1], self._tok(token)), self._span(meta))

    def param(self, meta, children):
        return ast.Param(str(children[0]), children[1], self._tok(children[0]))

    def params(self, meta, children):
        return tuple(child for child in children if child is not None)

    def def_stmt(self, meta, children):
        name, params, body = children
        return ("def", ast.Def(str(name), params or (), body, self._tok(name)), self._span(meta))

    def net_input(self, meta, children):
        return ("input", children[0])

    def net_activation(self, meta, children):
        return ("activation", (str(children[0]), self._tok(children[0])))

    def net_stmt(self, meta, children):
        name, *settings, body = children
        found: dict[str, object] = {}
        for key, value in settings:
            if key in found:
                raise NetDSLSyntaxError(f"net {name} sets {key} twice", value[1])
            found[key] = value
        net = ast.Net(str(name), found.get("input"), found.get("activation"), body, self._tok(name))
        return ("net", net, self._span(meta))

    def chain_stmt(self, meta, children):
        body = children[0]
        return ("net", ast.Net(None, None, None, body, body.span), self._span(meta))

    def program(self, meta, children):
        return children


class _ProgramBuilder:
    """Checks the file-level rules the grammar cannot: one input, one activation, unique names."""

    def __init__(self, source: Source):
        self.source = source

    def build(self, statements: list) -> ast.Program:
        file_input = file_activation = None
        uses: list[ast.Use] = []
        defs: dict[str, ast.Def] = {}
        nets: dict[str | None, ast.Net] = {}
        anonymous = None
        for kind, value, span in statements:
            if kind == "input":
                if file_input is not None:
                    raise NetDSLSyntaxError("the file sets its input twice", span,
                                            [f"first set at {file_input[1].location()}"])
                file_input = value
            elif kind == "activation":
                if file_activation is not None:
                    raise NetDSLSyntaxError("the file sets its activation twice", span,
                                            [f"first set at {file_activation[1].location()}"])
                file_activation = value
            elif kind == "use":
                uses.append(value)
            elif kind == "def":
                if value.name in defs:
                    raise NetDSLNameError(f"definition {value.name} is defined twice", value.span,
                                          [f"first defined at {defs[value.name].span.location()}"])
                defs[value.name] = value
            elif value.name is None:
                if anonymous is not None:
                    raise NetDSLSyntaxError(
                        "a file may hold only one unnamed network", value.span,
                        [f"the first starts at {anonymous.span.location()}",
                         "name each one: net A = ...",
                         "or join them with '-' if they are one network"])
                anonymous = value
            else:
                if value.name in nets:
                    raise NetDSLNameError(f"net {value.name} is defined twice", value.span,
                                          [f"first defined at {nets[value.name].span.location()}"])
                nets[value.name] = value
        if anonymous is not None:
            if nets:
                first = next(iter(nets.values()))
                raise NetDSLSyntaxError(
                    "a file with named nets cannot also hold an unnamed chain", anonymous.span,
                    [f"net {first.name} is defined at {first.span.location()}",
                     "give this chain a name: net NAME = ..."])
            nets[None] = anonymous
        return ast.Program(self.source, file_input, file_activation, tuple(uses),
                           tuple(defs.values()), tuple(nets.values()))
