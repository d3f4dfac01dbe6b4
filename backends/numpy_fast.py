"""Faster NumPy kernels for the ops where the reference spends its time in MobileNet and EfficientNet:
depthwise convolution, batch norm, SiLU, ReLU6, the squeeze-and-excitation gate's mean and
multiply and 1x1 convolutions, and a faster way of running a module's forward (EXECUTION).

Kept apart from backends/numpy_backend.py on purpose: that file states each op plainly and stays the
oracle (`net.compile("numpy", reference=True)` runs it alone). Each kernel here computes the same
function in another order, with its own backward where it keeps another cache (depthwise
convolution, batch norm), and is checked against the reference in tests/test_numpy_fast.py. The
tricks, and why they pay:
- Work is split by channel (or, for matrix products, by rows or columns) over a pool of threads:
  NumPy's element-wise loops run on one core and release the GIL, so two cores do two ranges at
  once. Meanwhile BLAS keeps to one thread (see _ForwardSettings).
- Depthwise convolution gathers its taps for a cache-sized block of channels and takes one
  matrix-vector product per channel (BLAS), instead of two NumPy passes over the whole output per
  tap; a strided convolution first splits its input into stride phases so that every tap reads
  long contiguous runs. A 1x1 convolution skips the copy into columns.
- Batch norm works a cache-sized block of channels at a time, and runs the SiLU that alone reads
  its output on each block as it is made (EXECUTION.fusions).
- An activation that is its own layer overwrites its input where nothing else needs it
  (Execution.activations_in_place).
- malloc keeps the memory a forward frees for the next one (keep_freed_memory).
The threads: OMP_NUM_THREADS if set, else the CPUs this process may run on.
"""
from __future__ import annotations

import ctypes
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided
from threadpoolctl import ThreadpoolController

from netdsl.backends import numpy_backend as reference
from netdsl.backends.numpy_backend import Kernel
from netdsl.ir import Node

# Bytes of gathered depthwise columns per block. Measured on EfficientNet-B0's forward (batch 8, 2
# cores, 1 MiB of L2 each, 32 MiB of L3): 2 MiB blocks beat 1 and 4 MiB by about 5%; smaller
# blocks spend more time in Python between NumPy calls.
_BLOCK_BYTES = 1 << 21
# Above this many bytes of phases per thread, a strided depthwise convolution makes them a block at
# a time (see depthwise): measured on EfficientNet-B0's stride-2 layers, 20 MB gained, 3.5 MB lost,
# 7.8 MB broke even (32 MiB of L3 here).
_PHASES_IN_CACHE = 8 << 20
# A split hands work to the pool's threads and waits for them: about 60 us here (a thread waking on
# a 2-core VM), so work is split only where one thread would take several times that. Costs are
# estimated from one thread's rates measured here: a NumPy pass over a float32 element in cache,
# an element a BLAS product reads or writes, a multiply-add of one. (EfficientNet-B0 made 152
# splits a forward with a threshold of 2^15 elements, a third of them on work of under 60 us.)
_SPLIT_NS = 200_000
_NS_PER_PASS = 0.2
_NS_PER_ELEMENT_MOVED = 0.25
_NS_PER_MULTIPLY_ADD = 0.05
_PARTS_PER_THREAD = 2
# Elements per block of an element-wise op that makes several passes (batch norm, SiLU): 1 MiB of
# float32. Measured on EfficientNet-B0's batch norm + SiLU layers (batch 8, 2 cores, 32 MiB of
# L3): 2^18 beat 2^16 (more time between NumPy calls) and 2^21 (out of cache on the big layers).
_PASS_BLOCK = 1 << 18


def thread_count() -> int:
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (the process that made it, the pool)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    # a forked child inherits the pool object but none of its threads: it makes its own
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max(1, thread_count() - 1), thread_name_prefix="netdsl-numpy"))
    return _POOL[1]


