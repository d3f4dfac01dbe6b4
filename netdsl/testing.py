"""Hypothesis strategies that generate valid networks, for property tests (yours and ours).

In the manner of NNSmith, the generator tracks the tensor shape forward and draws each op's
parameters to fit its input, so every program it writes type-checks. It covers every op of the
language, cat and add merges, labels with references (crop's `like`), definitions with
parameters, and repeats, and it keeps the size and cost small.

    from hypothesis import given
    from netdsl.testing import programs

    @given(programs())
    def test_my_backend(program):
        net = netdsl.parse(program.text)
        assert net.output_shape == program.output_shape

Requires hypothesis (in the test extra).
"""
from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Program:
    text: str  # the .net source
    output_shape: Shape  # what the generator expects the checker to find
    ops: frozenset[str]  # the ops it wrote (to see coverage)


def _window(size: int, k: int, stride: int, pad: int, dilation: int = 1, ceil: bool = False) -> int:
    span = dilation * (k - 1) + 1
    room = size + 2 * pad - span
    out = (-(-room // stride) if ceil else room // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class _Builder:
    """Draws one element at a time; `shape` is the shape of the chain's current tensor."""

    def __init__(self, draw, max_channels: int):
        self.draw = draw
        self.max_channels = max_channels
        self.ops: set[str] = set()
        self.labels = 0

    def channels(self) -> int:
        return self.draw(st.integers(1, self.max_channels))

    # each method returns (text, new shape), or None when it does not fit the shape
    def conv(self, shape):
        c, h, w = shape
        k = self.draw(st.sampled_from([1, 2, 3]))
        dilation = self.draw(st.sampled_from([1, 1, 2]))
        pad = self.draw(st.integers(0, dilation * (k - 1)))
        stride = self.draw(st.sampled_from([1, 1, 2]))
        divisors = [g for g in (1, 2, 3) if c % g == 0]
        groups = self.draw(st.sampled_from(divisors))
        out = groups * self.draw(st.integers(1, max(1, self.max_channels // groups)))
        ho, wo = _window(h, k, stride, pad, dilation), _window(w, k, stride, pad, dilation)
        if ho < 1 or wo < 1:
            return None
        bias = self.draw(st.booleans())
        act = self.draw(st.sampled_from(["", "", ", act=none", ", act=tanh", ", act=relu"]))
        self.ops.add("conv")
        return (f"conv{k}-{out}/{stride}(pad={pad}, dilation={dilation}, groups={groups}, "
                f"bias={'true' if bias else 'false'}{act})", (out, ho, wo))

    def deconv(self, shape):
        c, h, w = shape
        k = self.draw(st.sampled_from([1, 2, 3, 4]))
        stride = self.draw(st.sampled_from([1, 2]))
        pad = self.draw(st.integers(0, (k - 1) // 2))
        output_pad = self.draw(st.integers(0, stride - 1))
        out = self.channels()
        ho = (h - 1) * stride - 2 * pad + k + output_pad
        wo = (w - 1) * stride - 2 * pad + k + output_pad
        if ho < 1 or wo < 1 or ho * wo > 400:
            return None
        init = self.draw(st.sampled_from(["default", "bilinear"]))
        self.ops.add("deconv")
        return (f"deconv(k={k}, c={out}, stride={stride}, pad={pad}, output_pad={output_pad}, "
                f"init={init})", (out, ho, wo))

    def pool(self, shape):
        c, h, w = shape
        kind = self.draw(st.sampled_from(["maxpool", "avgpool"]))
        k = self.draw(st.sampled_from([1, 2, 3]))
        stride = self.draw(st.integers(1, k))
        pad = self.draw(st.integers(0, k // 2))
        ceil = self.draw(st.booleans())
        ho, wo = _window(h, k, stride, pad, ceil=ceil), _window(w, k, stride, pad, ceil=ceil)
        if ho < 1 or wo < 1:
            return None
        extra = ", count_pad=false" if kind == "avgpool" and self.draw(st.booleans()) else ""
        self.ops.add(kind)
        return (f"{kind}{k}/{stride}(pad={pad}{', ceil' if ceil else ''}{extra})", (c, ho, wo))

    def elementwise(self, shape):
        op = self.draw(st.sampled_from(["relu", "tanh", "sigmoid", "lrelu(0.2)", "elu(0.7)", "softmax",
                                        "bn", "dropout(0.3)", "id"]))
        self.ops.add(op.split("(")[0])
        return op, shape

    def to_flat(self, shape):
        if self.draw(st.booleans()):
            self.ops.add("flatten")
            return "flatten", (shape[0] * shape[1] * shape[2],)
        if self.draw(st.booleans()):
            self.ops.add("gap")
            return "gap - flatten", (shape[0],)
        out = self.channels()
        self.ops.add("fc")
        return f"fc{out}", (out,)

    def fc(self, shape):
        out = self.channels()
        act = self.draw(st.sampled_from(["", "(act=sigmoid)", "(bias=false)"]))
        self.ops.add("fc")
        return f"fc{out}{act}", (out,)

    def merge(self, shape):
        """cat{} or add{} of branches that keep the spatial size (stride-1 'same' convs)."""
        kind = self.draw(st.sampled_from(["cat", "add"]))
        n = self.draw(st.integers(2, 3))
        branches, channels = [], []
        for _ in range(n):
            if self.draw(st.integers(0, 3)) == 0:
                branches.append("id")
                channels.append(shape[0])
                continue
            out = shape[0] if kind == "add" else self.channels()
            k = self.draw(st.sampled_from([1, 3]))
            tail = self.draw(st.sampled_from(["", " - relu", " - bn", " - tanh"]))
            branches.append(f"conv{k}-{out}{tail}")
            channels.append(out)
        self.ops.add("concat" if kind == "cat" else "add")
        c = sum(channels) if kind == "cat" else shape[0]
        return f"{kind}{{ {' | '.join(branches)} }}", (c, *shape[1:])

    def labelled_crop(self, shape):
        """label - a padded conv that grows the size - crop back to the label's size."""
        c, h, w = shape
        self.labels += 1
        label = f"l{self.labels}"
        grow = self.draw(st.integers(1, 2))
        offset = self.draw(st.integers(0, 2 * grow))
        out = self.channels()
        self.ops |= {"conv", "crop"}
        return (f"{label}: id - conv1-{out}(pad={grow}) - crop({offset}, like=@{label})", (out, h, w))

    def step(self, shape):
        if len(shape) == 1:
            choice = self.draw(st.sampled_from(["fc", "fc", "elementwise"]))
            return self.fc(shape) if choice == "fc" else self.flat_elementwise(shape)
        choice = self.draw(st.sampled_from(["conv", "conv", "pool", "elementwise", "merge", "deconv",
                                            "crop", "flat", "lrn"]))
        if choice == "lrn":
            self.ops.add("lrn")
            return f"lrn({self.draw(st.integers(1, 4))}, alpha=0.1, beta=0.75, k=2.0)", shape
        if choice == "flat":
            return self.to_flat(shape)
        if choice == "crop":
            return self.labelled_crop(shape)
        return getattr(self, choice)(shape)

    def flat_elementwise(self, shape):
        op = self.draw(st.sampled_from(["relu", "tanh", "sigmoid", "softmax", "bn", "dropout(0.2)",
                                        "elu", "lrelu"]))
        self.ops.add(op.split("(")[0])
        return op, shape


@st.composite
def programs(draw, max_layers: int = 6, max_channels: int = 6, max_size: int = 9) -> Program:
    """A valid .net program with its input shape written in, and its expected output shape."""
    flat = draw(st.integers(0, 5)) == 0
    c = draw(st.integers(1, 4))
    if flat:
        shape: Shape = (draw(st.integers(1, 8)),)
    else:
        shape = (c, draw(st.integers(3, max_size)), draw(st.integers(3, max_size)))
    builder = _Builder(draw, max_channels)
    activation = draw(st.sampled_from(["relu", "relu", "tanh", "sigmoid", "none", "lrelu", "elu"]))
    lines = [f"input {'x'.join(map(str, shape))}", f"activation {activation}"]
    elements = []
    for _ in range(draw(st.integers(1, max_layers))):
        found = builder.step(shape)
        if found is None:
            continue
        text, shape = found
        elements.append(text)
    # a definition with a parameter, called (and repeated) with a shape-preserving body
    if len(shape) == 3 and draw(st.booleans()):
        c_same = shape[0]
        times = draw(st.integers(0, 2))
        lines.append(f"def keep(c, n=1) = (conv3-c - bn)*n")
        elements.append(f"keep({c_same}, n={draw(st.integers(1, 2))})*{times}")
        builder.ops |= {"conv", "bn"} if times else set()
    if not elements:
        elements.append("id")
    lines.append(" - ".join(elements))
    return Program("\n".join(lines) + "\n", shape, frozenset(builder.ops))
