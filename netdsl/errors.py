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

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, eq=False)
class Source:
    """A piece of .net text and the path it came from ("<string>" for text given directly)."""

    path: str
    text: str

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        line = self.text.count("\n", 0, offset) + 1
        line_start = self.text.rfind("\n", 0, offset) + 1
        return line, offset - line_start + 1

    def line_text(self, line: int) -> str:
        lines = self.text.split("\n")
        return lines[line - 1] if 0 < line <= len(lines) else ""


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
        head = f"{self.severity}: {self.message}"
        if self.span is None:
            lines = [head]
        else:
            lines = [f"{self.span.location()}: {head}", *_excerpt(self.span)]
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _excerpt(span: Span) -> list[str]:
    """The source line of the span with a caret underline (clipped to that line)."""
    line, col = span.source.line_col(span.start)
    text = span.source.line_text(line)
    width = max(1, min(span.end - span.start, len(text) - col + 1))
    shown = text.expandtabs(1)
    return [f"    {shown}", "    " + " " * (col - 1) + "^" * width]


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
