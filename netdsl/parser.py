"""Text -> surface AST. The grammar is grammars/netdsl.lark; this module turns its parse tree into
`netdsl.ast` nodes and lark's exceptions into `NetDSLSyntaxError`s with spans.

>>> program = parse_program("conv3-64 - pool - fc10")
>>> program.nets[0].body.items[0].slide.kind
'conv'
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Tree
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken,
                             VisitError)
from lark.visitors import Transformer_NonRecursive, v_args

from . import ast
from .errors import NetDSLLimitError, NetDSLNameError, NetDSLSyntaxError, Source, Span
from .limits import DEFAULT_LIMITS, Limits
from .ops import MERGE_WORDS


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
    """Parse one .net file into a `Program`. Raises `NetDSLSyntaxError` or `NetDSLLimitError`."""
    source = Source(path, text)
    if len(text) > limits.max_source_chars:
        raise NetDSLLimitError(
            f"source is {len(text):,} characters, over the limit of {limits.max_source_chars:,}",
            Span(source, 0, 1), ["raise Limits.max_source_chars to accept it"])
    _check_nesting(source, limits.max_nesting)
    tree = _parse(source, text, "program", 0)
    return _ProgramBuilder(source).build(_to_ast(source, 0, tree))


def _to_ast(source: Source, offset: int, tree: Tree):
    try:
        return _ToAst(source, offset).transform(tree)
    except VisitError as error:  # lark wraps what the transformer raises
        raise error.orig_exc from None


def _parse(source: Source, text: str, start: str, offset: int) -> Tree:
    try:
        return _lark().parse(text, start=start)
    except UnexpectedInput as error:
        raise _syntax_error(source, error, offset, offset + len(text)) from None


_OPENERS = {"(": ")", "[": "]", "{": "}"}


def _check_nesting(source: Source, max_nesting: int) -> None:
    """Refuse deeply nested brackets before parsing, so no later stage can exhaust the Python stack."""
    text = source.text
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            newline = text.find("\n", i)
            i = n if newline < 0 else newline
            continue
        if ch == '"':
            close = text.find('"', i + 1)
            i = n if close < 0 else close + 1
            continue
        if ch in _OPENERS:
            depth += 1
            if depth > max_nesting:
                raise NetDSLLimitError(
                    f"brackets nested more than {max_nesting} deep",
                    Span(source, i, i + 1), ["raise Limits.max_nesting to accept it"])
        elif ch in ")]}":
            depth -= 1
        i += 1


# -- syntax errors --------------------------------------------------------------------------------

_TERMINAL_NAMES = {
    "NAME": "a name", "SLIDE": "a layer such as conv3-64", "INT": "an integer", "FLOAT": "a number",
    "SHAPE": "a shape such as 3x224x224", "STRING": 'a quoted path such as "vgg.net"',
    "MERGE": "cat{ or add{", "$END": "end of input", "INPUT_KW": "'input'",
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
        pos = offset + error.pos_in_stream
        char = source.text[pos] if pos < len(source.text) else ""
        message = f"unexpected character {char!r}"
        span = Span(source, pos, pos + 1)
        if char == "{":
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
        expected = sorted({_describe_terminal(t) for t in error.expected if not t.startswith("__")})
        if expected:
            notes.append("expected " + _join_or(expected))
    else:  # pragma: no cover - lark raises only the kinds above
        message, span = str(error), None
    return NetDSLSyntaxError(message, span, notes)


def _join_or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


# -- parse tree -> AST ----------------------------------------------------------------------------

_SLIDE_PARTS = re.compile(
    r"(?P<kind>deconv|conv|maxpool|avgpool|fc)(?P<k>[0-9]+|\{[^{}]*\})"
    r"(?:-(?P<c>[0-9]+|[A-Za-z_]\w*|\{[^{}]*\}))?(?:/(?P<s>[0-9]+|[A-Za-z_]\w*|\{[^{}]*\}))?$")


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Builds AST nodes bottom-up without recursion (deep programs must not hit the stack limit)."""

    def __init__(self, source: Source, offset: int):
        super().__init__()
        self.source = source
        self.offset = offset

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.source, self.offset, self.offset)
        return Span(self.source, self.offset + meta.start_pos, self.offset + meta.end_pos)

    def _tok(self, token: Token) -> Span:
        return Span(self.source, self.offset + token.start_pos, self.offset + token.end_pos)

    # expressions
    def int_lit(self, meta, children):
        return ast.Num(int(children[0]), self._tok(children[0]))

    def float_lit(self, meta, children):
        return ast.Num(float(children[0]), self._tok(children[0]))

    def name_ref(self, meta, children):
        return ast.Var(str(children[0]), self._tok(children[0]))

    def _binop(op):  # noqa: N805 - a small factory for the arithmetic rules
        def build(self, meta, children):
            return ast.BinOp(op, children[0], children[1], self._span(meta))
        return build

    add_expr, sub_expr, mul_expr = _binop("+"), _binop("-"), _binop("*")
    floordiv_expr, mod_expr = _binop("//"), _binop("%")

    def neg_expr(self, meta, children):
        return ast.Neg(children[0], self._span(meta))

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
        base = self.offset + token.start_pos

        def value(group: str):
            text = match.group(group)
            if text is None:
                return None
            start = base + match.start(group)
            span = Span(self.source, start, start + len(text))
            if text.isdigit():
                return ast.Num(int(text), span)
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
        return ast.Slide(kind, value("k"), value("c"), value("s"))

    def count(self, meta, children):
        child = children[0]
        if isinstance(child, Token):
            if child.type == "INT":
                return ast.Num(int(child), self._tok(child))
            return ast.Var(str(child), self._tok(child))
        return child

    def repeat(self, meta, children):
        return ast.Repeat(children[0], children[1], self._span(meta))

    def group(self, meta, children):
        return ast.Group(children[0], self._span(meta))

    def merge(self, meta, children):
        kind = MERGE_WORDS[str(children[0])[:-1]]
        return ast.Merge(kind, tuple(children[1:]), self._span(meta))

    def labelled(self, meta, children):
        return ast.Labelled(str(children[0]), children[1], self._span(meta))

    def chain(self, meta, children):
        start = children[0] if isinstance(children[0], ast.Ref) else None
        items = tuple(children[1:] if start is not None else children)
        return ast.Chain(start, items, self._span(meta))

    # statements: tagged tuples, assembled by _ProgramBuilder
    def shape(self, meta, children):
        token = children[0]
        return tuple(int(part) for part in str(token).split("x")), self._tok(token)

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
        uses, defs, nets = [], {}, {}
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
