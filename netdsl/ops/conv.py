"""Convolutions: conv and deconv (transposed convolution)."""
from __future__ import annotations

from .base import (DERIVED, IMPLICIT, AttrSpec, Op, ShapeProblem, Worked, dim, explain_sliding,
                   explain_weight_rule, explain_window_field, image, term, int_attr, sliding, window,
                   window_field)


def act_attr(choices: tuple[str, ...]) -> AttrSpec:
    return AttrSpec("act", "symbol", IMPLICIT, "activation after this layer", choices=("none", *choices))


def conv_common() -> tuple[AttrSpec, ...]:
    return (
        int_attr("groups", 1, "channel groups (AlexNet's two GPUs: 2; ResNeXt: 32)"),
        int_attr("dilation", 1, "spacing between kernel taps"),
        AttrSpec("bias", "bool", True, "add a learned bias"),
        AttrSpec("fixed", "bool", False, "keep the weights at their initial value (counted as buffers)"),
    )


def check_groups(op: str, c_in: int, c_out: int, groups: int) -> None:
    if c_in % groups:
        raise ShapeProblem(f"{op} with groups={groups} needs input channels divisible by {groups}, "
                           f"got {c_in}")
    if c_out % groups:
        raise ShapeProblem(f"{op} with groups={groups} needs output channels divisible by {groups}, "
                           f"got {c_out}")


def weight_and_bias(attrs, shape, out: int) -> list:
    trainable = not attrs["fixed"]
    found = [("weight", shape, trainable)]
    if attrs["bias"]:
        found.append(("bias", (out,), trainable))
    return found


def kernel_notation(op: str):
    def notation(a) -> str:
        text = f"{op}{a['k']}-{a['c']}"
        return text + (f"/{a['stride']}" if a["stride"] != 1 else "")
    return notation


# -- conv -------------------------------------------------------------------------------------------

def _conv_derive(attrs: dict) -> None:
    if attrs["pad"] is DERIVED:
        attrs["pad"] = attrs["dilation"] * (attrs["k"] - 1) // 2


def _conv_shape(node, inputs, warn):
    a = node.attrs
    c, _, _ = image("conv", inputs[0])
    check_groups("conv", c, a["c"], a["groups"])
    return (a["c"], *sliding(kernel_notation("conv")(a), inputs[0], a["k"], a["stride"], a["pad"],
                             a["dilation"], False, warn))


