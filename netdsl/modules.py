"""Files and `use`: parse a .net file and gather the definitions it can see.

`use "vgg.net"` reads only .net files, looked up beside the importing file and then among the
shipped networks. Absolute paths and `..` are refused: a .net file cannot make the compiler read
anything else on the machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Mapping

from . import ast
from .errors import NetDSLLimitError, NetDSLNameError
from .limits import DEFAULT_LIMITS, Limits
from .parser import parse_program


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
            file = self.resolve(use, path)
            if file in stack:
                cycle = " -> ".join(p.name for p in (*stack, file))
                raise NetDSLNameError(f"use cycle: {cycle}", use.span)
            module = self.cache.get(file)
            if module is None:
                self.files_read += 1
                if self.files_read > self.limits.max_uses:
                    raise NetDSLLimitError(f"more than {self.limits.max_uses} files read through use",
                                           use.span)
                module = self.load(file.read_text(encoding="utf-8"), str(file), (*stack, file))
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

    def resolve(self, use: ast.Use, importer: str) -> Path:
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
            if candidate.is_file() and candidate.is_relative_to(place.resolve()):
                return candidate
        where = ["the importing file's folder"] if importer != "<string>" else []
        raise NetDSLNameError(f"cannot find {use.path}", use.span,
                              ["looked in " + " and ".join([*where, "the shipped networks"])])

