"""Backends are plugins: found by name in the `netdsl.backends` entry-point group, imported lazily.

The built-in numpy and torch backends register the same way a third-party one does
(pyproject.toml), so importing netdsl imports no backend and `netdsl check` never imports torch.
An entry point loads a `netdsl.backend.Backend` (the contract); a plain callable
`compile(network, **options)` from an older third-party backend is wrapped as one.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from .backend import Backend

GROUP = "netdsl.backends"


def available_backends() -> list[str]:
    return sorted({entry.name for entry in entry_points(group=GROUP)})


@lru_cache(maxsize=None)  # scanning every installed distribution costs ~7 ms; they do not change
def get_backend(name: str) -> Backend:
    """The backend called `name`."""
    for entry in entry_points(group=GROUP):
        if entry.name == name:
            loaded = entry.load()
            return loaded if isinstance(loaded, Backend) else Backend(name, compile=loaded)
    known = ", ".join(available_backends()) or "none (is netdsl installed?)"
    raise ValueError(f"no backend named {name!r}; installed backends: {known}")
