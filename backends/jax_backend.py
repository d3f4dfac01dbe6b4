"""The JAX backend: one jax.numpy / lax kernel per op, evaluated by netdsl.backend.interpret and
jit-compiled, with gradients from jax.vjp. An optional extra: `pip install "netdsl[jax]"`.

>>> m = netdsl.load("lenet5").compile("jax", dtype="float64", seed=0)
>>> y = m.run(np.zeros((2, 1, 32, 32)))                  # NumPy in, NumPy out
>>> dx, grads = m.gradients(np.zeros((2, 1, 32, 32)), np.ones_like(y))

The graph is closed over; the weights, the input, the mode and a PRNG key are the jitted
function's arguments, so loading weights or switching between train and eval never recompiles
(the forward compiles once, the gradients once per set of trainable weights). The mode is a traced
boolean: batch norm and dropout select with jnp.where, computing both branches (both are cheap
beside the convolutions, and XLA compile time, not run time, is what a second mode would cost).
Train mode returns the batch-norm running statistics functionally and the module stores them;
dropout draws from a key derived from the seed, split on every call.

float64: JAX computes in float32 unless `jax_enable_x64` is on, and that flag is global to the
process. Compiling a float64 module turns it on (and leaves it on): from then on, arrays JAX
creates without an explicit dtype in this process are 64-bit (jnp.arange gives int64,
jnp.zeros float64). float32 modules are unaffected: every array here has an explicit dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from netdsl.ops.pool import adaptive_bounds
from netdsl.ops.structure import crop_offsets
from netdsl.backend import WEIGHT_WRITERS, Backend, check_input, interpret
from netdsl.ir import Node

#: forward(node, inputs, context) -> output, for arrays of shape (N, C, H, W) or (N, C).
JaxKernel = Callable[[Node, list, "_Context"], Any]


@dataclass
class _Context:
    """What kernels read besides their inputs: this node's weights, the mode, the dropout key, and
    where train mode puts the running statistics it computes."""

    weights: Mapping[str, Any]  # canonical name -> array
    by_node: list  # node id -> {suffix: canonical name}
    training: Any  # a traced boolean scalar: select with jnp.where, not `if`
    key: Any
    updates: dict = field(default_factory=dict)

    def weight(self, node: Node, suffix: str):
        return self.weights[self.by_node[node.id][suffix]]

    def update(self, node: Node, suffix: str, value) -> None:
        self.updates[self.by_node[node.id][suffix]] = value


def _input(node, inputs, context):
    return inputs[0]


def _conv(node, inputs, context):
    a = node.attrs
    x = inputs[0]
    groups = x.shape[1] if node.op == "dwconv" else a["groups"]  # dwconv: one group per channel
    y = lax.conv_general_dilated(
        x, context.weight(node, "weight"), window_strides=(a["stride_h"], a["stride_w"]),
        padding=[(a["pad_h"], a["pad_h"]), (a["pad_w"], a["pad_w"])], rhs_dilation=(a["dilation"],) * 2,
        feature_group_count=groups, dimension_numbers=("NCHW", "OIHW", "NCHW"),
        precision=lax.Precision.HIGHEST)
    if a["bias"]:
        y = y + context.weight(node, "bias").reshape(1, -1, 1, 1)
    return y


def _deconv(node, inputs, context):
    # A transposed convolution is a convolution of the input dilated by the stride (lhs_dilation)
    # with the spatially flipped kernel, its in/out roles swapped per group, padded by
    # dilation*(k-1) - pad on each side plus output_pad at the end.
    a = node.attrs
    x = inputs[0]
    w = context.weight(node, "weight")  # (Cin, Cout/groups, k, k)
    c_in, c_out_g, k, _ = w.shape
    g = a["groups"]
    w = w.reshape(g, c_in // g, c_out_g, k, k).transpose(0, 2, 1, 3, 4).reshape(g * c_out_g, c_in // g, k, k)
    w = w[:, :, ::-1, ::-1]
    edge = a["dilation"] * (k - 1) - a["pad"]
    y = lax.conv_general_dilated(
        x, w, window_strides=(1, 1), padding=[(edge, edge + a["output_pad"])] * 2,
        lhs_dilation=(a["stride"],) * 2, rhs_dilation=(a["dilation"],) * 2, feature_group_count=g,
        dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=lax.Precision.HIGHEST)
    if a["bias"]:
        y = y + context.weight(node, "bias").reshape(1, -1, 1, 1)
    return y


def _pool_size(size: int, k: int, stride: int, pad: int, ceil: bool) -> int:
    """Output length, ceil mode included: the last window must start inside the input or its
    left padding (torch's and Caffe's rule)."""
    room = size + 2 * pad - k
    out = (-(-room // stride) if ceil else room // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_padding(node, shape) -> tuple[int, int, list]:
    """Output height and width, and reduce_window's padding: `pad` before, and after whatever the
    last window needs (the ceil-mode overhang)."""
    a = node.attrs
    _, _, h, w = shape
    k, s, p = a["k"], a["stride"], a["pad"]
    ho, wo = _pool_size(h, k, s, p, a["ceil"]), _pool_size(w, k, s, p, a["ceil"])
    after_h = max(0, (ho - 1) * s + k - h - p)
    after_w = max(0, (wo - 1) * s + k - w - p)
    return ho, wo, [(0, 0), (0, 0), (p, after_h), (p, after_w)]


def _maxpool(node, inputs, context):
    a = node.attrs
    x = inputs[0]
    ho, wo, padding = _pool_padding(node, x.shape)
    y = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, a["k"], a["k"]), (1, 1, a["stride"], a["stride"]),
                          padding)
    return y[:, :, :ho, :wo]


def _avgpool(node, inputs, context):
    a = node.attrs
    x = inputs[0]
    _, _, h, w = x.shape
    k, s, p = a["k"], a["stride"], a["pad"]
    ho, wo, padding = _pool_padding(node, x.shape)
    window, strides = (1, 1, k, k), (1, 1, s, s)
    total = lax.reduce_window(x, 0.0, lax.add, window, strides, padding)[:, :, :ho, :wo]
    # The divisor counts the padding with count_pad (torch's and Caffe's default), never the
    # ceil-mode overhang: windows over a mask of what counts, computed once at trace time.
    counted = np.zeros((h + padding[2][0] + padding[2][1], w + padding[3][0] + padding[3][1]))
    if a["count_pad"]:
        counted[:h + 2 * p, :w + 2 * p] = 1
    else:
        counted[p:p + h, p:p + w] = 1
    sums = np.lib.stride_tricks.sliding_window_view(counted, (k, k))[::s, ::s].sum(axis=(2, 3))
    return total / jnp.asarray(sums[:ho, :wo], dtype=x.dtype)


def _gap(node, inputs, context):
    return jnp.mean(inputs[0], axis=(2, 3), keepdims=True)


def _first_maximum(x):
    """The maximum over the last axis, its gradient going to the first maximum only, as torch's
    (jnp.max would share it between equal values)."""
    first = jnp.argmax(x, axis=-1)[..., None]
    return jnp.take_along_axis(x, first, axis=-1)[..., 0]


def _gmp(node, inputs, context):
    x = inputs[0]
    return _first_maximum(x.reshape(*x.shape[:2], -1))[:, :, None, None]


def _adaptive_pool(node, inputs, context):
    """One slice per output value, each window as torch's AdaptiveAvgPool2d / AdaptiveMaxPool2d."""
    x = inputs[0]
    o = node.attrs["size"]
    n, c, h, w = x.shape
    rows = []
    for r0, r1 in adaptive_bounds(h, o):
        row = []
        for c0, c1 in adaptive_bounds(w, o):
            window = x[:, :, r0:r1, c0:c1].reshape(n, c, -1)
            row.append(jnp.mean(window, axis=-1) if node.op == "adaptive_avgpool" else _first_maximum(window))
        rows.append(jnp.stack(row, axis=-1))
    return jnp.stack(rows, axis=-2)


