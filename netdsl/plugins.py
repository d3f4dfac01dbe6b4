"""Backends are plugins: found by name in the `netdsl.backends` entry-point group, imported lazily.

The built-in numpy and torch backends register the same way a third-party one does
(pyproject.toml), so importing netdsl imports no backend and `netdsl check` never imports torch.
A backend is a callable `compile_network(network, **options)` returning a runnable module.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Callable

GROUP = "netdsl.backends"


def available_backends() -> list[str]:
    return sorted({entry.name for entry in entry_points(group=GROUP)})


@lru_cache(maxsize=None)  # scanning every installed distribution costs ~7 ms; they do not change
def get_backend(name: str) -> Callable:
    """The compile function of the backend called `name`."""
    for entry in entry_points(group=GROUP):
        if entry.name == name:
            return entry.load()
    known = ", ".join(available_backends()) or "none (is netdsl installed?)"
    raise ValueError(f"no backend named {name!r}; installed backends: {known}")
