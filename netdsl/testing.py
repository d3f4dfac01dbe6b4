"""Hypothesis strategies that generate valid networks, for property tests (yours and ours).

In the manner of NNSmith, the generator tracks the tensor shape forward and draws each op's
parameters to fit its input, so every program it writes type-checks. How an op is drawn is part of
its record (`OPS[name].generate`), so a new op is generated as soon as it exists. It covers every op of the
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

from .ops import ACTIVATIONS, OPS

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Program:
    text: str  # the .net source
    output_shape: Shape  # what the generator expects the checker to find
    ops: frozenset[str]  # the ops it wrote (to see coverage)


class _Context:
    """What an op record's `generate` rule draws with (see netdsl/ops/base.py)."""

    st = st

    def __init__(self, draw, max_channels: int):
        self.draw = draw
        self.max_channels = max_channels
        self.labels = 0

    def channels(self) -> int:
        return self.draw(st.integers(1, self.max_channels))

    def label(self) -> str:
        self.labels += 1
        return f"l{self.labels}"


#: The ops a program can contain: every record with a generator (all but the input).
GENERATED_OPS = tuple(op for op in OPS.values() if op.generate is not None)


@st.composite
def programs(draw, max_layers: int = 6, max_channels: int = 6, max_size: int = 9) -> Program:
    """A valid .net program with its input shape written in, and its expected output shape."""
    flat = draw(st.integers(0, 5)) == 0
    c = draw(st.integers(1, 4))
    if flat:
        shape: Shape = (draw(st.integers(1, 8)),)
    else:
        shape = (c, draw(st.integers(3, max_size)), draw(st.integers(3, max_size)))
    context = _Context(draw, max_channels)
    ops: set[str] = set()
    activation = draw(st.sampled_from(["relu", "none", *ACTIVATIONS]))
    lines = [f"input {'x'.join(map(str, shape))}", f"activation {activation}"]
    elements = []
    for _ in range(draw(st.integers(1, max_layers))):
        op = draw(st.sampled_from(GENERATED_OPS))
        found = op.generate(context, shape)
        if found is None:
            continue
        text, shape = found
        elements.append(text)
        ops.add(op.name)
    # a definition with a parameter, called (and repeated) with a shape-preserving body
    if len(shape) == 3 and draw(st.booleans()):
        c_same = shape[0]
        times = draw(st.integers(0, 2))
        lines.append(f"def keep(c, n=1) = (conv3-c - bn)*n")
        elements.append(f"keep({c_same}, n={draw(st.integers(1, 2))})*{times}")
        ops |= {"conv", "bn"} if times else set()
    if not elements:
        elements.append("id")
    lines.append(" - ".join(elements))
    return Program("\n".join(lines) + "\n", shape, frozenset(ops))