def _fc(node, inputs, context):
    x = inputs[0]
    if x.ndim != 3:  # tokens (N, T, D) keep their axes: each token on its own, as torch's Linear
        x = x.reshape(x.shape[0], -1)
    y = jnp.matmul(x, context.weight(node, "weight").T, precision=lax.Precision.HIGHEST)
    if node.attrs["bias"]:
        y = y + context.weight(node, "bias")
    return y


def _bn(node, inputs, context):
    x = inputs[0]
    a = node.attrs
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
    running_mean, running_var = context.weight(node, "running_mean"), context.weight(node, "running_var")
    batch_mean = jnp.mean(x, axis=axes)
    batch_var = jnp.mean(jnp.square(x - batch_mean.reshape(shape)), axis=axes)
    count = math.prod(x.shape[i] for i in axes)
    m = a["momentum"]
    # torch keeps the unbiased variance; the statistics are returned, not written in place
    training = context.training
    context.update(node, "running_mean", jnp.where(
        training, (1 - m) * running_mean + m * lax.stop_gradient(batch_mean), running_mean))
    context.update(node, "running_var", jnp.where(
        training, (1 - m) * running_var + m * lax.stop_gradient(batch_var) * (count / max(count - 1, 1)),
        running_var))
    mean = jnp.where(training, batch_mean, running_mean)
    var = jnp.where(training, batch_var, running_var)
    scale = context.weight(node, "weight") * lax.rsqrt(var + a["eps"])
    return (x - mean.reshape(shape)) * scale.reshape(shape) + context.weight(node, "bias").reshape(shape)


