"""Upsampling: nearest and bilinear, by an integer factor or to another tensor's size."""
from __future__ import annotations

from fractions import Fraction

from .base import (AttrSpec, Op, ShapeProblem, Worked, image, int_attr, no_derived, no_macs,
                   no_weights, term)

_NOTES = ("upsample(2) doubles the height and width; upsample(like=@skip) takes the size of the "
          "tensor labelled skip",)


def _upsample_notation(a) -> str:
    # a `like` is not an attribute: the notation of upsample(like=@x) is the same as factor 1's
    text = "upsample" if a["factor"] == 1 else f"upsample{a['factor']}"
    return text + ("-bilinear" if a["mode"] == "bilinear" else "")


def _upsample_shape(node, inputs, warn):
    a = node.attrs
    c, h, w = image("upsample", inputs[0])
    if a["align_corners"] and a["mode"] != "bilinear":
        raise ShapeProblem("align_corners applies to bilinear upsampling only",
                           notes=("nearest takes the pixel at floor(out * in/out), as torch does; "
                                  "write upsample(2, mode=bilinear, align_corners=true)",))
    if len(inputs) == 2:
        if a["factor"] != 1:
            raise ShapeProblem(f"upsample takes a factor or like, not both (factor {a['factor']})",
                               notes=_NOTES)
        like = image("upsample's like", inputs[1])
        return (c, like[1], like[2])
    if a["factor"] == 1:
        raise ShapeProblem("upsample needs a factor above 1 or a tensor to match", notes=_NOTES)
    return (c, h * a["factor"], w * a["factor"])


def _taps(node) -> int:
    """How many input pixels one output pixel reads along each axis."""
    return 2 if node.attrs["mode"] == "bilinear" else 1


def _upsample_field(node, fields, inputs):
    rf, jump = fields[0]
    rf += (_taps(node) - 1) * jump
    if len(inputs) == 1:
        return rf, jump / node.attrs["factor"]
    sizes = [(inputs[0][d], inputs[1][d]) for d in (1, 2)]
    if all(type(n) is int for pair in sizes for n in pair):
        return rf, max(jump * Fraction(n_in, n_out) for n_in, n_out in sizes)
    return rf, fields[1][1]  # sizes given by name: the output lies on the `like` tensor's grid


def _upsample_explain(node, inputs, out, fields, written):
    a = node.attrs
    _, h, w = inputs[0]
    result = _upsample_field(node, fields, inputs)
    rf, jump = fields[0]
    taps = _taps(node)
    how = "nearest: each output copies one input pixel" if taps == 1 else \
        f"bilinear{' (align_corners)' if a['align_corners'] else ''}: each output mixes 2x2 input pixels"
    if len(inputs) == 1:
        f = a["factor"]
        lines = [Worked("size", f"{h}*{f}", out[1]) if h == w else Worked("height", f"{h}*{f}", out[1]),
                 *([] if h == w else [Worked("width", f"{w}*{f}", out[2])])]
        jump_line = Worked("jump", f"{term(jump)}/{f}", result[1])
    else:
        lines = [Worked("height", "", out[1], "the `like` tensor's height"),
                 Worked("width", "", out[2], "the `like` tensor's width")]
        ratio = f"{h}/{out[1]}" if (h, out[1]) == (w, out[2]) else f"max({h}/{out[1]}, {w}/{out[2]})"
        jump_line = Worked("jump", f"{term(jump)}*{ratio}", result[1], "times in/out, the larger of "
                           "height and width")
    return (*lines, Worked("rf", f"{term(rf)} + ({taps}-1)*{term(jump)}", result[0], how), jump_line)


def _upsample_generate(g, shape):
    if len(shape) != 3:
        return None
    st = g.st
    c, h, w = shape
    mode = g.draw(st.sampled_from(["nearest", "bilinear"]))
    corners = ", align_corners=true" if mode == "bilinear" and g.draw(st.booleans()) else ""
    if g.draw(st.booleans()):
        factor = g.draw(st.sampled_from([2, 3]))
        if h * w * factor * factor > 400:
            return None
        return f"upsample({factor}, mode={mode}{corners})", (c, h * factor, w * factor)
    k = g.draw(st.sampled_from([2, 3]))
    if min(h, w) < k:
        return None
    label = g.label()  # down and back up to the label's size: ratios that are not whole numbers too
    ceil = ", ceil" if g.draw(st.booleans()) else ""
    return f"{label}: id - avgpool{k}/{k}(pad=0{ceil}) - upsample(like=@{label}, mode={mode}{corners})", shape


UPSAMPLE = Op(
    "upsample", "nearest or bilinear upsampling by an integer factor, or to another tensor's size "
    "(torch's F.interpolate)",
    (int_attr("factor", 1, "the height and width are multiplied by it; 1 with `like`"),
     AttrSpec("mode", "symbol", "nearest", "nearest or bilinear", choices=("nearest", "bilinear")),
     AttrSpec("align_corners", "bool", False, "bilinear only: the corner pixels of input and output "
              "line up (torch's align_corners=True)"),
     AttrSpec("like", "ref", None, "a tensor whose height and width to upsample to, instead of a factor")),
    positional=("factor",), notation=_upsample_notation, derive=no_derived, shape=_upsample_shape,
    weights=no_weights, macs=no_macs, receptive_field=_upsample_field, counts_as_activation=True,
    merge_word=None, shape_only_inputs=frozenset({1}), writable=True, activation=False,
    takes_activation=False, colour="#c7e9c0", generate=_upsample_generate, explain=_upsample_explain)