def _conv_weights(node, inputs):
    a = node.attrs
    return weight_and_bias(a, (a["c"], inputs[0][0] // a["groups"], a["k"], a["k"]), a["c"])


def _conv_macs(node, inputs, out) -> int:
    a = node.attrs
    return _prod(out) * (inputs[0][0] // a["groups"]) * a["k"] * a["k"]


def _conv_field(node, fields, inputs):
    a = node.attrs
    return window_field(a["k"], a["stride"], a["dilation"], fields[0])


def _conv_generate(g, shape):
    if len(shape) != 3:
        return None
    st = g.st
    c, h, w = shape
    k = g.draw(st.sampled_from([1, 2, 3]))
    dilation = g.draw(st.sampled_from([1, 1, 2]))
    pad = g.draw(st.integers(0, dilation * (k - 1)))
    stride = g.draw(st.sampled_from([1, 1, 2]))
    groups = g.draw(st.sampled_from([d for d in (1, 2, 3) if c % d == 0]))
    out = groups * g.draw(st.integers(1, max(1, g.max_channels // groups)))
    ho, wo = window(h, k, stride, pad, dilation, False)[0], window(w, k, stride, pad, dilation, False)[0]
    if ho < 1 or wo < 1:
        return None
    bias = g.draw(st.booleans())
    act = g.draw(st.sampled_from(["", "", ", act=none", ", act=tanh", ", act=relu"]))
    return (f"conv{k}-{out}/{stride}(pad={pad}, dilation={dilation}, groups={groups}, "
            f"bias={'true' if bias else 'false'}{act})", (out, ho, wo))


def _per_group(channels: int, groups: int) -> str:
    return str(channels) if groups == 1 else f"({channels}/{groups})"


def _conv_explain(node, inputs, out, fields, written):
    a = node.attrs
    k, g, (c_in, _, _), (c, ho, wo) = a["k"], a["groups"], inputs[0], out
    lines = []
    if written is not None and "pad" not in written:
        lines.append(Worked("pad", f"{a['dilation']}*({k}-1)//2", a["pad"],
                            "the default: 'same' at stride 1"))
    lines += explain_sliding(inputs[0], k, a["stride"], a["pad"], a["dilation"], False)
    lines += explain_weight_rule(_conv_weights(node, inputs), f"{k}*{k}*{_per_group(c_in, g)}*{c}", str(c))
    lines.append(Worked("MACs", f"{ho}*{wo}*{c} * {k}*{k}*{_per_group(c_in, g)}",
                        _conv_macs(node, inputs, out), "output values * taps per output"))
    lines.append(Worked("im2col", f"{_per_group(c_in, g)}*{k}*{k} x {ho}*{wo}",
                        (c_in // g * k * k, ho * wo),
                        "per image: C*k*k rows, Ho*Wo columns" + (f"; one matrix per group, {g} groups"
                                                                   if g > 1 else "")))
    lines += explain_window_field(k, a["stride"], a["dilation"], fields[0],
                                  _conv_field(node, fields, inputs))
    return tuple(lines)


def conv_op(activations: tuple[str, ...]) -> Op:
    return Op(
        "conv", "2-D convolution (cross-correlation, as in every framework)",
        (int_attr("k", doc="kernel size"), int_attr("c", doc="output channels"), int_attr("stride", 1, "stride"),
         int_attr("pad", DERIVED, "zero padding; default dilation*(k-1)//2 ('same' at stride 1)", minimum=0),
         *conv_common(), act_attr(activations)),
        positional=("k", "c", "stride"), notation=kernel_notation("conv"), derive=_conv_derive,
        shape=_conv_shape, weights=_conv_weights, macs=_conv_macs, receptive_field=_conv_field,
        counts_as_activation=True, merge_word=None, shape_only_inputs=frozenset(), writable=True,
        activation=False, takes_activation=True, colour="#c6dbef", generate=_conv_generate,
        explain=_conv_explain)


# -- deconv -----------------------------------------------------------------------------------------

def _deconv_derive(attrs: dict) -> None:
    if attrs["pad"] is DERIVED:
        attrs["pad"] = max(0, attrs["dilation"] * (attrs["k"] - 1) + 1 - attrs["stride"]) // 2


def _deconv_shape(node, inputs, warn):
    a = node.attrs
    c, h, w = image("deconv", inputs[0])
    check_groups("deconv", c, a["c"], a["groups"])
    if a["output_pad"] >= max(a["stride"], a["dilation"]):
        raise ShapeProblem(f"deconv output_pad must be smaller than its stride or dilation, "
                           f"got {a['output_pad']}")

    def grow(n):
        return dim((n - 1) * a["stride"] - 2 * a["pad"] + a["dilation"] * (a["k"] - 1) + 1 + a["output_pad"])
    return (a["c"], grow(h), grow(w))


def _deconv_weights(node, inputs):
    a = node.attrs
    return weight_and_bias(a, (inputs[0][0], a["c"] // a["groups"], a["k"], a["k"]), a["c"])


def _deconv_macs(node, inputs, out) -> int:
    a = node.attrs  # every input value is scattered through a k x k x (c/groups) kernel
    return _prod(inputs[0]) * (a["c"] // a["groups"]) * a["k"] * a["k"]


def _deconv_field(node, fields, inputs):
    a = node.attrs
    rf, jump = fields[0]
    taps = -(-(a["dilation"] * (a["k"] - 1) + 1) // a["stride"])  # inputs that reach one output
    return rf + (taps - 1) * jump, jump / a["stride"]


def _deconv_generate(g, shape):
    if len(shape) != 3:
        return None
    st = g.st
    c, h, w = shape
    k = g.draw(st.sampled_from([1, 2, 3, 4]))
    stride = g.draw(st.sampled_from([1, 2]))
    pad = g.draw(st.integers(0, (k - 1) // 2))
    output_pad = g.draw(st.integers(0, stride - 1))
    out = g.channels()
    ho = (h - 1) * stride - 2 * pad + k + output_pad
    wo = (w - 1) * stride - 2 * pad + k + output_pad
    if ho < 1 or wo < 1 or ho * wo > 400:
        return None
    init = g.draw(st.sampled_from(["default", "bilinear"]))
    return (f"deconv(k={k}, c={out}, stride={stride}, pad={pad}, output_pad={output_pad}, "
            f"init={init})", (out, ho, wo))


def _deconv_explain(node, inputs, out, fields, written):
    a = node.attrs
    k, s, p, d, g = a["k"], a["stride"], a["pad"], a["dilation"], a["groups"]
    c_in, h, w = inputs[0]
    c = out[0]
    lines = []
    if written is not None and "pad" not in written:
        lines.append(Worked("pad", f"max(0, {d}*({k}-1) + 1 - {s})//2", p,
                            "the default: the size grows by exactly the stride"))
    span = str(k) if d == 1 else f"({d}*({k}-1) + 1)"
    sides = [("size", h, out[1])] if h == w else [("height", h, out[1]), ("width", w, out[2])]
    for quantity, size, result in sides:
        lines.append(Worked(quantity, f"({size} - 1)*{s} - 2*{p} + {span} + {a['output_pad']}", result,
                            "transposed: (in - 1)*stride - 2*pad + span + output_pad"))
    lines += explain_weight_rule(_deconv_weights(node, inputs), f"{k}*{k}*{c_in}*{_per_group(c, g)}", str(c))
    lines.append(Worked("MACs", f"{h}*{w}*{c_in} * {k}*{k}*{_per_group(c, g)}",
                        _deconv_macs(node, inputs, out), "each input value scattered through a kernel"))
    rf, jump = fields[0]
    result = _deconv_field(node, fields, inputs)
    taps = -(-(d * (k - 1) + 1) // s)
    lines += [Worked("rf", f"{term(rf)} + ({taps}-1)*{term(jump)}", result[0],
                     f"{taps} input{'s' * (taps != 1)} reach one output"),
              Worked("jump", f"{term(jump)}/{s}", result[1])]
    return tuple(lines)


def deconv_op(activations: tuple[str, ...]) -> Op:
    return Op(
        "deconv", "transposed convolution (learned upsampling)",
        (int_attr("k", doc="kernel size"), int_attr("c", doc="output channels"), int_attr("stride", 1, "stride"),
         int_attr("pad", DERIVED, "padding; default (k-stride)//2, so the size grows by exactly stride",
                  minimum=0),
         int_attr("output_pad", 0, "extra rows/columns on one side of the output", minimum=0),
         *conv_common(),
         AttrSpec("init", "symbol", "default", "weight initialisation", choices=("default", "bilinear")),
         act_attr(activations)),
        positional=("k", "c", "stride"), notation=kernel_notation("deconv"), derive=_deconv_derive,
        shape=_deconv_shape, weights=_deconv_weights, macs=_deconv_macs, receptive_field=_deconv_field,
        counts_as_activation=True, merge_word=None, shape_only_inputs=frozenset(), writable=True,
        activation=False, takes_activation=True, colour="#c6dbef", generate=_deconv_generate,
        explain=_deconv_explain)


def _prod(shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total
