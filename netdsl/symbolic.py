"""Symbolic sizes: exact floor arithmetic in named sizes, polynomials of them, and valid-size sets.

Standard library only. Three layers (docs/symbolic.md):

- `Size`: an integer-valued affine-floor expression, `const + sum(coeff * atom)`, an atom being a
  size name (`H`) or `Floor(num, q)` = floor(num / q) for a Size `num` and an integer q >= 2. Every
  constructor normalises, so equal forms compare equal: `(H//2)//2 == H//4`, `2*H//2 == H`.
- `Poly`: sums of products of atoms with integer coefficients (MACs, activation counts, token counts).
- `Constraints` / `solve`: `expr >= 0` and `expr == 0` in one name each, solved exactly into a
  `SizeSet`: per residue class modulo M, an interval of sizes; printed as "H = 16k + 12, H >= 188".

Example:
    >>> H = Size.name("H")
    >>> out = window_out(H, k=3, stride=2, pad=1)
    >>> str(out), out.evaluate({"H": 224})
    ('(H + 1)//2', 112)
"""
from __future__ import annotations

import re
from fractions import Fraction
from math import gcd
from typing import Iterable, Mapping

__all__ = ["SymbolicError", "Size", "Floor", "Poly", "Constraint", "Constraints", "SizeSet",
           "floor_div", "parse_size", "parse_input", "window_out", "window_unused", "deconv_out", "solve"]


class SymbolicError(ValueError):
    """A size expression or input string that cannot be read, or a system the solver cannot solve."""


def _lcm(a: int, b: int) -> int:
    return a * b // gcd(a, b)


class Floor:
    """floor(num / q), q >= 2, `num` already normalised (coefficients in [0, q), no common factor)."""
    __slots__ = ("num", "q", "_hash", "_text")

    def __init__(self, num: "Size", q: int):
        self.num, self.q = num, q
        self._hash = hash((num, q))
        self._text = (f"{num}//{q}" if not num.const and len(num.terms) == 1 and num.terms[0][1] == 1
                      and isinstance(num.terms[0][0], str) else f"({num})//{q}")

    def __eq__(self, other) -> bool:
        return isinstance(other, Floor) and self.q == other.q and self.num == other.num

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return self._text

    __repr__ = __str__


def _atom_key(atom) -> tuple:
    return (0, atom) if isinstance(atom, str) else (1, atom._text)


