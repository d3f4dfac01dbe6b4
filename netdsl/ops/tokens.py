"""Token tensors (T x D: tokens by features) and the Vision Transformer's ops on them.

`tokens` turns a CxHxW feature map into one token per pixel (ViT's patch embedding is a strided
conv followed by `tokens`); `class_token` puts a learned token first; `pos_embedding` adds a
learned position embedding; `attention` is multi-head self-attention; `token` takes one token out
as a flat vector (the class token, for the head). fc on a token tensor acts on each token
(netdsl/ops/dense.py), as torch's Linear does on the last axis.

With size names in the input (`input 3xHxW`) the token count is a formula (H/16*W/16 + 1);
pos_embedding's weights then depend on the input size, like an fc after an HxW-dependent flatten,
and the net compiles only at a concrete size (Network.size_dependent_weights).
"""
from __future__ import annotations

from fractions import Fraction
from math import isqrt

from .base import (AttrSpec, Op, ShapeProblem, Worked, counted, format_shape, int_attr, no_derived,
                   no_macs, no_weights, plain_notation, same_field, unchanged_field)
from .dense import flat_size


def token_tensor(op: str, shape) -> tuple:
    """The (T, D) of a token tensor, or the error naming what the op needs."""
    if len(shape) != 2:
        what = "a flat vector" if len(shape) == 1 else "a CxHxW image"
        raise ShapeProblem(f"{op} needs a TxD token tensor, got {what} of {format_shape(shape)}",
                           notes=("`tokens` turns a CxHxW feature map into (H*W)xC tokens: "
                                  "conv16-768/16 - tokens is ViT-B/16's patch embedding",))
    return shape


def _token_field_notes(fields) -> tuple:
    return tuple(unchanged_field(fields[0], "unchanged: each token is one position of the input"))


# -- tokens: CxHxW -> (H*W)xC ---------------------------------------------------------------------

def _tokens_shape(node, inputs, warn):
    shape = inputs[0]
    if len(shape) != 3:
        raise ShapeProblem(f"tokens needs a CxHxW feature map, got {format_shape(shape)}",
                           notes=("tokens makes one token per pixel: (H*W)xC",))
    c, h, w = shape
    return (flat_size((h, w)), c)


def _tokens_explain(node, inputs, out, fields, written):
    c, h, w = inputs[0]
    return (Worked("tokens", f"{h}*{w}", out[0], f"one token per pixel, its {c} channels as features"),
            *_token_field_notes(fields))


def _seldom(g, shape) -> bool:
    """Whether a token op's rule declines this draw: each writes a whole chain that ends in a flat
    vector, after which no image op fits, so drawn as often as the others they would crowd the
    image ops out of the generated programs."""
    return len(shape) != 3 or g.draw(g.st.integers(0, 2)) > 0