def _ranges(length: int, parts: int) -> list[tuple[int, int]]:
    bounds = [length * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def split(work: Callable[[int, int], None], length: int, nanoseconds: float) -> None:
    """Runs work(first, stop) over ranges that together cover 0..length (channels, rows), shared
    out between the threads; in this thread alone, as one range, when the work (an estimate of
    one thread's `nanoseconds`) is too small to gain from threads."""
    threads = thread_count()
    if threads == 1 or nanoseconds < _SPLIT_NS or length == 1:
        work(0, length)
        return
    # More parts than threads, each thread taking the next part left: a thread that wakes late (on
    # a busy machine, hundreds of microseconds) takes fewer, rather than keep the others waiting.
    parts = _ranges(length, threads * _PARTS_PER_THREAD)
    taken = itertools.count()  # next() on it is atomic under the GIL
    finished = itertools.count(1)
    all_done = threading.Event()
    failures: list[BaseException] = []

    def take_parts() -> None:
        while (index := next(taken)) < len(parts):
            try:
                work(*parts[index])
            except BaseException as error:  # noqa: BLE001 - raised again in the calling thread
                failures.append(error)
            if next(finished) == len(parts):
                all_done.set()

    for _ in range(threads - 1):
        _pool().submit(take_parts)
    take_parts()  # this thread takes parts too, rather than wait idle
    all_done.wait()
    if failures:
        raise failures[0]


def parallel_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """np.matmul(a, b), the rows of a (or, where a has fewer rows than b has columns, the columns of
    b) split over the threads; each part one single-threaded BLAS call (see EXECUTION)."""
    if a.ndim < 2 or b.ndim < 2:
        return np.matmul(a, b, out=out)
    rows, columns = a.shape[-2], b.shape[-1]
    if out is None:
        shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (rows, columns)
        out = np.empty(shape, dtype=np.result_type(a, b))
    result = out
    cost = out.size * a.shape[-1] * _NS_PER_MULTIPLY_ADD + (a.size + b.size + out.size) * _NS_PER_ELEMENT_MOVED
    if rows >= columns:
        split(lambda first, stop: np.matmul(a[..., first:stop, :], b, out=result[..., first:stop, :]),
              rows, cost)
    else:
        split(lambda first, stop: np.matmul(a, b[..., first:stop], out=result[..., first:stop]),
              columns, cost)
    return out


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Asks glibc's malloc to keep the memory that is freed for later allocations, rather than
    give it back to the system: no separate mapping for big arrays (glibc's default for those over
    32 MiB, and its limit grows to that by itself) and no trimming of the heap until 2 GiB of it
    are free. Memory given back comes back zeroed one 4 KiB page at a time, on first write: on
    EfficientNet-B0 (batch 8) every other training forward wrote 60,000 fresh pages, 240 MB,
    which took 50-70 ms of a 0.23 s forward (the module holds one forward's caches while the next
    runs, then frees them). The process keeps the memory of its biggest forward, as torch's
    caching allocator does on a GPU. NETDSL_KEEP_FREED_MEMORY=0 in the environment leaves malloc
    as it is. Returns whether it asked (glibc only: elsewhere nothing changes)."""
    if os.environ.get("NETDSL_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))


class _ForwardSettings:
    """While a fast module's forward runs, BLAS keeps to one thread and this file's pool does the
    splitting. OpenBLAS's own workers, once woken, spin for a long while after each product
    (OPENBLAS_THREAD_TIMEOUT: 2^28 cycles by default), and a spinning worker takes the core a pool
    thread needs: with them, the pool gained nothing on EfficientNet-B0. threadpoolctl sets the
    loaded BLAS's thread count and restores it after. The first forward also asks malloc to keep
    freed memory (keep_freed_memory), for the rest of the process."""

    def __init__(self):
        self._controller = None

    def __call__(self):
        if self._controller is None:  # it looks through the loaded libraries: once, when first used
            self._controller = ThreadpoolController()
            keep_freed_memory()
        return self._controller.limit(limits=1, user_api="blas")


# -- depthwise convolution ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Depthwise:
    """One depthwise convolution's geometry, and the layout its fast forward and backward share.

    Each channel's input is padded and split into its stride phases (rows a, a+sh, ...; columns
    b, b+sw, ...). A phase of one channel is laid out (hq, N, wq): its rows, and in each row the
    N images' rows side by side; the channels of a phase follow one another. Tap (i, j) of output
    (y, n, x) then reads element (y + r, n, x + c) of one phase, for a row offset r and column
    offset c of that tap: over all output rows of all images of a channel, the tap reads one
    contiguous run of ho*N*wq elements that starts r*N*wq + c further on. Outputs are computed at
    all wq columns (those past wo are thrown away; a run that goes past its channel reads only
    for those): the copies and BLAS then work on one run per channel and tap, and only the ho
    rows that are outputs are computed. (Planes (hq, wq) one after another, as first written,
    computed the hq - ho rows too: 121 positions for 49 on a 7x7 map with a 5x5 kernel, and one
    product per plane: 1152x8x7x7 took 5.1 ms on two cores, now 2.3.)"""
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dilation: int

    @classmethod
    def of(cls, x_shape: tuple, w_shape: tuple, stride, pad, dilation: int) -> "_Depthwise":
        (sh, sw), (ph, pw) = reference._pair(stride), reference._pair(pad)
        return cls(x_shape[2], x_shape[3], w_shape[2], w_shape[3], sh, sw, ph, pw, dilation)

    @property
    def out(self) -> tuple[int, int]:
        return ((self.h + 2 * self.ph - self.dilation * (self.kh - 1) - 1) // self.sh + 1,
                (self.w + 2 * self.pw - self.dilation * (self.kw - 1) - 1) // self.sw + 1)

    @property
    def phase(self) -> tuple[int, int]:
        return -(-(self.h + 2 * self.ph) // self.sh), -(-(self.w + 2 * self.pw) // self.sw)

    def run(self, images: int) -> int:
        """Elements of one tap's run for one channel: ho rows of the images' wq columns."""
        return self.out[0] * images * self.phase[1]

    def block(self, images: int, itemsize: int) -> int:
        """Channels per block: their columns fill _BLOCK_BYTES (at least one channel)."""
        return max(1, _BLOCK_BYTES // (self.kh * self.kw * self.run(images) * itemsize))

    def phases(self, x: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
        """For input channels x (C, N, h, w): the taps as views (C, rows, columns, run) of the
        phase buffer (this thread's scratch), one per phase: the taps that read one phase form a
        grid in it (row offsets r0, r0+dr, ...; column offsets c0, c0+dc, ...); and the taps'
        order (i*kw + j) in them. After the phases, one spare row: a tap's run of the last
        channel reads up to c past its end. The views are made once per call: as_strided costs
        microseconds, a slice of its result a fraction of one."""
        count, images, dtype = x.shape[0], x.shape[1], x.dtype
        (sh, sw), (ph, pw), d = (self.sh, self.sw), (self.ph, self.pw), self.dilation
        hq, wq = self.phase
        row, item, run = images * wq, dtype.itemsize, self.run(images)
        channel = hq * row
        buffer = _scratch().array("phases", (sh * sw * count * channel + row,), dtype)
        buffer[-row:] = 0
        grid = buffer[:-row].reshape(sh, sw, count, hq, images, wq)
        for a in range(sh):
            top, bottom = -(-(ph - a) // sh), -(-(ph + self.h - a) // sh)
            for b in range(sw):
                left, right = -(-(pw - b) // sw), -(-(pw + self.w - b) // sw)
                phase = grid[a, b]
                phase[:, :top] = phase[:, bottom:] = 0  # the padding: the buffer is reused
                phase[:, top:bottom, :, :left] = phase[:, top:bottom, :, right:] = 0
                phase[:, top:bottom, :, left:right] = (
                    x[:, :, a + sh * top - ph::sh, b + sw * left - pw::sw].transpose(0, 2, 1, 3))
        views, order = [], []
        for a in range(sh):
            rows = [i for i in range(self.kh) if i * d % sh == a]
            for b in range(sw):
                cols = [j for j in range(self.kw) if j * d % sw == b]
                if not rows or not cols:
                    continue
                r0, c0 = rows[0] * d // sh, cols[0] * d // sw
                dr = rows[1] * d // sh - r0 if len(rows) > 1 else 0
                dc = cols[1] * d // sw - c0 if len(cols) > 1 else 0
                offset = (a * sw + b) * count * channel + r0 * row + c0
                views.append(as_strided(buffer[offset:], shape=(count, len(rows), len(cols), run),
                                        strides=(channel * item, dr * row * item, dc * item, item),
                                        writeable=False))
                order += [i * self.kw + j for i in rows for j in cols]
        return views, order

    @staticmethod
    def gather(columns: np.ndarray, views: list[np.ndarray], first: int, stop: int) -> np.ndarray:
        """Channels first..stop of every tap, copied into columns (stop-first, taps, run): one
        copy per phase."""
        block, filled = columns[:stop - first], 0
        for view in views:
            part = view[first:stop]
            taps = part.shape[1] * part.shape[2]
            np.copyto(block[:, filled:filled + taps].reshape(part.shape), part)
            filled += taps
        return block


_THREAD = threading.local()


def _scratch() -> reference.Workspace:
    """This thread's scratch memory, reused from call to call: a fresh array of tens of MB costs
    as much in page faults as the copy into it (the 96x8x112x112 stride-2 depthwise layer: 21 ms
    with fresh buffers, 15 ms with reused ones, on one core)."""
    workspace = getattr(_THREAD, "workspace", None)
    if workspace is None:
        workspace = _THREAD.workspace = reference.Workspace()
    return workspace


def depthwise(x: np.ndarray, w: np.ndarray, stride, pad, dilation: int) -> np.ndarray:
    """reference._depthwise, a cache-sized block of channels at a time: the block's taps
    gathered into columns, then one matrix-vector product per channel. BLAS's fused
    multiply-adds beat two NumPy passes per tap by 2-3x, and the columns stay in cache between
    the copy and the product."""
    c, n, h, wid = x.shape
    if w.shape[0] != c:  # a channel multiplier: rare, left to the reference
        return reference._depthwise(x, w, stride, pad, dilation)
    geometry = _Depthwise.of(x.shape, w.shape, stride, pad, dilation)
    (ho, wo), (hq, wq), taps = geometry.out, geometry.phase, geometry.kh * geometry.kw
    dtype = np.result_type(x, w)
    x = x.astype(dtype, copy=False)
    run = geometry.run(n)
    out = np.empty((c, n, ho, wo), dtype=dtype)

    def work(first: int, stop: int) -> None:
        count = stop - first
        step = min(geometry.block(n, dtype.itemsize), count)
        # A strided convolution whose phases would not stay in cache splits its input into phases
        # a block of channels at a time, and the gathers find the block's phases in cache
        # (96x8x112x112, stride 2, 20 MB of phases per thread: 14 -> 10 ms). Smaller ones, and
        # stride 1 (the phases are a padded copy), lose more to the calls per block than they
        # gain (240x8x28x28: 2.8 -> 4.9 ms).
        phase_bytes = geometry.sh * geometry.sw * hq * n * wq * dtype.itemsize
        by_block = geometry.sh * geometry.sw > 1 and count * phase_bytes > _PHASES_IN_CACHE
        views, order = geometry.phases(x[first:first + step] if by_block else x[first:stop])
        weights = w[first:stop, 0].reshape(-1, taps)[:, order].astype(dtype)[:, None]
        result = out[first:stop]
        columns = _scratch().array("columns", (step, taps, run), dtype)
        products = _scratch().array("products", (step, 1, run), dtype)
        for start in range(0, count, step):
            end = min(start + step, count)
            if by_block and start:
                views, _ = geometry.phases(x[first + start:first + end])
            in_views = 0 if by_block else start
            np.matmul(weights[start:end], geometry.gather(columns, views, in_views, in_views + end - start),
                      out=products[:end - start])
            rows = products[:end - start].reshape(end - start, ho, n, wq)
            result[start:end] = rows[:, :, :, :wo].transpose(0, 2, 1, 3)

    split(work, c, out.size * taps * _NS_PER_PASS)
    return out


def depthwise_grads(x: np.ndarray, w: np.ndarray, dy: np.ndarray, stride, pad,
                    dilation: int) -> tuple[np.ndarray, np.ndarray]:
    """reference._depthwise_grads: (dx, dw). dw from the forward's gathered columns, one
    matrix-vector product per channel with dy; dx as the forward of dy spread out by the stride
    with the kernel turned round (a transposed convolution), padded by the kernel's reach."""
    c, n, h, wid = x.shape
    if w.shape[0] != c:
        return reference._depthwise_grads(x, w, dy, stride, pad, dilation)
    geometry = _Depthwise.of(x.shape, w.shape, stride, pad, dilation)
    (ho, wo), (hq, wq), taps = geometry.out, geometry.phase, geometry.kh * geometry.kw
    (sh, sw), (ph, pw), d = (geometry.sh, geometry.sw), (geometry.ph, geometry.pw), dilation
    dtype = dy.dtype
    x = x.astype(dtype, copy=False)
    run = geometry.run(n)

    spread = np.zeros((c, n, (ho - 1) * sh + 1, (wo - 1) * sw + 1), dtype=dtype)
    spread[:, :, ::sh, ::sw] = dy
    # full[r] is the gradient of the padded input's row r; rows past the last one a tap reached
    # (when the stride does not divide the input) get none
    full = depthwise(spread, w[:, :, ::-1, ::-1], 1, (d * (geometry.kh - 1), d * (geometry.kw - 1)), d)
    dx = np.zeros(x.shape, dtype=dtype)
    rows, cols = min(h, full.shape[2] - ph), min(wid, full.shape[3] - pw)
    dx[:, :, :rows, :cols] = full[:, :, ph:ph + rows, pw:pw + cols]

    dw = np.zeros((c, taps), dtype=dtype)

    def work(first: int, stop: int) -> None:
        count = stop - first
        views, order = geometry.phases(x[first:stop])
        # dy laid out as the columns are, zero where they hold thrown-away columns
        dy_rows = _scratch().array("dy rows", (count, ho, n, wq), dtype)
        dy_rows[:, :, :, wo:] = 0
        dy_rows[:, :, :, :wo] = dy[first:stop].transpose(0, 2, 1, 3)
        dy_columns = dy_rows.reshape(count, run, 1)
        per_channel = np.empty((count, taps, 1), dtype=dtype)
        step = min(geometry.block(n, dtype.itemsize), count)
        columns = _scratch().array("columns", (step, taps, run), dtype)
        for start in range(0, count, step):
            end = min(start + step, count)
            np.matmul(geometry.gather(columns, views, start, end), dy_columns[start:end],
                      out=per_channel[start:end])
        dw[first:stop][:, order] = per_channel[:, :, 0]

    split(work, c, x.size * taps * _NS_PER_PASS)
    return dx, dw.reshape(w.shape)


def _dwconv_forward(node: Node, inputs, weights, state):
    a = node.attrs
    x = inputs[0]
    y = depthwise(x, weights["weight"], reference._strides(a), reference._pads(a), a["dilation"])
    if a["bias"]:
        y += weights["bias"].reshape(-1, 1, 1, 1)
    return y, x


def _dwconv_backward(node: Node, dy, x, weights):
    a = node.attrs
    dx, dw = depthwise_grads(x, weights["weight"], dy, reference._strides(a), reference._pads(a),
                             a["dilation"])
    grads = {"weight": dw}
    if a["bias"]:
        grads["bias"] = dy.sum(axis=(1, 2, 3))
    return [dx], grads


# -- 1x1 convolution ---------------------------------------------------------------------------------

def _conv_forward(node: Node, inputs, weights, state):
    a = node.attrs
    x, w = inputs[0], weights["weight"]
    pointwise = (w.shape[2:] == (1, 1) and a["groups"] == 1 and reference._strides(a) == (1, 1)
                 and reference._pads(a) == (0, 0))
    if not pointwise:
        return reference._conv_forward(node, inputs, weights, state)
    # Channels first, so the input already is the columns matrix: no copy.
    c, n, h, wid = x.shape
    y = state.matmul(w.reshape(w.shape[0], c), x.reshape(c, n * h * wid)).reshape(w.shape[0], n, h, wid)
    if a["bias"]:
        y += weights["bias"].reshape(-1, 1, 1, 1)
    return y, (x, state.workspace)


# -- batch norm, and SiLU after it ----------------------------------------------------------------------

def split_in_blocks(work: Callable[[int, int], None], length: int, row_size: int, passes: int) -> None:
    """split() over rows of row_size elements, each thread taking its range a block of about
    _PASS_BLOCK elements at a time, so that work's later passes (of `passes`) over a block find it
    in cache."""
    per_block = max(1, _PASS_BLOCK // row_size)

    def blocks(first: int, stop: int) -> None:
        for start in range(first, stop, per_block):
            work(start, min(start + per_block, stop))

    split(blocks, length, length * row_size * passes * _NS_PER_PASS)


def _silu_into(x: np.ndarray, out: np.ndarray) -> None:
    """x / (1 + exp(-x)): as accurate as the reference's logistic (no cancellation: the sum is of
    two positive numbers), in four NumPy passes instead of seven."""
    np.negative(x, out=out)
    # exp(88.8) is inf in float32, and x / inf is the limit 0; exp(-104) underflows to 0, and x / 1
    # is x
    with np.errstate(over="ignore", under="ignore"):
        np.exp(out, out=out)
    out += 1
    np.divide(x, out, out=out)


def _batch_norm(node: Node, x: np.ndarray, weights, state, then: Callable | None = None):
    """reference._bn_forward, a block of channels at a time: the block's mean, its centred values
    (in scratch memory), their variance and the output, while the block is in cache; then
    then(output block, block of the next op's output), if given. Its cache keeps the input, not
    the normalised input (_bn_backward makes that): one array fewer to write. The same
    statistics and running averages. Returns the output, the next op's output (or None) and the
    cache."""
    eps, momentum = node.attrs["eps"], node.attrs["momentum"]
    c = x.shape[0]
    flat = x.reshape(c, -1)
    count = flat.shape[1]
    y = np.empty_like(flat)
    after = None if then is None else np.empty_like(flat)
    training = state.training
    mean = np.empty(c, dtype=flat.dtype) if training else weights["running_mean"]
    var = np.empty(c, dtype=flat.dtype) if training else weights["running_var"]
    inv = np.empty(c, dtype=flat.dtype)
    scale, shift = weights["weight"], weights["bias"]

    def work(first: int, stop: int) -> None:  # a block of channels (split_in_blocks)
        rows = slice(first, stop)
        centred = _scratch().array("centred", (stop - first, count), flat.dtype)
        if training:
            np.mean(flat[rows], axis=1, out=mean[rows])
        np.subtract(flat[rows], mean[rows, None], out=centred)
        if training:
            var[rows] = np.einsum("ij,ij->i", centred, centred) / count
        inv[rows] = 1.0 / np.sqrt(var[rows] + eps)
        np.multiply(centred, (scale[rows] * inv[rows])[:, None], out=y[rows])
        y[rows] += shift[rows, None]
        if then is not None:
            then(y[rows], after[rows])

    # mean, centre, variance, scale and shift; four more for a SiLU
    split_in_blocks(work, c, count, passes=5 if then is None else 9)
    if training:  # torch keeps the unbiased variance
        weights["running_mean"] *= 1 - momentum
        weights["running_mean"] += momentum * mean
        weights["running_var"] *= 1 - momentum
        weights["running_var"] += momentum * var * count / max(count - 1, 1)
    return (y.reshape(x.shape), None if after is None else after.reshape(x.shape),
            (x, mean, inv, training))


def _bn_forward(node: Node, inputs, weights, state):
    y, _, cache = _batch_norm(node, inputs[0], weights, state)
    return y, cache


def _bn_backward(node: Node, dy, cache, weights):
    x, mean, inv, training = cache
    shape = (-1, *([1] * (x.ndim - 1)))
    normalised = x - mean.reshape(shape)
    normalised *= inv.reshape(shape)
    return reference._bn_backward(node, dy, (normalised, inv, training), weights)


def _bn_silu_forward(bn: Node, silu: Node, inputs, weights, state):
    """Batch norm, then SiLU on each block of its output while the block is in cache: on
    EfficientNet-B0 (batch 8) the SiLU's input would otherwise come back from memory."""
    y, z, cache = _batch_norm(bn, inputs[0], weights, state, then=_silu_into)
    return y, cache, z, y  # SiLU's backward reads its input


# -- element-wise ops --------------------------------------------------------------------------------

def _silu_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    y = np.empty_like(x)
    split_in_blocks(lambda first, stop: _silu_into(x[first:stop], y[first:stop]),
                    x.shape[0], x.size // max(1, x.shape[0]), passes=4)
    return y, x


def _gap_forward(node: Node, inputs, weights, state):
    """Each plane's mean as a matrix-vector product with a vector of 1/(H*W) (BLAS, split over
    the pool): EfficientNet-B0's squeeze-and-excitation inputs, 0.25 -> 0.07 ms (1152x8x7x7) and
    0.58 -> 0.23 ms (144x8x56x56) against NumPy's mean."""
    x = inputs[0]
    c, n, h, w = x.shape
    by_plane = np.full((h * w, 1), 1 / (h * w), dtype=x.dtype)
    return state.matmul(x.reshape(c * n, h * w), by_plane).reshape(c, n, 1, 1), x.shape


def _relu6(x: np.ndarray, attrs, out) -> np.ndarray:
    y = np.empty_like(x) if out is None else out
    split(lambda a, b: np.clip(x[a:b], 0, 6, out=y[a:b]), x.shape[0], x.size * _NS_PER_PASS)
    return y


def _mul_forward(node: Node, inputs, weights, state):
    """The squeeze-and-excitation gate: a (C, N, H, W) tensor times a (C, N, 1, 1) one."""
    if len(inputs) != 2 or inputs[0].shape != np.broadcast_shapes(inputs[0].shape, inputs[1].shape):
        return reference._mul_forward(node, inputs, weights, state)
    x, gate = inputs
    y = np.empty_like(x, dtype=np.result_type(x, gate))
    split(lambda a, b: np.multiply(x[a:b], gate[a:b] if gate.shape[0] > 1 else gate, out=y[a:b]),
               x.shape[0], x.size * _NS_PER_PASS)
    return y, inputs


def _relu6_forward(node: Node, inputs, weights, state):
    y = _relu6(inputs[0], node.attrs, None)
    return y, y


def _relu6_in_place(node: Node, inputs, weights, state):
    y = _relu6(inputs[0], node.attrs, inputs[0])
    return y, y


# The reference's table with these kernels in place of its own.
KERNELS: dict[str, Kernel] = {
    **reference.KERNELS,
    "dwconv": Kernel(_dwconv_forward, _dwconv_backward, caches_output=False),
    "conv": Kernel(_conv_forward, reference.KERNELS["conv"].backward, caches_output=False),
    "bn": Kernel(_bn_forward, _bn_backward, caches_output=False),
    "silu": Kernel(_silu_forward, reference.KERNELS["silu"].backward),
    "relu6": Kernel(_relu6_forward, reference.KERNELS["relu6"].backward, _relu6_in_place),
    "mul": Kernel(_mul_forward, reference.KERNELS["mul"].backward),
    "gap": Kernel(_gap_forward, reference.KERNELS["gap"].backward),
}

# The faster kernels' way of running: products split over the pool, BLAS single-threaded meanwhile,
# batch norm and the SiLU after it in one pass of blocks.
EXECUTION = reference.Execution(matmul=parallel_matmul, context=_ForwardSettings(),
                                activations_in_place=True,
                                fusions=(reference.Fusion("bn", "silu", _bn_silu_forward),))
