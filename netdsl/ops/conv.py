"""Convolutions: conv and deconv (transposed convolution)."""
from __future__ import annotations

from .base import (DERIVED, IMPLICIT, AttrSpec, AttributeProblem, MissingAttribute, Op, ShapeProblem, Worked, dim, explain_sliding,
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


# -- conv and dwconv: a kernel, stride and padding per axis ---------------------------------------
# `k`, `stride` and `pad` set both axes; `kh`/`kw`, `stride_h`/`stride_w` and `pad_h`/`pad_w` set
# one (conv1x7-192 is kh=1, kw=7). The per-axis values are what every rule and kernel reads; after
# derive, `k`, `stride` and `pad` hold the common value of both axes, or None where they differ,
# so conv(kh=3, kw=3, c=8) and conv3-8 are the same layer.

def axis_attrs() -> tuple[AttrSpec, ...]:
    def axis(name: str, shared: str, doc: str, minimum: int = 1) -> AttrSpec:
        return AttrSpec(name, "int", DERIVED, doc, minimum, implied_by=shared)
    return (
        axis("kh", "k", "kernel height; default k"),
        axis("kw", "k", "kernel width; default k"),
        axis("stride_h", "stride", "vertical stride; default stride, else 1"),
        axis("stride_w", "stride", "horizontal stride; default stride, else 1"),
        axis("pad_h", "pad", "zero padding above and below; default pad, else dilation*(kh-1)//2", 0),
        axis("pad_w", "pad", "zero padding left and right; default pad, else dilation*(kw-1)//2", 0),
    )


def _axes_derive(attrs: dict) -> None:
    for shared, (h, w) in (("k", ("kh", "kw")), ("stride", ("stride_h", "stride_w")),
                           ("pad", ("pad_h", "pad_w"))):
        if attrs[h] is not DERIVED and attrs[w] is not DERIVED and attrs[shared] is not DERIVED:
            raise AttributeProblem(f"{shared}={attrs[shared]} is overridden on both axes by {h} and {w}: "
                                   f"give {shared}, or {h} and {w}")
    k = attrs["k"]
    for axis in ("kh", "kw"):
        if attrs[axis] is DERIVED:
            if k is DERIVED:
                raise MissingAttribute("k")
            attrs[axis] = k
    for axis in ("stride_h", "stride_w"):
        if attrs[axis] is DERIVED:
            attrs[axis] = 1 if attrs["stride"] is DERIVED else attrs["stride"]
    for axis, kernel in (("pad_h", "kh"), ("pad_w", "kw")):
        if attrs[axis] is DERIVED:
            pad = attrs["pad"]
            attrs[axis] = attrs["dilation"] * (attrs[kernel] - 1) // 2 if pad is DERIVED else pad
    for shared, (h, w) in (("k", ("kh", "kw")), ("stride", ("stride_h", "stride_w")),
                           ("pad", ("pad_h", "pad_w"))):
        attrs[shared] = attrs[h] if attrs[h] == attrs[w] else None


def _kernel(a) -> tuple[int, int]:
    return a["kh"], a["kw"]


def _strides(a) -> tuple[int, int]:
    return a["stride_h"], a["stride_w"]


def _pads(a) -> tuple[int, int]:
    return a["pad_h"], a["pad_w"]


def _axes_notation(op: str, channels: bool):
    """conv3-64/2, conv1x7-192, conv3-64/2x1; dwconv3/2, dwconv1x7."""
    def notation(a) -> str:
        kernel = str(a["kh"]) if a["kh"] == a["kw"] else f"{a['kh']}x{a['kw']}"
        text = f"{op}{kernel}" + (f"-{a['c']}" if channels else "")
        stride = a["stride_h"] if a["stride_h"] == a["stride_w"] else f"{a['stride_h']}x{a['stride_w']}"
        return text + (f"/{stride}" if stride != 1 else "")
    return notation


def _axes_shape(node, inputs, warn, c_out: int):
    a = node.attrs
    notation = _axes_notation(node.op, "c" in a)(a)
    return (c_out, *sliding(notation, inputs[0], _kernel(a), _strides(a), _pads(a), a["dilation"],
                            False, warn))


def _axes_field(node, fields, inputs):
    """The field of the larger axis (a Field is one size and one jump for both)."""
    a = node.attrs
    along_h = window_field(a["kh"], a["stride_h"], a["dilation"], fields[0])
    along_w = window_field(a["kw"], a["stride_w"], a["dilation"], fields[0])
    return max(along_h[0], along_w[0]), max(along_h[1], along_w[1])


def _explain_axes(node, inputs, fields, written, own: list[Worked]) -> tuple[Worked, ...]:
    """The worked lines of conv and dwconv: the derived padding and the output size per axis, then
    the op's `own` lines (channels, params, MACs), then the receptive field."""
    a = node.attrs
    lines = []
    if written is not None and not {"pad", "pad_h", "pad_w"} & written:
        if a["kh"] == a["kw"]:
            lines.append(Worked("pad", f"{a['dilation']}*({a['kh']}-1)//2", a["pad_h"],
                                "the default: 'same' at stride 1"))
        else:
            lines += [Worked(f"pad_{axis}", f"{a['dilation']}*({a[kernel]}-1)//2", a[f"pad_{axis}"],
                             f"the default for the {what}: 'same' at stride 1")
                      for axis, kernel, what in (("h", "kh", "height"), ("w", "kw", "width"))]
    lines += explain_sliding(inputs[0], _kernel(a), _strides(a), _pads(a), a["dilation"], False)
    lines += own
    result = _axes_field(node, fields, inputs)
    if a["kh"] == a["kw"] and a["stride_h"] == a["stride_w"]:
        lines += explain_window_field(a["kh"], a["stride_h"], a["dilation"], fields[0], result)
    else:
        lines += [Worked("rf", "", result[0], "the larger axis"), Worked("jump", "", result[1])]
    return tuple(lines)


def _kernel_text(a) -> str:
    return f"{a['kh']}*{a['kw']}"


def _conv_shape(node, inputs, warn):
    a = node.attrs
    c, _, _ = image("conv", inputs[0])
    check_groups("conv", c, a["c"], a["groups"])
    return _axes_shape(node, inputs, warn, a["c"])


def _conv_weights(node, inputs):
    a = node.attrs
    return weight_and_bias(a, (a["c"], inputs[0][0] // a["groups"], a["kh"], a["kw"]), a["c"])


def _conv_macs(node, inputs, out) -> int:
    a = node.attrs
    return _prod(out) * (inputs[0][0] // a["groups"]) * a["kh"] * a["kw"]


def _conv_generate(g, shape):
    if len(shape) != 3:
        return None
    st = g.st
    c, h, w = shape
    k = g.draw(st.sampled_from([1, 2, 3]))
    kw = g.draw(st.sampled_from([k, k, 1, 3]))  # sometimes a non-square kernel: conv1x3, conv3x1
    dilation = g.draw(st.sampled_from([1, 1, 2]))
    pad = g.draw(st.integers(0, dilation * (k - 1)))
    pad_w = g.draw(st.sampled_from([pad, dilation * (kw - 1) // 2]))
    stride = g.draw(st.sampled_from([1, 1, 2]))
    stride_w = g.draw(st.sampled_from([stride, stride, 1, 2]))
    groups = g.draw(st.sampled_from([d for d in (1, 2, 3) if c % d == 0]))
    out = groups * g.draw(st.integers(1, max(1, g.max_channels // groups)))
    ho = window(h, k, stride, pad, dilation, False)[0]
    wo = window(w, kw, stride_w, pad_w, dilation, False)[0]
    if ho < 1 or wo < 1:
        return None
    bias = g.draw(st.booleans())
    act = g.draw(st.sampled_from(["", "", ", act=none", ", act=tanh", ", act=relu"]))
    kernel = f"{k}" if kw == k else f"{k}x{kw}"
    per_axis = (f", pad_w={pad_w}" if pad_w != pad else "") + (f", stride_w={stride_w}" if stride_w != stride else "")
    return (f"conv{kernel}-{out}/{stride}(pad={pad}, dilation={dilation}, groups={groups}, "
            f"bias={'true' if bias else 'false'}{per_axis}{act})", (out, ho, wo))


def _per_group(channels: int, groups: int) -> str:
    return str(channels) if groups == 1 else f"({channels}/{groups})"


def _conv_explain(node, inputs, out, fields, written):
    a = node.attrs
    g, (c_in, _, _), (c, ho, wo) = a["groups"], inputs[0], out
    taps = _kernel_text(a)
    return _explain_axes(node, inputs, fields, written, [
        *explain_weight_rule(_conv_weights(node, inputs), f"{taps}*{_per_group(c_in, g)}*{c}", str(c)),
        Worked("MACs", f"{ho}*{wo}*{c} * {taps}*{_per_group(c_in, g)}",
               _conv_macs(node, inputs, out), "output values * taps per output"),
        Worked("im2col", f"{_per_group(c_in, g)}*{taps} x {ho}*{wo}",
               (c_in // g * a["kh"] * a["kw"], ho * wo),
               f"per image: C*{'k*k' if a['kh'] == a['kw'] else 'kh*kw'} rows, Ho*Wo columns"
               + (f"; one matrix per group, {g} groups" if g > 1 else ""))])


def _shared_attr(name: str, doc: str, minimum: int = 1) -> AttrSpec:
    return int_attr(name, DERIVED, doc, minimum=minimum)


def conv_op(activations: tuple[str, ...]) -> Op:
    return Op(
        "conv", "2-D convolution (cross-correlation, as in every framework)",
        (_shared_attr("k", "kernel size; or kh and kw"),
         int_attr("c", doc="output channels"), _shared_attr("stride", "stride; default 1"),
         _shared_attr("pad", "zero padding; default dilation*(k-1)//2 per axis ('same' at stride 1)",
                      minimum=0),
         *conv_common(), act_attr(activations), *axis_attrs()),
        positional=("k", "c", "stride"), notation=_axes_notation("conv", True), derive=_axes_derive,
        shape=_conv_shape, weights=_conv_weights, macs=_conv_macs, receptive_field=_axes_field,
        counts_as_activation=True, merge_word=None, shape_only_inputs=frozenset(), writable=True,
        activation=False, takes_activation=True, colour="#c6dbef", generate=_conv_generate,
        explain=_conv_explain)


# -- dwconv: depthwise, one filter (or `multiplier` filters) per input channel ----------------------

def _dwconv_shape(node, inputs, warn):
    a = node.attrs
    c, _, _ = image("dwconv", inputs[0])
    return _axes_shape(node, inputs, warn, c * a["multiplier"])


def _dwconv_weights(node, inputs):
    a = node.attrs
    out = inputs[0][0] * a["multiplier"]
    return weight_and_bias(a, (out, 1, a["kh"], a["kw"]), out)


def _dwconv_macs(node, inputs, out) -> int:
    return _prod(out) * node.attrs["kh"] * node.attrs["kw"]


def _dwconv_generate(g, shape):
    if len(shape) != 3:
        return None
    st = g.st
    c, h, w = shape
    k = g.draw(st.sampled_from([1, 2, 3]))
    kw = g.draw(st.sampled_from([k, k, 1, 3]))
    dilation = g.draw(st.sampled_from([1, 1, 2]))
    stride = g.draw(st.sampled_from([1, 1, 2]))
    multiplier = g.draw(st.sampled_from([1, 1, 2]))
    if c * multiplier > max(g.max_channels, c):
        multiplier = 1
    pad = dilation * (k - 1) // 2
    pad_w = dilation * (kw - 1) // 2
    ho = window(h, k, stride, pad, dilation, False)[0]
    wo = window(w, kw, stride, pad_w, dilation, False)[0]
    if ho < 1 or wo < 1:
        return None
    bias = g.draw(st.booleans())
    kernel = f"{k}" if kw == k else f"{k}x{kw}"
    return (f"dwconv{kernel}/{stride}(multiplier={multiplier}, dilation={dilation}, "
            f"bias={'true' if bias else 'false'})", (c * multiplier, ho, wo))


def _dwconv_explain(node, inputs, out, fields, written):
    a = node.attrs
    m, (c_in, _, _), (c, ho, wo) = a["multiplier"], inputs[0], out
    taps = _kernel_text(a)
    return _explain_axes(node, inputs, fields, written, [
        Worked("channels", f"{c_in}*{m}", c, "depthwise: groups = input channels"),
        *explain_weight_rule(_dwconv_weights(node, inputs), f"{taps}*1*{c}", str(c)),
        Worked("MACs", f"{ho}*{wo}*{c} * {taps}", _dwconv_macs(node, inputs, out),
               "output values * taps per output (one input channel each)")])


def dwconv_op(activations: tuple[str, ...]) -> Op:
    return Op(
        "dwconv", "depthwise 2-D convolution: groups = input channels (MobileNet, EfficientNet)",
        (_shared_attr("k", "kernel size; or kh and kw"),
         _shared_attr("stride", "stride; default 1"),
         _shared_attr("pad", "zero padding; default dilation*(k-1)//2 per axis ('same' at stride 1)",
                      minimum=0),
         int_attr("multiplier", 1, "output channels per input channel"),
         int_attr("dilation", 1, "spacing between kernel taps"),
         AttrSpec("bias", "bool", True, "add a learned bias"),
         AttrSpec("fixed", "bool", False, "keep the weights at their initial value (counted as buffers)"),
         act_attr(activations), *axis_attrs()),
        positional=("k", "stride"), notation=_axes_notation("dwconv", False), derive=_axes_derive,
        shape=_dwconv_shape, weights=_dwconv_weights, macs=_dwconv_macs, receptive_field=_axes_field,
        counts_as_activation=True, merge_word=None, shape_only_inputs=frozenset(), writable=True,
        activation=False, takes_activation=True, colour="#c6dbef", generate=_dwconv_generate,
        explain=_dwconv_explain)


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