def _tokens_generate(g, shape):
    """A small transformer on the feature map: tokens, then every token op, back to a vector."""
    if _seldom(g, shape):
        return None
    c, h, w = shape
    heads = g.draw(g.st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
    hidden = g.channels()
    index = g.draw(g.st.integers(0, h * w))
    parts = ["tokens"]
    if g.draw(g.st.booleans()):
        parts.append("class_token")
    if g.draw(g.st.booleans()):
        parts.append("pos_embedding")
    parts.append(f"add{{ attention({heads}) | id }}")
    parts.append(f"add{{ fc{hidden} - gelu - fc{c} | id }}")
    parts.append(f"token({min(index, h * w - 1)})")
    return " - ".join(parts), (c,)


TOKENS = Op(
    "tokens", "CxHxW -> (H*W)xC: one token per pixel, its channels as features (ViT's patch "
    "embedding is conv16-768/16 - tokens)", (), positional=(), notation=plain_notation("tokens"),
    derive=no_derived, shape=_tokens_shape, weights=no_weights, macs=no_macs,
    receptive_field=same_field, counts_as_activation=False, merge_word=None,
    shape_only_inputs=frozenset(), writable=True, activation=False, takes_activation=False,
    colour="#f0f0f0", generate=_tokens_generate, explain=_tokens_explain)


# -- class_token: TxD -> (T+1)xD --------------------------------------------------------------------

def _class_token_shape(node, inputs, warn):
    t, d = token_tensor("class_token", inputs[0])
    return (t + 1, d)


def _class_token_weights(node, inputs):
    # torchvision's VisionTransformer.class_token is 1 x 1 x D: in that shape it loads as it is
    return [("weight", (1, 1, inputs[0][1]), True)]


def _class_token_explain(node, inputs, out, fields, written):
    t, d = inputs[0]
    return (Worked("tokens", f"{t} + 1", out[0], "a learned token put first"),
            Worked("params", "", d, "the class token's features"),
            *_token_field_notes(fields))


def _tokens_then(g, shape, op_text: str | None):
    """`tokens - OP - token(i)` on a feature map: how a token op is drawn alone."""
    if _seldom(g, shape):
        return None
    c, h, w = shape
    index = g.draw(g.st.integers(0, h * w - 1))
    return " - ".join(["tokens", *([op_text] if op_text else []), f"token({index})"]), (c,)


def _learned_tensor_op(name: str, doc: str, shape, weights, explain) -> Op:
    """A token op written bare that holds one learned tensor (class_token, pos_embedding); drawn
    alone as `tokens - NAME - token(i)`."""
    return Op(
        name, doc, (), positional=(), notation=plain_notation(name), derive=no_derived, shape=shape,
        weights=weights, macs=no_macs, receptive_field=same_field, counts_as_activation=False,
        merge_word=None, shape_only_inputs=frozenset(), writable=True, activation=False,
        takes_activation=False, colour="#fdd0a2",
        generate=lambda g, shape: _tokens_then(g, shape, name), explain=explain)


CLASS_TOKEN = _learned_tensor_op(
    "class_token", "TxD -> (T+1)xD: a learned token put before the others (ViT's class token; "
    "torchvision's class_token, 1x1xD)", _class_token_shape, _class_token_weights,
    _class_token_explain)


# -- pos_embedding: TxD + a learned TxD -------------------------------------------------------------

def _pos_embedding_shape(node, inputs, warn):
    return token_tensor("pos_embedding", inputs[0])


def _pos_embedding_weights(node, inputs):
    # torchvision's encoder.pos_embedding is 1 x T x D
    t, d = inputs[0]
    return [("weight", (1, t, d), True)]


def _pos_embedding_explain(node, inputs, out, fields, written):
    t, d = inputs[0]
    return (Worked("params", f"{t}*{d}", t * d, "one learned vector per token position, added"),
            *_token_field_notes(fields))


POS_EMBEDDING = _learned_tensor_op(
    "pos_embedding", "add a learned position embedding, one D-vector per token (torchvision's "
    "encoder.pos_embedding, 1xTxD)", _pos_embedding_shape, _pos_embedding_weights,
    _pos_embedding_explain)


# -- attention: multi-head self-attention, TxD -> TxD -----------------------------------------------

def _attention_shape(node, inputs, warn):
    t, d = token_tensor("attention", inputs[0])
    heads = node.attrs["heads"]
    if counted("attention", d) % heads:
        raise ShapeProblem(f"attention splits {d} features into {heads} heads: {d} is not a "
                           f"multiple of {heads}", notes=("ViT-B: 768 features, 12 heads of 64",))
    return (t, d)


def _attention_weights(node, inputs):
    # torch's nn.MultiheadAttention, in its state_dict's order and names
    d = inputs[0][1]
    return [("in_proj_weight", (3 * d, d), True), ("in_proj_bias", (3 * d,), True),
            ("out_proj.weight", (d, d), True), ("out_proj.bias", (d,), True)]


def attention_macs(t, d):
    """Q, K and V projections (3*T*D*D), the output projection (T*D*D), and the two T x T
    products, Q K^T and the weights times V (2*T*T*D): torchvision's count for ViT."""
    return 4 * t * d * d + 2 * t * t * d


def _attention_macs(node, inputs, out) -> int:
    t, d = inputs[0]
    return attention_macs(t, d)


def attention_field(node, fields, inputs):
    """Every output token sees every input token: the whole grid of positions. The tokens do not
    keep the grid's sides, so they are taken as a square of isqrt(T) (a class token adds one to T
    and nothing to the side): ViT-B/16 at 224 has 197 tokens, 14x14 patches, field 224."""
    rf, jump = fields[0]
    side = isqrt(inputs[0][0])
    return rf + (side - 1) * jump, jump


def _attention_explain(node, inputs, out, fields, written):
    t, d = inputs[0]
    heads = node.attrs["heads"]
    field = attention_field(node, fields, inputs)
    return (Worked("params", f"3*{d}*{d} + 3*{d} + {d}*{d} + {d}", 4 * d * d + 4 * d,
                   "Q, K, V projections and the output projection, with biases"),
            Worked("MACs", f"4*{t}*{d}*{d} + 2*{t}*{t}*{d}", attention_macs(t, d),
                   f"projections, then Q K^T and weights times V over {heads} heads of {d // heads}"),
            Worked("rf", f"{_term(fields[0][0])} + ({isqrt(t)}-1)*{_term(fields[0][1])}", field[0],
                   "every token sees every token: the whole grid, taken as square"),
            Worked("jump", "", field[1]))


def _term(value) -> str:
    value = Fraction(value)
    return str(value.numerator) if value.denominator == 1 else f"({value})"


def _attention_generate(g, shape):
    if len(shape) != 3:
        return None
    c = shape[0]  # _tokens_then declines as seldom as the others
    heads = g.draw(g.st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
    return _tokens_then(g, shape, f"attention({heads})")


ATTENTION = Op(
    "attention", "multi-head self-attention over the tokens (torch's nn.MultiheadAttention, "
    "batch first; scaled dot products, softmax over the keys)",
    (int_attr("heads", doc="attention heads; the features split evenly among them"),),
    positional=("heads",), notation=lambda a: f"attention({a['heads']})", derive=no_derived,
    shape=_attention_shape, weights=_attention_weights, macs=_attention_macs,
    receptive_field=attention_field, counts_as_activation=True, merge_word=None,
    shape_only_inputs=frozenset(), writable=True, activation=False, takes_activation=False,
    colour="#fcbba1", generate=_attention_generate, explain=_attention_explain)


# -- token: TxD -> D --------------------------------------------------------------------------------

def _token_shape(node, inputs, warn):
    t, d = token_tensor("token", inputs[0])
    index = node.attrs["index"]
    if not isinstance(t, int) and index > 0:
        # token 0 is there at every size; whether token i is depends on H and W together (H*W
        # tokens), which no condition on each size alone expresses
        raise ShapeProblem(f"token({index}) needs a whole number of tokens, got {t}: the token "
                           f"count is a formula in the input's sizes",
                           notes=("check this net at a concrete size (--input 3x224x224), or "
                                  "take token(0), which every size has",))
    if isinstance(t, int) and index >= t:
        raise ShapeProblem(f"token({index}) of {t} tokens: they are numbered 0 to {t - 1}",
                           notes=("token(0) is the class token that class_token put first",))
    return (d,)


def _token_explain(node, inputs, out, fields, written):
    t, d = inputs[0]
    which = " (the class token)" if node.attrs["index"] == 0 else ""
    return (Worked("features", "", d, f"token {node.attrs['index']} of {t}{which}"),
            *unchanged_field(fields[0]))


TOKEN = Op(
    "token", "TxD -> D: one token as a vector; token(0), the default, is the class token",
    (int_attr("index", 0, "which token, counted from 0", minimum=0),),
    positional=("index",), notation=lambda a: f"token({a['index']})", derive=no_derived,
    shape=_token_shape, weights=no_weights, macs=no_macs, receptive_field=same_field,
    counts_as_activation=False, merge_word=None, shape_only_inputs=frozenset(), writable=True,
    activation=False, takes_activation=False, colour="#f0f0f0",
    generate=lambda g, shape: _tokens_then(g, shape, None), explain=_token_explain)

TOKEN_OPS = (TOKENS, CLASS_TOKEN, POS_EMBEDDING, ATTENTION, TOKEN)
