"""netdsl.symbolic: exact size algebra, polynomials, and the valid-size solver against brute force.

The oracles are independent of the algebra: netdsl.ops.base.window (the concrete rule every op uses),
plain-integer chains written here, and netdsl's own concrete shape checker (infer_shapes) run at
every size up to a bound.
"""
from __future__ import annotations

import doctest
import itertools

import pytest
from hypothesis import given, settings, strategies as st

import netdsl
from conftest import ROOT
from netdsl.errors import NetDSLError
from netdsl.ops.base import window
from netdsl.shapes import infer_shapes
from netdsl.symbolic import (Constraints, Poly, Size, SizeSet, SymbolicError, deconv_out, floor_div,
                             parse_input, parse_size, solve, window_out, window_unused)

H, W = Size.name("H"), Size.name("W")


# -- the algebra -------------------------------------------------------------------------------------

def test_canonical_forms_fold_and_collapse():
    assert (H // 2) // 2 == H // 4
    assert (2 * H) // 2 == H
    assert (H + 2 * 1 - 3) // 1 + 0 == H - 1
    assert parse_size("(H - 4)//2 + 1") == H // 2 - 1
    assert str(parse_size("(H - 4)//2 + 1")) == "H//2 - 1"
    assert ((H // 2 + 1) // 2) == (H + 2) // 4
    assert str((4 * H + 6) // 4) == "H + 1"
    assert (2 * H + 1) // 4 == H // 2  # common factor: floor((2H + 1)/4) = floor(H/2)
    assert 3 - H + H == 3 and (H - H).is_constant
    assert H.ceil_div(2) == (H + 1) // 2
    assert str(16 * ((H + 4) // 16) - 188) == "16*((H + 4)//16) - 188"


def test_printing_round_trips_through_the_reader():
    exprs = [window_out(H, 3, 2, 1), window_out(window_out(H, 3, 2, 1), 2, 2, 0, 1, True) * 3 - 7,
             16 * ((H + 4) // 16) - 188, -(H // 3), floor_div(-H, 2), (H + W) // 2]
    for e in exprs:
        assert parse_size(str(e)) == e, str(e)


def test_equivalent_decides_what_the_canonical_form_leaves_apart():
    a, b = -(H // 2), -H + (H + 1) // 2
    assert a != b and a.equivalent(b)
    assert not (H // 2).equivalent((H + 1) // 2)
    assert (W - H // 2).equivalent(W - H + (H + 1) // 2) and W - H // 2 != W - H + (H + 1) // 2
    assert not ((H + W) // 2).equivalent(H // 2 + W // 2)


@pytest.mark.parametrize("k,stride,pad,dilation,ceil", [
    combo for combo in itertools.product(range(1, 6), range(1, 5), range(0, 5), (1, 2), (False, True))
    if not combo[4] or combo[2] <= combo[0] // 2 or combo[2] >= combo[3] * (combo[0] - 1) + 1])
def test_window_formulas_equal_the_concrete_rule_at_every_size(k, stride, pad, dilation, ceil):
    out = window_out(H, k, stride, pad, dilation, ceil)
    unused = window_unused(H, k, stride, pad, dilation, ceil)
    for x in range(-3, 90):
        concrete_out, concrete_unused = window(x, k, stride, pad, dilation, ceil)
        assert out.evaluate({"H": x}) == concrete_out, (x, str(out))
        if concrete_out >= 1 and x >= 1:
            symbolic_unused = 0 if unused is None else max(0, unused.evaluate({"H": x}))
            assert symbolic_unused == concrete_unused, (x, str(unused))


def test_deconv_formula():
    e = deconv_out(H, k=4, stride=2, pad=1, dilation=1, output_pad=1)
    assert str(e) == "2*H + 1"
    assert [e.evaluate({"H": x}) for x in (1, 7)] == [3, 15]


def test_evaluation_is_exact_for_large_sizes():
    e = window_out(window_out(H, 3, 2, 1), 7, 3, 0, 2, False)
    x = 10 ** 30 + 7
    assert e.evaluate({"H": x}) == (((x + 1) // 2) + 2 * 0 - 13) // 3 + 1


def test_parse_input_names_and_errors():
    c, h, w = parse_input("3xHxW")
    assert (c, h, w) == (Size(3), H, W)
    _, a, b = parse_input("1xSxS")
    assert a == b  # the same name twice is the same size
    for bad in ("3xH-1xW", "0x2x2", "3xxW", "3x__import__('os')xW", "3xHmax"):
        with pytest.raises(SymbolicError):
            parse_input(bad)
    for bad in ("H/2", "H*H", "(H", "H//0", "H//W", "eval(1)", "H**2", ""):
        with pytest.raises(SymbolicError):
            parse_size(bad)
    assert parse_size("ceil((H - 3)/2) + 1") == (H - 3 + 1) // 2 + 1
    for too_long in ("(" * 5000 + "H" + ")" * 5000, "+".join(["H"] * 6000)):
        with pytest.raises(SymbolicError, match="too long"):
            parse_size(too_long)
    assert parse_size("(" * 150 + "H" + ")" * 150) == H
    with pytest.raises(SymbolicError, match="no value given for size W"):
        (H + W // 2).evaluate({"H": 3})


def test_equal_values_hash_alike():
    assert {Size(3): "a"}[3] == "a" and hash(Size(3)) == hash(3)
    assert hash(Poly.of(H + 1)) == hash(H + 1) and Poly.of(H + 1) == H + 1
    assert len({H // 4, (H // 2) // 2, Poly.of(H // 4)}) == 1


# -- statistics as polynomials -----------------------------------------------------------------------

def test_vit_token_count_and_conv_macs():
    tokens = (H // 16) * (W // 16) + 1
    assert isinstance(tokens, Poly)
    assert str(tokens) == "(H//16)*(W//16) + 1"
    assert tokens.evaluate({"H": 224, "W": 224}) == 197
    assert tokens.evaluate({"H": 384, "W": 240}) == 24 * 15 + 1
    sizes = Constraints()
    sizes.divisible(H, 16)
    sizes.divisible(W, 16)
    assert tokens.format(sizes.solve(strict=True)) == "(H/16)*(W/16) + 1"
    # conv3-64/2 on 3xHxW: MACs = Ho*Wo*64*3*3*3
    ho, wo = window_out(H, 3, 2, 1), window_out(W, 3, 2, 1)
    macs = ho * wo * 64 * 27
    assert str(macs) == "1728*((H + 1)//2)*((W + 1)//2)"
    for x, y in [(224, 224), (225, 17), (1, 1)]:
        assert macs.evaluate({"H": x, "W": y}) == 1728 * window(x, 3, 2, 1, 1, False)[0] * window(y, 3, 2, 1, 1, False)[0]
    square = ho * ho - ho + 3
    assert str(square) == "((H + 1)//2)**2 - (H + 1)//2 + 3"
    assert square.evaluate({"H": 9}) == 25 - 5 + 3
    assert (ho * 2 - ho - ho) == 0 and Poly.of(ho) + 1 == ho + 1


# -- the solver against brute force ------------------------------------------------------------------

def _conv_step(draw):
    k = draw(st.integers(1, 5))
    dilation = draw(st.integers(1, 2))
    return ("conv", k, draw(st.integers(1, 3)), draw(st.integers(0, dilation * (k - 1))), dilation)


def _pool_step(draw):
    k = draw(st.integers(1, 4))
    return ("pool", k, draw(st.integers(1, 3)), draw(st.integers(0, k // 2)), draw(st.booleans()))


def _deconv_step(draw):
    stride = draw(st.integers(1, 3))
    return ("deconv", draw(st.integers(1, 4)), stride, draw(st.integers(0, 2)),
            draw(st.integers(0, stride - 1)))


@st.composite
def chains(draw, depth=0):
    steps = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "pool", "deconv", "fork"] if depth < 2 else ["conv", "pool"]))
        if kind == "fork":
            steps.append(("fork", draw(chains(depth + 1)), draw(chains(depth + 1)),
                          draw(st.sampled_from(["add", "crop"])), draw(st.integers(0, 3))))
        else:
            steps.append({"conv": _conv_step, "pool": _pool_step, "deconv": _deconv_step}[kind](draw))
    return steps


def symbolic_chain(x: Size, steps, cs: Constraints) -> Size:
    for step in steps:
        kind = step[0]
        if kind == "conv":
            _, k, s, p, d = step
            unused = window_unused(x, k, s, p, d, False)
            x = window_out(x, k, s, p, d, False)
        elif kind == "pool":
            _, k, s, p, ceil = step
            unused = window_unused(x, k, s, p, 1, ceil)
            x = window_out(x, k, s, p, 1, ceil)
        elif kind == "deconv":
            _, k, s, p, op = step
            unused, x = None, deconv_out(x, k, s, p, 1, op)
        else:
            _, a, b, merge, offset = step
            ya, yb = symbolic_chain(x, a, cs), symbolic_chain(x, b, cs)
            if merge == "add":
                cs.equal(ya, yb)
            else:  # crop branch a to branch b's size at an offset
                cs.at_most(yb + offset, ya)
            x, unused = yb, None
        cs.at_least(x, 1)
        if unused is not None:
            cs.at_most(unused, 0, fit=True)
    return x


def concrete_chain(x: int, steps, strict: bool) -> int | None:
    """Plain integers, netdsl's concrete window rule; None where the network has no valid shape."""
    for step in steps:
        kind = step[0]
        if kind in ("conv", "pool"):
            _, k, s, p, extra = step
            d, ceil = (extra, False) if kind == "conv" else (1, extra)
            x, unused = window(x, k, s, p, d, ceil)
            if strict and unused and x >= 1:
                return None
        elif kind == "deconv":
            _, k, s, p, op = step
            x = (x - 1) * s - 2 * p + (k - 1) + 1 + op
        else:
            _, a, b, merge, offset = step
            ya, yb = concrete_chain(x, a, strict), concrete_chain(x, b, strict)
            if ya is None or yb is None or (ya != yb if merge == "add" else offset + yb > ya):
                return None
            x = yb
        if x < 1:
            return None
    return x


def assert_solver_matches_brute_force(sizes: SizeSet, is_valid, upto: int):
    brute = [x for x in range(1, upto + 1) if is_valid(x)]
    assert sizes.values(upto) == brute, sizes.describe()
    for probe in (1, upto // 3, upto // 2, upto - 5):  # nearest valid sizes on each side
        below, above = sizes.nearest(probe)
        assert below == max((x for x in brute if x < probe), default=None)
        if above is not None and above <= upto:
            assert above == min(x for x in brute if x > probe)
        elif above is None:
            assert not [x for x in brute if x > probe]


def described_sizes(text: str, name: str, upto: int) -> list | None:
    """Read SizeSet.describe()'s text back into its members up to `upto` (None if it was cut)."""
    if text == f"no valid {name}":
        return []
    text, _, also = text.partition(f"; also {name} = ")
    if text.startswith(f"{name} = ") and "k" not in text:
        text, also = "", text[len(f"{name} = "):]
    if "..." in also:
        return None
    members = {int(v) for v in also.split(", ") if v}
    for part in filter(None, text.split("; or ")):
        forms, _, bound = part.partition(f", {name} >= ")
        if forms.startswith(f"{name} >= "):
            forms, bound = "", forms[len(f"{name} >= "):]
        start = int(bound) if bound else 1
        residues = []
        for form in forms[len(f"{name} = "):].split(" or ") if forms else ["1k"]:
            m, _, r = form.partition("k")
            residues.append((int(m), int(r.replace(" + ", "") or 0)))
        members |= {x for x in range(start, upto + 1) if any(x % m == r % m for m, r in residues)}
    return sorted(x for x in members if x <= upto)


@settings(max_examples=150, deadline=None)
@given(chains())
def test_solver_equals_brute_force_on_random_systems(steps):
    cs = Constraints()
    symbolic_chain(H, steps, cs)
    for strict in (False, True):
        sizes = cs.solve(["H"], strict=strict)["H"]
        upto = min(3000, 4 * sizes.modulus + 200)
        assert_solver_matches_brute_force(sizes, lambda x: concrete_chain(x, steps, strict) is not None, upto)
        described = described_sizes(sizes.describe(), "H", upto)
        assert described is None or described == sizes.values(upto), sizes.describe()
        # and the constraint system itself agrees with the concrete chain (the algebra's evaluation)
        assert all(cs.holds({"H": x}, strict) == (concrete_chain(x, steps, strict) is not None)
                   for x in range(1, 120))


def test_two_residue_classes():
    """A ceil-mode pool then a floor pool, strict: ceil(H/2) must be even, so H = 4k or 4k + 3."""
    cs = Constraints()
    steps = [("pool", 2, 2, 0, True), ("pool", 2, 2, 0, False)]
    symbolic_chain(H, steps, cs)
    strict = cs.solve(strict=True)["H"]
    assert strict.describe() == "H = 4k or 4k + 3"
    assert_solver_matches_brute_force(strict, lambda x: concrete_chain(x, steps, True) is not None, 500)
    assert cs.solve()["H"].describe() == "H >= 3"
    assert strict.nearest(5) == (4, 7)


def test_exact_printing_only_where_exact():
    every = Constraints().solve(["H"])
    assert (H // 4).format(every) == "H//4"
    odd = Constraints()
    odd.equal(H - 2 * (H // 2), 1)
    odd_sizes = odd.solve()
    assert odd_sizes["H"].describe() == "H = 2k + 1"
    assert ((H - 1) // 2).format(odd_sizes) == "(H - 1)/2"
    assert (H // 4).format(odd_sizes) == "H//4"  # 1 -> 0, 3 -> 0, 5 -> 1, 7 -> 1: not affine
    big = Constraints()
    big.at_least(H, 100)
    big.at_most(H, 103)
    assert (H // 4).format(big.solve()) == "H//4"  # 25 on 100..103, which is not H/4 + c
    big.at_most(H, 102)
    assert big.solve()["H"].describe() == "H = 100, 101, 102"


def test_exceptions_and_empty_sets_are_reported():
    cs = Constraints()
    cs.at_most(H, 5)
    cs.at_least(H, 2)
    assert cs.solve()["H"].describe() == "H = 2, 3, 4, 5"
    cs.equal(H // 2, 7)
    assert cs.solve()["H"].describe() == "no valid H"
    cs = Constraints()
    cs.at_least(H, 0)
    cs.equal(1, 2)
    assert cs.solve(["H"])["H"].is_empty()
    cs = Constraints()
    cs.at_least(H + W, 3)
    with pytest.raises(SymbolicError, match="one name per constraint"):
        cs.solve()


def test_descriptions_choose_the_briefest_modulus():
    assert described_sizes("H = 2, 3, 4, 5", "H", 10) == [2, 3, 4, 5]
    odd = (H + 1) // 2 - H // 2  # 1 for odd H, 0 for even
    cs = Constraints()
    cs.at_least(H - 10 + 5 * odd, 0)  # odd H from 5, even H from 10
    sizes = cs.solve()["H"]
    assert sizes.describe() == "H >= 9; also H = 5, 7"
    assert sizes.values(14) == [5, 7, 9, 10, 11, 12, 13, 14] == described_sizes(sizes.describe(), "H", 14)
    cs = Constraints()
    cs.at_least(H - 100 + 95 * odd, 0)  # odd H from 5, even H from 100: two bounds read better
    sizes = cs.solve()["H"]
    assert sizes.describe() == "H = 2k + 1, H >= 5; or H = 2k, H >= 100"
    assert described_sizes(sizes.describe(), "H", 300) == sizes.values(300)
    cs.at_least(100 * (H // 9 - (H - 1) // 9) + 30 - H, 0)  # H <= 30, or H <= 130 and 9 | H
    sizes = cs.solve()["H"]
    assert sizes.describe() == "H = 5, 7, 9, 11, 13, 15, 17, 19, ... (20 sizes)"
    assert sizes.values(1000) == [*range(5, 30, 2), 45, 63, 81, 99, 108, 117, 126]


# -- the original U-Net, written out by hand ---------------------------------------------------------

def unet_constraints(x: Size) -> tuple[Size, Constraints]:
    """Ronneberger et al. 2015: two valid 3x3 convs per level, 2x2 max pools, 2x2 up-convs, centre
    crops of the skip to the upsampled size (an even margin), concat. 572 -> 388."""
    cs = Constraints()
    skips = []
    for _ in range(4):
        for _ in range(2):
            x = window_out(x, 3)
            cs.at_least(x, 1)
        skips.append(x)
        cs.at_most(window_unused(x, 2, 2), 0, "maxpool2/2 leaves a row", fit=True)
        x = window_out(x, 2, 2)
        cs.at_least(x, 1)
    for _ in range(2):
        x = window_out(x, 3)
        cs.at_least(x, 1)
    for _ in range(4):
        x = deconv_out(x, 2, 2)
        skip = skips.pop()
        cs.at_most(x, skip, "crop inside its source")
        cs.divisible(skip - x, 2, "centre crop: equal margins", fit=True)
        for _ in range(2):
            x = window_out(x, 3)
            cs.at_least(x, 1)
    return x, cs


def unet_concrete(x: int, strict: bool) -> int | None:
    skips = []
    for _ in range(4):
        x -= 4
        if x < 1:
            return None
        skips.append(x)
        if strict and x % 2:
            return None
        x //= 2
        if x < 1:
            return None
    x -= 4
    if x < 1:
        return None
    for _ in range(4):
        x *= 2
        skip = skips.pop()
        if x > skip or (strict and (skip - x) % 2):
            return None
        x -= 4
        if x < 1:
            return None
    return x


def test_unet_valid_sizes():
    out, cs = unet_constraints(H)
    strict = cs.solve(strict=True)["H"]
    assert strict.describe() == "H = 16k + 12, H >= 188"  # the figure, confirmed below
    assert_solver_matches_brute_force(strict, lambda x: unet_concrete(x, True) is not None, 2000)
    assert strict.nearest(570) == (556, 572)
    assert out.evaluate({"H": 572}) == 388 == unet_concrete(572, True)
    assert out.format({"H": strict}) == "H - 184"
    # without --strict (floor pooling, a crop margin rounded down) every size from 188 runs
    loose = cs.solve()["H"]
    assert loose.describe() == "H >= 188"
    assert_solver_matches_brute_force(loose, lambda x: unet_concrete(x, False) is not None, 2000)


# -- real networks: netdsl's concrete shape checker as the oracle ------------------------------------

def symbolic_shapes(graph, input_shape) -> tuple[list, Constraints]:
    """A symbolic twin of infer_shapes for the ops these networks use (the lead moves this into the
    op records later); returns per-node shapes (tuples of Size) and the derived constraints."""
    cs = Constraints()
    shapes: list = []
    for node in graph.nodes:
        a = node.attrs
        ins = [shapes[i] for i in node.inputs] if node.inputs else [input_shape]
        first = ins[0]
        if node.op in ("conv", "maxpool", "avgpool"):
            k, s, p = a["k"], a["stride"], a["pad"]
            d, ceil = (a["dilation"], False) if node.op == "conv" else (1, a["ceil"])
            hw = []
            for size in first[1:]:
                hw.append(window_out(size, k, s, p, d, ceil))
                unused = window_unused(size, k, s, p, d, ceil)
                if unused is not None:
                    cs.at_most(unused, 0, node.name, fit=True)
            shape = (Size(a.get("c", 0)) if node.op == "conv" else first[0], *hw)
        elif node.op == "deconv":
            shape = (Size(a["c"]), *(deconv_out(size, a["k"], a["stride"], a["pad"], a["dilation"],
                                                a["output_pad"]) for size in first[1:]))
        elif node.op == "gap":
            shape = (first[0], Size(1), Size(1))
        elif node.op == "fc":
            shape = (Size(a["c"]),)
        elif node.op == "crop":
            like = ins[1]
            for src, want in zip(first[1:], like[1:]):
                cs.at_most(want + a["offset"], src, node.name)
            shape = (first[0], *like[1:])
        elif node.op == "add":
            for other in ins[1:]:
                for x, y in zip(first, other):
                    cs.equal(x, y, node.name)
            shape = first
        elif node.op in ("bn", "relu", "dropout", "input"):
            shape = first
        else:
            raise AssertionError(f"symbolic_shapes has no rule for {node.op}")
        for size in shape:
            cs.at_least(size, 1, node.name)
        shapes.append(shape)
    return shapes, cs


def concretely_valid(graph, size: int, strict: bool) -> bool:
    try:
        infer_shapes(graph, (3, size, size), strict=strict)
    except NetDSLError:
        return False
    return True


@pytest.mark.parametrize("name,upto", [("resnet50", 260), ("fcn:fcn32s", 260), ("fcn:fcn16s", 200),
                                       ("fcn:fcn8s", 200)])
def test_real_network_valid_sizes_match_the_concrete_checker(name, upto):
    graph = netdsl.load(name).graph
    shapes, cs = symbolic_shapes(graph, (Size(3), H, H))
    for strict in (False, True):
        sizes = cs.solve(strict=strict)["H"]
        assert_solver_matches_brute_force(sizes, lambda x: concretely_valid(graph, x, strict), upto)
    for x in (224, 500):  # and every node's shape agrees
        concrete = infer_shapes(graph, (3, x, x)).shapes
        assert [tuple(d.evaluate({"H": x}) for d in shape) for shape in shapes] == list(concrete)


def test_resnet50_smallest_size_and_fcn_sets():
    """ResNet-50 takes any size from 1 up (padded stride-2 windows never leave a row unused, and the
    1x1 stride-2 shortcuts skip rows on purpose), so its smallest valid size is 1, strict or not.
    FCN-32s' pad of 100 and ceil-mode pools make every size valid and give back HxW exactly."""
    graph = netdsl.load("resnet50").graph
    shapes, cs = symbolic_shapes(graph, (Size(3), H, H))
    assert cs.solve()["H"].smallest() == 1 == cs.solve(strict=True)["H"].smallest()
    assert cs.solve()["H"].describe() == "H >= 1" == cs.solve(strict=True)["H"].describe()
    assert [str(d) for d in shapes[-3]] == ["2048", "(H + 31)//32", "(H + 31)//32"]  # before gap
    assert concretely_valid(graph, 1, strict=True)
    fcn = netdsl.load("fcn:fcn32s").graph
    shapes, cs = symbolic_shapes(fcn, (Size(3), H, H))
    assert cs.solve()["H"].describe() == "H >= 1" == cs.solve(strict=True)["H"].describe()
    by_name = {node.name: shape for node, shape in zip(fcn.nodes, shapes)}
    assert str(by_name["features.block4.maxpool1"][1]) == "(H + 5)//32 + 7"
    assert str(by_name["features.score"][1]) == "(H + 5)//32 + 1"
    assert str(by_name["up1.deconv1"][1]) == "32*((H + 5)//32) + 64"
    assert [str(d) for d in shapes[-1]] == ["21", "H", "H"]


def test_docs_examples():
    """Every example in docs/symbolic.md prints what the module gives."""
    result = doctest.testfile(str(ROOT / "docs" / "symbolic.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 30 and result.failed == 0
