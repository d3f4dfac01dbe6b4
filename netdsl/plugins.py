"""Backends are plugins: found by name in the `netdsl.backends` entry-point group, imported lazily.

The built-in numpy and torch backends register the same way a third-party one does
(pyproject.toml), so importing netdsl imports no backend and `netdsl check` never imports torch.
An entry point loads a `netdsl.backend.Backend` (the contract); a plain callable
`compile_network(network, **options)` is accepted too and wrapped as Backend(name, compile=it).
"""
from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points

from .backend import Backend

GROUP = "netdsl.backends"


class BackendUnavailable(ValueError):
    """A backend is installed but a package it needs is not (torch for `torch`, jax for `jax`)."""

    def __init__(self, name: str, missing: str | None, error: ImportError):
        self.name = name
        self.missing = missing or "a package that is not installed"
        super().__init__(f"backend {name!r} cannot be loaded: {error} "
                         f"(is its extra installed? pip install 'netdsl[{name}]')")


def available_backends() -> list[str]:
    return sorted({entry.name for entry in entry_points(group=GROUP)})


@lru_cache(maxsize=None)  # scanning every installed distribution costs ~7 ms; they do not change
def get_backend(name: str) -> Backend:
    """The backend called `name`, as a Backend."""
    for entry in entry_points(group=GROUP):
        if entry.name == name:
            try:
                loaded = entry.load()
            except ImportError as error:  # an optional extra not installed: `pip install netdsl[jax]`
                raise BackendUnavailable(name, (error.name or "").split(".")[0] or None, error) from None
            if isinstance(loaded, Backend):
                return loaded
            if callable(loaded):
                return Backend(name, compile=loaded)
            raise TypeError(f"the entry point of backend {name!r} ({entry.value}) loads "
                            f"{type(loaded).__name__}, neither a Backend nor a callable")
    known = ", ".join(available_backends()) or "none (is netdsl installed?)"
    raise ValueError(f"no backend named {name!r}; installed backends: {known}")