class Size:
    """An exact integer size expression. Build with Size.name / Size.const / parse_size and + - * // ."""
    __slots__ = ("const", "terms", "_hash", "_names")

    def __init__(self, const: int = 0, terms: Iterable = ()):
        # terms: (atom, nonzero int coefficient), sorted by atom; use _make, which sorts and drops zeros
        self.const = const
        self.terms = terms if type(terms) is tuple else tuple(terms)
        self._hash: int | None = None  # computed on first use: most intermediate sizes are never hashed
        self._names: frozenset | None = None

    @staticmethod
    def _make(const: int, coeffs: Mapping) -> "Size":
        return Size(const, sorted(((a, c) for a, c in coeffs.items() if c), key=lambda t: _atom_key(t[0])))

    @staticmethod
    def name(name: str) -> "Size":
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SymbolicError(f"not a size name: {name!r}")
        return Size(0, ((name, 1),))

    @staticmethod
    def of(value: "Size | int") -> "Size":
        if isinstance(value, Size):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return Size(value)
        raise TypeError(f"not a size: {value!r}")

    # -- arithmetic --------------------------------------------------------------------------------
    def __add__(self, other) -> "Size":
        if isinstance(other, int):
            return Size(self.const + other, self.terms) if other else self
        other = Size.of(other)
        if not other.terms:
            return Size(self.const + other.const, self.terms)
        coeffs = dict(self.terms)
        for atom, c in other.terms:
            coeffs[atom] = coeffs.get(atom, 0) + c
        return Size._make(self.const + other.const, coeffs)

    __radd__ = __add__

    def __neg__(self) -> "Size":
        return Size(-self.const, tuple((a, -c) for a, c in self.terms))

    def __sub__(self, other) -> "Size":
        if isinstance(other, int):
            return Size(self.const - other, self.terms) if other else self
        return self + (-Size.of(other))

    def __rsub__(self, other) -> "Size":
        return Size.of(other) + (-self)

    def __mul__(self, other):
        if isinstance(other, int) and not isinstance(other, bool):
            if other == 0:
                return Size(0)
            return Size(self.const * other, tuple((a, c * other) for a, c in self.terms))
        if isinstance(other, (Size, Poly)):
            return Poly.of(self) * other  # a product of sizes is a statistic, not a size
        return NotImplemented

    __rmul__ = __mul__

    def __floordiv__(self, q: int) -> "Size":
        return floor_div(self, q)

    def ceil_div(self, q: int) -> "Size":
        """ceil(self / q), as floor((self + q - 1) / q): sizes are integers."""
        return floor_div(self + (q - 1), q)

    def __eq__(self, other) -> bool:
        if other is self:  # the shape checker's sets and caches meet the same objects again
            return True
        if type(other) is Size:
            return self.const == other.const and self.terms == other.terms
        if isinstance(other, int):
            return not self.terms and self.const == other
        if isinstance(other, Poly):
            return other == self
        return False

    def __hash__(self) -> int:
        if self._hash is None:  # a constant hashes as its int, since Size(3) == 3
            self._hash = hash((self.const, self.terms)) if self.terms else hash(self.const)
        return self._hash

    # -- queries -----------------------------------------------------------------------------------
    @property
    def is_constant(self) -> bool:
        return not self.terms

    def names(self) -> frozenset:
        if self._names is None:
            found: set = set()
            for atom, _ in self.terms:
                found |= {atom} if isinstance(atom, str) else atom.num.names()
            self._names = frozenset(found)
        return self._names

    def evaluate(self, values: Mapping[str, int]) -> int:
        """The exact value at concrete sizes: Size evaluation uses Python's integer floor division."""
        total = self.const
        try:
            for atom, c in self.terms:
                total += c * (values[atom] if isinstance(atom, str) else atom.num.evaluate(values) // atom.q)
        except KeyError as missing:
            raise SymbolicError(f"no value given for size {missing.args[0]}") from None
        return total

    def slope(self, name: str | None = None) -> Fraction:
        """d(self)/d(name) on average (default: every name): floor(x/q) has slope 1/q."""
        total = Fraction(0)
        for atom, c in self.terms:
            if isinstance(atom, str):
                total += c if name is None or atom == name else 0
            else:
                total += c * atom.num.slope(name) / atom.q
        return total

    def common_period(self) -> int:
        """A period P in every name at once (the product of nested divisors): coarser than period()."""
        period = 1
        for atom, _ in self.terms:
            if isinstance(atom, Floor):
                period = _lcm(period, atom.num.common_period() * atom.q)
        return period

    def equivalent(self, other) -> bool:
        """Whether the two expressions agree at every integer point: decided exactly.

        The canonical form makes most equal expressions identical, but not all (-(H//2) is stored
        apart from -H + (H + 1)//2). Their difference d is quasi-affine: it is zero everywhere iff
        its slope in each name is 0 and it is 0 on one period cube.
        """
        d = self - Size.of(other)
        names = sorted(d.names())
        if any(d.slope(n) for n in names):
            return False
        P = d.common_period()
        points: list[dict] = [{}]
        for n in names:
            points = [dict(p, **{n: v}) for p in points for v in range(P)]
        return all(d.evaluate(p) == 0 for p in points)

    def period(self) -> int:
        """P with f(x + P) = f(x) + slope*P for every integer x (one name): lcm of the floors' periods."""
        period = 1
        for atom, _ in self.terms:
            if isinstance(atom, Floor):
                inner = atom.num.period()
                step = atom.num.slope() * inner  # an integer: what num grows by over one inner period
                period = _lcm(period, inner * atom.q // gcd(int(step), atom.q))
        return period

    def __str__(self) -> str:
        return _format_linear(self.const, [(str(a), c) for a, c in self.terms])

    def __repr__(self) -> str:
        return f"Size({str(self)!r})"

    def format(self, valid: "Mapping[str, SizeSet] | None" = None) -> str:
        """Printed as papers write it: `H/16 - 3` where that is exact on the valid sizes, else `//`."""
        exact = _exact_affine(self, valid) if valid else None
        return exact if exact is not None else str(self)


def _format_linear(const, parts: list) -> str:
    """`2*H + (H + 1)//2 - 3`: terms in order, then the constant; `H`, `-H`, `2*H`."""
    out = ""
    for text, c in parts:
        sign = "-" if c < 0 else "+"
        mag = abs(c)
        if mag != 1 and (" " in text or "//" in text) and not _parenthesised(text):
            text = f"({text})"  # 16*((H + 4)//16), not 16*(H + 4)//16
        body = text if mag == 1 else f"{mag}*{text}"
        if not out and sign == "-" and "//" in body and not _parenthesised(body):
            body = f"({body})"  # -(H//3): a leading -H//3 would read as (-H)//3
        out = (f"-{body}" if sign == "-" else body) if not out else f"{out} {sign} {body}"
    if const or not out:
        out = str(const) if not out else f"{out} {'-' if const < 0 else '+'} {abs(const)}"
    return out


def _parenthesised(text: str) -> bool:
    """Whether `text` is one parenthesised group: (H + 1), not (H + 1)//2."""
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and i < len(text) - 1:
            return False
    return True


def floor_div(e: Size, q: int) -> Size:
    """floor(e / q), normalised: integer parts pulled out, common factors cancelled, nests collapsed."""
    if not isinstance(q, int) or q < 1:
        raise SymbolicError(f"division by {q!r}: the divisor must be a positive integer")
    e = Size.of(e)
    if q == 1:
        return e
    while True:  # q >= 2 on every pass
        pulled: dict = {}
        rest: dict = {}
        for atom, c in e.terms:
            t, r = divmod(c, q)
            if t:
                pulled[atom] = t
            if r:
                rest[atom] = r
        t0, r0 = divmod(e.const, q)
        outside = Size._make(t0, pulled)
        if not rest:
            return outside  # 0 <= r0 < q
        g = q
        for c in rest.values():
            g = gcd(g, c)
        if g > 1:  # floor((g*A + r0) / (g*q')) = floor((A + r0//g) / q') for integer A
            rest = {a: c // g for a, c in rest.items()}
            r0, q = r0 // g, q // g
            if q == 1:
                return outside + Size._make(r0, rest)
        # floor((floor(X/a) + Y) / q) = floor((X + a*Y) / (a*q)) for integer Y: collapse the nest
        nested = next((a for a, c in rest.items() if isinstance(a, Floor) and c == 1), None)
        if nested is not None:
            others = Size._make(r0, {a: c for a, c in rest.items() if a is not nested})
            inner = nested.num + others * nested.q
            if not outside.terms and not outside.const:
                e, q = inner, nested.q * q
                continue
            return outside + floor_div(inner, nested.q * q)
        return outside + Size(0, ((Floor(Size._make(r0, rest), q), 1),))


# -- exact printing on a valid set -------------------------------------------------------------------

def _exact_affine(e: Size, valid: Mapping) -> str | None:
    """`e` as slope*x + c when that holds at every valid size of its one name, else None."""
    names = e.names()
    if len(names) != 1:
        return None
    (name,) = names
    sizes = valid.get(name)
    if sizes is None or sizes.is_empty():
        return None
    slope = e.slope()
    # e is quasi-affine with period P: L/M consecutive members of each class mod M cover every
    # residue mod L = lcm(M, P) in it, so checking them checks every valid size
    per_class = _lcm(sizes.modulus, e.period()) // sizes.modulus
    offsets = {Fraction(e.evaluate({name: x})) - slope * x for x in sizes.sample(per_class)}
    if len(offsets) != 1:
        return None
    (offset,) = offsets
    if slope.denominator == 1 and offset.denominator == 1:
        return _format_linear(int(offset), [(name, int(slope))])
    if offset.denominator == 1 or offset.denominator < slope.denominator:
        # H/16 - 3: a fraction of the name, then a whole constant where it is one
        den = slope.denominator
        num = slope.numerator
        head = (f"{name}/{den}" if num == 1 else f"-{name}/{den}" if num == -1 else f"{num}*{name}/{den}")
        if offset.denominator == 1:
            return head if not offset else f"{head} {'-' if offset < 0 else '+'} {abs(offset)}"
    den = _lcm(slope.denominator, offset.denominator)  # (H - 124)/16
    return f"({_format_linear(int(offset * den), [(name, int(slope * den))])})/{den}"


# -- parsing -----------------------------------------------------------------------------------------

_MAX_TOKENS = 10_000
_MAX_NESTING = 200  # the reader recurses once per parenthesis
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(\*\*|//|[-+*/()]))")


def parse_size(text: str) -> Size:
    """Read `(H + 2*1 - 3)//2 + 1` (integers, names, + - * by an integer, // and `ceil(e/q)`).

    Data only: a small recursive-descent reader, no eval. Raises SymbolicError on anything else.
    """
    tokens: list = []
    pos = 0
    text = str(text)
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise SymbolicError(f"cannot read size expression at column {pos + 1}: {text!r}")
        tokens.append(("int", int(m[1])) if m[1] else ("name", m[2]) if m[2] else ("op", m[3]))
        pos = m.end()
    tokens.append(("end", None))
    if len(tokens) > _MAX_TOKENS or text.count("(") > _MAX_NESTING:
        raise SymbolicError(f"size expression too long ({len(tokens)} tokens, at most {_MAX_TOKENS}, "
                            f"and at most {_MAX_NESTING} parentheses)")
    index = 0

    def peek():
        return tokens[index]

    def take(kind=None, value=None):
        nonlocal index
        tok = tokens[index]
        if (kind and tok[0] != kind) or (value and tok[1] != value):
            raise SymbolicError(f"unexpected {tok[1] if tok[1] is not None else 'end'!s} in size "
                                f"expression {text!r}")
        index += 1
        return tok

    def expression():
        value = term()
        while peek() in (("op", "+"), ("op", "-")):
            op = take()[1]
            value = value + term() if op == "+" else value - term()
        return value

    def term():
        value = unary()
        while peek() in (("op", "*"), ("op", "//")):
            op = take()[1]
            right = unary()
            if op == "//":
                if not right.is_constant or right.const < 1:
                    raise SymbolicError(f"// needs a positive integer divisor in {text!r}")
                value = floor_div(value, right.const)
            else:
                if value.is_constant:
                    value, right = right, value
                if not right.is_constant:
                    raise SymbolicError(f"a size times a size is not a size in {text!r}")
                value = value * right.const
        return value

    def unary():
        if peek() == ("op", "-"):
            take()
            return -unary()
        tok = peek()
        if tok[0] == "int":
            take()
            return Size(tok[1])
        if tok == ("name", "ceil") and tokens[index + 1] == ("op", "("):
            take(), take()
            inner = expression()
            take("op", "/")
            q = take("int")[1]
            if q < 1:
                raise SymbolicError(f"ceil needs a positive integer divisor in {text!r}")
            take("op", ")")
            return inner.ceil_div(q)
        if tok[0] == "name":
            take()
            return Size.name(tok[1])
        take("op", "(")
        value = expression()
        take("op", ")")
        return value

    result = expression()
    take("end")
    return result


def parse_input(text: str) -> tuple:
    """`3xHxW` -> (Size(3), H, W); a name used twice is the same size (`3xSxS`: square inputs).

    `x` separates dimensions, so a name cannot contain a lowercase x (`3xHmax` is an error).
    """
    parts = str(text).strip().split("x")
    out = []
    for part in parts:
        part = part.strip()
        if re.fullmatch(r"[1-9][0-9]*", part):
            out.append(Size(int(part)))
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out.append(Size.name(part))
        else:
            raise SymbolicError(f"input size {text!r}: each dimension is a positive integer or a name "
                                f"(3xHxW), got {part!r}")
    return tuple(out)


# -- the op formulas ---------------------------------------------------------------------------------

def window_out(size, k: int, stride: int = 1, pad: int = 0, dilation: int = 1, ceil: bool = False) -> Size:
    """Output length of a sliding window: netdsl.ops.base.window's first result, for every size.

    floor: (size + 2p - span)//s + 1. ceil (Caffe, torch): the last window must start inside the
    input or its left padding, which window() does by one decrement; since floor((x + c)/s) is
    monotone in c, min(ceil(room/s), floor((size + p - 1)/s)) is one floor with the smaller c.
    """
    size = Size.of(size)
    span = dilation * (k - 1) + 1
    if not ceil:
        return floor_div(size + (2 * pad - span), stride) + 1
    rounded_up = 2 * pad - span + stride - 1  # ceil(room/s) = floor((size + this)/s)
    if pad >= span:  # window() always decrements then: the rounded-up start is never inside
        return floor_div(size + rounded_up, stride)
    return floor_div(size + min(rounded_up, pad - 1), stride) + 1


def window_unused(size, k: int, stride: int = 1, pad: int = 0, dilation: int = 1,
                  ceil: bool = False) -> Size | None:
    """Input rows no window reaches, before window()'s max(0, ...): a "doesn't fit" when > 0.

    None when the stride is larger than the window (skipped rows are on purpose there).
    """
    span = dilation * (k - 1) + 1
    if span < stride:
        return None
    out = window_out(size, k, stride, pad, dilation, ceil)
    return Size.of(size) - 1 - ((out - 1) * stride - pad + span - 1)


def deconv_out(size, k: int, stride: int = 1, pad: int = 0, dilation: int = 1, output_pad: int = 0) -> Size:
    """(size - 1)*s - 2p + d(k - 1) + 1 + output_pad, as netdsl.ops.conv's deconv."""
    return (Size.of(size) - 1) * stride - 2 * pad + dilation * (k - 1) + 1 + output_pad


# -- polynomials -------------------------------------------------------------------------------------

class Poly:
    """A sum of products of atoms (names and floors) with integer coefficients, kept exact.

    Monomials are sorted tuples of atoms (with repeats for powers); () is the constant.
    """
    __slots__ = ("terms",)

    def __init__(self, terms: Mapping):
        self.terms = {m: c for m, c in terms.items() if c}

    @staticmethod
    def of(value) -> "Poly":
        if isinstance(value, Poly):
            return value
        value = Size.of(value)
        terms: dict[tuple, int] = {(): value.const} if value.const else {}
        for atom, c in value.terms:
            terms[(atom,)] = c
        return Poly(terms)

    def __add__(self, other) -> "Poly":
        other = Poly.of(other)
        terms = dict(self.terms)
        for m, c in other.terms.items():
            terms[m] = terms.get(m, 0) + c
        return Poly(terms)

    __radd__ = __add__

    def __neg__(self) -> "Poly":
        return Poly({m: -c for m, c in self.terms.items()})

    def __sub__(self, other) -> "Poly":
        return self + (-Poly.of(other))

    def __rsub__(self, other) -> "Poly":
        return Poly.of(other) - self

    def __mul__(self, other) -> "Poly":
        if isinstance(other, int) and not isinstance(other, bool):
            return Poly({m: c * other for m, c in self.terms.items()})
        other = Poly.of(other)
        terms: dict = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = tuple(sorted(m1 + m2, key=_atom_key))
                terms[m] = terms.get(m, 0) + c1 * c2
        return Poly(terms)

    __rmul__ = __mul__

    def __eq__(self, other) -> bool:
        if isinstance(other, (int, Size)):
            other = Poly.of(other)
        return isinstance(other, Poly) and self.terms == other.terms

    def as_size(self) -> "Size | None":
        """The same value as a Size when every monomial has degree <= 1, else None."""
        if any(len(m) > 1 for m in self.terms):
            return None
        return Size._make(self.terms.get((), 0), {m[0]: c for m, c in self.terms.items() if m})

    def __hash__(self) -> int:
        linear = self.as_size()  # equal to a Size or an int when linear: hash alike
        return hash(linear) if linear is not None else hash(frozenset(self.terms.items()))

    def evaluate(self, values: Mapping[str, int]) -> int:
        total = 0
        for m, c in self.terms.items():
            for atom in m:
                c *= values[atom] if isinstance(atom, str) else atom.num.evaluate(values) // atom.q
            total += c
        return total

    def _ordered(self) -> list:
        return sorted(self.terms.items(), key=lambda t: (-len(t[0]), [_atom_key(a) for a in t[0]]))

    def format(self, valid: "Mapping[str, SizeSet] | None" = None) -> str:
        """`(H//16)*(W//16) + 1`; with valid sets where each floor is exact: `(H/16)*(W/16) + 1`.

        A repeated factor is written as a power: `64*((H + 1)//2)**2`.
        """
        out = ""
        const = 0
        for m, c in self._ordered():
            if not m:
                const = c
                continue
            factors = []
            for atom in dict.fromkeys(m):
                text = str(atom)
                if isinstance(atom, Floor) and valid:
                    text = _exact_affine(Size(0, ((atom, 1),)), valid) or text
                power = m.count(atom)
                if (len(m) > 1 or abs(c) != 1) and (" " in text or "/" in text) and not _parenthesised(text):
                    text = f"({text})"
                factors.append(text if power == 1 else f"{text}**{power}")
            body = "*".join(factors) if abs(c) == 1 else f"{abs(c)}*" + "*".join(factors)
            out = (f"-{body}" if c < 0 else body) if not out else f"{out} {'-' if c < 0 else '+'} {body}"
        if const or not out:
            out = str(const) if not out else f"{out} {'-' if const < 0 else '+'} {abs(const)}"
        return out

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return f"Poly({str(self)!r})"


# -- constraints and the solver ----------------------------------------------------------------------

class Constraint:
    """`expr >= 0` (kind "ge") or `expr == 0` (kind "eq"); `fit` marks a "doesn't fit" condition
    (it binds only in the strict set); `reason` says which layer asked for it."""
    __slots__ = ("expr", "kind", "fit", "reason")

    def __init__(self, expr: Size, kind: str, fit: bool = False, reason: object = ""):
        if kind not in ("ge", "eq"):
            raise ValueError(kind)
        self.expr = expr if type(expr) is Size else Size.of(expr)
        self.kind, self.fit, self.reason = kind, fit, reason

    def holds(self, values: Mapping[str, int]) -> bool:
        v = self.expr.evaluate(values)
        return v >= 0 if self.kind == "ge" else v == 0

    def __repr__(self) -> str:
        return f"Constraint({self.expr} {'>=' if self.kind == 'ge' else '=='} 0{', fit' if self.fit else ''})"


class Constraints:
    """What callers derive from a program: non-empty tensors, equal merge branches, crops inside
    their source, and (for --strict) windows that fit exactly."""

    def __init__(self):
        self.items: list[Constraint] = []

    def at_least(self, expr, bound, reason: str = "", fit: bool = False) -> None:
        """expr >= bound (bound 1: the tensor is not empty)."""
        self.items.append(Constraint(Size.of(expr) - bound, "ge", fit, reason))

    def at_most(self, expr, bound, reason: str = "", fit: bool = False) -> None:
        self.items.append(Constraint(Size.of(bound) - expr, "ge", fit, reason))

    def equal(self, a, b, reason: str = "", fit: bool = False) -> None:
        self.items.append(Constraint(Size.of(a) - b, "eq", fit, reason))

    def divisible(self, expr, q: int, reason: str = "", fit: bool = True) -> None:
        """q divides expr, as q*(expr//q) == expr."""
        expr = Size.of(expr)
        self.items.append(Constraint(floor_div(expr, q) * q - expr, "eq", fit, reason))

    def holds(self, values: Mapping[str, int], strict: bool = False) -> bool:
        return all(c.holds(values) for c in self.items if strict or not c.fit)

    def solve(self, names: Iterable[str] = (), strict: bool = False) -> dict:
        return solve(self.items, names, strict)


class SizeSet:
    """A set of sizes >= 1: for each residue r mod `modulus`, the sizes x = r (mod M) with
    first[r] <= x <= last[r] (last None: unbounded; first None: none)."""

    def __init__(self, name: str, modulus: int, first: list, last: list):
        self.name, self.modulus, self.first, self.last = name, modulus, first, last

    def __contains__(self, x: int) -> bool:
        r = x % self.modulus
        lo, hi = self.first[r], self.last[r]
        return x >= 1 and lo is not None and lo <= x and (hi is None or x <= hi)

    def is_empty(self) -> bool:
        return all(lo is None for lo in self.first)

    def smallest(self) -> int | None:
        found = [lo for lo in self.first if lo is not None]
        return min(found) if found else None

    def values(self, upto: int) -> list:
        return [x for x in range(1, upto + 1) if x in self]

    def sample(self, per_class: int) -> list:
        """The first `per_class` members of each residue class mod `modulus`."""
        out = []
        for r, lo in enumerate(self.first):
            if lo is None:
                continue
            hi = self.last[r]
            for i in range(per_class):
                x = lo + i * self.modulus
                if hi is None or x <= hi:
                    out.append(x)
        return out

    def nearest(self, value: int) -> tuple:
        """(largest valid size < value, smallest valid size > value); None where there is none."""
        below = above = None
        M = self.modulus
        for r, lo in enumerate(self.first):
            if lo is None:
                continue
            hi = self.last[r]
            # in the class: lo, lo + M, ..., hi
            a = lo if value < lo else lo + ((value - lo) // M + 1) * M
            if hi is None or a <= hi:
                above = a if above is None else min(above, a)
            b_top = value - 1 if hi is None else min(value - 1, hi)
            if b_top >= lo:
                b = lo + ((b_top - lo) // M) * M
                below = b if below is None else max(below, b)
        return below, above

    def _classes(self) -> tuple:
        """(m, {residue mod m: start}, exceptions), for the modulus m that describes the set most
        briefly: a class counts as two listed sizes (ties: the smaller m)."""
        M = self.modulus
        unbounded = {r for r in range(M) if self.first[r] is not None and self.last[r] is None}
        best = None
        for m in range(1, M + 1):
            kept = {u % m for u in unbounded}
            if M % m or any(((r % m) in kept) != (r in unbounded) for r in range(M)):
                continue  # the unbounded part is not a union of classes mod m
            starts = {}
            for c in sorted(kept):
                # smallest x0 = c (mod m) from which every member of the class is valid
                start = max(self.first[r] for r in range(M) if r % m == c)
                while start - m >= 1 and (start - m) in self:
                    start -= m
                starts[c] = start
            exceptions: list[int] = []
            for r in range(M):
                lo, hi = self.first[r], self.last[r]
                if lo is not None:
                    exceptions.extend(range(lo, (starts[r % m] - 1 if hi is None else hi) + 1, M))
            if best is None or 2 * len(starts) + len(exceptions) < 2 * len(best[1]) + len(best[2]):
                best = (m, starts, sorted(exceptions))
        assert best is not None  # m = M always qualifies
        return best

    def progression(self) -> "tuple[int, int, int] | None":
        """(m, r, start) when the set is exactly {x = r (mod m), x >= start}, else None: the form
        torch.export's dimensions take (H = 16*k + 12 with k >= 11)."""
        m, starts, exceptions = self._classes()
        if len(starts) != 1 or exceptions:
            return None
        (residue, start), = starts.items()
        return m, residue, start

    def describe(self) -> str:
        """"H = 16k + 12, H >= 188"; classes with their own bounds are joined by "; or "."""
        n = self.name
        if self.is_empty():
            return f"no valid {n}"
        m, starts, exceptions = self._classes()
        groups: dict = {}  # classes valid from their first member (no bound) go together
        for c, start in starts.items():
            groups.setdefault(0 if start == (c or m) else start, []).append(c)
        texts = []
        for start, classes in sorted(groups.items()):
            if m == 1:
                texts.append(f"{n} >= {start or 1}")
                continue
            forms = " or ".join(_format_linear(c, [(f"{m}k", 1)]) for c in sorted(classes))
            texts.append(f"{n} = {forms}" + (f", {n} >= {start}" if start else ""))
        text = "; or ".join(texts)
        if exceptions:
            shown = ", ".join(map(str, exceptions[:8]))
            if len(exceptions) > 8:
                shown += f", ... ({len(exceptions)} sizes)"
            text = f"{text}; also {n} = {shown}" if text else f"{n} = {shown}"
        return text

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"SizeSet({self.describe()!r})"


def solve(constraints: Iterable[Constraint], names: Iterable[str] = (), strict: bool = False) -> dict:
    """{name: SizeSet}: the exact valid sizes (>= 1) of each name under the constraints.

    Each constraint must mention at most one name (shapes of CxHxW nets keep H and W apart). In one
    name x every expression is quasi-affine: f(x + P) = f(x) + slope*P. With M the lcm of the periods,
    on each residue class x = r + M*k a constraint is linear in k, so each class's valid set is an
    interval in k, found exactly from f(r) and slope*M.
    """
    per_name: dict = {n: [] for n in names}
    impossible = False
    for c in constraints:
        if c.fit and not strict:
            continue
        found = c.expr.names()
        if len(found) > 1:
            raise SymbolicError(f"constraint {c} ties {', '.join(sorted(found))} together: "
                                f"the solver handles one name per constraint")
        if not found:
            impossible |= not c.holds({})
            continue
        per_name.setdefault(next(iter(found)), []).append(c)
    return {name: _solve_one(name, cs, impossible) for name, cs in per_name.items()}


def solve_both(constraints: Iterable[Constraint], names: Iterable[str] = ()) -> tuple:
    """(solve(..., strict=False), solve(..., strict=True)) in one pass: each residue class's
    plain interval is narrowed further by the fit conditions, so no value is computed twice."""
    per_name: dict = {n: ([], []) for n in names}
    impossible = [False, False]
    for c in constraints:
        found = c.expr.names()
        if len(found) > 1:
            raise SymbolicError(f"constraint {c} ties {', '.join(sorted(found))} together: "
                                f"the solver handles one name per constraint")
        if not found:
            if not c.holds({}):
                impossible[1] = True
                impossible[0] |= not c.fit
            continue
        per_name.setdefault(next(iter(found)), ([], []))[c.fit].append(c)
    plain, strict = {}, {}
    for name, (always, fit) in per_name.items():
        plain[name], strict[name] = _solve_one(name, always, impossible[0], fit, impossible[1])
    return plain, strict


def _solve_one(name: str, constraints: list, impossible: bool, fit: list | None = None,
               fit_impossible: bool = False):
    """The valid set of one name; with `fit`, also the set under those further conditions (a
    pair)."""
    unique = {(c.expr, c.kind): c for c in constraints}  # a chain repeats its constraints
    extra = {(c.expr, c.kind): c for c in fit or ()}
    M = 1
    for expr, _ in (*unique, *extra):
        M = _lcm(M, expr.period())

    def facts(table):
        out = []
        for expr, kind in table:
            step = expr.slope() * M  # an integer: f(x + M) - f(x)
            assert step.denominator == 1, (str(expr), M)
            out.append((expr, kind, int(step)))
        return out

    def narrow(r, lo, hi, found):
        for expr, kind, step in found:
            if hi is not None and hi < lo:
                break
            value = expr.evaluate({name: r})
            if kind == "ge":  # value + step*k >= 0
                if step > 0:
                    lo = max(lo, -(value // step))
                elif step < 0:
                    bound = value // -step
                    hi = bound if hi is None else min(hi, bound)
                elif value < 0:
                    hi = -1
            elif step == 0:  # value == 0 at every k of the class
                if value != 0:
                    hi = -1
            elif value % step == 0:  # value + step*k == 0 at one k
                k = -value // step
                lo, hi = (k, k) if k >= lo and (hi is None or k <= hi) else (1, 0)
            else:
                hi = -1
        return lo, hi

    def record(r, lo, hi, first, last):
        if hi is not None and hi < lo:
            first.append(None)
            last.append(None)
        else:
            first.append(r + M * lo)
            last.append(None if hi is None else r + M * hi)

    always, further = facts(unique), facts(extra)
    first: list = []
    last: list = []
    strict_first: list = []
    strict_last: list = []
    for r in range(M):
        lo, hi = narrow(r, (1 if r == 0 else 0), None, always)  # bounds on k, x = r + M*k >= 1
        record(r, lo, hi, first, last)
        if fit is not None:
            strict_lo, strict_hi = narrow(r, lo, hi, further)
            record(r, strict_lo, strict_hi, strict_first, strict_last)
    result = SizeSet(name, M, first, last) if not impossible else SizeSet(name, 1, [None], [None])
    if fit is None:
        return result
    exact = SizeSet(name, M, strict_first, strict_last) if not (impossible or fit_impossible) \
        else SizeSet(name, 1, [None], [None])
    return result, exact
