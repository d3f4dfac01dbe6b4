"""Normalisation and regularisation: bn, lrn, dropout, layer scale, stochastic depth, layer norm."""
from __future__ import annotations

import random

from .base import (REQUIRED, AttrSpec, Op, ShapeProblem, Worked, counted, explain_unchanged,
                   generate_not_tokens, int_attr, no_derived, no_macs, no_weights, plain_notation,
                   same_field, same_image, same_not_tokens, same_shape, unchanged_field)
from .conv import act_attr

def _bn_weights(node, inputs):
    c = inputs[0][0]
    return [("weight", (c,), True), ("bias", (c,), True),
            ("running_mean", (c,), False), ("running_var", (c,), False)]

def _bn_explain(node, inputs, out, fields, written):
    c = inputs[0][0]
    weights = _bn_weights(node, inputs)
    return (Worked("params", f"2*{c}", sum(s[0] for _, s, t in weights if t), "scale and shift per channel"),
            Worked("buffers", f"2*{c}", sum(s[0] for _, s, t in weights if not t),
                   "running mean and variance per channel"),
            *unchanged_field(fields[0], "unchanged: per value"))

def bn_op(activations: tuple[str, ...]) -> Op:
    return Op(
        "bn", "batch normalisation (learned scale and shift; running statistics are buffers)",
        (AttrSpec("eps", "float", 1e-5, "added to the variance", minimum=0),
         AttrSpec("momentum", "float", 0.1, "running-statistics update rate", minimum=0),
         act_attr(activations)),
        positional=("eps",), notation=plain_notation("bn"), derive=no_derived, shape=same_not_tokens,
        weights=_bn_weights, macs=no_macs, receptive_field=same_field, counts_as_activation=False,
        merge_word=None, shape_only_inputs=frozenset(), writable=True, activation=False,
        takes_activation=False, colour="#dadaeb", generate=generate_not_tokens("bn"),
        explain=_bn_explain)

def _lrn_generate(g, shape):
    if len(shape) != 3:
        return None
    return f"lrn({g.draw(g.st.integers(1, 4))}, alpha=0.1, beta=0.75, k=2.0)", shape

LRN = Op(
    "lrn", "local response normalisation across channels (AlexNet)",
    (int_attr("size", 5, "channels in the window"),
     AttrSpec("alpha", "float", 1e-4, "scale (divided by size, as torch and Caffe do)"),
     AttrSpec("beta", "float", 0.75, "exponent"),
     AttrSpec("k", "float", 2.0, "additive constant")),
    positional=("size",), notation=plain_notation("lrn"), derive=no_derived, shape=same_image,
    weights=no_weights, macs=no_macs, receptive_field=same_field, counts_as_activation=False,
    merge_word=None, shape_only_inputs=frozenset(), writable=True, activation=False,
    takes_activation=False, colour="#dadaeb", generate=_lrn_generate, explain=explain_unchanged)

def _dropout_generate(g, shape):
    return f"dropout({g.draw(g.st.sampled_from([0.2, 0.3]))})", shape

DROPOUT = Op(
    "dropout", "zero each value with probability p while training",
    (AttrSpec("p", "float", 0.5, "drop probability", minimum=0, maximum=1),),
    positional=("p",), notation=plain_notation("dropout"), derive=no_derived, shape=same_shape,
    weights=no_weights, macs=no_macs, receptive_field=same_field, counts_as_activation=False,
    merge_word=None, shape_only_inputs=frozenset(), writable=True, activation=False,
    takes_activation=False, colour="#f0f0f0", generate=_dropout_generate, explain=explain_unchanged)

def _layerscale_weights(node, inputs):
    shape = inputs[0]
    if len(shape) == 2:  # a token tensor: one scale per feature (CaiT's and DeiT-III's LayerScale)
        return [("weight", (shape[1],), True)]
    # torchvision's ConvNeXt keeps its layer_scale as C x 1 x 1: in the same shape it loads as it is
    return [("weight", (shape[0], 1, 1) if len(shape) == 3 else (shape[0],), True)]

def _layerscale_explain(node, inputs, out, fields, written):
    return (Worked("params", "", sum(s[0] for _, s, _ in _layerscale_weights(node, inputs)),
                   f"one scale per {'feature' if len(inputs[0]) == 2 else 'channel'}, each starting at "
                   f"{node.attrs['init']!r}"),
            *unchanged_field(fields[0], "unchanged: per value"))

def _layerscale_generate(g, shape):
    return f"layerscale({g.draw(g.st.sampled_from([0.5, 1.5, -2.0]))})", shape

