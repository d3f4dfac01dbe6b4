"""What an op record is, and the rule helpers several records share.

Every op is one `Op` record (netdsl/ops/*.py). Its fields are the op's whole story for the front end
and the passes: attributes, slide notation, derived defaults, shape rule, weight shapes, MACs,
receptive field, whether its output counts as an activation, how it is drawn and how the program
generator writes it. Every field is required (no defaults), so a record missing a rule fails at
import, and no pass keeps a table of its own that could silently fill in a default.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..symbolic import Constraint, Size, deconv_out, window_out, window_unused

if TYPE_CHECKING:
    from ..ir import Node

#: A tensor's shape without the batch. Each dimension is an int, or a `Size` (netdsl.symbolic)
#: that mentions an input size name such as H: `input 3xHxW` makes spatial sizes formulas.
Shape = tuple
#: Receptive field: (size, jump), jump being the distance in input pixels between neighbouring
#: outputs (the effective stride; a Fraction after upsampling).
Field = tuple[Fraction, Fraction]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
#: `act` not written by the user: the implicit-activation pass decides (see docs/language.md).
IMPLICIT = "implicit"
DERIVED = None  # a default computed from other attributes by the record's `derive`


@dataclass(frozen=True, slots=True)
class AttrSpec:
    name: str
    kind: str  # "int", "float", "bool", "symbol" or "ref"
    default: object = REQUIRED
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None  # exclusive
    choices: tuple[str, ...] = ()
    #: A per-axis attribute (kh) that the shared one (k) states whenever that has a value: the
    #: printed forms leave it out then (conv3-64 prints as before, conv1x7-192 prints kh and kw).
    implied_by: str | None = None


def stated_attrs(op: "Op", attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes a printed form must state: all but None (conv1x7's k) and a per-axis value
    its shared attribute already states. Parsing the result back gives the same attributes."""
    stated = {}
    for name, value in attrs.items():
        spec = op.attr(name)
        if value is None or (spec is not None and spec.implied_by is not None
                             and attrs[spec.implied_by] is not None):
            continue
        stated[name] = value
    return stated


class AttributeProblem(Exception):
    """Raised by a record's `derive` for attributes that cannot go together; the expander reports
    the message at the layer."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MissingAttribute(AttributeProblem):
    """Raised by a record's `derive` when neither an attribute nor what it is derived from was
    given (conv with neither k nor kh and kw); the expander reports it as `op needs NAME (doc)`."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class ShapeProblem(Exception):
    """Raised by a shape rule; `infer_shapes` turns it into a NetDSLShapeError at the node's span."""

    def __init__(self, message: str, result: Shape | None = None, notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.result = result  # the impossible shape, when there is one (512x0x0)
        self.notes = notes


def format_shape(shape) -> str:
    return "x".join(_format_dim(d) for d in shape)


def _format_dim(d) -> str:
    text = str(d)
    return f"({text})" if not isinstance(d, int) and not text.isidentifier() else text


# -- sizes: an int, or a formula in the input's size names (netdsl.symbolic) ----------------------

def dim(value):
    """A size as shapes keep it: an int, or a Size that mentions a name (never a constant Size)."""
    if isinstance(value, Size) and value.is_constant:
        return value.const
    return value


def counted(op: str, value) -> int:
    """A channel or feature count a rule must compare as a number. A flattened tensor whose size
    depends on the input's size names has a polynomial count (H*W), which no condition expresses."""
    if not isinstance(value, int):
        raise ShapeProblem(f"{op} needs a whole number of channels or features, got {value}: the "
                           f"features of a flattened tensor are a formula in the input's sizes",
                           notes=("check this net at a concrete size (--input 3x224x224), or put "
                                  "gap before flatten so the features do not depend on the size",))
    return value


def is_symbolic(shape) -> bool:
    for d in shape:
        if type(d) is not int:
            return True
    return False


class Reason:
    """Why a layer puts a condition on the sizes, written only when someone reads it: checking a
    large net states thousands of conditions, and formatting formulas is most of their cost."""
    __slots__ = ("make", "args")

    def __init__(self, make: Callable[..., str], *args):
        self.make, self.args = make, args

    def __str__(self) -> str:
        return self.make(*self.args)


class ShapeChecks:
    """What a shape rule reports besides its result, passed to it as `warn`.

    Called with a message, it records a concrete "doesn't fit". Where a size is a formula, a rule
    cannot decide a condition; it states it instead (`fits`, `at_most`, `equal` below), and the
    shape checker solves all of them at the end for the sizes that satisfy every one.
    """

    def __init__(self):
        self.messages: list[str] = []
        self.conditions: list[Constraint] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)

    def condition(self, constraint: Constraint) -> None:
        self.conditions.append(constraint)


