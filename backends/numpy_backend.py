"""The NumPy reference backend: forward and backward for every op, the oracle other backends meet.

Convolution is the slides' lesson made executable: the input's sliding windows are viewed in place
(as_strided), copied once into columns, and multiplied by the weights in one GEMM (AlexNet's conv1
is a [96 x 363] by [363 x 3025] product per image). The backward pass gets dW by GEMM and dX by
col2im as kh*kw strided adds. Columns are never kept between passes.

Internally every tensor is channels-first, then batch: (C, N, H, W) or (C, N). A conv's GEMM output
(Cout, N*Ho*Wo) is then already the next layer's input, and channel-wise ops (bn, lrn, softmax,
concat) act on axis 0 for images and vectors alike. The module converts at its boundary.

>>> net = netdsl.load("lenet5")
>>> m = net.compile("numpy", dtype="float64", seed=0)
>>> y = m(np.zeros((2, 1, 32, 32))); dx = m.backward(np.ones_like(y)); sorted(m.grads)[:2]
['conv1.bias', 'conv1.weight']
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Callable, ContextManager, Mapping

import numpy as np
from numpy.lib.stride_tricks import as_strided

from netdsl.ops.pool import adaptive_bounds
from netdsl.ops.structure import crop_offsets
from netdsl.backend import WEIGHT_WRITERS, Backend, check_input, interpret
from netdsl.ir import Node
from netdsl.ops import fused_activation
from netdsl.weights import bilinear_weight

# -- convolution primitives -------------------------------------------------------------------------


class Workspace:
    """Scratch memory reused by every layer and every call: the columns of one convolution and
    one padded input at a time. A fresh multi-GB array per layer would spend more time in page
    faults than in the copy itself."""

    def __init__(self):
        self.buffers: dict[str, np.ndarray] = {}

    def array(self, purpose: str, shape: tuple, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = math.prod(shape) * dtype.itemsize
        buffer = self.buffers.get(purpose)
        if buffer is None or buffer.nbytes < size:
            buffer = self.buffers[purpose] = np.empty(size, dtype=np.uint8)
        return buffer[:size].view(dtype).reshape(shape)


_SCRATCH = Workspace()  # for calls made outside a module (tests of single primitives)


def _pad(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: float = 0.0,
         workspace: Workspace | None = None) -> np.ndarray:
    """x (C, N, H, W) padded on H and W, written into the workspace (valid until its next use)."""
    if not (top or bottom or left or right):
        return np.ascontiguousarray(x)
    c, n, h, w = x.shape
    out = (workspace or _SCRATCH).array("pad", (c, n, h + top + bottom, w + left + right), x.dtype)
    out[:, :, :top] = value
    out[:, :, top + h:] = value
    out[:, :, top:top + h, :left] = value
    out[:, :, top:top + h, left + w:] = value
    out[:, :, top:top + h, left:left + w] = x
    return out


def _pair(value) -> tuple[int, int]:
    """(height, width) of a kernel, stride or padding given as one number or as a pair."""
    return value if isinstance(value, tuple) else (value, value)


def _windows(xp: np.ndarray, k, stride, dilation: int, ho: int, wo: int) -> np.ndarray:
    """A (C, kh, kw, N, Ho, Wo) view of the sliding windows of a padded (C, N, Hp, Wp) array;
    `k` and `stride` are one number or (height, width) pairs."""
    (kh, kw), (s_h, s_w) = _pair(k), _pair(stride)
    c, n, _, _ = xp.shape
    sc, sn, sh, sw = xp.strides
    return as_strided(xp, shape=(c, kh, kw, n, ho, wo),
                      strides=(sc, sh * dilation, sw * dilation, sn, sh * s_h, sw * s_w),
                      writeable=False)


def _im2col(xp: np.ndarray, k, stride, dilation: int, ho: int, wo: int,
            groups: int, workspace: Workspace | None = None) -> np.ndarray:
    """Columns (groups, C/groups*kh*kw, N*Ho*Wo): one contiguous copy of the window view."""
    c, n = xp.shape[:2]
    view = _windows(xp, k, stride, dilation, ho, wo)
    cols = (workspace or _SCRATCH).array("cols", view.shape, xp.dtype)
    np.copyto(cols, view)
    return cols.reshape(groups, -1, n * ho * wo)


def _col2im(cols: np.ndarray, padded_shape: tuple, k, stride, dilation: int,
            ho: int, wo: int) -> np.ndarray:
    """The adjoint of _im2col: sums each column back into its window, as kh*kw strided adds."""
    (kh, kw), (sh, sw) = _pair(k), _pair(stride)
    c, n = padded_shape[:2]
    cols = cols.reshape(c, kh, kw, n, ho, wo)
    out = np.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * dilation: i * dilation + sh * (ho - 1) + 1: sh,
                j * dilation: j * dilation + sw * (wo - 1) + 1: sw] += cols[:, i, j]
    return out


def _conv(x: np.ndarray, w: np.ndarray, stride, pad, dilation: int, groups: int,
          workspace: Workspace | None = None, matmul: Callable = np.matmul) -> np.ndarray:
    """Convolution of x (C, N, H, W) with w (Cout, C/groups, kh, kw) -> (Cout, N, Ho, Wo);
    `stride` and `pad` are one number or (height, width) pairs."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(pad)
    c, n, h, wid = x.shape
    cout, _, kh, kw = w.shape
    ho = (h + 2 * ph - dilation * (kh - 1) - 1) // sh + 1
    wo = (wid + 2 * pw - dilation * (kw - 1) - 1) // sw + 1
    xp = _pad(x, ph, ph, pw, pw, workspace=workspace)
    cols = _im2col(xp, (kh, kw), (sh, sw), dilation, ho, wo, groups, workspace)
    out = matmul(w.reshape(groups, cout // groups, -1), cols)
    return out.reshape(cout, n, ho, wo)


def _conv_grad_input(dy: np.ndarray, w: np.ndarray, x_shape: tuple, stride, pad,
                     dilation: int, groups: int, workspace: Workspace | None = None,
                     matmul: Callable = np.matmul) -> np.ndarray:
    """d(conv)/dx applied to dy (Cout, N, Ho, Wo) -> (C, N, H, W)."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(pad)
    c, n, h, wid = x_shape
    cout, _, kh, kw = w.shape
    _, _, ho, wo = dy.shape
    wg = w.reshape(groups, cout // groups, -1)
    dcols = (workspace or _SCRATCH).array("cols", (groups, wg.shape[2], n * ho * wo), dy.dtype)
    matmul(wg.transpose(0, 2, 1), dy.reshape(groups, cout // groups, n * ho * wo), out=dcols)
    hp = max(h + 2 * ph, (ho - 1) * sh + dilation * (kh - 1) + 1)
    wp = max(wid + 2 * pw, (wo - 1) * sw + dilation * (kw - 1) + 1)
    dxp = _col2im(dcols, (c, n, hp, wp), (kh, kw), (sh, sw), dilation, ho, wo)
    return dxp[:, :, ph:ph + h, pw:pw + wid]


def _conv_grad_weight(x: np.ndarray, dy: np.ndarray, k, stride, pad, dilation: int,
                      groups: int, workspace: Workspace | None = None) -> np.ndarray:
    """d(conv)/dw for input x (C, N, H, W) and dy (Cout, N, Ho, Wo) -> (Cout, C/groups, kh, kw)."""
    (kh, kw), (ph, pw) = _pair(k), _pair(pad)
    c = x.shape[0]
    cout, n, ho, wo = dy.shape
    xp = _pad(x, ph, ph, pw, pw, workspace=workspace)
    cols = _im2col(xp, (kh, kw), stride, dilation, ho, wo, groups, workspace)
    dw = np.matmul(dy.reshape(groups, cout // groups, n * ho * wo), cols.transpose(0, 2, 1))
    return dw.reshape(cout, c // groups, kh, kw)


def _depthwise(x: np.ndarray, w: np.ndarray, stride, pad, dilation: int) -> np.ndarray:
    """Depthwise convolution, tap by tap: x (C, N, H, W), w (C*m, 1, kh, kw) -> (C*m, N, Ho, Wo);
    output channel o reads input channel o // m. No im2col: each of the kh*kw taps is one
    strided slice times a per-channel weight."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(pad)
    c, n, h, wid = x.shape
    cout, _, kh, kw = w.shape
    ho = (h + 2 * ph - dilation * (kh - 1) - 1) // sh + 1
    wo = (wid + 2 * pw - dilation * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    if cout != c:
        xp = np.repeat(xp, cout // c, axis=0)
    out = np.zeros((cout, n, ho, wo), dtype=np.result_type(x, w))
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, i * dilation: i * dilation + sh * (ho - 1) + 1: sh,
                     j * dilation: j * dilation + sw * (wo - 1) + 1: sw]
            out += w[:, 0, i, j].reshape(-1, 1, 1, 1) * tap
    return out


def _depthwise_grads(x: np.ndarray, w: np.ndarray, dy: np.ndarray, stride, pad,
                     dilation: int) -> tuple[np.ndarray, np.ndarray]:
    """The adjoint of _depthwise, tap by tap: (dx, dw)."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(pad)
    c, n, h, wid = x.shape
    cout, _, kh, kw = w.shape
    _, _, ho, wo = dy.shape
    m = cout // c
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    if m != 1:
        xp = np.repeat(xp, m, axis=0)
    dxp = np.zeros(xp.shape, dtype=dy.dtype)
    dw = np.zeros(w.shape, dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dilation, i * dilation + sh * (ho - 1) + 1, sh)
            cols = slice(j * dilation, j * dilation + sw * (wo - 1) + 1, sw)
            dw[:, 0, i, j] = (dy * xp[:, :, rows, cols]).sum(axis=(1, 2, 3))
            dxp[:, :, rows, cols] += w[:, 0, i, j].reshape(-1, 1, 1, 1) * dy
    dx = dxp[:, :, ph:ph + h, pw:pw + wid]
    if m != 1:  # each input channel fed m outputs
        dx = dx.reshape(c, m, n, h, wid).sum(axis=1)
    return np.ascontiguousarray(dx), dw


# -- per-op kernels -----------------------------------------------------------------------------------
# forward(node, inputs, weights, state) -> (output, cache); backward(node, dy, cache, weights)
# -> (input gradients, weight gradients keyed by suffix). `state` carries train/eval and the rng.


@dataclass(frozen=True)
class Kernel:
    """One op's forward and backward. `in_place`, for activations only, is a forward that may
    overwrite its input: used for an activation fused into a layer, whose fresh output nothing
    else reads."""
    forward: Callable
    backward: Callable
    in_place: Callable | None = None
    # whether its cache holds its own output (an activation's backward reads its output): a later
    # activation may then not overwrite that output
    caches_output: bool = True


@dataclass
class _State:
    training: bool
    rng: np.random.Generator
    workspace: Workspace
    matmul: Callable = np.matmul  # the matrix product of forward kernels (Execution.matmul)


@dataclass(frozen=True)
class Fusion:
    """Two ops run by one forward where the first's output is read by the second alone, and the
    second has no weights: forward(first, second, inputs, weights, state) -> (first's output, its
    cache, second's output, its cache), with the first's weights. Each op keeps its own backward,
    which gets the cache its own forward would have made. (The pair's point: the second reads the
    first's output block by block while it is still in cache.)"""
    first: str
    second: str
    forward: Callable


@dataclass(frozen=True)
class Execution:
    """How a module runs its forward: the matrix product its kernels use, the context the whole
    forward runs in, and which pairs of ops run as one. The plain one is np.matmul in no context;
    backends/numpy_fast.py's splits products over its threads while BLAS keeps to one."""
    matmul: Callable = np.matmul
    context: Callable[[], ContextManager] = contextlib.nullcontext
    # an activation that is its own layer overwrites its input where nothing else needs it (the
    # input's only reader, a producer whose cache does not hold it), as a fused one always does
    activations_in_place: bool = False
    fusions: tuple[Fusion, ...] = ()


PLAIN = Execution()


def _strides(a) -> tuple[int, int]:
    return a["stride_h"], a["stride_w"]


def _pads(a) -> tuple[int, int]:
    return a["pad_h"], a["pad_w"]


def _conv_forward(node: Node, inputs, weights, state):
    a = node.attrs
    x = inputs[0]
    y = _conv(x, weights["weight"], _strides(a), _pads(a), a["dilation"], a["groups"], state.workspace,
              state.matmul)
    if a["bias"]:
        y += weights["bias"].reshape(-1, 1, 1, 1)
    return y, (x, state.workspace)


def _conv_backward(node: Node, dy, cache, weights):
    a = node.attrs
    x, workspace = cache
    w = weights["weight"]
    grads = {"weight": _conv_grad_weight(x, dy, w.shape[2:], _strides(a), _pads(a), a["dilation"],
                                         a["groups"], workspace)}
    dx = _conv_grad_input(dy, w, x.shape, _strides(a), _pads(a), a["dilation"], a["groups"], workspace)
    if a["bias"]:
        grads["bias"] = dy.sum(axis=(1, 2, 3))
    return [dx], grads


def _dwconv_forward(node: Node, inputs, weights, state):
    a = node.attrs
    x = inputs[0]
    y = _depthwise(x, weights["weight"], _strides(a), _pads(a), a["dilation"])
    if a["bias"]:
        y += weights["bias"].reshape(-1, 1, 1, 1)
    return y, x


def _dwconv_backward(node: Node, dy, x, weights):
    a = node.attrs
    dx, dw = _depthwise_grads(x, weights["weight"], dy, _strides(a), _pads(a), a["dilation"])
    grads = {"weight": dw}
    if a["bias"]:
        grads["bias"] = dy.sum(axis=(1, 2, 3))
    return [dx], grads


def _deconv_out(node: Node, x_shape: tuple, w: np.ndarray) -> tuple:
    a = node.attrs
    c_in, n, h, wid = x_shape
    k = w.shape[2]

    def grow(size):
        return (size - 1) * a["stride"] - 2 * a["pad"] + a["dilation"] * (k - 1) + 1 + a["output_pad"]
    return (w.shape[1] * a["groups"], n, grow(h), grow(wid))


def _deconv_forward(node: Node, inputs, weights, state):
    # A transposed convolution is the input-gradient of the convolution it inverts: its weight
    # (Cin, Cout/groups, k, k) is that convolution's weight, mapping Cout channels to Cin.
    a = node.attrs
    x = inputs[0]
    w = weights["weight"]
    y = _conv_grad_input(x, w, _deconv_out(node, x.shape, w), a["stride"], a["pad"], a["dilation"],
                         a["groups"], state.workspace, state.matmul)
    y = np.ascontiguousarray(y)
    if a["bias"]:
        y += weights["bias"].reshape(-1, 1, 1, 1)
    return y, (x, state.workspace)


def _deconv_backward(node: Node, dy, cache, weights):
    # <deconv_w(x), dy> = <x, conv_w(dy)>: the input gradient is a convolution of dy, and the
    # weight gradient is the convolution's weight gradient with dy as its input and x as its output.
    a = node.attrs
    x, workspace = cache
    w = weights["weight"]
    dx = _conv(dy, w, a["stride"], a["pad"], a["dilation"], a["groups"], workspace)
    grads = {"weight": _conv_grad_weight(dy, x, w.shape[2], a["stride"], a["pad"], a["dilation"],
                                         a["groups"], workspace)}
    if a["bias"]:
        grads["bias"] = dy.sum(axis=(1, 2, 3))
    return [dx], grads


def _pool_geometry(node: Node, shape: tuple) -> tuple[int, int, int, int, int, int]:
    """Output size and padding (top/left, bottom, right) of a pool, ceil mode included."""
    a = node.attrs
    _, _, h, w = shape
    k, s, p = a["k"], a["stride"], a["pad"]

    def out(size):
        room = size + 2 * p - k
        o = (-(-room // s) if a["ceil"] else room // s) + 1
        if a["ceil"] and (o - 1) * s >= size + p:
            o -= 1
        return o
    ho, wo = out(h), out(w)
    bottom = max(p, (ho - 1) * s + k - h - p)
    right = max(p, (wo - 1) * s + k - w - p)
    return ho, wo, p, bottom, right, k


def _maxpool_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    ho, wo, p, bottom, right, k = _pool_geometry(node, x.shape)
    s = node.attrs["stride"]
    xp = _pad(x, p, bottom, p, right, -np.inf, state.workspace)
    y = None
    for i in range(k):  # a running maximum over the k*k strided slices: no window copy
        for j in range(k):
            tap = xp[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s]
            if y is None:
                y = tap.copy()
            else:
                np.maximum(y, tap, out=y)
    return y, (x, y)


def _maxpool_backward(node: Node, dy, cache, weights):
    # The gradient goes to the first maximum of each window in row-major order, as in torch.
    x, y = cache
    ho, wo, p, bottom, right, k = _pool_geometry(node, x.shape)
    s = node.attrs["stride"]
    xp = _pad(x, p, bottom, p, right, -np.inf)
    dxp = np.zeros(xp.shape, dtype=dy.dtype)
    routed = np.zeros(y.shape, dtype=bool)
    for i in range(k):
        for j in range(k):
            hit = xp[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s] == y
            hit &= ~routed
            routed |= hit
            dxp[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s] += dy * hit
    return [dxp[:, :, p:p + x.shape[2], p:p + x.shape[3]]], {}


def _avgpool_divisor(node: Node, shape: tuple, dtype) -> np.ndarray:
    """How many values each window averages: torch's and Caffe's rule, ceil mode included."""
    a = node.attrs
    ho, wo, p, bottom, right, k = _pool_geometry(node, shape)
    _, _, h, w = shape
    mask = np.zeros((1, 1, h + p + bottom, w + p + right), dtype=dtype)
    if a["count_pad"]:
        mask[:, :, :h + 2 * p, :w + 2 * p] = 1  # padding counts, the ceil overhang does not
    else:
        mask[:, :, p:p + h, p:p + w] = 1
    return _windows(mask, k, a["stride"], 1, ho, wo).sum(axis=(1, 2))[0, 0]


def _avgpool_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    ho, wo, p, bottom, right, k = _pool_geometry(node, x.shape)
    xp = _pad(x, p, bottom, p, right, workspace=state.workspace)
    divisor = _avgpool_divisor(node, x.shape, x.dtype)
    y = _windows(xp, k, node.attrs["stride"], 1, ho, wo).sum(axis=(1, 2)) / divisor
    return y, (x.shape, xp.shape, divisor)


def _avgpool_backward(node: Node, dy, cache, weights):
    shape, padded, divisor = cache
    ho, wo, p, _, _, k = _pool_geometry(node, shape)
    s = node.attrs["stride"]
    share = dy / divisor
    dxp = np.zeros(padded, dtype=dy.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s] += share
    return [dxp[:, :, p:p + shape[2], p:p + shape[3]]], {}


def _gap_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    return x.mean(axis=(2, 3), keepdims=True), x.shape


def _gap_backward(node: Node, dy, shape, weights):
    return [np.broadcast_to(dy / (shape[2] * shape[3]), shape).copy()], {}


def _gmp_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    c, n, h, w = x.shape
    first = x.reshape(c, n, h * w).argmax(axis=2)  # the first maximum in row-major order, as torch
    return x.reshape(c, n, h * w).max(axis=2).reshape(c, n, 1, 1), (x.shape, first)


def _gmp_backward(node: Node, dy, cache, weights):
    (c, n, h, w), first = cache
    dx = np.zeros((c, n, h * w), dtype=dy.dtype)
    np.put_along_axis(dx, first[:, :, None], dy.reshape(c, n, 1), axis=2)
    return [dx.reshape(c, n, h, w)], {}


def _adaptive_windows(node: Node, shape: tuple):
    """(output row, output column, input rows, input columns) of every adaptive-pool window."""
    o = node.attrs["size"]
    _, _, h, w = shape
    for i, (r0, r1) in enumerate(adaptive_bounds(h, o)):
        for j, (c0, c1) in enumerate(adaptive_bounds(w, o)):
            yield i, j, slice(r0, r1), slice(c0, c1)


def _adaptive_avgpool_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    o = node.attrs["size"]
    y = np.empty((*x.shape[:2], o, o), dtype=x.dtype)
    for i, j, rows, cols in _adaptive_windows(node, x.shape):
        y[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
    return y, x.shape


def _adaptive_avgpool_backward(node: Node, dy, shape, weights):
    dx = np.zeros(shape, dtype=dy.dtype)
    for i, j, rows, cols in _adaptive_windows(node, shape):
        count = (rows.stop - rows.start) * (cols.stop - cols.start)
        dx[:, :, rows, cols] += (dy[:, :, i, j] / count)[:, :, None, None]
    return [dx], {}


def _adaptive_maxpool_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    o = node.attrs["size"]
    y = np.empty((*x.shape[:2], o, o), dtype=x.dtype)
    for i, j, rows, cols in _adaptive_windows(node, x.shape):
        y[:, :, i, j] = x[:, :, rows, cols].max(axis=(2, 3))
    return y, x


def _adaptive_maxpool_backward(node: Node, dy, x, weights):
    # The gradient goes to the first maximum of each window in row-major order, as in torch.
    c, n = x.shape[:2]
    dx = np.zeros(x.shape, dtype=dy.dtype)
    for i, j, rows, cols in _adaptive_windows(node, x.shape):
        window = x[:, :, rows, cols]
        first = window.reshape(c, n, -1).argmax(axis=2)
        share = np.zeros((c, n, window.shape[2] * window.shape[3]), dtype=dy.dtype)
        np.put_along_axis(share, first[:, :, None], dy[:, :, i, j, None], axis=2)
        dx[:, :, rows, cols] += share.reshape(window.shape)
    return [dx], {}


def _as_matrix(x: np.ndarray) -> np.ndarray:
    """(C, N, H, W) -> (C*H*W, N), flattening each sample in C, H, W order; tokens (T, N, D) ->
    (T*D, N) in T, D order; (C, N) stays."""
    if x.ndim == 2:
        return x
    if x.ndim == 3:
        t, n, d = x.shape
        return x.transpose(0, 2, 1).reshape(t * d, n)
    c, n, h, w = x.shape
    return x.transpose(0, 2, 3, 1).reshape(c * h * w, n)


def _from_matrix(dx: np.ndarray, shape: tuple) -> np.ndarray:
    if len(shape) == 2:
        return dx
    if len(shape) == 3:
        t, n, d = shape
        return dx.reshape(t, d, n).transpose(0, 2, 1)
    c, n, h, w = shape
    return dx.reshape(c, h, w, n).transpose(0, 3, 1, 2)


def _fc_forward(node: Node, inputs, weights, state):
    if inputs[0].ndim == 3:  # tokens (T, N, D): each token on its own, as torch's Linear
        return _token_fc_forward(node, inputs, weights, state)
    x = _as_matrix(inputs[0])
    y = state.matmul(weights["weight"], x)
    if node.attrs["bias"]:
        y += weights["bias"][:, None]
    return y, (x, inputs[0].shape)


def _fc_backward(node: Node, dy, cache, weights):
    if dy.ndim == 3:
        return _token_fc_backward(node, dy, cache, weights)
    x, shape = cache
    grads = {"weight": dy @ x.T}
    if node.attrs["bias"]:
        grads["bias"] = dy.sum(axis=1)
    return [_from_matrix(weights["weight"].T @ dy, shape)], grads


# -- token tensors: (T, N, D) inside, tokens first as a CxHxW image's channels are --------------------
# The module's boundary swaps the first two axes, so a TxD tensor leaves as torch's (N, T, D).

def _token_fc_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    y = state.matmul(x, weights["weight"].T)
    if node.attrs["bias"]:
        y += weights["bias"]
    return y, x


def _token_fc_backward(node: Node, dy, x, weights):
    grads = {"weight": np.einsum("tnc,tnd->cd", dy, x)}
    if node.attrs["bias"]:
        grads["bias"] = dy.sum(axis=(0, 1))
    return [dy @ weights["weight"]], grads


def _tokens_forward(node: Node, inputs, weights, state):
    # (C, N, H, W) -> (H*W, N, C): torchvision's x.reshape(n, c, h*w).permute(0, 2, 1)
    x = inputs[0]
    c, n, h, w = x.shape
    return np.ascontiguousarray(x.reshape(c, n, h * w).transpose(2, 1, 0)), x.shape


def _tokens_backward(node: Node, dy, shape, weights):
    return [np.ascontiguousarray(dy.transpose(2, 1, 0)).reshape(shape)], {}


def _class_token_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    first = np.broadcast_to(weights["weight"].reshape(1, 1, -1), (1, x.shape[1], x.shape[2]))
    return np.concatenate([first, x], axis=0), None


def _class_token_backward(node: Node, dy, cache, weights):
    return [dy[1:]], {"weight": dy[0].sum(axis=0).reshape(weights["weight"].shape)}


def _pos_embedding_forward(node: Node, inputs, weights, state):
    return inputs[0] + weights["weight"][0][:, None, :], None


def _pos_embedding_backward(node: Node, dy, cache, weights):
    return [dy], {"weight": dy.sum(axis=1)[None]}


def _attention_forward(node: Node, inputs, weights, state):
    """torch's multi-head self-attention: Q, K, V = x W_in^T + b_in split in three; per head
    softmax(Q K^T / sqrt(D/heads)) V; the heads joined and projected by W_out."""
    x = inputs[0].transpose(1, 0, 2)  # (N, T, D)
    n, t, d = x.shape
    heads = node.attrs["heads"]
    scale = x.dtype.type(1 / math.sqrt(d // heads))
    qkv = state.matmul(x, weights["in_proj_weight"].T) + weights["in_proj_bias"]
    q, k, v = (part.reshape(n, t, heads, d // heads).transpose(0, 2, 1, 3)
               for part in np.split(qkv, 3, axis=-1))  # (N, heads, T, D/heads)
    scores = state.matmul(q * scale, k.transpose(0, 1, 3, 2))
    scores -= scores.max(axis=-1, keepdims=True)
    a = np.exp(scores)
    a /= a.sum(axis=-1, keepdims=True)
    joined = state.matmul(a, v).transpose(0, 2, 1, 3).reshape(n, t, d)
    y = state.matmul(joined, weights["out_proj.weight"].T) + weights["out_proj.bias"]
    return np.ascontiguousarray(y.transpose(1, 0, 2)), (x, q, k, v, a, joined, scale)


def _attention_backward(node: Node, dy, cache, weights):
    x, q, k, v, a, joined, scale = cache
    n, t, d = x.shape
    heads = node.attrs["heads"]
    dy = dy.transpose(1, 0, 2)  # (N, T, D)
    grads = {"out_proj.weight": np.einsum("nte,ntd->ed", dy, joined),
             "out_proj.bias": dy.sum(axis=(0, 1))}
    dheads = (dy @ weights["out_proj.weight"]).reshape(n, t, heads, d // heads).transpose(0, 2, 1, 3)
    da = dheads @ v.transpose(0, 1, 3, 2)
    dv = a.transpose(0, 1, 3, 2) @ dheads
    dscores = a * (da - (da * a).sum(axis=-1, keepdims=True))
    dq = dscores @ k * scale
    dk = dscores.transpose(0, 1, 3, 2) @ (q * scale)
    dqkv = np.concatenate([g.transpose(0, 2, 1, 3).reshape(n, t, d) for g in (dq, dk, dv)], axis=-1)
    grads["in_proj_weight"] = np.einsum("ntf,ntd->fd", dqkv, x)
    grads["in_proj_bias"] = dqkv.sum(axis=(0, 1))
    dx = dqkv @ weights["in_proj_weight"]
    return [np.ascontiguousarray(dx.transpose(1, 0, 2))], grads


def _token_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    return np.ascontiguousarray(x[node.attrs["index"]].T), x.shape  # (N, D) -> a flat (D, N)


def _token_backward(node: Node, dy, shape, weights):
    dx = np.zeros(shape, dtype=dy.dtype)
    dx[node.attrs["index"]] = dy.T
    return [dx], {}


def _channel_axes(x: np.ndarray) -> tuple:
    return tuple(range(1, x.ndim))


def _expand(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape(-1, *([1] * (ndim - 1)))


def _bn_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    eps, momentum = node.attrs["eps"], node.attrs["momentum"]
    c = x.shape[0]
    flat = x.reshape(c, -1)
    count = flat.shape[1]
    if state.training:
        mean = flat.mean(axis=1)
        xhat = flat - mean[:, None]
        var = np.einsum("ij,ij->i", xhat, xhat) / count  # no squared temporary
        # torch keeps the unbiased variance; weights holds the running statistics, updated in place
        weights["running_mean"] *= 1 - momentum
        weights["running_mean"] += momentum * mean
        weights["running_var"] *= 1 - momentum
        weights["running_var"] += momentum * var * count / max(count - 1, 1)
    else:
        mean, var = weights["running_mean"], weights["running_var"]
        xhat = flat - mean[:, None]
    inv = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    xhat *= inv[:, None]
    y = xhat * weights["weight"][:, None]
    y += weights["bias"][:, None]
    return y.reshape(x.shape), (xhat.reshape(x.shape), inv, state.training)


def _bn_backward(node: Node, dy, cache, weights):
    xhat, inv, training = cache
    axes = _channel_axes(dy)
    grads = {"weight": (dy * xhat).sum(axis=axes), "bias": dy.sum(axis=axes)}
    dxhat = dy * _expand(weights["weight"], dy.ndim)
    if training:  # the batch statistics depend on x too
        dx = _expand(inv, dy.ndim) * (dxhat - _expand(dxhat.mean(axis=axes), dy.ndim)
                                      - xhat * _expand((dxhat * xhat).mean(axis=axes), dy.ndim))
    else:
        dx = dxhat * _expand(inv, dy.ndim)
    return [dx], grads


def _channel_window_sum(v: np.ndarray, before: int, after: int) -> np.ndarray:
    """For each channel c, the sum of v over channels c-before .. c+after (zero outside)."""
    c = v.shape[0]
    padded = np.concatenate([np.zeros((1, *v.shape[1:]), v.dtype), np.cumsum(v, axis=0)])
    high = np.minimum(np.arange(c) + after + 1, c)
    low = np.maximum(np.arange(c) - before, 0)
    return padded[high] - padded[low]


def _lrn_forward(node: Node, inputs, weights, state):
    # torch.nn.LocalResponseNorm: x / (k + alpha/size * sum over the channel window of x^2)^beta
    a = node.attrs
    x = inputs[0]
    n = a["size"]
    scale = a["k"] + a["alpha"] / n * _channel_window_sum(x * x, n // 2, (n - 1) // 2)
    y = x * scale ** -a["beta"]
    return y, (x, scale)


def _lrn_backward(node: Node, dy, cache, weights):
    a = node.attrs
    x, scale = cache
    n = a["size"]
    inner = dy * x * scale ** (-a["beta"] - 1)
    # channel j is in the window of channel c exactly when c is in j's reversed window
    spread = _channel_window_sum(inner, (n - 1) // 2, n // 2)
    return [dy * scale ** -a["beta"] - 2 * a["alpha"] * a["beta"] / n * x * spread], {}


def _dropout_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    p = node.attrs["p"]
    if not state.training or p == 0:
        return x, None
    keep = (state.rng.random(x.shape) >= p).astype(x.dtype) / (1 - p)
    return x * keep, keep


def _dropout_backward(node: Node, dy, keep, weights):
    return [dy if keep is None else dy * keep], {}


def _activation(forward: Callable, derivative: Callable) -> "Kernel":
    """An activation as a kernel. forward(x, attrs, out) may write into `out`; derivative(y, attrs)
    is dy/dx from the output alone, so a fused activation can overwrite its layer's output in
    place (`Kernel.in_place`) and still be differentiated."""
    def fwd(node, inputs, weights, state):
        y = forward(inputs[0], node.attrs, None)
        return y, y

    def fwd_in_place(node, inputs, weights, state):
        y = forward(inputs[0], node.attrs, inputs[0])
        return y, y

    def bwd(node, dy, y, weights):
        return [dy * derivative(y, node.attrs)], {}
    return Kernel(fwd, bwd, fwd_in_place)


def _sigmoid(x, attrs, out):
    y = np.multiply(x, 0.5, out=out)  # 0.5 * (1 + tanh(x/2)): stable for large |x|
    np.tanh(y, out=y)
    y += 1
    y *= 0.5
    return y


def _elu(x, attrs, out):
    alpha = attrs["alpha"]
    negative = alpha * np.expm1(np.minimum(x, 0))
    return np.where(x > 0, x, negative) if out is None else np.copyto(out, negative, where=x <= 0) or out


# -- the error function, for the exact GELU ----------------------------------------------------------
#
# NumPy has no erf, and a reference may not approximate GELU: these are fdlibm's erf and erfc
# (s_erf.c: its method and its coefficients, vectorised here), whose error fdlibm bounds by one
# ulp; tests/test_numpy_backend.py holds them to math.erf and math.erfc on 220,000 points.
# math.erf itself, called per element through np.frompyfunc, is 25 times slower than np.tanh.
#
#   Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
#   Developed at SunPro, a Sun Microsystems, Inc. business.
#   Permission to use, copy, modify, and distribute this software is freely granted, provided
#   that this notice is preserved.

_ERX = 8.45062911510467529297e-01  # erf(1) rounded to 24 bits
# erf(x) = x + x*P/Q on |x| < 0.84375
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
       1.32494738004321644526e-04, -3.96022827877536812320e-06)
# erf(1 + s) = erx + P/Q on 0.84375 <= |x| < 1.25
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
       1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
# erfc(x) = exp(-x*x - 0.5625 + R/S) / x, in 1/x^2, on 1.25 <= |x| < 1/0.35 ...
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
# ... and on 1/0.35 <= |x| < 28
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)


def _high_word(high: int) -> float:
    """The double whose upper 32 bits are `high` and lower 32 bits zero (fdlibm's thresholds)."""
    return float(np.array(high << 32, dtype=np.uint64).view(np.float64))


_ERFC_RB_FROM = _high_word(0x4006DB6D)  # 1/0.35 as erfc compares it
_ERF_RB_FROM = _high_word(0x4006DB6E)  # and as erf does


def _horner(z: np.ndarray, coefficients: tuple) -> np.ndarray:
    """c0 + z*(c1 + z*(c2 + ...))."""
    result = np.full_like(z, coefficients[-1])
    for c in coefficients[-2::-1]:
        result *= z
        result += c
    return result


def _erfc_scaled_tail(a: np.ndarray, rb_from: float) -> np.ndarray:
    """x*erfc(x) for 1.25 <= a < 28 (erf's tail is 1 minus this over a)."""
    s = 1 / (a * a)
    ratio = np.where(a < rb_from, _horner(s, _RA) / _horner(s, _SA), _horner(s, _RB) / _horner(s, _SB))
    z = (a.view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(np.float64)  # a to 21 bits: z*z is exact
    return np.exp(-z * z - 0.5625) * np.exp((z - a) * (z + a) + ratio)


def erf(x) -> np.ndarray:
    """The error function of a float64 array, to within an ulp (fdlibm's erf)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    out = np.full_like(x, np.nan)  # NaN stays NaN: it is in no region below
    small = a < 0.84375
    v = x[small]
    z = v * v
    out[small] = v + v * (_horner(z, _PP) / _horner(z, _QQ))
    middle = (a >= 0.84375) & (a < 1.25)
    s = a[middle] - 1
    out[middle] = np.copysign(_ERX + _horner(s, _PA) / _horner(s, _QA), x[middle])
    tail = (a >= 1.25) & (a < 6)
    t = a[tail]
    out[tail] = np.copysign(1 - _erfc_scaled_tail(t, _ERF_RB_FROM) / t, x[tail])
    beyond = a >= 6
    out[beyond] = np.copysign(1.0, x[beyond])
    return out


def erfc(x) -> np.ndarray:
    """1 - erf(x) of a float64 array without the cancellation, to within an ulp (fdlibm's erfc)."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    out = np.full_like(x, np.nan)
    small = a < 0.84375
    v = x[small]
    z = v * v
    y = _horner(z, _PP) / _horner(z, _QQ)
    out[small] = np.where(v < 0.25, 1 - (v + v * y), 0.5 - (v * y + (v - 0.5)))
    middle = (a >= 0.84375) & (a < 1.25)
    s = a[middle] - 1
    ratio = _horner(s, _PA) / _horner(s, _QA)
    out[middle] = np.where(x[middle] > 0, (1 - _ERX) - ratio, 1 + (_ERX + ratio))
    tail = (a >= 1.25) & (a < 28)
    t = a[tail]
    r = _erfc_scaled_tail(t, _ERFC_RB_FROM) / t
    out[tail] = np.where(x[tail] > 0, r, 2 - r)
    beyond = a >= 28
    out[beyond] = np.where(x[beyond] > 0, 0.0, 2.0)
    return out


_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_CUBIC = 0.044715


def _gelu_forward(node: Node, inputs, weights, state):
    # x * Phi(x) with Phi(x) = erfc(-x/sqrt(2))/2: accurate where 1 + erf(x/sqrt(2)) would cancel.
    # Computed in float64 for float32 input too, then rounded once.
    x = inputs[0]
    x64 = x.astype(np.float64, copy=False)
    return (x64 * (0.5 * erfc(-x64 * _SQRT1_2))).astype(x.dtype, copy=False), x


def _gelu_backward(node: Node, dy, x, weights):
    x64 = x.astype(np.float64, copy=False)
    derivative = 0.5 * erfc(-x64 * _SQRT1_2) + x64 * np.exp(-0.5 * x64 * x64) * _INV_SQRT_2PI
    return [dy * derivative.astype(dy.dtype, copy=False)], {}


def _gelu_tanh_forward(node: Node, inputs, weights, state):
    x = inputs[0]  # torch's formula, term by term
    inner = _SQRT_2_OVER_PI * (x + _GELU_TANH_CUBIC * (x * x * x))
    return 0.5 * x * (1 + np.tanh(inner)), x


def _gelu_tanh_backward(node: Node, dy, x, weights):
    square = x * x
    t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_CUBIC * square * x))
    derivative = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_CUBIC * square)
    return [dy * derivative], {}


def _logistic(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) to a few ulp on both sides: below zero as e/(1 + e) with e = exp(x), where
    0.5*(1 + tanh(x/2)) would cancel (a relative error of 1e-11 at x = -12)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


def _silu_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    return x * _logistic(x), x


def _silu_backward(node: Node, dy, x, weights):
    s = _logistic(x)
    return [dy * (s * (1 + x * (1 - s)))], {}


def _hardsigmoid_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    return np.clip(x + 3, 0, 6) / 6, x


def _hardsigmoid_backward(node: Node, dy, x, weights):
    # by the input, as torch: where x + 3 rounds to 6 the output is 1 while x < 3 still has slope
    return [dy * np.where((x > -3) & (x < 3), 1 / 6, 0).astype(dy.dtype)], {}


def _layerscale_broadcast(scale: np.ndarray, ndim: int) -> np.ndarray:
    # (C, N, H, W) and (C, N): a scale per channel, axis 0; a token tensor (T, N, D): per feature, last
    return scale if ndim == 3 else _expand(scale, ndim)


def _layerscale_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    return x * _layerscale_broadcast(weights["weight"], x.ndim), x


def _layerscale_backward(node: Node, dy, x, weights):
    scale = weights["weight"]
    axes = (0, 1) if dy.ndim == 3 else _channel_axes(dy)
    grad = (dy * x).sum(axis=axes).reshape(scale.shape)
    return [dy * _layerscale_broadcast(scale, dy.ndim)], {"weight": grad}


def _layernorm_axis(x: np.ndarray) -> int:
    # (C, N, H, W) and (C, N): the channels, axis 0; a token tensor (T, N, D): its features, last
    return -1 if x.ndim == 3 else 0


def _layernorm_scale(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    return v if _layernorm_axis(x) == -1 else _expand(v, x.ndim)


def _layernorm_forward(node: Node, inputs, weights, state):
    # torch's layer_norm: (x - mean) / sqrt(var + eps) * weight + bias, the biased variance
    x = inputs[0]
    axis = _layernorm_axis(x)
    xhat = x - x.mean(axis=axis, keepdims=True)
    inv = 1.0 / np.sqrt(np.mean(xhat * xhat, axis=axis, keepdims=True) + x.dtype.type(node.attrs["eps"]))
    xhat *= inv
    y = xhat * _layernorm_scale(weights["weight"], x)
    y += _layernorm_scale(weights["bias"], x)
    return y, (xhat, inv)


def _layernorm_backward(node: Node, dy, cache, weights):
    xhat, inv = cache
    axis = _layernorm_axis(dy)
    others = tuple(i for i in range(dy.ndim) if i != axis % dy.ndim)
    grads = {"weight": (dy * xhat).sum(axis=others), "bias": dy.sum(axis=others)}
    g = dy * _layernorm_scale(weights["weight"], dy)
    # the mean and variance depend on every value normalised with it
    dx = inv * (g - g.mean(axis=axis, keepdims=True) - xhat * (g * xhat).mean(axis=axis, keepdims=True))
    return [dx], grads


def _stochastic_depth_forward(node: Node, inputs, weights, state):
    # torchvision's StochasticDepth(p, mode="row"): one draw per sample (axis 1: the batch here)
    x = inputs[0]
    p = node.attrs["p"]
    if not state.training or p == 0:
        return x, None
    draw_shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    keep = (state.rng.random(draw_shape) >= p).astype(x.dtype) / x.dtype.type(1 - p)
    return x * keep, keep


def _softmax_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    e = np.exp(x - x.max(axis=0, keepdims=True))
    y = e / e.sum(axis=0, keepdims=True)
    return y, y


def _softmax_backward(node: Node, dy, y, weights):
    return [y * (dy - (dy * y).sum(axis=0, keepdims=True))], {}


def _flatten_forward(node: Node, inputs, weights, state):
    return _as_matrix(inputs[0]), inputs[0].shape


def _flatten_backward(node: Node, dy, shape, weights):
    return [_from_matrix(dy, shape)], {}


def _crop_forward(node: Node, inputs, weights, state):
    x, like = inputs
    top, left = crop_offsets(node.attrs, x.shape[2:], like.shape[2:])
    return x[:, :, top:top + like.shape[2], left:left + like.shape[3]], (x.shape, like.shape)


def _crop_backward(node: Node, dy, cache, weights):
    shape, like_shape = cache
    top, left = crop_offsets(node.attrs, shape[2:], like_shape[2:])
    dx = np.zeros(shape, dtype=dy.dtype)
    dx[:, :, top:top + dy.shape[2], left:left + dy.shape[3]] = dy
    return [dx, np.zeros(like_shape, dtype=dy.dtype)], {}  # `like` gives only its size


def _concat_forward(node: Node, inputs, weights, state):
    return np.concatenate(inputs, axis=0), [x.shape[0] for x in inputs]


def _concat_backward(node: Node, dy, sizes, weights):
    return np.split(dy, np.cumsum(sizes)[:-1], axis=0), {}


def _add_forward(node: Node, inputs, weights, state):
    y = inputs[0].copy()
    for x in inputs[1:]:
        y += x
    return y, len(inputs)


def _add_backward(node: Node, dy, count, weights):
    return [dy] * count, {}


def _mul_forward(node: Node, inputs, weights, state):
    y = inputs[0]
    for x in inputs[1:]:
        y = y * x  # a Cx1x1 gate broadcasts over height and width
    return y, inputs


def _mul_backward(node: Node, dy, inputs, weights):
    # Each branch's gradient is dy times the other branches; a gate's sums over what it broadcast
    # to (height and width), as torch's autograd reduces a broadcast operand.
    grads = []
    for i, x in enumerate(inputs):
        d = dy
        for j, other in enumerate(inputs):
            if j != i:
                d = d * other
        if d.shape != x.shape:
            d = d.sum(axis=tuple(a for a in range(d.ndim) if x.shape[a] == 1 and d.shape[a] != 1),
                      keepdims=True)
        grads.append(d)
    return grads, {}


def _channels_forward(node: Node, inputs, weights, state):
    a = node.attrs
    return inputs[0][a["start"]:a["end"]], inputs[0].shape  # channels lead: a contiguous view


def _channels_backward(node: Node, dy, shape, weights):
    a = node.attrs
    dx = np.zeros(shape, dtype=dy.dtype)
    dx[a["start"]:a["end"]] = dy
    return [dx], {}


def _shuffle(x: np.ndarray, groups: int) -> np.ndarray:
    """torchvision's channel_shuffle on channels-first arrays: output channel j*groups + i is input
    channel i*(C/groups) + j."""
    c = x.shape[0]
    return np.ascontiguousarray(x.reshape(groups, c // groups, *x.shape[1:]).swapaxes(0, 1)).reshape(x.shape)


def _shuffle_backward(node: Node, dy, cache, weights):
    return [_shuffle(dy, dy.shape[0] // node.attrs["groups"])], {}  # the inverse permutation


def resample_matrix(n_in: int, n_out: int, mode: str, align_corners: bool, factor: int | None,
                    dtype) -> np.ndarray:
    """The (n_out, n_in) matrix of torch's F.interpolate along one axis: one 1 per row for nearest,
    two weights for bilinear. `factor` is the scale_factor torch was given (None when it was given
    a size). The source positions are computed as torch's CPU kernels compute them: nearest in
    float32 whatever the dtype (with its exact-copy and exact-double shortcuts), bilinear in the
    tensor's dtype, so the same pixels are read."""
    dtype = np.dtype(dtype)
    dst = np.arange(n_out)
    matrix = np.zeros((n_out, n_in), dtype=dtype)
    if mode == "nearest":
        if n_out == n_in:
            src = dst
        elif n_out == 2 * n_in:
            src = dst >> 1
        else:
            f32 = np.float32
            scale = f32(1.0 / factor) if factor else f32(n_in) / f32(n_out)
            src = np.minimum(np.floor(dst.astype(f32) * scale).astype(np.int64), n_in - 1)
        matrix[dst, src] = 1
        return matrix
    t = dtype.type
    if align_corners:
        real = (t(n_in - 1) / t(n_out - 1) if n_out > 1 else t(0)) * dst.astype(dtype)
    else:
        scale = t(1.0 / factor) if factor else t(n_in) / t(n_out)
        real = np.maximum(scale * (dst.astype(dtype) + t(0.5)) - t(0.5), t(0))
    first = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    weight = np.minimum(np.maximum(real - first.astype(dtype), t(0)), t(1))
    np.add.at(matrix, (dst, first), t(1) - weight)
    np.add.at(matrix, (dst, first + (first < n_in - 1)), weight)  # the last pixel twice at the edge
    return matrix


def upsample_matrices(node: Node, shape: tuple, out: tuple, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The height and width matrices of an upsample from (..., H, W) to (..., Ho, Wo)."""
    a = node.attrs
    factor = a["factor"] if len(node.inputs) == 1 else None  # torch gets a size from `like`
    return tuple(resample_matrix(n_in, n_out, a["mode"], a["align_corners"], factor, dtype)
                 for n_in, n_out in zip(shape[-2:], out))


def _upsample_forward(node: Node, inputs, weights, state):
    x = inputs[0]
    a = node.attrs
    out = inputs[1].shape[2:] if len(inputs) == 2 else (x.shape[2] * a["factor"], x.shape[3] * a["factor"])
    rows, columns = upsample_matrices(node, x.shape, out, x.dtype)
    # separable: y = rows @ x @ columns^T per channel and image; backward is the transpose
    return np.matmul(rows, np.matmul(x, columns.T)), (rows, columns, [i.shape for i in inputs])


def _upsample_backward(node: Node, dy, cache, weights):
    rows, columns, shapes = cache
    dx = np.matmul(rows.T, np.matmul(dy, columns))
    return [dx, *(np.zeros(shape, dtype=dy.dtype) for shape in shapes[1:])], {}  # `like`: size only


def _identity_forward(node: Node, inputs, weights, state):
    return inputs[0], None


def _identity_backward(node: Node, dy, cache, weights):
    return [dy], {}


KERNELS: dict[str, Kernel] = {
    "input": Kernel(_identity_forward, _identity_backward),
    "conv": Kernel(_conv_forward, _conv_backward, caches_output=False),
    "deconv": Kernel(_deconv_forward, _deconv_backward),
    "maxpool": Kernel(_maxpool_forward, _maxpool_backward),
    "avgpool": Kernel(_avgpool_forward, _avgpool_backward),
    "gap": Kernel(_gap_forward, _gap_backward),
    "fc": Kernel(_fc_forward, _fc_backward, caches_output=False),
    "bn": Kernel(_bn_forward, _bn_backward, caches_output=False),
    "lrn": Kernel(_lrn_forward, _lrn_backward),
    "dropout": Kernel(_dropout_forward, _dropout_backward),
    "relu": _activation(lambda x, a, out: np.maximum(x, 0, out=out),
                        lambda y, a: (y > 0).astype(y.dtype)),
    "tanh": _activation(lambda x, a, out: np.tanh(x, out=out), lambda y, a: 1 - y * y),
    "sigmoid": _activation(_sigmoid, lambda y, a: y * (1 - y)),
    "lrelu": _activation(
        lambda x, a, out: np.multiply(x, np.where(x > 0, 1, a["slope"]).astype(x.dtype), out=out),
        lambda y, a: np.where(y > 0, 1, a["slope"]).astype(y.dtype)),
    "elu": _activation(_elu, lambda y, a: np.where(y > 0, 1, y + a["alpha"]).astype(y.dtype)),
    # Not invertible from its output (it dips below zero and back), so it keeps its input.
    "hardswish": Kernel(lambda node, inputs, weights, state: (
                            inputs[0] * np.clip(inputs[0] + 3, 0, 6) / 6, inputs[0]),
                        lambda node, dy, x, weights: (
                            [dy * np.where(x <= -3, 0, np.where(x >= 3, 1, (2 * x + 3) / 6)).astype(dy.dtype)], {})),
    "relu6": _activation(lambda x, a, out: np.clip(x, 0, 6, out=out),
                         lambda y, a: ((y > 0) & (y < 6)).astype(y.dtype)),
    # These keep their input: not invertible from the output (silu, the gelus dip below zero and
    # back; hardsigmoid, see its backward).
    "hardsigmoid": Kernel(_hardsigmoid_forward, _hardsigmoid_backward),
    "silu": Kernel(_silu_forward, _silu_backward),
    "gelu": Kernel(_gelu_forward, _gelu_backward),
    "gelu_tanh": Kernel(_gelu_tanh_forward, _gelu_tanh_backward),
    "layerscale": Kernel(_layerscale_forward, _layerscale_backward),
    "stochastic_depth": Kernel(_stochastic_depth_forward, _dropout_backward),
    "softmax": Kernel(_softmax_forward, _softmax_backward),
    "flatten": Kernel(_flatten_forward, _flatten_backward),
    "crop": Kernel(_crop_forward, _crop_backward),
    "concat": Kernel(_concat_forward, _concat_backward),
    "add": Kernel(_add_forward, _add_backward),
    "dwconv": Kernel(_dwconv_forward, _dwconv_backward, caches_output=False),
    "adaptive_avgpool": Kernel(_adaptive_avgpool_forward, _adaptive_avgpool_backward),
    "adaptive_maxpool": Kernel(_adaptive_maxpool_forward, _adaptive_maxpool_backward),
    "gmp": Kernel(_gmp_forward, _gmp_backward),
    "mul": Kernel(_mul_forward, _mul_backward),
    "channels": Kernel(_channels_forward, _channels_backward),
    "shuffle": Kernel(lambda node, inputs, weights, state: (_shuffle(inputs[0], node.attrs["groups"]), None),
                      _shuffle_backward),
    "upsample": Kernel(_upsample_forward, _upsample_backward),
    # an auxiliary output's marker: its value is its head's result, and its gradient flows back
    "aux": Kernel(lambda node, inputs, weights, state: (inputs[0], None),
                  lambda node, dy, cache, weights: ([dy], {})),
    "tokens": Kernel(_tokens_forward, _tokens_backward),
    "class_token": Kernel(_class_token_forward, _class_token_backward),
    "pos_embedding": Kernel(_pos_embedding_forward, _pos_embedding_backward),
    "attention": Kernel(_attention_forward, _attention_backward),
    "token": Kernel(_token_forward, _token_backward),
    "layernorm": Kernel(_layernorm_forward, _layernorm_backward),
}


# -- initialisation ---------------------------------------------------------------------------------

def _attention_initial(suffix: str, shape: tuple, rng: np.random.Generator, dtype) -> np.ndarray:
    """nn.MultiheadAttention's: Xavier-uniform projections in, zero biases, the output projection
    as a Linear's weight (Kaiming-uniform, a=sqrt(5))."""
    if suffix.endswith("bias"):
        return np.zeros(shape, dtype=dtype)
    bound = math.sqrt(6 / (shape[0] + shape[1])) if suffix == "in_proj_weight" else 1 / math.sqrt(shape[1])
    return (rng.random(shape, dtype=dtype) * 2 - 1) * dtype.type(bound)


#: torchvision's ViT: the class token starts at zero, the position embedding normal with std 0.02.
_TOKEN_INITIALISERS: dict[str, Callable] = {
    "attention": _attention_initial,
    "class_token": lambda suffix, shape, rng, dtype: np.zeros(shape, dtype=dtype),
    "pos_embedding": lambda suffix, shape, rng, dtype: (rng.standard_normal(shape) * 0.02).astype(dtype),
}


def initial_weights(network, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
    """torch's default initialisation: Kaiming-uniform (a=sqrt(5)) weights, uniform biases with
    bound 1/sqrt(fan_in), BN and layer-norm scale 1 and shift 0, running mean 0 and variance 1;
    `init=bilinear` deconvs get FCN's bilinear filter (per channel when in == out) and zero bias;
    layer scales start at their `init` value (ConvNeXt's 1e-6)."""
    weights: dict[str, np.ndarray] = {}
    for spec in network.weight_specs:
        node = network.graph.node(spec.node)
        shape = spec.shape
        if node.op in ("bn", "layernorm"):
            fill = 1.0 if spec.suffix in ("weight", "running_var") else 0.0
            weights[spec.name] = np.full(shape, fill, dtype=dtype)
            continue
        if node.op in _TOKEN_INITIALISERS:
            weights[spec.name] = _TOKEN_INITIALISERS[node.op](spec.suffix, shape, rng, dtype)
            continue
        weight_shape = next(s.shape for s in network.weight_specs if s.node == spec.node and s.suffix == "weight")
        fan_in = math.prod(weight_shape[1:])  # torch takes dim 1 as fan-in, for deconv too
        bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
        if node.op == "layerscale":
            weights[spec.name] = np.full(shape, node.attrs["init"], dtype=dtype)
            continue
        if node.op == "deconv" and node.attrs["init"] == "bilinear":
            weights[spec.name] = (np.zeros(shape, dtype=dtype) if spec.suffix == "bias"
                                  else bilinear_weight(shape, node.attrs["groups"]).astype(dtype))
            continue
        weights[spec.name] = (rng.random(shape, dtype=dtype) * 2 - 1) * dtype.type(bound)
    return weights


# -- weights ----------------------------------------------------------------------------------------

def checked_weights(network, weights, current: dict | None, strict: bool) -> dict[str, np.ndarray]:
    """{canonical name: array} from a dict or a weights file, every name and shape checked against
    the network. With strict=False a subset is accepted (no unknown names): the rest come from
    `current`. What every kernel-table backend's `load_weights` does before converting."""
    from netdsl.weights_io import check_weights, read_weights
    source = "the weights"
    if isinstance(weights, (str, os.PathLike)):
        source, weights = str(weights), read_weights(weights)
    if not strict:
        weights = {**(current or {}), **weights}
    return check_weights(network, weights, source)


def missing_kernel(backend: str, network, kernels) -> str | None:
    """The first op of `network` (fused activations included) that `kernels` lacks, as the error a
    backend raises; None when every op has a kernel."""
    for node in network.graph.nodes:
        for op in (node.op, node.attrs.get("act", "none")):
            if op != "none" and op not in kernels:
                return f"backend {backend} has no kernel for op {op} (used by {node.name})"
    return None


def checked_module_start(backend: str, network, kernels, dtype, weights,
                         rng: np.random.Generator) -> tuple[np.dtype, dict[str, np.ndarray]]:
    """What a kernel-table backend's module checks before it builds anything: that `kernels` has
    every op of `network` (NotImplementedError naming the first it lacks), that `dtype` is float32
    or float64 (ValueError), and the `weights` given (a dict or a file; every name and shape
    checked) copied as `dtype` arrays; with none given, torch's initialisation drawn from `rng`.
    Returns the dtype and the weights."""
    problem = missing_kernel(backend, network, kernels)
    if problem:
        raise NotImplementedError(problem)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if weights is None:
        return dtype, initial_weights(network, rng, dtype)
    return dtype, {name: np.array(value, dtype=dtype, copy=True)
                   for name, value in checked_weights(network, weights, None, True).items()}


def weight_names_by_node(network) -> list[dict[str, str]]:
    """Per node id, its weights' suffix -> canonical name (weight -> block1.conv1.weight)."""
    by_node: list[dict[str, str]] = [{} for _ in network.graph.nodes]
    for spec in network.weight_specs:
        by_node[network.graph.node(spec.node).id][spec.suffix] = spec.name
    return by_node


# -- the module ---------------------------------------------------------------------------------------

class NumpyModule:
    """A compiled network: call it for the forward pass, `backward(dy)` for gradients.

    Implements netdsl.backend.CompiledModule and DifferentiableModule. Inputs and outputs are
    batch-first like torch's: x has shape (N, *network.input_shape). `weights` maps canonical names
    (block1.conv1.weight) to arrays, buffers included; `grads` holds the gradients of the trainable
    ones after `backward`. A new module is in training mode.
    """

    def __init__(self, network, dtype="float32", seed: int | None = 0, weights=None,
                 kernels: Mapping[str, Kernel] | None = None, name: str = "numpy",
                 execution: Execution = PLAIN):
        self.network = network
        self.graph = network.graph
        self.kernels = KERNELS if kernels is None else kernels
        self.execution = execution
        self.rng = np.random.default_rng(seed)
        self.dtype, self.weights = checked_module_start(name, network, self.kernels, dtype, weights,
                                                        self.rng)
        self.frozen: set[str] = set()
        self.grads: dict[str, np.ndarray] = {}
        self.training = True
        self._by_node = weight_names_by_node(network)
        self._caches: list | None = None
        self.workspace = Workspace()
        self._aux = network.graph.aux_outputs
        self._inference = network.graph.inference_nodes() if self._aux else None
        self._overwritable = self._activations_that_may_overwrite() if execution.activations_in_place else set()
        self._pairs = self._fused_pairs()

    def _activations_that_may_overwrite(self) -> set[int]:
        """The activation layers whose input is read by them alone and kept by no cache."""
        readers = self.graph.consumers()
        outputs = {self.graph.nodes[-1].id, *(node.id for node in self._aux)}
        found = set()
        for node in self.graph.nodes:
            if not self.kernels[node.op].in_place or len(node.inputs) != 1:
                continue
            source = self.graph.nodes[node.inputs[0]]
            if (source.id != 0 and source.id not in outputs and len(readers[source.id]) == 1
                    and fused_activation(source) is None and not self.kernels[source.op].caches_output):
                found.add(node.id)
        return found

    def _fused_pairs(self) -> dict[int, tuple[Fusion, Node]]:
        """{first's id: (the fusion, the second node)} for each pair of nodes that one of
        execution.fusions runs: the second is the first's fused activation, or a layer of its own
        that alone reads the first's output (which is no output of the net)."""
        by_ops = {(fusion.first, fusion.second): fusion for fusion in self.execution.fusions}
        if not by_ops:
            return {}
        readers = self.graph.consumers()
        outputs = {self.graph.nodes[-1].id, *(node.id for node in self._aux)}
        pairs = {}
        for node in self.graph.nodes[1:]:
            act = fused_activation(node)
            if act is not None:
                second = act
            elif len(readers[node.id]) == 1 and node.id not in outputs:
                second = self.graph.nodes[readers[node.id][0]]
                if second.inputs != (node.id,) or self._by_node[second.id]:
                    continue
            else:
                continue
            fusion = by_ops.get((node.op, second.op))
            if fusion is not None:
                pairs[node.id] = (fusion, second)
        return pairs

    def train(self, mode: bool = True) -> "NumpyModule":
        self.training = mode
        return self

    def eval(self) -> "NumpyModule":
        return self.train(False)

    def trainable(self) -> list[str]:
        """The canonical names of the weights an optimiser updates, in network order."""
        return [spec.name for spec in self.network.weight_specs if spec.trainable and spec.name not in self.frozen]

    def parameters(self) -> dict[str, np.ndarray]:
        """The trainable weights (what an optimiser updates)."""
        return {name: self.weights[name] for name in self.trainable()}

    def freeze(self, names) -> None:
        """Stop computing gradients for these weights; an unknown name is an error."""
        from netdsl.errors import NetDSLWeightsError
        known = {spec.name for spec in self.network.weight_specs}
        names = list(names)
        for name in names:
            if name not in known:
                raise NetDSLWeightsError(f"{name} is not a weight of {self.network.name}")
        self.frozen.update(names)

    def load_weights(self, weights, strict: bool = True) -> None:
        """Replace weights from {canonical name: array} or a .safetensors/.npz path, checking every
        name and shape first; strict=False accepts a subset (no unknown names)."""
        checked = checked_weights(self.network, weights, self.weights, strict)
        self.weights = {name: np.array(value, dtype=self.dtype, copy=True) for name, value in checked.items()}

    def save_weights(self, path) -> None:
        """Write every weight and buffer to .safetensors or .npz (by the suffix)."""
        from netdsl.weights_io import save_weights
        save_weights(path, self.weights)

    save = save_weights

    def load(self, path) -> None:
        """Read weights written by any backend, checking every name and shape."""
        self.load_weights(path)

    def _node_weights(self, node_id: int) -> dict[str, np.ndarray]:
        return {suffix: self.weights[name] for suffix, name in self._by_node[node_id].items()}

    def forward(self, x: np.ndarray):
        """The output; in training mode, a net with auxiliary outputs (aux{ }) gives the tuple
        (output, aux1, aux2, ...), as torchvision's GoogLeNet and Inception-v3 do."""
        values = self._run(x, keep=False)
        if self.training and self._aux:
            return (values[-1], *(values[node.id] for node in self._aux))
        return values[-1]

    __call__ = forward

    def run(self, x: np.ndarray) -> np.ndarray:
        """The forward pass, NumPy in and NumPy out."""
        return self.forward(x)

    def trace(self, x: np.ndarray) -> list[np.ndarray]:
        """Every node's output for input x (batch first), in node order: for checking shapes."""
        return self._run(x, keep=True)

    def _run(self, x: np.ndarray, keep: bool) -> list:
        x = np.asarray(x, dtype=self.dtype)
        check_input(self.network, x.shape)
        state = _State(self.training, self.rng, self.workspace, self.execution.matmul)
        # caches[id] = (the layer's cache, its fused activation's cache)
        caches: list = [[None, None] for _ in self.graph.nodes]
        nodes = self.graph.nodes

        overwritable = set() if keep else self._overwritable
        # the second op's output of a fused pair, made by the first's kernel: {(id, fused): value}
        made_early: dict[tuple[int, bool], np.ndarray] = {}

        def run_pair(node: Node, inputs: list):
            fusion, second = self._pairs[node.id]
            second_fused = second is not nodes[second.id]
            y, cache, z, second_cache = fusion.forward(node, second, inputs, self._node_weights(node.id), state)
            caches[node.id][0] = cache
            caches[second.id][second_fused] = second_cache
            made_early[second.id, second_fused] = z
            return y

        def kernel(node: Node):
            fused = node is not nodes[node.id]  # the activation fused into layer node.id
            if (node.id, fused) in made_early:
                return lambda node, inputs: made_early.pop((node.id, fused))
            if not fused and node.id in self._pairs:
                return run_pair
            table = self.kernels[node.op]
            # the layer's own fresh output is its fused activation's input: safe to overwrite
            in_place = table.in_place and (fused or node.id in overwritable)
            forward = table.in_place if in_place else table.forward
            weights = {} if fused else self._node_weights(node.id)

            def run(node: Node, inputs: list):
                y, cache = forward(node, inputs, weights, state)
                caches[node.id][fused] = cache
                return y
            return run

        # the caches keep what backward needs; values no later node reads are dropped
        with self.execution.context():
            values = interpret(self.graph, kernel, np.ascontiguousarray(np.swapaxes(x, 0, 1)), keep=keep,
                               only=None if self.training or keep else self._inference)
        self._caches = caches
        return [None if v is None else np.swapaxes(v, 0, 1) for v in values]

    def backward(self, dy) -> np.ndarray:
        """Gradient of sum(output * dy) with respect to the input of the last forward; fills grads.
        After a training forward of a net with auxiliary outputs, `dy` may be a tuple (d output,
        d aux1, ...), the gradient of sum(output * dy[0]) + sum(aux1 * dy[1]) + ...; a single
        array leaves the heads out."""
        if self._caches is None:
            raise RuntimeError("backward() needs a forward pass first")
        grads_in: list[np.ndarray | None] = [None] * len(self.graph.nodes)
        if isinstance(dy, (tuple, list)):
            if len(dy) != 1 + len(self._aux) or not self._aux:
                raise ValueError(f"backward takes {1 + len(self._aux)} gradients (the output's and "
                                 f"one per auxiliary output), got {len(dy)}")
            for node, d in zip(self._aux, dy[1:]):
                grads_in[node.id] = np.swapaxes(np.asarray(d, dtype=self.dtype), 0, 1)
            dy = dy[0]
        dy = np.asarray(dy, dtype=self.dtype)
        grads_in[-1] = np.swapaxes(dy, 0, 1)
        trainable = set(self.trainable())
        self.grads = {}
        for node in reversed(self.graph.nodes[1:]):
            g = grads_in[node.id]
            grads_in[node.id] = None
            if g is None:
                continue  # a node nothing depends on (only the `like` input of a crop)
            cache, act_cache = self._caches[node.id]
            act = fused_activation(node)
            if act is not None:
                g = self.kernels[act.op].backward(act, g, act_cache, {})[0][0]
            weights = self._node_weights(node.id)
            dinputs, dweights = self.kernels[node.op].backward(node, g, cache, weights)
            for suffix, value in dweights.items():
                name = self._by_node[node.id][suffix]
                if name in trainable:
                    self.grads[name] = value
            for source, d in zip(node.inputs, dinputs):
                grads_in[source] = d if grads_in[source] is None else grads_in[source] + d
        self._caches = None
        dx = grads_in[0]
        if dx is None:
            dx = np.zeros((dy.shape[0], *self.network.input_shape), dtype=self.dtype)
            return dx
        return np.swapaxes(dx, 0, 1)

    def gradients(self, x: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(d sum(y*dy)/dx, {trainable name: gradient}) for one forward and backward pass."""
        self.forward(x)
        dx = self.backward(dy)
        return dx, {name: self.grads[name] for name in self.trainable() if name in self.grads}


def compile_network(network, dtype="float32", seed: int | None = 0, weights=None,
                    kernels: Mapping[str, Kernel] | None = None, name: str = "numpy",
                    reference: bool = False) -> NumpyModule:
    """Entry point of the `numpy` backend: `net.compile("numpy", dtype="float64", seed=0)`.
    By default the faster kernels of backends/numpy_fast.py stand in for a few of these (the same
    functions, computed in another order); `reference=True` runs this file's kernels alone.
    `kernels` replaces the kernel table (a backend built from these kernels, under `name`)."""
    execution = PLAIN
    if kernels is None and not reference:
        from netdsl.backends import numpy_fast
        kernels, execution = numpy_fast.KERNELS, numpy_fast.EXECUTION
    return NumpyModule(network, dtype=dtype, seed=seed, weights=weights, kernels=kernels, name=name,
                       execution=execution)


BACKEND = Backend(
    "numpy", compile=compile_network, dtypes=("float32", "float64"), writers=WEIGHT_WRITERS,
    description="the NumPy reference: forward and backward for every op, float32 or float64, CPU")
