"""Ops that shape the graph: the input, crop, the merges cat{}, add{} and mul{}, and aux{}."""
from __future__ import annotations

from .base import (AttrSpec, Op, ShapeProblem, Worked, counted, dim, format_shape, image, int_attr,
                   is_symbolic, merge_field, require_at_most, require_equal, require_even,
                   no_derived, no_macs, no_weights, plain_notation, same_field, same_shape, term,
                   unchanged_field)

def _input_explain(node, inputs, out, fields, written):
    return tuple(unchanged_field(fields[0], "one input pixel"))


def _aux_explain(node, inputs, out, fields, written):
    return tuple(unchanged_field(fields[0], "an output: nothing reads it"))


def _aux_generate(g, shape):
    """A small head: a 1x1 conv on an image, an fc on a vector; the chain goes on unchanged."""
    head = f"conv1-{g.channels()}" if len(shape) == 3 else f"fc{g.channels()}"
    if len(shape) == 3 and g.draw(g.st.booleans()):
        head = f"gap - {head}"
    return f"aux{{ {head} }}", shape


#: `aux{ head }`: the head's result is an auxiliary output, returned beside the net's output in
#: training mode (GoogLeNet's and Inception-v3's auxiliary classifiers); the expander makes it.
AUX = Op(
    "aux", "an auxiliary output: the head's result, returned beside the net's output in training mode",
    (), positional=(), notation=plain_notation("aux"), derive=no_derived, shape=same_shape,
    weights=no_weights, macs=no_macs, receptive_field=same_field, counts_as_activation=False,
    merge_word=None, shape_only_inputs=frozenset(), writable=False, activation=False,
    takes_activation=False, colour="#eeeeee", generate=_aux_generate, explain=_aux_explain)


INPUT = Op(
    "input", "the network input", (), positional=(), notation=plain_notation("input"),
    derive=no_derived, shape=same_shape, weights=no_weights, macs=no_macs,
    receptive_field=same_field, counts_as_activation=True, merge_word=None,
    shape_only_inputs=frozenset(), writable=False, activation=False, takes_activation=False,
    colour="#eeeeee", generate=None, explain=_input_explain)


def _crop_shape(node, inputs, warn):
    c, h, w = image("crop", inputs[0])
    like = image("crop's like", inputs[1])
    a = node.attrs
    if a["center"]:
        if a["offset"]:
            raise ShapeProblem("crop takes an offset or `center`, not both",
                               notes=("center places the crop in the middle: (size - like)//2 from "
                                      "the top and the left",))
        for size, target, what in ((h, like[1], "rows"), (w, like[2], "columns")):
            require_at_most(warn, target, size, lambda: _crop_past(inputs, "the centre"),
                            f"crop to the `like` tensor: its {target} {what} inside {size}")
            require_even(warn, dim(size - target),
                         f"crop's centre is half a pixel off: {size} - {target} {what} is odd "
                         f"(the extra one is cut at the bottom or right)")
        return (c, like[1], like[2])
    offset = a["offset"]
    for size, target, what in ((h, like[1], "rows"), (w, like[2], "columns")):
        require_at_most(warn, dim(target + offset), size, lambda: _crop_past(inputs, f"offset {offset}"),
                        f"crop at offset {offset}: the `like` tensor's {target} {what} inside {size}")
    return (c, like[1], like[2])


def _crop_past(inputs, where: str) -> ShapeProblem:
    like = inputs[1]
    return ShapeProblem(f"crop of {format_shape(inputs[0])} at {where} to {format_shape(like[1:])} "
                        f"runs past the input")


def crop_offsets(attrs, size: tuple, like: tuple) -> tuple:
    """(top, left): where the crop starts; a centre crop rounds its margins down (the extra row
    goes to the bottom), as U-Net implementations do."""
    if attrs["center"]:
        return (size[0] - like[0]) // 2, (size[1] - like[1]) // 2
    return attrs["offset"], attrs["offset"]


def _crop_explain(node, inputs, out, fields, written):
    top, left = crop_offsets(node.attrs, inputs[0][1:], out[1:])
    how = ", centred: (size - like)//2 from the top" if node.attrs["center"] else ""
    return (Worked("height", "", out[1], f"rows {top}..{top + out[1] - 1} of {inputs[0][1]}, "
                   f"as tall as the `like` tensor{how}"),
            Worked("width", "", out[2], f"columns {left}..{left + out[2] - 1} of {inputs[0][2]}"),
            *unchanged_field(fields[0]))