def _state(warn, constraint: Constraint) -> None:
    if not isinstance(warn, ShapeChecks):  # pragma: no cover - only the shape checker passes formulas
        raise TypeError("a symbolic size reached a shape rule called without ShapeChecks")
    warn.condition(constraint)


def fits(warn, unused, message: "str | Reason") -> None:
    """`unused` input rows must be 0 for the window to fit exactly (the slides' "doesn't fit")."""
    unused = dim(unused)
    if isinstance(unused, int):
        if unused > 0:
            warn(str(message))
    else:
        _state(warn, Constraint(-unused, "ge", fit=True, reason=message))


def require_at_most(warn, a, b, problem: Callable[[], "ShapeProblem"], reason: str) -> None:
    """a <= b: decided now when both are numbers, else a condition on the input sizes."""
    gap = dim(Size.of(b) - a)
    if isinstance(gap, int):
        if gap < 0:
            raise problem()
    else:
        _state(warn, Constraint(gap, "ge", reason=reason))


def require_equal(warn, a, b, problem: Callable[[], "ShapeProblem"], reason: str) -> None:
    difference = dim(Size.of(a) - b)
    if isinstance(difference, int):
        if difference:
            raise problem()
    elif not difference.equivalent(0):
        _state(warn, Constraint(difference, "eq", reason=reason))