def _lrn(node, inputs, context):
    # torch.nn.LocalResponseNorm: x / (k + alpha/size * sum of x^2 over the channel window)^beta,
    # the window reaching size//2 channels before and (size-1)//2 after, zero outside.
    a = node.attrs
    x = inputs[0]
    n = a["size"]
    window = (1, n) + (1,) * (x.ndim - 2)
    padding = [(0, 0), (n // 2, (n - 1) // 2)] + [(0, 0)] * (x.ndim - 2)
    sums = lax.reduce_window(x * x, 0.0, lax.add, window, (1,) * x.ndim, padding)
    return x * (a["k"] + a["alpha"] / n * sums) ** -a["beta"]


def _dropout(node, inputs, context):
    x = inputs[0]
    p = node.attrs["p"]
    if p == 0:
        return x
    keep = jax.random.bernoulli(jax.random.fold_in(context.key, node.id), 1 - p, x.shape)
    return jnp.where(context.training, jnp.where(keep, x / (1 - p), jnp.zeros((), x.dtype)), x)


def _relu(node, inputs, context):
    return jax.nn.relu(inputs[0])  # gradient 0 at 0, as torch's and the NumPy reference's


def _tanh(node, inputs, context):
    return jnp.tanh(inputs[0])


def _sigmoid(node, inputs, context):
    return jax.nn.sigmoid(inputs[0])


def _lrelu(node, inputs, context):
    x = inputs[0]
    return jnp.where(x > 0, x, node.attrs["slope"] * x)


def _elu(node, inputs, context):
    x = inputs[0]
    return jnp.where(x > 0, x, node.attrs["alpha"] * jnp.expm1(jnp.minimum(x, 0)))


def _hardswish(node, inputs, context):
    return jax.nn.hard_swish(inputs[0])


def _relu6(node, inputs, context):
    x = inputs[0]  # by where, not clip: the gradient is 0 at 0 and 6, as torch's (clip's is 1/2)
    return jnp.where(x <= 0, jnp.zeros((), x.dtype), jnp.where(x >= 6, jnp.full((), 6, x.dtype), x))


def _hardsigmoid(node, inputs, context):
    x = inputs[0]  # torch's relu6(x + 3) / 6, with its gradient: 1/6 strictly inside (-3, 3)
    return jnp.where(x <= -3, jnp.zeros((), x.dtype), jnp.where(x >= 3, jnp.ones((), x.dtype), (x + 3) / 6))


def _silu(node, inputs, context):
    return jax.nn.silu(inputs[0])


def _gelu(node, inputs, context):
    return jax.nn.gelu(inputs[0], approximate=False)


def _gelu_tanh(node, inputs, context):
    return jax.nn.gelu(inputs[0], approximate=True)


def _layerscale(node, inputs, context):
    return inputs[0] * context.weight(node, "weight")  # C x 1 x 1 (or C) against N x C x H x W


def _layernorm(node, inputs, context):
    # N x C x H x W and N x C: over the channels (axis 1); a token tensor N x T x D: over the features
    x = inputs[0]
    axis = -1 if x.ndim == 3 else 1
    shape = (-1,) if x.ndim == 3 else (1, -1) + (1,) * (x.ndim - 2)
    centred = x - jnp.mean(x, axis=axis, keepdims=True)
    scale = lax.rsqrt(jnp.mean(jnp.square(centred), axis=axis, keepdims=True) + node.attrs["eps"])
    return (centred * scale * context.weight(node, "weight").reshape(shape)
            + context.weight(node, "bias").reshape(shape))


def _stochastic_depth(node, inputs, context):
    x = inputs[0]
    p = node.attrs["p"]
    if p == 0:
        return x
    draw_shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one draw per sample
    keep = jax.random.bernoulli(jax.random.fold_in(context.key, node.id), 1 - p, draw_shape)
    return jnp.where(context.training, jnp.where(keep, x / (1 - p), jnp.zeros((), x.dtype)), x)


def _softmax(node, inputs, context):
    return jax.nn.softmax(inputs[0], axis=1)


def _flatten(node, inputs, context):
    x = inputs[0]
    return x.reshape(x.shape[0], -1)


def _crop(node, inputs, context):
    x, like = inputs  # `like` gives only its size
    top, left = crop_offsets(node.attrs, x.shape[2:], like.shape[2:])
    return x[:, :, top:top + like.shape[2], left:left + like.shape[3]]


def _concat(node, inputs, context):
    return jnp.concatenate(inputs, axis=1)


def _add(node, inputs, context):
    total = inputs[0]
    for x in inputs[1:]:
        total = total + x
    return total


def _mul(node, inputs, context):
    product = inputs[0]
    for x in inputs[1:]:
        product = product * x  # a Cx1x1 gate broadcasts over height and width
    return product


def _channels(node, inputs, context):
    return inputs[0][:, node.attrs["start"]:node.attrs["end"]]


def _shuffle(node, inputs, context):
    x = inputs[0]
    g = node.attrs["groups"]
    return x.reshape(x.shape[0], g, x.shape[1] // g, *x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


def _upsample(node, inputs, context):
    # torch's F.interpolate as two matrices, built by the NumPy reference at trace time (shapes
    # are static under jit)
    from netdsl.backends.numpy_backend import upsample_matrices
    x = inputs[0]
    f = node.attrs["factor"]
    out = inputs[1].shape[2:] if len(inputs) == 2 else (x.shape[2] * f, x.shape[3] * f)
    rows, columns = upsample_matrices(node, x.shape, out, np.dtype(x.dtype))
    return jnp.einsum("oh,nchw,pw->ncop", jnp.asarray(rows), x, jnp.asarray(columns),
                      precision=lax.Precision.HIGHEST)


def _tokens(node, inputs, context):
    x = inputs[0]  # (N, C, H, W) -> (N, H*W, C)
    return x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)


def _class_token(node, inputs, context):
    x = inputs[0]
    first = jnp.broadcast_to(context.weight(node, "weight"), (x.shape[0], 1, x.shape[2]))
    return jnp.concatenate([first, x], axis=1)


def _pos_embedding(node, inputs, context):
    return inputs[0] + context.weight(node, "weight")


def _attention(node, inputs, context):
    """torch's multi-head self-attention: softmax(Q K^T / sqrt(D/heads)) V per head, projected."""
    x = inputs[0]
    n, t, d = x.shape
    heads = node.attrs["heads"]
    high = lax.Precision.HIGHEST
    qkv = jnp.matmul(x, context.weight(node, "in_proj_weight").T, precision=high) \
        + context.weight(node, "in_proj_bias")
    q, k, v = (part.reshape(n, t, heads, d // heads).transpose(0, 2, 1, 3)
               for part in jnp.split(qkv, 3, axis=-1))
    scores = jnp.matmul(q * (1 / math.sqrt(d // heads)), k.transpose(0, 1, 3, 2), precision=high)
    joined = jnp.matmul(jax.nn.softmax(scores, axis=-1), v, precision=high)
    joined = joined.transpose(0, 2, 1, 3).reshape(n, t, d)
    return jnp.matmul(joined, context.weight(node, "out_proj.weight").T, precision=high) \
        + context.weight(node, "out_proj.bias")


def _token(node, inputs, context):
    return inputs[0][:, node.attrs["index"]]


KERNELS: dict[str, JaxKernel] = {
    "input": _input, "conv": _conv, "deconv": _deconv, "maxpool": _maxpool, "avgpool": _avgpool,
    "gap": _gap, "fc": _fc, "bn": _bn, "lrn": _lrn, "dropout": _dropout, "relu": _relu,
    "tanh": _tanh, "sigmoid": _sigmoid, "lrelu": _lrelu, "elu": _elu, "hardswish": _hardswish,
    "relu6": _relu6, "hardsigmoid": _hardsigmoid, "silu": _silu, "gelu": _gelu, "gelu_tanh": _gelu_tanh,
    "layerscale": _layerscale, "stochastic_depth": _stochastic_depth, "softmax": _softmax,
    "flatten": _flatten, "crop": _crop, "concat": _concat, "add": _add,
    "dwconv": _conv, "adaptive_avgpool": _adaptive_pool, "adaptive_maxpool": _adaptive_pool, "gmp": _gmp,
    "mul": _mul, "channels": _channels, "shuffle": _shuffle, "upsample": _upsample,
    "aux": lambda node, inputs, context: inputs[0],
    "tokens": _tokens, "class_token": _class_token, "pos_embedding": _pos_embedding,
    "attention": _attention, "token": _token,
    "layernorm": _layernorm,
}


# -- the module ---------------------------------------------------------------------------------------

class JaxModule:
    """A network compiled with JAX. Implements netdsl.backend.CompiledModule and
    DifferentiableModule. `__call__` takes and returns jax arrays (NumPy arrays are accepted);
    `run` and `gradients` are NumPy in and out. A new module is in training mode."""

    def __init__(self, network, dtype="float32", seed: int | None = 0, weights=None,
                 kernels: Mapping[str, JaxKernel] | None = None, name: str = "jax"):
        from netdsl.backends.numpy_backend import checked_module_start, weight_names_by_node
        self.network = network
        self.graph = network.graph
        self.kernels = KERNELS if kernels is None else kernels
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        # without given weights, torch's default initialisation, drawn as the NumPy backend draws it
        self.dtype, weights = checked_module_start(name, network, self.kernels, dtype, weights,
                                                   np.random.default_rng(seed))
        if self.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)  # global to the process: see the module docstring
        self._key = jax.random.PRNGKey(seed)
        self._weights = self._convert(weights)
        self.frozen: set[str] = set()
        self.training = True
        self._by_node = weight_names_by_node(network)
        self._forward = jax.jit(self._forward_function)
        self._gradients = jax.jit(self._gradient_function)

    # -- the pure functions that get jit-compiled (the graph is closed over) --

    def _evaluate(self, weights, x, key, training, keep: bool = False):
        context = _Context(weights, self._by_node, training, key)
        kernels = self.kernels

        def kernel(node: Node):
            forward = kernels[node.op]
            return lambda node, inputs: forward(node, inputs, context)
        values = interpret(self.graph, kernel, x, keep=keep)
        return values, context.updates

    def _forward_function(self, weights, x, key, training):
        values, updates = self._evaluate(weights, x, key, training)
        return (values[-1], *(values[node.id] for node in self.graph.aux_outputs)), updates

    def _gradient_function(self, trainable, others, x, dy, key, training):
        def forward(trainable, x):
            values, updates = self._evaluate({**others, **trainable}, x, key, training)
            return (values[-1], *(values[node.id] for node in self.graph.aux_outputs)), updates
        _, pullback, updates = jax.vjp(forward, trainable, x, has_aux=True)
        d_trainable, dx = pullback(dy)
        return dx, d_trainable, updates

    # -- the contract --

    def _convert(self, weights: Mapping[str, Any]) -> dict:
        return {name: jnp.asarray(np.asarray(value), dtype=self.dtype) for name, value in weights.items()}

    def _input(self, x):
        x = jnp.asarray(x, dtype=self.dtype)
        check_input(self.network, x.shape)
        return x

    def _mode(self):
        return jnp.asarray(self.training, dtype=bool)

    def _next_key(self):
        self._key, key = jax.random.split(self._key)
        return key

    def __call__(self, x):
        """The output; in training mode, a net with auxiliary outputs (aux{ }) gives the tuple
        (output, aux1, ...). (The heads are computed in eval mode too: `training` is traced.)"""
        outputs, updates = self._forward(self._weights, self._input(x), self._next_key(), self._mode())
        self._weights.update(updates)
        return outputs if self.training and len(outputs) > 1 else outputs[0]

    def run(self, x: np.ndarray):
        """The forward pass, NumPy in and NumPy out."""
        y = self(x)
        return tuple(np.asarray(v) for v in y) if isinstance(y, tuple) else np.asarray(y)

    def trace(self, x) -> list[np.ndarray]:
        """Every node's output for input x (batch first), in node order, computed op by op without
        jit: for checking shapes and finding the first node where two backends differ."""
        values, updates = self._evaluate(self._weights, self._input(x), self._next_key(), self._mode(),
                                         keep=True)
        self._weights.update(updates)
        return [np.asarray(v) for v in values]

    def gradients(self, x: np.ndarray, dy) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(d sum(y*dy)/dx, {trainable name: gradient}) for one forward and backward pass. With
        auxiliary outputs, `dy` may be a tuple (d output, d aux1, ...); one array leaves the
        heads out."""
        names = set(self.trainable())
        trainable = {name: value for name, value in self._weights.items() if name in names}
        others = {name: value for name, value in self._weights.items() if name not in names}
        aux = self.graph.aux_outputs
        if isinstance(dy, (tuple, list)):
            if len(dy) != 1 + len(aux):
                raise ValueError(f"gradients takes {1 + len(aux)} output gradients, got {len(dy)}")
            cotangent = tuple(jnp.asarray(d, dtype=self.dtype) for d in dy)
        else:
            batch = jnp.shape(dy)[0]
            cotangent = (jnp.asarray(dy, dtype=self.dtype),
                         *(jnp.zeros((batch, *self.network.shapes[node.id]), self.dtype) for node in aux))
        dx, grads, updates = self._gradients(
            trainable, others, self._input(x), cotangent, self._next_key(), self._mode())
        self._weights.update(updates)
        # in eval mode an auxiliary head is not part of the net's function, and one array of dy
        # leaves the heads out: no gradients for their weights, as the NumPy reference and torch give
        heads = set() if not aux or (self.training and isinstance(dy, (tuple, list))) else {
            spec.name for spec in self.network.weight_specs
            if self.graph.node(spec.node).id not in self.graph.inference_nodes()}
        return np.asarray(dx), {name: np.asarray(grads[name]) for name in self.trainable() if name not in heads}

    def train(self, mode: bool = True) -> "JaxModule":
        self.training = mode
        return self

    def eval(self) -> "JaxModule":
        return self.train(False)

    @property
    def weights(self) -> dict[str, Any]:
        """Every weight and buffer under its canonical name, as jax arrays, in network order."""
        return {spec.name: self._weights[spec.name] for spec in self.network.weight_specs}

    def trainable(self) -> list[str]:
        return [spec.name for spec in self.network.weight_specs if spec.trainable and spec.name not in self.frozen]

    def freeze(self, names) -> None:
        from netdsl.errors import NetDSLWeightsError
        known = {spec.name for spec in self.network.weight_specs}
        names = list(names)
        for name in names:
            if name not in known:
                raise NetDSLWeightsError(f"{name} is not a weight of {self.network.name}")
        self.frozen.update(names)

    def load_weights(self, weights, strict: bool = True) -> None:
        from netdsl.backends.numpy_backend import checked_weights
        current = {name: np.asarray(value) for name, value in self._weights.items()}
        self._weights = self._convert(checked_weights(self.network, weights, current, strict))

    def save_weights(self, path) -> None:
        from netdsl.weights_io import save_weights
        save_weights(path, {name: np.asarray(value) for name, value in self.weights.items()})


def compile_network(network, dtype="float32", seed: int | None = 0, weights=None,
                    kernels: Mapping[str, JaxKernel] | None = None, name: str = "jax") -> JaxModule:
    """Entry point of the `jax` backend: `net.compile("jax", dtype="float64", seed=0)`.
    `kernels` replaces the kernel table (a backend built from these kernels, under `name`)."""
    return JaxModule(network, dtype=dtype, seed=seed, weights=weights, kernels=kernels, name=name)


BACKEND = Backend(
    "jax", compile=compile_network, dtypes=("float32", "float64"), writers=WEIGHT_WRITERS,
    description="jax.numpy and lax kernels, jit-compiled; gradients by jax.vjp (pip install 'netdsl[jax]')")
