"""Errors as values: source spans, diagnostics, and the one renderer that prints them.

Every stage reports a user's mistake as a `Diagnostic` carrying the `Span` of the culprit. The
renderer turns it into compiler-style text:

    vgg.net:3:21: error: pool makes the tensor empty: 512x1x1 -> 512x0x0
        net D = block(2,64) - pool
                              ^^^^
    note: shapes: 3x224x224 -> ... -> 512x1x1 -> pool: 512x0x0

Only the CLI prints and chooses exit codes; the library raises `NetDSLError` (or a subclass), whose
`str()` is that text.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

#: How much user text one diagnostic shows: an excerpt window and a cap on each message line.
EXCERPT_WIDTH = 100
MESSAGE_WIDTH = 300


@dataclass(frozen=True, slots=True, eq=False)
class Source:
    """A piece of .net text and the path it came from ("<string>" for text given directly)."""

    path: str
    text: str
    # Offsets where each line starts, found once: a thousand diagnostics in a long file must not
    # each re-scan the text.
    line_starts: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self):
        starts = [0]
        starts.extend(match.end() for match in re.finditer("\n", self.text))
        object.__setattr__(self, "line_starts", tuple(starts))

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def line_text(self, line: int) -> str:
        if not 0 < line <= len(self.line_starts):
            return ""
        start = self.line_starts[line - 1]
        end = self.line_starts[line] - 1 if line < len(self.line_starts) else len(self.text)
        return self.text[start:end]


@dataclass(frozen=True, slots=True)
class Span:
    """Characters [start, end) of a source."""

    source: Source = field(compare=False, repr=False)
    start: int
    end: int

    @property
    def line(self) -> int:
        return self.source.line_col(self.start)[0]

    @property
    def column(self) -> int:
        return self.source.line_col(self.start)[1]

    @property
    def text(self) -> str:
        return self.source.text[self.start:self.end]

    def location(self) -> str:
        line, col = self.source.line_col(self.start)
        return f"{self.source.path}:{line}:{col}"

    def to(self, other: "Span") -> "Span":
        """The span from the start of this one to the end of `other`."""
        return Span(self.source, self.start, max(self.end, other.end))


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: str  # "error" or "warning"
    message: str
    span: Span | None
    notes: tuple[str, ...] = ()

    def render(self) -> str:
        """The compiler-style text; user text in it is clipped and has its control characters
        escaped, so a hostile file cannot flood or drive the terminal that shows it."""
        head = f"{self.severity}: {clip(self.message)}"
        if self.span is None:
            lines = [printable(head)]
        else:
            lines = [printable(f"{clip(self.span.location())}: {head}"), *_excerpt(self.span)]
        lines.extend(printable(f"note: {clip(note)}") for note in self.notes)
        return "\n".join(lines)


# C0 and C1 controls, DEL, and the bidirectional overrides that can reorder what a terminal shows.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with control characters written as escapes (\\x1b, \\r, \\u202e), safe to print."""
    def escape(match: re.Match) -> str:
        char = match.group()
        if keep_newlines and char == "\n":
            return char
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return _UNPRINTABLE.sub(escape, text)


def clip(text: str, width: int = MESSAGE_WIDTH) -> str:
    """`text` cut to `width` characters, saying how much was left out."""
    if len(text) <= width:
        return text
    return f"{text[:width]}... ({len(text) - width:,} more characters)"


def _excerpt(span: Span) -> list[str]:
    """The source line of the span with a caret underline: a window of the line around the span,
    tabs as one space and control characters escaped, with the caret kept under the same text."""
    line, col = span.source.line_col(span.start)
    text = span.source.line_text(line)
    start = col - 1
    width = max(1, min(span.end - span.start, len(text) - start))
    left = max(0, min(start - EXCERPT_WIDTH // 4, len(text) - EXCERPT_WIDTH))
    right = min(len(text), left + EXCERPT_WIDTH)
    shown, caret = [], []
    for i in range(left, right):
        piece = printable(text[i]) if text[i] != "\t" else " "
        shown.append(piece)
        caret.append(("^" if start <= i < start + width else " ") * len(piece))
    if start >= right:  # the span is at the end of the line
        caret.append("^")
    prefix = "..." if left > 0 else ""
    suffix = "..." if right < len(text) else ""
    return [f"    {prefix}{''.join(shown)}{suffix}",
            "    " + " " * len(prefix) + "".join(caret).rstrip()]


class NetDSLError(Exception):
    """A mistake in a user's input. `str(error)` is the compiler-style message."""

    def __init__(self, message: str, span: Span | None = None, notes: tuple[str, ...] | list[str] = (),
                 warnings: tuple[Diagnostic, ...] = ()):
        self.diagnostic = Diagnostic("error", message, span, tuple(notes))
        self.warnings = tuple(warnings)
        super().__init__(self.diagnostic.render())

    @property
    def message(self) -> str:
        return self.diagnostic.message

    @property
    def span(self) -> Span | None:
        return self.diagnostic.span

    @property
    def notes(self) -> tuple[str, ...]:
        return self.diagnostic.notes

    @property
    def line(self) -> int | None:
        return self.span.line if self.span else None

    @property
    def column(self) -> int | None:
        return self.span.column if self.span else None


class NetDSLSyntaxError(NetDSLError):
    """The text does not follow the grammar."""


class NetDSLNameError(NetDSLError):
    """An unknown op, definition, label, parameter or net; a bad argument."""


class NetDSLShapeError(NetDSLError):
    """The network does not type-check: a tensor shape does not fit an op."""


class NetDSLLimitError(NetDSLError):
    """The input exceeds a configured limit (source size, nesting, repeats, nodes, tensor size)."""


class NetDSLWeightsError(NetDSLError):
    """A weights file is malformed or does not match the network."""


#: How many candidates one did-you-mean compares at most, so a file of 100,000 definitions does not
#: make one unknown name slow.
SUGGEST_BUDGET = 5000


def suggest(name: str, candidates, budget: int = SUGGEST_BUDGET) -> str | None:
    """The candidate closest to `name`: the same word in another case, else the nearest one within
    an edit distance of about a third of its length (case ignored); None when nothing is close.

    >>> suggest("cnov", ["conv", "pool"])
    'conv'
    """
    lowered = name.lower()
    limit = max(1, len(name) // 3) if len(name) > 1 else 0
    best, best_distance = None, limit + 1
    for i, candidate in enumerate(candidates):
        if i >= budget:
            break
        if abs(len(candidate) - len(name)) > limit or candidate == name:
            continue
        distance = _edit_distance(lowered, candidate.lower(), best_distance)
        if distance < best_distance:
            best, best_distance = candidate, distance
            if distance == 0:
                break
    return best


def _edit_distance(a: str, b: str, stop: int) -> int:
    """Damerau-Levenshtein distance (a swap of neighbours counts 1), or `stop` once it is reached."""
    if len(a) > 64 or len(b) > 64:  # long names: only an exact case-insensitive match counts
        return 0 if a == b else stop
    before: list[int] | None = None
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, other in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other))
            if before is not None and j > 1 and char == b[j - 2] and a[i - 2] == other:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) >= stop:
            return stop
        before, previous = previous, current
    return previous[-1]