LAYERSCALE = Op(
    "layerscale", "multiply each channel (a token tensor: each feature) by a learned scale "
    "(ConvNeXt's layer scale)",
    (AttrSpec("init", "float", 1e-6, "the scales' initial value (torchvision's ConvNeXt: 1e-6)"),),
    positional=("init",), notation=plain_notation("layerscale"), derive=no_derived, shape=same_shape,
    weights=_layerscale_weights, macs=no_macs, receptive_field=same_field, counts_as_activation=False,
    merge_word=None, shape_only_inputs=frozenset(), writable=True, activation=False,
    takes_activation=False, colour="#dadaeb", generate=_layerscale_generate, explain=_layerscale_explain)

def _stochastic_depth_generate(g, shape):
    return f"stochastic_depth({g.draw(g.st.sampled_from([0.2, 0.5]))})", shape

def _stochastic_depth_explain(node, inputs, out, fields, written):
    return tuple(unchanged_field(fields[0], "unchanged: it keeps or drops whole samples"))

STOCHASTIC_DEPTH = Op(
    "stochastic_depth", "while training, zero each sample with probability p and scale the rest by "
    "1/(1-p) (torchvision's StochasticDepth, mode row; timm's DropPath)",
    (AttrSpec("p", "float", REQUIRED, "drop probability per sample", minimum=0, maximum=1),),
    positional=("p",), notation=plain_notation("stochastic_depth"), derive=no_derived, shape=same_shape,
    weights=no_weights, macs=no_macs, receptive_field=same_field, counts_as_activation=False,
    merge_word=None, shape_only_inputs=frozenset(), writable=True, activation=False,
    takes_activation=False, colour="#f0f0f0", generate=_stochastic_depth_generate,
    explain=_stochastic_depth_explain)

def layernorm_axis(rank: int) -> int:
    """The axis layer norm normalises, in a shape of `rank` (no batch): the channels of a CxHxW or
    flat tensor (axis 0), the features of each token of a TxD tensor (the last axis)."""
    return -1 if rank == 2 else 0


def _layernorm_size(shape):
    if len(shape) not in (1, 2, 3):  # pragma: no cover - the checker makes no other rank
        raise ShapeProblem(f"layernorm needs a CxHxW, TxD or flat tensor, got rank {len(shape)}")
    return counted("layernorm", shape[layernorm_axis(len(shape))])


def _layernorm_shape(node, inputs, warn):
    _layernorm_size(inputs[0])
    return inputs[0]


def _layernorm_weights(node, inputs):
    n = _layernorm_size(inputs[0])
    return [("weight", (n,), True), ("bias", (n,), True)]


def _layernorm_explain(node, inputs, out, fields, written):
    shape = inputs[0]
    n = _layernorm_size(shape)
    what = {1: f"each sample over its {n} features", 2: f"each token over its {n} features",
            3: f"each position over its {n} channels"}[len(shape)]
    return (Worked("params", f"2*{n}", 2 * n, f"scale and shift per {'channel' if len(shape) == 3 else 'feature'}; "
                   f"normalises {what}"),
            *unchanged_field(fields[0], "unchanged: it mixes channels only" if len(shape) == 3
                             else "unchanged: per position"))


def _layernorm_generate(g, shape):
    if shape[layernorm_axis(len(shape))] == 1:
        return None  # over one value the output is the shift alone, and x - mean is pure rounding
    return g.draw(g.st.sampled_from(["layernorm", "layernorm(1e-6)", "layernorm(eps=0.001)"])), shape


LAYERNORM = Op(
    "layernorm", "layer normalisation: each position's channels (CxHxW, torchvision's LayerNorm2d), "
    "each token's features (TxD) or a flat tensor's features, to mean 0 and variance 1, then a learned "
    "scale and shift",
    (AttrSpec("eps", "float", 1e-5, "added to the variance (torch's default; ConvNeXt and ViT use 1e-6)",
              minimum=0),),
    positional=("eps",), notation=plain_notation("layernorm"), derive=no_derived, shape=_layernorm_shape,
    weights=_layernorm_weights, macs=no_macs, receptive_field=same_field, counts_as_activation=False,
    merge_word=None, shape_only_inputs=frozenset(), writable=True, activation=False,
    takes_activation=False, colour="#dadaeb", generate=_layernorm_generate, explain=_layernorm_explain)

#: Ops that draw at random while training, each by its attribute `p`: at p=0 they are the identity,
#: which is how the conformance kit and tests/equivalence.py compare two backends' training mode.
RANDOM_IN_TRAINING = ("dropout", "stochastic_depth")