def _crop_generate(g, shape):
    """label - a padded conv that grows the size - crop back to the label's size."""
    if len(shape) != 3:
        return None
    c, h, w = shape
    label = g.label()
    grow = g.draw(g.st.integers(1, 2))
    offset = g.draw(g.st.integers(0, 2 * grow))
    out = g.channels()
    how = "center" if g.draw(g.st.booleans()) else str(offset)
    return f"{label}: id - conv1-{out}(pad={grow}) - crop({how}, like=@{label})", (out, h, w)


CROP = Op(
    "crop", "crop to the spatial size of another tensor (FCN's skip alignment, Caffe's Crop)",
    (int_attr("offset", 0, "rows and columns skipped at the top and left", minimum=0),
     AttrSpec("like", "ref", doc="the tensor whose height and width to crop to"),
     AttrSpec("center", "bool", False, "crop the middle: (size - like)//2 from the top and the left "
              "(U-Net's crop-and-concat)")),
    positional=("offset",), notation=plain_notation("crop"), derive=no_derived, shape=_crop_shape,
    weights=no_weights, macs=no_macs, receptive_field=same_field, counts_as_activation=False,
    merge_word=None, shape_only_inputs=frozenset({1}), writable=True, activation=False,
    takes_activation=False, colour="#f0f0f0", generate=_crop_generate, explain=_crop_explain)


def _add_shape(node, inputs, warn):
    first = inputs[0]
    for i, shape in enumerate(inputs[1:], 2):
        if len(shape) == len(first) and shape[0] == first[0] and is_symbolic(shape + first):
            for d, (a, b) in enumerate(zip(first[1:], shape[1:])):
                require_equal(warn, a, b, lambda: _branches_differ(first, shape, i),
                              f"add{{}} branches 1 and {i} equal in {'height' if d == 0 else 'width'}")
            continue
        if shape != first:
            raise _branches_differ(first, shape, i)
    return first


def _branches_differ(first, shape, i) -> ShapeProblem:
    return ShapeProblem(
                f"add{{}} branches differ in shape: branch 1 gives {format_shape(first)}, "
                f"branch {i} gives {format_shape(shape)}",
                notes=("add needs every branch to give the same shape; a 1x1 conv with a stride "
                       "can match a shortcut to its residual branch",))


def _concat_shape(node, inputs, warn):
    first = inputs[0]
    for i, shape in enumerate(inputs[1:], 2):
        if len(shape) == len(first) == 3 and is_symbolic(shape + first):
            for d, (a, b) in enumerate(zip(first[1:], shape[1:])):
                require_equal(warn, a, b, lambda: _cat_differ(first, shape, i),
                              f"cat{{}} branches 1 and {i} equal in {'height' if d == 0 else 'width'}")
            continue
        if len(shape) != len(first) or shape[1:] != first[1:]:
            raise _cat_differ(first, shape, i)
    return (sum(shape[0] for shape in inputs), *first[1:])


def _cat_differ(first, shape, i) -> ShapeProblem:
    return ShapeProblem(
                f"cat{{}} branches differ in size: branch 1 gives {format_shape(first)}, "
                f"branch {i} gives {format_shape(shape)}",
                notes=("cat joins channels, so every other dimension must agree",))


def _merge_generate(word: str):
    def generate(g, shape):
        """Branches that keep the spatial size (stride-1 'same' convs) or pass the input."""
        n = g.draw(g.st.integers(2, 3))
        branches, channels = [], []
        for _ in range(n):
            if len(shape) != 3 or g.draw(g.st.integers(0, 3)) == 0:
                branches.append("id")
                channels.append(shape[0])
                continue
            out = shape[0] if word == "add" else g.channels()
            k = g.draw(g.st.sampled_from([1, 3]))
            tail = g.draw(g.st.sampled_from(["", " - relu", " - bn", " - tanh"]))
            branches.append(f"conv{k}-{out}{tail}")
            channels.append(out)
        c = sum(channels) if word == "cat" else shape[0]
        return f"{word}{{ {' | '.join(branches)} }}", (c, *shape[1:])
    return generate


def _merge_explain(node, inputs, out, fields, written):
    lines = []
    if node.op == "concat":
        lines.append(Worked("channels", " + ".join(str(shape[0]) for shape in inputs), out[0],
                            "concatenated along channels"))
    result = merge_field(node, fields, inputs)
    lines.append(Worked("rf", f"max({', '.join(term(rf) for rf, _ in fields)})", result[0],
                        "the largest of the branches'"))
    lines.append(Worked("jump", f"max({', '.join(term(jump) for _, jump in fields)})", result[1]))
    return tuple(lines)


