"""Files and `use`: parse a .net file and gather the definitions it can see.

`use "vgg.net"` reads only .net files, looked up beside the importing file and then among the
shipped networks. Absolute paths and `..` are refused: a .net file cannot make the compiler read
anything else on the machine.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Mapping

from . import ast
from .errors import NetDSLError, NetDSLLimitError, NetDSLNameError, Source, Span
from .limits import DEFAULT_LIMITS, Limits
from .parser import parse_program


def read_text_file(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS,
                   span: Span | None = None) -> str:
    """The text of a .net file, read with a size bound and a type check.

    Only regular files are read (a directory, /dev/zero or a FIFO is refused before it is opened,
    so nothing blocks or grows without bound), at most 4 bytes per allowed character. Text that is
    not UTF-8 is reported at its line and column. `span` is the `use` that asked for the file.
    """
    shown = str(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise NetDSLError(f"{shown} is a directory, not a .net file", span)
        if not stat.S_ISREG(info.st_mode):
            raise NetDSLError(f"{shown} is not a regular file (a device, pipe or socket)", span)
        budget = 4 * limits.max_source_chars
        if info.st_size > budget:
            raise NetDSLLimitError(f"{shown} is {info.st_size:,} bytes, over the limit of {budget:,}",
                                   span, ["raise Limits.max_source_chars to accept it"])
        with open(path, "rb") as handle:
            data = handle.read(budget + 1)
    except FileNotFoundError:
        raise NetDSLError(f"{shown}: no such file", span) from None
    except OSError as error:
        raise NetDSLError(f"{shown}: {error.strerror or 'cannot read it'}", span) from None
    if len(data) > budget:  # the file grew after it was measured
        raise NetDSLLimitError(f"{shown} is over {budget:,} bytes", span,
                               ["raise Limits.max_source_chars to accept it"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        text = data.decode("utf-8", errors="replace")
        offset = len(data[:error.start].decode("utf-8", errors="replace"))
        raise NetDSLError(f"not UTF-8 text (byte 0x{data[error.start]:02x})",
                          Span(Source(shown, text), offset, offset + 1),
                          ["save the file as UTF-8"]) from None


def shipped_networks_dir() -> Path:
    """The folder holding the shipped .net files (networks/ in the repository)."""
    return Path(str(resources.files("netdsl.networks")))


@dataclass(frozen=True, slots=True)
class Module:
    """A parsed file and every definition visible in it (its own, then those it imports)."""

    program: ast.Program
    defs: Mapping[str, ast.Def]


def load_module(text: str, path: str = "<string>", limits: Limits = DEFAULT_LIMITS) -> Module:
    stack = (Path(path).resolve(),) if path != "<string>" else ()
    return _Loader(limits).load(text, path, stack)


class _Loader:
    def __init__(self, limits: Limits):
        self.limits = limits
        self.files_read = 0
        self.cache: dict[Path, Module] = {}

    def load(self, text: str, path: str, stack: tuple[Path, ...]) -> Module:
        program = parse_program(text, path, self.limits)
        imported: dict[str, tuple[ast.Def, ast.Use]] = {}
        for use in program.uses:
            file = resolve_use(use, path)
            if file in stack:
                cycle = " -> ".join(p.name for p in (*stack, file))
                raise NetDSLNameError(f"use cycle: {cycle}", use.span)
            module = self.cache.get(file)
            if module is None:
                self.files_read += 1
                if self.files_read > self.limits.max_uses:
                    raise NetDSLLimitError(f"more than {self.limits.max_uses} files read through use",
                                           use.span)
                text = read_text_file(file, self.limits, use.span)
                module = self.load(text, str(file), (*stack, file))
                self.cache[file] = module
            for name, definition in module.defs.items():
                if name in imported and imported[name][0] is not definition:
                    other = imported[name][1]
                    raise NetDSLNameError(
                        f"definition {name} comes from two files", use.span,
                        [f"it is also imported by the use at {other.span.location()}"])
                imported[name] = (definition, use)
        defs = {name: definition for name, (definition, _) in imported.items()}
        defs.update((definition.name, definition) for definition in program.defs)  # own defs win
        return Module(program, defs)


def resolve_use(use: ast.Use, importer: str) -> Path:
    """The file a `use` in file `importer` reads: beside the importer, then among the shipped
    networks. Raises NetDSLNameError for a path that is absolute, leaves the folder, is not a
    .net file or is not found."""
    relative = PurePosixPath(use.path)
    if use.path.startswith(("/", "\\")) or relative.is_absolute() or ":" in use.path:
        raise NetDSLNameError("use takes a relative path to a .net file", use.span)
    if ".." in relative.parts or "\\" in use.path:
        raise NetDSLNameError("use cannot leave the importing file's folder ('..')", use.span)
    if relative.suffix != ".net":
        raise NetDSLNameError("use reads only .net files", use.span)
    places = []
    if importer != "<string>":
        places.append(Path(importer).resolve().parent)
    places.append(shipped_networks_dir())
    for place in places:
        candidate = (place / relative).resolve()
        if candidate.exists() and not candidate.is_relative_to(place.resolve()):
            raise NetDSLNameError(f"{use.path} is a link that leads outside the importing "
                                  f"file's folder", use.span,
                                  [f"it points to {candidate}; use reads only files inside the "
                                   "folder"])
        if candidate.exists():
            return candidate  # read_text_file refuses what is not a regular file
    where = ["the importing file's folder"] if importer != "<string>" else []
    raise NetDSLNameError(f"cannot find {use.path}", use.span,
                          ["looked in " + " and ".join([*where, "the shipped networks"])])

