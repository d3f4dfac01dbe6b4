"""The surface AST: what the user wrote, as frozen dataclasses with a span on every node.

Produced by `netdsl.parser`, consumed by `netdsl.expand`. Nothing here is evaluated yet: slide
notation is split into its parts but parameters and expressions are still symbolic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .errors import Source, Span


# -- expressions (definition parameters, repeat counts, argument values) --------------------------

@dataclass(frozen=True, slots=True)
class Num:
    value: int | float
    span: Span


@dataclass(frozen=True, slots=True)
class Var:
    """A name in value position: a definition parameter, or else a symbol such as `bilinear`."""

    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str  # "+", "-", "*", "/", "//", "%"; in a choice's condition also "==", "!=", "<", "<=", ">",
    # ">=", "and", "or"
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Neg:
    operand: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    """`make_divisible(32 * w, 8)`: one of the integer functions of docs/language.md, section 7."""

    name: str
    args: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Not:
    """`not s == 1` in a choice's condition."""

    operand: "Expr"
    span: Span


Expr = Union[Num, Var, BinOp, Neg, Call, Not]


# -- chains ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Ref:
    """`@p3`: the tensor labelled p3 (or `@input`, the network input)."""

    label: str
    span: Span


@dataclass(frozen=True, slots=True)
class Arg:
    name: str | None  # None for a positional argument
    value: Union[Expr, Ref]
    span: Span


@dataclass(frozen=True, slots=True)
class Slide:
    """The parts of a slide-notation token: conv3-64/2 is kind conv, kernel 3, channels 64, stride 2."""

    kind: str  # conv, deconv, dwconv, maxpool, avgpool, fc
    kernel: Expr | None  # a square kernel: conv3-64
    channels: Expr | None
    stride: Expr | None
    kernel_h: Expr | None = None  # a non-square kernel: conv1x7-192 is kernel_h 1, kernel_w 7
    kernel_w: Expr | None = None


@dataclass(frozen=True, slots=True)
class Atom:
    """An op or a definition call: `relu`, `conv3-64(pad=0)`, `block(2, 64)`, `conv(k=3, c=64)`."""

    name: str  # the op or definition name (for slide notation, the op kind)
    slide: Slide | None
    args: tuple[Arg, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Group:
    body: "Chain"
    span: Span


@dataclass(frozen=True, slots=True)
class Merge:
    kind: str  # "concat" or "add"
    branches: tuple["Chain", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Repeat:
    """`body*count`; with an index, `body*count for i`, each iteration sees i (0 .. count-1)."""

    body: "Element"
    count: Expr
    span: Span
    index: Var | None = None


@dataclass(frozen=True, slots=True)
class Labelled:
    label: str
    body: "Element"
    span: Span


@dataclass(frozen=True, slots=True)
class Choice:
    """`if s == 1 and in_channels == c then residual(c) else plain(c)`: one of two elements,
    picked when the definition is called (no `else`: nothing, the input passes through)."""

    condition: Expr
    then: "Element"
    otherwise: "Element | None"
    span: Span


@dataclass(frozen=True, slots=True)
class AuxOutput:
    """`aux{ avgpool5/3 - conv1-128 - ... - fc1000 }`: a head on the current tensor whose result is
    an auxiliary output (returned in training mode); the chain goes on from the same tensor."""

    body: "Chain"
    span: Span


Element = Union[Atom, Group, Merge, Repeat, Labelled, Choice, AuxOutput]


@dataclass(frozen=True, slots=True)
class Chain:
    start: Ref | None  # a branch may start from a labelled tensor instead of the merge's input
    items: tuple[Element, ...]
    span: Span


# -- statements -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Param:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class Def:
    name: str
    params: tuple[Param, ...]
    body: Chain
    span: Span  # the name


@dataclass(frozen=True, slots=True)
class Net:
    name: str | None  # None for a file that is one anonymous chain
    input: tuple[tuple[int, ...], Span] | None
    activation: tuple[str, Span] | None
    body: Chain
    span: Span


@dataclass(frozen=True, slots=True)
class Use:
    path: str
    span: Span


@dataclass(frozen=True, slots=True)
class Program:
    """One parsed .net file."""

    source: Source
    input: tuple[tuple[int, ...], Span] | None
    activation: tuple[str, Span] | None
    uses: tuple[Use, ...]
    defs: tuple[Def, ...]
    nets: tuple[Net, ...]