def _merge(name: str, word: str, doc: str, shape_rule) -> Op:
    return Op(
        name, doc, (), positional=(), notation=plain_notation(word), derive=no_derived,
        shape=shape_rule, weights=no_weights, macs=no_macs, receptive_field=merge_field,
        counts_as_activation=True, merge_word=word, shape_only_inputs=frozenset(), writable=False,
        activation=False, takes_activation=False, colour="#fff2a8", generate=_merge_generate(word),
        explain=_merge_explain)


CONCAT = _merge("concat", "cat", "concatenate branches along channels", _concat_shape)
ADD = _merge("add", "add", "sum branches element-wise", _add_shape)


# -- mul{}: a broadcasting channel-wise product (squeeze-and-excitation gates) --------------------

def is_gate(shape) -> bool:
    """A CxHxW branch whose height and width are 1 at every size: it scales each channel of the
    other branches (squeeze-and-excitation). A formula that is 1 only at some sizes is not one."""
    return len(shape) == 3 and type(shape[1]) is int and type(shape[2]) is int and shape[1:] == (1, 1)


def _mul_shape(node, inputs, warn):
    full = next((shape for shape in inputs if not is_gate(shape)), inputs[0])
    for shape in inputs:
        counted("mul{}", shape[0])
    for i, shape in enumerate(inputs, 1):
        if shape is full:
            continue
        if len(shape) != len(full) or shape[0] != full[0]:
            raise _mul_differ(inputs, full, shape, i, "channels" if len(shape) == len(full) else "rank")
        if is_gate(shape):
            continue
        if is_symbolic(shape + full):
            for d, (a, b) in enumerate(zip(full[1:], shape[1:])):
                require_equal(warn, a, b, lambda: _mul_differ(inputs, full, shape, i, "size"),
                              f"mul{{}} branch {i} as {'tall' if d == 0 else 'wide'} as "
                              f"branch {inputs.index(full) + 1}")
        elif shape != full:
            raise _mul_differ(inputs, full, shape, i, "size")
    return full


def _mul_differ(inputs, full, shape, i, what) -> ShapeProblem:
    first = inputs.index(full) + 1
    return ShapeProblem(
        f"mul{{}} branches differ in {what}: branch {first} gives {format_shape(full)}, "
        f"branch {i} gives {format_shape(shape)}",
        notes=("mul multiplies channel by channel: branches of equal shape, or a Cx1x1 gate "
               "(gap - ... - sigmoid) that scales every pixel of a CxHxW branch",))


def _mul_generate(g, shape):
    """Two or three branches: the input, a same-size conv, or a squeeze-and-excitation gate."""
    c = shape[0]
    image_input = len(shape) == 3
    squeeze = g.draw(g.st.integers(1, max(1, c)))
    gate = (f"gap - conv1-{squeeze} - relu - conv1-{c} - sigmoid" if image_input
            else f"fc{squeeze} - relu - fc{c} - sigmoid")
    same = f"conv{g.draw(g.st.sampled_from([1, 3]))}-{c}" if image_input else f"fc{c}"
    branches = [g.draw(g.st.sampled_from(["id", gate, same, gate])) for _ in range(g.draw(g.st.integers(2, 3)))]
    if image_input and all(branch == gate for branch in branches):
        branches[g.draw(g.st.integers(0, len(branches) - 1))] = "id"  # gates alone give Cx1x1
    return f"mul{{ {' | '.join(branches)} }}", shape


def _mul_explain(node, inputs, out, fields, written):
    gates = [str(i) for i, shape in enumerate(inputs, 1) if is_gate(shape) and shape != out]
    how = (f"branch{'es' * (len(gates) > 1)} {', '.join(gates)} (Cx1x1) scale{'s' * (len(gates) == 1)} "
           f"each channel at every pixel" if gates else "element by element")
    return (Worked("channels", "", out[0], how), *_merge_explain(node, inputs, out, fields, written))


MUL = Op(
    "mul", "multiply branches element-wise, a Cx1x1 branch scaling each channel "
    "(squeeze-and-excitation)", (), positional=(), notation=plain_notation("mul"),
    derive=no_derived, shape=_mul_shape, weights=no_weights, macs=no_macs,
    receptive_field=merge_field, counts_as_activation=True, merge_word="mul",
    shape_only_inputs=frozenset(), writable=False, activation=False, takes_activation=False,
    colour="#fff2a8", generate=_mul_generate, explain=_mul_explain)
