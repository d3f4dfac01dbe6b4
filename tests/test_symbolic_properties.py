"""Generated programs with size names (issue 15, item 5): for each program of netdsl.testing's
generator, checked with `input CxHxW`, the sizes netdsl calls valid are exactly those the concrete
checker accepts, an invalid size fails at the layer the conditions name, and every valid size
runs in the NumPy and torch backends with the same weights and the same result."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import netdsl
from netdsl.errors import NetDSLError, NetDSLShapeError
from netdsl.shapes import infer_shapes
from netdsl.testing import programs

torch = pytest.importorskip("torch")


def input_shape(program) -> tuple:
    first = program.text.splitlines()[0]  # the generator writes `input 3x7x9` first
    return tuple(int(d) for d in first.split()[1].split("x"))


def symbolic(program):
    """The program's net with its height and width as names, or None (flat input, or a net whose
    conditions tie H and W together)."""
    if len(input_shape(program)) != 3:
        return None
    try:
        return netdsl.parse(program.text, input=f"{input_shape(program)[0]}xHxW")
    except NetDSLShapeError as error:
        # out of the solver's reach: sizes tied together, or a flattened size (a polynomial, H*W)
        # that a rule must compare as a number
        assert "tied together" in error.message or "formula in the input's sizes" in error.message, \
            str(error)
        return None


def first_failing_layer(net, values: dict, strict: bool):
    """The node whose condition fails first at these sizes, as the concrete checker meets them."""
    for node_id, condition in net.conditions:
        if (strict or not condition.fit) and not condition.holds(values):
            return node_id
    return None


def sizes_to_try(sizes, drawn: int, data) -> list:
    """The smallest valid size, two random valid sizes up to 4x it (or the drawn size), and the
    nearest invalid size on each side of each."""
    smallest = sizes.smallest()
    top = 4 * max(smallest, drawn)
    valid = [smallest] + [v for v in (data.draw(st.integers(smallest, top)) for _ in range(2)) if v in sizes]
    tried = set(valid)
    for v in list(valid):
        below = next((x for x in range(v - 1, 0, -1) if x not in sizes), None)
        above = next((x for x in range(v + 1, v + 4 * sizes.modulus + 2) if x not in sizes), None)
        tried |= {x for x in (below, above) if x is not None}
    return sorted(tried)


@settings(max_examples=100)
@given(programs(), st.data())
def test_valid_sizes_are_the_sizes_that_check_and_invalid_ones_fail_where_said(program, data):
    net = symbolic(program)
    assume(net is not None)
    c, h, w = input_shape(program)
    assert h in net.valid_sizes["H"] and w in net.valid_sizes["W"]  # the size it was written for
    for strict, sets in ((False, net.valid_sizes), (True, net.strict_sizes)):
        if sets["H"].is_empty():
            continue
        for size in sizes_to_try(sets["H"], h, data):
            fixed_w = w if w in sets["W"] else sets["W"].smallest()
            if fixed_w is None:
                break
            values = {"H": size, "W": fixed_w}
            try:
                concrete = infer_shapes(net.graph, (c, size, fixed_w), strict=strict)
            except NetDSLShapeError as error:
                assert size not in sets["H"], (size, error.render())
                culprit = net.graph.nodes[first_failing_layer(net, values, strict)]
                assert error.span == culprit.span, (size, error.render(), culprit.name)
                continue
            assert size in sets["H"], (size, strict)
            for formula, shape in zip(net.shapes, concrete.shapes):
                assert tuple(d if isinstance(d, int) else d.evaluate(values) for d in formula) == shape


@settings(max_examples=60)
@given(programs(), st.data())
def test_every_valid_size_runs_in_numpy_and_torch_with_one_set_of_weights(program, data):
    net = symbolic(program)
    assume(net is not None and not net.size_dependent_weights)
    c = input_shape(program)[0]
    numpy_module = net.compile("numpy", dtype="float64", seed=0).eval()
    torch_module = net.compile("torch", dtype="float64", weights=numpy_module.weights).eval()
    for size in sizes_to_try(net.valid_sizes["H"], input_shape(program)[1], data):
        width = data.draw(st.integers(1, 40).filter(lambda v: v in net.valid_sizes["W"]), label="width") \
            if net.valid_sizes["W"].smallest() <= 40 else net.valid_sizes["W"].smallest()
        x = np.random.default_rng(size).standard_normal((2, c, size, width))
        if size not in net.valid_sizes["H"]:
            with pytest.raises(ValueError, match="does not fit"):
                numpy_module.run(x)
            continue
        expected = net.at(f"{c}x{size}x{width}").output_shape
        y = numpy_module.run(x)
        assert y.shape == (2, *expected)
        np.testing.assert_allclose(torch_module.run(x), y, rtol=1e-9, atol=1e-12)
