"""Dense layers: fc (fully connected) and flatten."""
from __future__ import annotations

import math

from .base import (AttrSpec, Op, Worked, explain_weight_rule, explain_whole_field, int_attr,
                   no_derived, no_macs, no_weights, plain_notation, same_field, unchanged_field,
                   whole_input_field)
from ..symbolic import Poly
from .base import dim
from .conv import act_attr, weight_and_bias


def _fc_shape(node, inputs, warn):
    if len(inputs[0]) == 2:  # a token tensor: each token on its own, as torch's Linear
        return (inputs[0][0], node.attrs["c"])
    return (node.attrs["c"],)


def fc_in_features(shape):
    """What one fc output reads: the features of a token (TxD), else the whole flattened input."""
    return shape[1] if len(shape) == 2 else flat_size(shape)


def _fc_weights(node, inputs):
    a = node.attrs
    return weight_and_bias(a, (a["c"], fc_in_features(inputs[0])), a["c"])


def _fc_macs(node, inputs, out) -> int:
    return math.prod(inputs[0]) * node.attrs["c"]


def _fc_generate(g, shape):
    if len(shape) == 2:  # a token tensor: the generator keeps them inside tokens' own rule
        return None
    out = g.channels()
    tail = g.draw(g.st.sampled_from(["", "(act=sigmoid)", "(bias=false)"])) if len(shape) == 1 else ""
    return f"fc{out}{tail}", (out,)


def _flat_size(shape) -> str:
    return "*".join(str(d) for d in shape)


def _fc_explain(node, inputs, out, fields, written):
    c = node.attrs["c"]
    if len(inputs[0]) == 2:
        t, d = inputs[0]
        return (*explain_weight_rule(_fc_weights(node, inputs), f"{d}*{c}", str(c)),
                Worked("MACs", f"{t}*{d}*{c}", _fc_macs(node, inputs, out),
                       "each token's features times every output, token by token"),
                *unchanged_field(fields[0], "unchanged: token by token"))
    return (*explain_weight_rule(_fc_weights(node, inputs), f"{_flat_size(inputs[0])}*{c}", str(c)),
            Worked("MACs", f"{_flat_size(inputs[0])}*{c}", _fc_macs(node, inputs, out),
                   "every input feature times every output"),
            *explain_whole_field(inputs, fields[0], whole_input_field(node, fields, inputs)))


def fc_op(activations: tuple[str, ...]) -> Op:
    return Op(
        "fc", "fully connected layer; flattens a CxHxW input first, and acts on each token of a TxD "
        "token tensor",
        (int_attr("c", doc="output features"),
         AttrSpec("bias", "bool", True, "add a learned bias"),
         AttrSpec("fixed", "bool", False, "keep the weights at their initial value (counted as buffers)"),
         act_attr(activations)),
        positional=("c",), notation=lambda a: f"fc{a['c']}", derive=no_derived, shape=_fc_shape,
        weights=_fc_weights, macs=_fc_macs, receptive_field=whole_input_field,
        counts_as_activation=True, merge_word=None, shape_only_inputs=frozenset(), writable=True,
        activation=False, takes_activation=True, colour="#c7e9c0", generate=_fc_generate,
        explain=_fc_explain)


def _flatten_shape(node, inputs, warn):
    return (flat_size(inputs[0]),)


def flat_size(shape):
    """C*H*W: an int, or a formula in the input sizes (a polynomial: H*W is not a Size)."""
    size = math.prod(shape)
    if isinstance(size, int):
        return size
    linear = Poly.of(size).as_size()
    return dim(linear) if linear is not None else size


def _flatten_explain(node, inputs, out, fields, written):
    return (Worked("features", _flat_size(inputs[0]), out[0]), *unchanged_field(fields[0]))


def _flatten_generate(g, shape):
    if len(shape) == 2:
        return None
    return "flatten", (math.prod(shape),)


FLATTEN = Op(
    "flatten", "CxHxW -> C*H*W", (), positional=(), notation=plain_notation("flatten"),
    derive=no_derived, shape=_flatten_shape, weights=no_weights, macs=no_macs,
    receptive_field=same_field, counts_as_activation=False, merge_word=None,
    shape_only_inputs=frozenset(), writable=True, activation=False, takes_activation=False,
    colour="#f0f0f0", generate=_flatten_generate, explain=_flatten_explain)
