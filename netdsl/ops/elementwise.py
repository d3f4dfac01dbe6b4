"""Element-wise activations and softmax.

An activation record is all the front end needs: it is then usable as a layer (`relu`), as a
layer's `act=` and as a net's `activation`. Each backend adds one kernel for it.
"""
from __future__ import annotations

from .base import (AttrSpec, Op, explain_unchanged, generate_not_tokens, no_derived, no_macs, no_weights,
                   plain_notation, same_field, same_not_tokens, same_shape)

ACTIVATION_COLOUR = "#f7f7f7"


def _generate_as(text: str):
    def generate(g, shape):
        return text, shape
    return generate


def activation(name: str, doc: str, attrs: tuple[AttrSpec, ...] = (), example: str | None = None) -> Op:
    """The record of an element-wise activation; `example` is how the program generator writes it."""
    return Op(
        name, doc, attrs, positional=tuple(a.name for a in attrs), notation=plain_notation(name),
        derive=no_derived, shape=same_shape, weights=no_weights, macs=no_macs,
        receptive_field=same_field, counts_as_activation=False, merge_word=None,
        shape_only_inputs=frozenset(), writable=True, activation=True, takes_activation=False,
        colour=ACTIVATION_COLOUR, generate=_generate_as(example or name), explain=explain_unchanged)


ACTIVATION_OPS = (
    activation("relu", "max(0, x)"),
    activation("tanh", "hyperbolic tangent"),
    activation("sigmoid", "1 / (1 + exp(-x))"),
    activation("lrelu", "leaky ReLU: max(slope*x, x)",
               (AttrSpec("slope", "float", 0.01, "slope for x < 0", minimum=0),), example="lrelu(0.2)"),
    activation("elu", "ELU: x, or alpha*(exp(x)-1) for x < 0",
               (AttrSpec("alpha", "float", 1.0, "scale for x < 0", minimum=0),), example="elu(0.7)"),
    activation("hardswish", "x * relu6(x + 3) / 6 (MobileNet-v3)"),
    activation("relu6", "min(max(0, x), 6) (MobileNet-v2)"),
    activation("hardsigmoid", "relu6(x + 3) / 6 (MobileNet-v3's squeeze-and-excitation gate)"),
    activation("silu", "x * sigmoid(x), also called swish (EfficientNet, RegNet-Y)"),
    activation("gelu", "x * Phi(x), Phi the standard normal CDF: x/2 * (1 + erf(x/sqrt(2))) (ViT, ConvNeXt)"),
    # A name of its own rather than gelu(approximate=tanh): `act=` and `activation` take a name
    # and give the activation its default attributes, so only a name reaches them.
    activation("gelu_tanh", "GELU's tanh approximation: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715*x^3)))"),
)

SOFTMAX = Op(
    "softmax", "softmax over channels", (), positional=(), notation=plain_notation("softmax"),
    derive=no_derived, shape=same_not_tokens, weights=no_weights, macs=no_macs,
    receptive_field=same_field, counts_as_activation=False, merge_word=None,
    shape_only_inputs=frozenset(), writable=True, activation=False, takes_activation=False,
    colour=ACTIVATION_COLOUR, generate=generate_not_tokens("softmax"), explain=explain_unchanged)