def require_even(warn, value, problem_message: str) -> None:
    """A "doesn't fit" unless `value` is even (a centre crop's margins equal)."""
    value = dim(value)
    if isinstance(value, int):
        if value % 2:
            warn(problem_message)
    else:
        _state(warn, Constraint(value // 2 * 2 - value, "eq", fit=True, reason=problem_message))


#: shape(node, input shapes, warn) -> output shape; raises ShapeProblem; warn(message) for "doesn't fit".
ShapeRule = Callable[["Node", list, Callable[[str], None]], Shape]
#: weights(node, input shapes) -> [(suffix, shape, trainable)], in the order torch lists them.
WeightRule = Callable[["Node", list], list]
#: macs(node, input shapes, output shape) -> multiply-accumulates for one input.
MacsRule = Callable[["Node", list, Shape], int]
#: receptive_field(node, input fields, input shapes) -> the output's field.
FieldRule = Callable[["Node", list, list], Field]
#: explain(node, input shapes, output shape, input fields, written) -> the layer's worked formulas;
#: `written` is the set of attributes the user wrote (None when unknown), so a rule can say which
#: default it derived.
ExplainRule = Callable[["Node", list, "Shape", list, "frozenset[str] | None"], "tuple[Worked, ...]"]
#: generate(g, shape) -> (text, output shape) or None when the op does not fit `shape`; `g` is the
#: program generator's context (netdsl.testing): g.draw, g.st (hypothesis strategies), g.channels(),
#: g.label(), g.branch(shape).
GenerateRule = Callable[[Any, Shape], "tuple[str, Shape] | None"]


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    doc: str
    attrs: tuple[AttrSpec, ...]
    positional: tuple[str, ...]  # the order of positional arguments: dropout(0.5) is p=0.5
    notation: Callable[[Mapping[str, Any]], str]  # slide notation: conv3-64/2, maxpool3/2, fc4096
    derive: Callable[[dict], None]  # fills DERIVED defaults from other attributes, in place
    shape: ShapeRule
    weights: WeightRule
    macs: MacsRule
    receptive_field: FieldRule
    counts_as_activation: bool  # whether its output counts towards activation memory
    merge_word: str | None  # `add` for add{ a | b }; None for ops that are not merges
    shape_only_inputs: frozenset[int]  # input positions read only for their size (crop's `like`)
    writable: bool  # False for ops only the expander creates (input, the merges)
    activation: bool  # an element-wise activation: usable as `act=` and as a net's `activation`
    takes_activation: bool  # a weight layer that gets the net's implicit activation (conv, fc)
    colour: str  # fill colour in drawings
    generate: GenerateRule | None  # None only for ops no program writes (input)
    explain: ExplainRule  # the arithmetic as the slides show it (`netdsl summary --explain`)

    def attr(self, name: str) -> AttrSpec | None:
        for spec in self.attrs:
            if spec.name == name:
                return spec
        return None

    @property
    def attr_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.attrs)


ACTIVATION_COLOUR = "#f7f7f7"


@dataclass(frozen=True, slots=True)
class Worked:
    """One worked formula: `quantity: formula = value (note)`, as a student checks a layer by hand.

    `formula` is plain arithmetic on the layer's numbers (+ - * / //, floor(), ceil(), max(); an
    im2col matrix is `rows x columns`), empty for a fact with no arithmetic. `value` is what the
    op's own rule computes (window(), the weights, macs and receptive-field rules), never a
    re-derivation. `note` names the rule that applied: floor or ceil mode, "doesn't fit", a
    derived default, an activation fused into the layer.
    """

    quantity: str  # size, height, width, channels, features, params, buffers, MACs, im2col, rf, jump,
    # pad (pad_h, pad_w), stride, act, tokens
    formula: str
    value: "int | Fraction | tuple[int, ...] | str"
    note: str = ""

    def text(self) -> str:
        value = format_value(self.value)
        if self.formula and self.quantity == "im2col":
            body = f"[{self.formula}] = [{value}]"
        elif self.formula:
            body = f"{self.formula} = {value}"
        else:
            body = value
        return body + (f"   ({self.note})" if self.note else "")


def format_value(value) -> str:
    """34944 -> '34,944'; Fraction(1, 2) -> '1/2'; (363, 3025) -> '363 x 3025' (a matrix, as the
    slides write it)."""
    if isinstance(value, tuple):
        return " x ".join(str(v) for v in value)
    if isinstance(value, Fraction):
        return f"{int(value):,}" if value.denominator == 1 else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def term(value) -> str:
    """A number as it stands inside a formula: 3, or (1/2) for a fraction."""
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"({value})"


# -- shared rules ---------------------------------------------------------------------------------

def int_attr(name, default=REQUIRED, doc="", minimum=1) -> AttrSpec:
    return AttrSpec(name, "int", default, doc, minimum)


def plain_notation(name: str) -> Callable[[Mapping[str, Any]], str]:
    def notation(attrs: Mapping[str, Any]) -> str:
        return name
    return notation


def no_derived(attrs: dict) -> None:
    """The op has no default that depends on other attributes."""


def same_shape(node, inputs: list, warn) -> Shape:
    return inputs[0]


def image(op: str, shape: Shape) -> Shape:
    if len(shape) == 2:
        raise ShapeProblem(f"{op} needs a CxHxW input, got a token tensor of {format_shape(shape)}",
                           notes=("token tensors (TxD) take fc, layernorm, layerscale, attention, "
                                  "dropout, activations and add{}",))
    if len(shape) != 3:
        raise ShapeProblem(f"{op} needs a CxHxW input, got a flat tensor of {shape[0]}",
                           notes=("only fc, bn, dropout, activations and merges take flat input",))
    return shape


def same_image(node, inputs: list, warn) -> Shape:
    return image(node.op, inputs[0])


def same_not_tokens(node, inputs: list, warn) -> Shape:
    """Unchanged, for ops that act along the channels of an image or a flat vector: on a token
    tensor their axis would be the tokens, not the features a transformer means."""
    if len(inputs[0]) == 2:
        raise ShapeProblem(f"{node.op} takes a CxHxW or flat input, not a token tensor "
                           f"({format_shape(inputs[0])})",
                           notes=("token tensors (TxD) take fc, layernorm, layerscale, attention, dropout, "
                                  "activations and add{}; layernorm normalises each token's features",))
    return inputs[0]


def generate_not_tokens(text: str):
    """A program generator's step that writes `text` on an image or a flat vector, never tokens."""
    def generate(g, shape):
        return None if len(shape) == 2 else (text, shape)
    return generate


def no_weights(node, inputs: list) -> list:
    return []


def no_macs(node, inputs: list, out: Shape) -> int:
    return 0


def same_field(node, fields: list, inputs: list) -> Field:
    return fields[0]


def merge_field(node, fields: list, inputs: list) -> Field:
    """Through a merge the field is the largest of the branches'."""
    return max(rf for rf, _ in fields), max(jump for _, jump in fields)


def window_field(k: int, stride: int, dilation: int, field: Field) -> Field:
    rf, jump = field
    return rf + (dilation * (k - 1)) * jump, jump * stride


def whole_input_field(node, fields: list, inputs: list) -> Field:
    """fc and gap see the whole input: like a valid conv whose kernel is the input's size."""
    rf, jump = fields[0]
    if len(inputs[0]) == 3:
        side = max(inputs[0][1:])  # the shape checker gives no formula here (stats.measure)
        rf += (side - 1) * jump
    return rf, jump


def window(size, k: int, stride: int, pad: int, dilation: int, ceil: bool) -> tuple:
    """Output length of a sliding window, and how many trailing input rows no window reaches.

    For a formula size, both are formulas (netdsl.symbolic gives the same values at every size,
    which its tests check); the unused rows are then before max(0, ...)."""
    if not isinstance(size, int):
        return _symbolic_window(size, k, stride, pad, dilation, ceil)
    span = dilation * (k - 1) + 1
    room = size + 2 * pad - span
    if room < 0 and not ceil:
        return room // stride + 1, 0  # <= 0: reported as an empty tensor
    out = (-(-room // stride) if ceil else room // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1  # the last window must start inside the input or its left padding (torch, Caffe)
    last_covered = (out - 1) * stride - pad + span - 1
    # A stride larger than the window skips rows on purpose (a 1x1 stride-2 shortcut): only a
    # window that does not fit at the end is the slides' "doesn't fit".
    unused = size - 1 - last_covered if span >= stride else 0
    return out, max(0, unused)


@lru_cache(maxsize=4096)
def _symbolic_window(size, k: int, stride: int, pad: int, dilation: int, ceil: bool) -> tuple:
    """window() on a formula; cached, since a deep net applies the same window to the same size
    dozens of times (ResNet-152's 3x3 convs in each stage)."""
    unused = dim(window_unused(size, k, stride, pad, dilation, ceil) or 0)
    return (dim(window_out(size, k, stride, pad, dilation, ceil)),
            max(0, unused) if isinstance(unused, int) else unused)


def _unused_rows(op, what, size, pad, span, stride) -> str:
    return (f"{op} leaves input {what} unused unless ({size} + 2*{pad} - {span}) is a multiple of "
            f"stride {stride}")


def pair(value) -> tuple:
    """(height, width) of a window attribute given as one number for both axes or as a pair."""
    return value if isinstance(value, tuple) else (value, value)


def sliding(op: str, shape: Shape, k, stride, pad, dilation: int, ceil: bool,
            warn: Callable[[str], None]) -> tuple[int, int]:
    """Output height and width; warns once if the window leaves input rows or columns unused.

    `k`, `stride` and `pad` are one number for both axes, or (height, width) pairs."""
    _, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = pair(k), pair(stride), pair(pad)
    out_h, rows = window(h, kh, sh, ph, dilation, ceil)
    out_w, cols = window(w, kw, sw, pw, dilation, ceil)
    if not isinstance(rows, int) or not isinstance(cols, int):
        for size, unused, what, k1, s1, p1 in ((h, rows, "rows", kh, sh, ph), (w, cols, "columns", kw, sw, pw)):
            fits(warn, unused, Reason(_unused_rows, op, what, size, p1, dilation * (k1 - 1) + 1, s1))
        return out_h, out_w
    if rows or cols:
        parts = [f"{n} {word}{'s' * (n != 1)}" for n, word in ((rows, "row"), (cols, "column")) if n]
        size, k1, s1, p1 = (h, kh, sh, ph) if rows else (w, kw, sw, pw)
        warn(f"{op} leaves {' and '.join(parts)} of the input unused: "
             f"({size} + 2*{p1} - {dilation * (k1 - 1) + 1}) is not a multiple of stride {s1}")
    return out_h, out_w


# -- shared explain rules ---------------------------------------------------------------------------

def _span_text(k: int, dilation: int) -> str:
    return str(k) if dilation == 1 else f"({dilation}*({k}-1) + 1)"


def explain_window(quantity: str, size: int, k: int, stride: int, pad: int, dilation: int,
                   ceil: bool) -> Worked:
    """`(227 + 2*0 - 11)/4 + 1 = 55`: one sliding-window length, computed by window()."""
    out, unused = window(size, k, stride, pad, dilation, ceil)
    room = size + 2 * pad - (dilation * (k - 1) + 1)
    inner = f"({size} + 2*{pad} - {_span_text(k, dilation)})/{stride}"
    exact = room % stride == 0
    mode = "ceil" if ceil else "floor"
    formula = f"{inner} + 1" if exact else f"{mode}({inner}) + 1"
    notes = [f"{mode} mode" + ("" if exact else f": {room}/{stride} rounds {'up' if ceil else 'down'}")]
    if ceil and out != -(-room // stride) + 1:
        formula += " - 1"
        notes.append("the last window would start in the padding, so it is dropped")
    if unused:
        what = {"height": "row", "width": "column"}.get(quantity, "row and column")
        notes.append(f"doesn't fit: the last {unused} input {what}{'s' * (unused != 1)} unused")
    return Worked(quantity, formula, out, "; ".join(notes))


def explain_sliding(shape: Shape, k, stride, pad, dilation: int, ceil: bool) -> list[Worked]:
    """The output size of a window over a CxHxW input: one line when both axes agree, else two.
    `k`, `stride` and `pad` are one number or (height, width) pairs, as for sliding()."""
    _, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = pair(k), pair(stride), pair(pad)
    if (h, kh, sh, ph) == (w, kw, sw, pw):
        return [explain_window("size", h, kh, sh, ph, dilation, ceil)]
    return [explain_window("height", h, kh, sh, ph, dilation, ceil),
            explain_window("width", w, kw, sw, pw, dilation, ceil)]


def explain_window_field(k: int, stride: int, dilation: int, field: Field, result: Field) -> list[Worked]:
    """`1 + (11-1)*1 = 11`, then the jump `1*4 = 4`; `result` is what the record's rule gives."""
    rf, jump = field
    taps = f"({k}-1)" if dilation == 1 else f"{dilation}*({k}-1)"
    return [Worked("rf", f"{term(rf)} + {taps}*{term(jump)}", result[0]),
            Worked("jump", f"{term(jump)}*{stride}", result[1])]


def explain_whole_field(inputs: list, field: Field, result: Field) -> list[Worked]:
    """fc and gap see the whole input: `rf + (max(H, W)-1)*jump`."""
    rf, jump = field
    if len(inputs[0]) != 3:
        return [Worked("rf", "", result[0], "unchanged: a flat input"), Worked("jump", "", result[1])]
    side = max(inputs[0][1:])
    return [Worked("rf", f"{term(rf)} + ({side}-1)*{term(jump)}", result[0], "the whole input"),
            Worked("jump", "", result[1])]


def unchanged_field(field: Field, why: str = "unchanged") -> list[Worked]:
    return [Worked("rf", "", field[0], why), Worked("jump", "", field[1])]


def explain_weight_rule(weights: list, weight_factors: str, bias_term: str) -> list[Worked]:
    """Params (or buffers, for `fixed` layers) of a weight-and-bias layer: `11*11*3*96 + 96`,
    valued by the record's weights rule."""
    total = sum(_size(shape) for _, shape, _ in weights)
    trainable = all(t for _, _, t in weights)
    formula = weight_factors + (f" + {bias_term}" if len(weights) > 1 else "")
    note = "" if len(weights) > 1 else "no bias"
    if not trainable:
        note = "fixed: buffers, not trained" + (f"; {note}" if note else "")
    return [Worked("params" if trainable else "buffers", formula, total, note)]


def _size(shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def explain_unchanged(node, inputs: list, out: Shape, fields: list, written) -> tuple[Worked, ...]:
    """Ops that keep the shape and the receptive field (activations, dropout, lrn, softmax)."""
    mixes_channels = node.op in ("lrn", "softmax")
    return tuple(unchanged_field(fields[0], "unchanged: it mixes channels only" if mixes_channels
                                 else "unchanged: element-wise"))
