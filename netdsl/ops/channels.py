"""Channel ops for ShuffleNet-v2: a slice of the channels, and the channel shuffle."""
from __future__ import annotations

from .base import (Op, ShapeProblem, Worked, counted, format_shape, int_attr, no_derived, no_macs,
                   no_weights, same_field, unchanged_field)


def _channels_notation(a) -> str:
    return f"channels[{a['start']}:{a['end']}]"


def _channels_shape(node, inputs, warn):
    a = node.attrs
    shape = inputs[0]
    if a["start"] >= a["end"]:
        raise ShapeProblem(f"channels({a['start']}, {a['end']}) takes no channel: the end must be above "
                           f"the start", notes=("channels(start, end) takes channels start .. end-1, as "
                                                "Python's x[:, start:end]",))
    if a["end"] > counted("channels", shape[0]):
        raise ShapeProblem(f"channels({a['start']}, {a['end']}) runs past the input: "
                           f"{format_shape(shape)} has {shape[0]} channels",
                           notes=("channels(start, end) takes channels start .. end-1, as Python's "
                                  "x[:, start:end]",))
    return (a["end"] - a["start"], *shape[1:])


def _channels_explain(node, inputs, out, fields, written):
    a = node.attrs
    return (Worked("channels", f"{a['end']} - {a['start']}", out[0],
                   f"channels {a['start']}..{a['end'] - 1} of {inputs[0][0]}"),
            *unchanged_field(fields[0]))


def _channels_generate(g, shape):
    """A slice, or ShuffleNet-v2's split: one half passed on, the other through a conv, joined."""
    c = shape[0]
    start = g.draw(g.st.integers(0, c - 1))
    end = g.draw(g.st.integers(start + 1, c))
    if c < 2 or len(shape) != 3 or g.draw(g.st.booleans()):
        return f"channels({start}, {end})", (end - start, *shape[1:])
    half = g.draw(g.st.integers(1, c - 1))
    return (f"cat{{ channels(0, {half}) | channels({half}, {c}) - conv{g.draw(g.st.sampled_from([1, 3]))}"
            f"-{c - half} }}"), shape


CHANNELS = Op(
    "channels", "a slice of the channels: channels(start, end) takes start .. end-1 (a channel split "
    "into branches, ShuffleNet-v2's x.chunk(2, dim=1))",
    (int_attr("start", doc="the first channel taken", minimum=0),
     int_attr("end", doc="one past the last channel taken")),
    positional=("start", "end"), notation=_channels_notation, derive=no_derived,
    shape=_channels_shape, weights=no_weights, macs=no_macs, receptive_field=same_field,
    counts_as_activation=False, merge_word=None, shape_only_inputs=frozenset(), writable=True,
    activation=False, takes_activation=False, colour="#f0f0f0", generate=_channels_generate,
    explain=_channels_explain)


def _shuffle_notation(a) -> str:
    return f"shuffle{a['groups']}"


def _shuffle_shape(node, inputs, warn):
    g = node.attrs["groups"]
    shape = inputs[0]
    if counted("shuffle", shape[0]) % g:
        raise ShapeProblem(f"shuffle({g}) needs channels divisible by {g}, got {shape[0]}",
                           notes=("the channels are viewed as groups x (channels/groups) and transposed",))
    return shape


def _shuffle_explain(node, inputs, out, fields, written):
    g, c = node.attrs["groups"], out[0]
    return (Worked("channels", f"{g}*{c // g}", c,
                   f"viewed as {g} groups of {c // g} and transposed: output channel j*{g} + i is "
                   f"input channel i*{c // g} + j"),
            *unchanged_field(fields[0], "unchanged: it moves channels only"))


def _shuffle_generate(g, shape):
    groups = g.draw(g.st.sampled_from([d for d in range(1, shape[0] + 1) if shape[0] % d == 0]))
    return f"shuffle({groups})", shape


SHUFFLE = Op(
    "shuffle", "channel shuffle (ShuffleNet): view the channels as groups x (C/groups), transpose, "
    "flatten, as torchvision's channel_shuffle",
    (int_attr("groups", doc="channel groups"),),
    positional=("groups",), notation=_shuffle_notation, derive=no_derived, shape=_shuffle_shape,
    weights=no_weights, macs=no_macs, receptive_field=same_field, counts_as_activation=True,
    merge_word=None, shape_only_inputs=frozenset(), writable=True, activation=False,
    takes_activation=False, colour="#f0f0f0", generate=_shuffle_generate, explain=_shuffle_explain)
