"""Limits that keep bad or hostile input cheap: every one is checked before work grows past it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds on what one compilation may do. Each violation is a clean `NetDSLLimitError`.

    >>> Limits(max_nodes=500)  # a stricter budget for an online playground
    """

    max_source_chars: int = 2_000_000  # characters in one .net file
    max_nesting: int = 64  # brackets of any kind nested in one file
    max_call_depth: int = 64  # definition calls nested inside each other
    max_depth: int = 100  # layers nested inside each other: brackets, merges and calls together
    max_repeat: int = 10_000  # the count of one repeat (x*N)
    max_nodes: int = 100_000  # IR nodes of one network after expansion
    max_file_nodes: int = 100_000  # IR nodes of all the nets of one file together
    max_expansion_steps: int = 1_000_000  # elements visited while expanding (catches [id*0]*10000)
    max_tensor_elements: int = 2**31 - 1  # elements of one tensor (activation or weight), batch excluded
    max_dimension: int = 1_000_000  # one channel count, kernel, stride or spatial size
    max_uses: int = 64  # files read through `use`, transitively


DEFAULT_LIMITS = Limits()
