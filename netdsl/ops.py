"""The ops of the language: their attributes, defaults, positional order and slide notation.

This is the table every other per-op table is keyed by (shape rules in `shapes`, statistics in
`stats`, backend kernels in `backends/`); `tests/test_ops.py` checks that each op appears in each.
"""
from __future__ import annotations

from dataclasses import dataclass


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()
#: `act` not written by the user: the implicit-activation pass decides (see docs/language.md).
IMPLICIT = "implicit"
DERIVED = None  # a default computed from other attributes (conv padding, pool stride)

ACTIVATIONS = ("relu", "tanh", "sigmoid", "lrelu", "elu")
WEIGHT_OPS = frozenset({"conv", "deconv", "fc"})  # the layers that get an implicit activation


@dataclass(frozen=True, slots=True)
class AttrSpec:
    name: str
    kind: str  # "int", "float", "bool", "symbol" or "ref"
    default: object = REQUIRED
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None  # exclusive
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OpSpec:
    name: str
    doc: str
    attrs: tuple[AttrSpec, ...] = ()
    positional: tuple[str, ...] = ()  # the order of positional arguments: dropout(0.5) is p=0.5
    writable: bool = True  # False for ops only the expander creates (input, add, concat)

    def attr(self, name: str) -> AttrSpec | None:
        for spec in self.attrs:
            if spec.name == name:
                return spec
        return None

    @property
    def attr_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.attrs)


def _int(name, default=REQUIRED, doc="", minimum=1):
    return AttrSpec(name, "int", default, doc, minimum)


def _act():
    return AttrSpec("act", "symbol", IMPLICIT, "activation after this layer", choices=("none", *ACTIVATIONS))


_CONV_COMMON = (
    _int("groups", 1, "channel groups (AlexNet's two GPUs: 2; ResNeXt: 32)"),
    _int("dilation", 1, "spacing between kernel taps"),
    AttrSpec("bias", "bool", True, "add a learned bias"),
    AttrSpec("fixed", "bool", False, "keep the weights at their initial value (counted as buffers)"),
)

OPS: dict[str, OpSpec] = {spec.name: spec for spec in (
    OpSpec("input", "the network input", writable=False),
    OpSpec("conv", "2-D convolution (cross-correlation, as in every framework)", (
        _int("k", doc="kernel size"), _int("c", doc="output channels"), _int("stride", 1, "stride"),
        _int("pad", DERIVED, "zero padding; default dilation*(k-1)//2 ('same' at stride 1)", minimum=0),
        *_CONV_COMMON, _act()), positional=("k", "c", "stride")),
    OpSpec("deconv", "transposed convolution (learned upsampling)", (
        _int("k", doc="kernel size"), _int("c", doc="output channels"), _int("stride", 1, "stride"),
        _int("pad", DERIVED, "padding; default (k-stride)//2, so the size grows by exactly stride",
             minimum=0),
        _int("output_pad", 0, "extra rows/columns on one side of the output", minimum=0),
        *_CONV_COMMON,
        AttrSpec("init", "symbol", "default", "weight initialisation", choices=("default", "bilinear")),
        _act()), positional=("k", "c", "stride")),
    OpSpec("maxpool", "max pooling", (
        _int("k", doc="window size"), _int("stride", DERIVED, "stride; default k"),
        _int("pad", 0, "padding (with -inf)", minimum=0),
        AttrSpec("ceil", "bool", False, "round the output size up (Caffe)")),
        positional=("k", "stride")),
    OpSpec("avgpool", "average pooling", (
        _int("k", doc="window size"), _int("stride", DERIVED, "stride; default k"),
        _int("pad", 0, "zero padding", minimum=0),
        AttrSpec("ceil", "bool", False, "round the output size up (Caffe)"),
        AttrSpec("count_pad", "bool", True, "padding counts in the divisor (torch and Caffe default)")),
        positional=("k", "stride")),
    OpSpec("gap", "global average pooling: CxHxW -> Cx1x1"),
    OpSpec("fc", "fully connected layer; flattens a CxHxW input first", (
        _int("c", doc="output features"),
        AttrSpec("bias", "bool", True, "add a learned bias"),
        AttrSpec("fixed", "bool", False, "keep the weights at their initial value (counted as buffers)"),
        _act()), positional=("c",)),
    OpSpec("bn", "batch normalisation (learned scale and shift; running statistics are buffers)", (
        AttrSpec("eps", "float", 1e-5, "added to the variance", minimum=0),
        AttrSpec("momentum", "float", 0.1, "running-statistics update rate", minimum=0),
        _act()), positional=("eps",)),
    OpSpec("lrn", "local response normalisation across channels (AlexNet)", (
        _int("size", 5, "channels in the window"),
        AttrSpec("alpha", "float", 1e-4, "scale (divided by size, as torch and Caffe do)"),
        AttrSpec("beta", "float", 0.75, "exponent"),
        AttrSpec("k", "float", 2.0, "additive constant")), positional=("size",)),
    OpSpec("dropout", "zero each value with probability p while training", (
        AttrSpec("p", "float", 0.5, "drop probability", minimum=0, maximum=1),), positional=("p",)),
    OpSpec("relu", "max(0, x)"),
    OpSpec("tanh", "hyperbolic tangent"),
    OpSpec("sigmoid", "1 / (1 + exp(-x))"),
    OpSpec("lrelu", "leaky ReLU: max(slope*x, x)", (
        AttrSpec("slope", "float", 0.01, "slope for x < 0", minimum=0),), positional=("slope",)),
    OpSpec("elu", "ELU: x, or alpha*(exp(x)-1) for x < 0", (
        AttrSpec("alpha", "float", 1.0, "scale for x < 0", minimum=0),), positional=("alpha",)),
    OpSpec("softmax", "softmax over channels"),
    OpSpec("flatten", "CxHxW -> C*H*W"),
    OpSpec("crop", "crop to the spatial size of another tensor (FCN's skip alignment, Caffe's Crop)", (
        _int("offset", 0, "rows and columns skipped at the top and left", minimum=0),
        AttrSpec("like", "ref", REQUIRED, "the tensor whose height and width to crop to")),
        positional=("offset",)),
    OpSpec("concat", "concatenate branches along channels", writable=False),
    OpSpec("add", "sum branches element-wise", writable=False),
)}

#: Names that expand to an op with some attributes preset.
ALIASES: dict[str, tuple[str, dict]] = {
    "pool": ("maxpool", {"k": 2, "stride": 2}),
}

#: Written as an atom, `id` adds nothing: the branch (or chain) passes its input through.
IDENTITY = "id"

#: Words that may not name a definition, label or net.
RESERVED = frozenset(OPS) | frozenset(ALIASES) | {IDENTITY, "cat", "input", "net", "def", "use",
                                                   "activation", "none", "true", "false"}


def slide_notation(op: str, attrs: dict) -> str:
    """The short form of an op as the slides write it: conv3-64/2, maxpool3/2, fc4096, relu."""
    if op in ("conv", "deconv"):
        text = f"{op}{attrs['k']}-{attrs['c']}"
        return text + (f"/{attrs['stride']}" if attrs["stride"] != 1 else "")
    if op in ("maxpool", "avgpool"):
        return f"{op}{attrs['k']}/{attrs['stride']}"
    if op == "fc":
        return f"fc{attrs['c']}"
    if op == "concat":
        return "cat"
    return op
