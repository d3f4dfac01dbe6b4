"""Interleaved timing shared by the benchmarks: A, B, B, A, A, B, ... so drift in the machine (another
process, thermal throttling, a cache warming up) hits both sides alike, and the median is taken."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def paired(first: Callable, second: Callable, repeat: int, warmup: int = 1,
           sync: Callable = lambda: None, clock: Callable[[], float] = time.perf_counter,
           before: Callable = lambda: None) -> tuple[float, float]:
    """Median seconds of `first` and of `second` over `repeat` interleaved runs, after `warmup` of
    each. `sync` waits for queued device work (CUDA); `before` runs untimed ahead of every run."""
    for _ in range(warmup):
        first()
        second()
    sync()
    a, b = [], []
    for i in range(repeat):
        # A B, then B A: whichever runs second may find the caches and the allocator as the other
        # left them, so each side runs first in half of the pairs
        pair = ((first, a), (second, b))
        for fn, runs in pair if i % 2 == 0 else pair[::-1]:
            before()
            start = clock()
            fn()
            sync()
            runs.append(clock() - start)
    return statistics.median(a), statistics.median(b)


def timed(fn: Callable, repeat: int, warmup: int = 1, sync: Callable = lambda: None) -> float:
    """Median seconds of `fn` over `repeat` runs after `warmup`."""
    for _ in range(warmup):
        fn()
    sync()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)
