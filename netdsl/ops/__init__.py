"""The ops of the language, one record each (see `Op` in netdsl/ops/base.py).

Every pass is a loop over `OPS[node.op].<rule>`: shapes (`shape`), weights (`weights`), statistics
(`macs`, `receptive_field`, `counts_as_activation`), the expander (`attrs`, `positional`,
`derive`, `takes_activation`), the parser and printer (`merge_word`), drawing (`notation`,
`colour`), the program generator (`generate`) and `summary --explain` with the hovers
(`explain`). Adding an op means adding its record to `_RECORDS` below, plus one kernel per
backend; docs/contributing.md walks through it.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from .base import (DERIVED, IMPLICIT, REQUIRED, AttrSpec, Field, Op, Shape, ShapeProblem,
                   format_shape)
from .channels import CHANNELS, SHUFFLE
from .conv import conv_op, deconv_op, dwconv_op
from .dense import FLATTEN, fc_op
from .elementwise import ACTIVATION_OPS, SOFTMAX
from .norm import DROPOUT, LAYERNORM, LAYERSCALE, LRN, RANDOM_IN_TRAINING, STOCHASTIC_DEPTH, bn_op
from .pool import ADAPTIVE_AVGPOOL, ADAPTIVE_MAXPOOL, AVGPOOL, GAP, GMP, MAXPOOL
from .structure import ADD, AUX, CONCAT, CROP, INPUT, MUL
from .tokens import TOKEN_OPS
from .upsample import UPSAMPLE

#: The element-wise activations, usable as layers, as `act=` and as a net's `activation`.
ACTIVATIONS: tuple[str, ...] = tuple(op.name for op in ACTIVATION_OPS)

_RECORDS: tuple[Op, ...] = (
    INPUT, conv_op(ACTIVATIONS), deconv_op(ACTIVATIONS), MAXPOOL, AVGPOOL, GAP, fc_op(ACTIVATIONS),
    bn_op(ACTIVATIONS), LRN, DROPOUT, LAYERSCALE, STOCHASTIC_DEPTH, *ACTIVATION_OPS, SOFTMAX, FLATTEN,
    CROP, CONCAT, ADD,
    dwconv_op(ACTIVATIONS), ADAPTIVE_AVGPOOL, ADAPTIVE_MAXPOOL, GMP,
    MUL, CHANNELS, SHUFFLE, UPSAMPLE,
    AUX,
    *TOKEN_OPS,
    LAYERNORM,
)

OPS: Mapping[str, Op] = MappingProxyType({op.name: op for op in _RECORDS})
if len(OPS) != len(_RECORDS):  # pragma: no cover - a record written twice
    raise ImportError("two op records share a name")

#: Merge words as written before `{`: add{ a | b }, cat{ a | b }, mul{ a | b } (concat{ is the long
#: form of cat{).
MERGE_WORDS: Mapping[str, str] = MappingProxyType(
    {**{op.merge_word: op.name for op in _RECORDS if op.merge_word}, "concat": "concat"})

#: The layers that get the net's implicit activation.
WEIGHT_OPS = frozenset(op.name for op in _RECORDS if op.takes_activation)

#: Names that expand to an op with some attributes preset.
ALIASES: dict[str, tuple[str, dict]] = {
    "pool": ("maxpool", {"k": 2, "stride": 2}),
}

#: Written as an atom, `id` adds nothing: the branch (or chain) passes its input through.
IDENTITY = "id"

#: Words that may not name a definition, label or net.
RESERVED = frozenset(OPS) | frozenset(ALIASES) | frozenset(MERGE_WORDS) | {
    IDENTITY, "input", "net", "def", "use", "activation", "none", "true", "false"}


def slide_notation(op: str, attrs: Mapping[str, Any]) -> str:
    """The short form of an op as the slides write it: conv3-64/2, maxpool3/2, fc4096, relu."""
    return OPS[op].notation(attrs)


def activation_attrs(name: str) -> dict[str, Any]:
    """The attributes of activation `name` with their defaults (lrelu: slope 0.01)."""
    return {spec.name: spec.default for spec in OPS[name].attrs}


__all__ = ["OPS", "Op", "AttrSpec", "ALIASES", "ACTIVATIONS", "IDENTITY", "RESERVED", "MERGE_WORDS",
           "WEIGHT_OPS", "REQUIRED", "IMPLICIT", "DERIVED", "Shape", "Field", "ShapeProblem",
           "format_shape", "slide_notation", "activation_attrs", "fused_activation", "RANDOM_IN_TRAINING"]


def fused_activation(node):
    """The activation fused into a layer (`conv3-64+relu`) as a node of its own, or None.

    Backends apply it with the activation op's own kernel, so no backend handles an activation
    twice. The node shares the layer's id, name and span."""
    act = node.attrs.get("act", "none")
    if act == "none":
        return None
    from ..ir import Node, freeze_attrs
    return Node(node.id, act, freeze_attrs(activation_attrs(act)), (node.id,), node.name, node.span,
                node.context)
