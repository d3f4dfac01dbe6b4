"""Pooling: maxpool, avgpool, gap and gmp (global average and max pooling), adaptive pooling."""
from __future__ import annotations

from .base import (DERIVED, AttrSpec, Op, ShapeProblem, Worked, explain_sliding, explain_whole_field,
                   explain_window_field, image, int_attr, no_derived, no_macs, no_weights,
                   plain_notation, sliding, whole_input_field, window, window_field)


def _pool_notation(op: str):
    def notation(a) -> str:
        return f"{op}{a['k']}/{a['stride']}"
    return notation


def _pool_derive(attrs: dict) -> None:
    if attrs["stride"] is DERIVED:
        attrs["stride"] = attrs["k"]


def _pool_shape(node, inputs, warn):
    a = node.attrs
    c, _, _ = image(node.op, inputs[0])
    if a["pad"] > a["k"] // 2:
        raise ShapeProblem(f"{node.op} pad must be at most half the window ({a['k'] // 2}), "
                           f"got {a['pad']}")
    return (c, *sliding(_pool_notation(node.op)(a), inputs[0], a["k"], a["stride"], a["pad"], 1,
                        a["ceil"], warn))


def _pool_field(node, fields, inputs):
    return window_field(node.attrs["k"], node.attrs["stride"], 1, fields[0])


def _pool_explain(node, inputs, out, fields, written):
    a = node.attrs
    lines = []
    if written is not None and "stride" not in written:
        lines.append(Worked("stride", "", a["stride"], "the default: the window size, so windows do not overlap"))
    lines += explain_sliding(inputs[0], a["k"], a["stride"], a["pad"], 1, a["ceil"])
    lines += explain_window_field(a["k"], a["stride"], 1, fields[0], _pool_field(node, fields, inputs))
    return tuple(lines)


def _pool_generate(op: str):
    def generate(g, shape):
        if len(shape) != 3:
            return None
        st = g.st
        c, h, w = shape
        k = g.draw(st.sampled_from([1, 2, 3]))
        stride = g.draw(st.integers(1, k))
        pad = g.draw(st.integers(0, k // 2))
        ceil = g.draw(st.booleans())
        ho, wo = window(h, k, stride, pad, 1, ceil)[0], window(w, k, stride, pad, 1, ceil)[0]
        if ho < 1 or wo < 1:
            return None
        extra = ", count_pad=false" if op == "avgpool" and g.draw(st.booleans()) else ""
        return f"{op}{k}/{stride}(pad={pad}{', ceil' if ceil else ''}{extra})", (c, ho, wo)
    return generate


def _window_attrs(pad_doc: str) -> tuple[AttrSpec, ...]:
    return (int_attr("k", doc="window size"), int_attr("stride", DERIVED, "stride; default k"),
            int_attr("pad", 0, pad_doc, minimum=0),
            AttrSpec("ceil", "bool", False, "round the output size up (Caffe)"))


def _pool_op(name: str, doc: str, attrs: tuple[AttrSpec, ...]) -> Op:
    return Op(
        name, doc, attrs, positional=("k", "stride"), notation=_pool_notation(name),
        derive=_pool_derive, shape=_pool_shape, weights=no_weights, macs=no_macs,
        receptive_field=_pool_field, counts_as_activation=True, merge_word=None,
        shape_only_inputs=frozenset(), writable=True, activation=False, takes_activation=False,
        colour="#fdd0a2", generate=_pool_generate(name), explain=_pool_explain)


MAXPOOL = _pool_op("maxpool", "max pooling", _window_attrs("padding (with -inf)"))
AVGPOOL = _pool_op("avgpool", "average pooling", (
    *_window_attrs("zero padding"),
    AttrSpec("count_pad", "bool", True, "padding counts in the divisor (torch and Caffe default)")))


def _global_pool_op(name: str, word: str, doc: str) -> Op:
    """gap and gmp: one `word` ("average", "maximum") over each channel's whole HxW plane."""
    def pooled_shape(node, inputs, warn):
        return (image(name, inputs[0])[0], 1, 1)

    def explain(node, inputs, out, fields, written):
        _, h, w = inputs[0]
        return (Worked("size", "", 1, f"global: one {word} over each {h}x{w} channel"),
                *explain_whole_field(inputs, fields[0], whole_input_field(node, fields, inputs)))

    def generate(g, shape):
        if len(shape) != 3:
            return None
        return name, (shape[0], 1, 1)

    return Op(
        name, doc, (), positional=(),
        notation=plain_notation(name), derive=no_derived, shape=pooled_shape, weights=no_weights,
        macs=no_macs, receptive_field=whole_input_field, counts_as_activation=True, merge_word=None,
        shape_only_inputs=frozenset(), writable=True, activation=False, takes_activation=False,
        colour="#fdd0a2", generate=generate, explain=explain)


GAP = _global_pool_op("gap", "average", "global average pooling: CxHxW -> Cx1x1")
GMP = _global_pool_op("gmp", "maximum", "global max pooling: CxHxW -> Cx1x1")


# -- adaptive pooling: a fixed output size from any input size (torch's AdaptiveAvgPool2d) ----------

def adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    """Output i pools input rows floor(i*size/out) .. ceil((i+1)*size/out) - 1, as torch does;
    windows overlap when size is not a multiple of out, and repeat rows when size < out."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _adaptive_notation(op: str):
    def notation(a) -> str:
        return f"{op}({a['size']})"
    return notation


def _adaptive_shape(node, inputs, warn):
    c, _, _ = image(node.op, inputs[0])
    return (c, node.attrs["size"], node.attrs["size"])


def _adaptive_explain(node, inputs, out, fields, written):
    _, h, w = inputs[0]
    o = node.attrs["size"]
    kind = "average" if node.op == "adaptive_avgpool" else "maximum"
    return (Worked("size", "", o, f"adaptive: output row i is the {kind} of input rows floor(i*{h}/{o}) "
                                  f"to ceil((i+1)*{h}/{o}) - 1"),
            *explain_whole_field(inputs, fields[0], whole_input_field(node, fields, inputs)))


def _adaptive_generate(op: str):
    def generate(g, shape):
        if len(shape) != 3:
            return None
        size = g.draw(g.st.integers(1, 4))
        return f"{op}({size})", (shape[0], size, size)
    return generate


def _adaptive_op(name: str, doc: str) -> Op:
    return Op(
        name, doc, (int_attr("size", doc="output height and width"),), positional=("size",),
        notation=_adaptive_notation(name), derive=no_derived, shape=_adaptive_shape,
        weights=no_weights, macs=no_macs, receptive_field=whole_input_field,
        counts_as_activation=True, merge_word=None, shape_only_inputs=frozenset(), writable=True,
        activation=False, takes_activation=False, colour="#fdd0a2", generate=_adaptive_generate(name),
        explain=_adaptive_explain)


ADAPTIVE_AVGPOOL = _adaptive_op("adaptive_avgpool", "average pooling to a given output size, from any input size")
ADAPTIVE_MAXPOOL = _adaptive_op("adaptive_maxpool", "max pooling to a given output size, from any input size")
