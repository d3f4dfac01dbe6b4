"""Comparing the torch backend with the NumPy reference (shared by the backend and property tests)."""
import dataclasses

import numpy as np
import torch

import netdsl
from netdsl.ir import Graph, freeze_attrs
from netdsl.network import Network
from netdsl.ops import RANDOM_IN_TRAINING
from netdsl.testing import kernel_gradient_tolerance


def without_dropout(net: Network) -> Network:
    """The same network with every dropout (and stochastic depth) at p=0: train mode without
    randomness."""
    nodes = tuple(dataclasses.replace(n, attrs=freeze_attrs({**n.attrs, "p": 0.0}))
                  if n.op in RANDOM_IN_TRAINING else n for n in net.graph.nodes)
    expanded = dataclasses.replace(net._expanded, graph=Graph(net.graph.name, nodes))
    return Network(expanded, net.input_shape, net.path, netdsl.Limits(), False)


def assert_close(actual, expected, rtol, floor, name):
    """|actual - expected| <= rtol * |expected| + floor elementwise: relative, with an absolute
    floor scaled by the largest reference value of the comparison (a gradient that is exactly
    zero in theory, such as a conv bias before batch norm, is rounding noise on that scale)."""
    expected = np.asarray(expected)
    error = np.abs(np.asarray(actual) - expected)
    bound = rtol * np.abs(expected) + floor
    worst = int(np.argmax(error - bound))
    assert error.flat[worst] <= bound.flat[worst], \
        f"{name}: error {error.flat[worst]:.3g} at {worst}, reference {expected.flat[worst]:.3g}, floor {floor:.3g}"


def compare(net, modes=("eval", "train"), dtype="float64", rtol=1e-9, atol=None, batch=2, seed=0):
    """Outputs, input gradients and every parameter gradient agree, in each mode in turn:
    |torch - numpy| <= rtol * |numpy| + atol * max|numpy| elementwise (atol defaults to rtol)."""
    atol = rtol if atol is None else atol
    reference = net.compile("numpy", dtype=dtype, seed=seed)
    model = net.compile("torch", dtype=dtype, weights=reference.weights)
    buffers = [spec.name for spec in net.weight_specs if not spec.trainable]
    looser = kernel_gradient_tolerance("torch", net, dtype)  # torch's float64 hardsigmoid backward
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *net.input_shape)).astype(dtype)
    for mode in modes:
        reference.train(mode == "train")
        model.train(mode == "train")
        model.zero_grad(set_to_none=True)
        y_ref = reference(x)
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        y = model(xt)
        # An output that is zero in theory (dead ReLUs into batch norm) is noise on the input's scale.
        floor = atol * max(float(np.abs(y_ref).max()), float(np.abs(x).max()))
        assert_close(y.detach().numpy(), y_ref, rtol, floor, f"{mode}: output")
        r = rng.standard_normal(y_ref.shape).astype(dtype)
        dx_ref = reference.backward(r)
        y.backward(torch.from_numpy(r))
        grads = {name: p.grad.numpy() for name, p in model.named_parameters() if p.requires_grad}
        assert set(grads) == set(reference.grads)
        # Gradients are linear in r: one that is zero in theory (dead ReLUs before a softmax of a
        # constant) is rounding noise on the scale of r, not of the other gradients.
        floor = max(atol, looser) * max(float(np.abs(g).max()) for g in [dx_ref, r, *reference.grads.values()])
        assert_close(xt.grad.numpy(), dx_ref, max(rtol, looser), floor, f"{mode}: input gradient")
        for name, grad in grads.items():
            assert_close(grad, reference.grads[name], max(rtol, looser), floor, f"{mode}: {name}")
        # Running statistics moved alike (or not at all in eval). They share one scale: after
        # `bn - bn` the second running mean is 0 in theory and rounding noise in practice.
        state = model.state_dict()
        floor = atol * max((float(np.abs(reference.weights[name]).max()) for name in buffers), default=0.0)
        for name in buffers:
            assert_close(state[name].numpy(), reference.weights[name], rtol, floor, f"{mode}: {name}")


def _values_compare_sees(net, dtype: str, batch: int, seed: int, train: bool) -> list:
    """Every node's value in the NumPy reference, on the weights and input `compare` draws."""
    module = net.compile("numpy", dtype=dtype, seed=seed).train(train)
    x = np.random.default_rng(seed).standard_normal((batch, *net.input_shape)).astype(dtype)
    return module.trace(x)


def batch_norm_is_well_conditioned(net, dtype: str, batch: int, seed: int = 0) -> bool:
    """Every bn sees a batch variance of at least 1e-2 per channel, on exactly the weights and
    input that `compare(net, dtype=dtype, batch=batch, seed=seed)` uses.

    Over a constant batch (dead ReLUs before it) batch norm multiplies the rounding in x - mean by
    up to 1/sqrt(eps) ~ 316 in any implementation: not a disagreement a tolerance can judge.
    """
    if not any(node.op == "bn" for node in net.graph):
        return True
    values = _values_compare_sees(net, dtype, batch, seed, train=True)
    for node in net.graph:
        if node.op == "bn":
            value = values[node.inputs[0]].astype(np.float64)
            axes = (0, 2, 3) if value.ndim == 4 else (0,)
            if value.var(axis=axes).min() < 1e-2:
                return False
    return True


def layer_norm_is_well_conditioned(net, dtype: str, batch: int, seed: int = 0) -> bool:
    """Every group a layernorm normalises is all zeros or not nearly constant against its size
    (netdsl.testing.layer_norm_is_well_conditioned), on the weights and input `compare` uses."""
    from netdsl.testing import layer_norm_is_well_conditioned as group_is_well_conditioned
    if not any(node.op == "layernorm" for node in net.graph):
        return True
    for train in (False, True):  # a bn before it normalises differently in the two modes
        values = _values_compare_sees(net, dtype, batch, seed, train=train)
        if not all(group_is_well_conditioned(values[node.inputs[0]].astype(np.float64), node.attrs["eps"])
                   for node in net.graph if node.op == "layernorm"):
            return False
    return True


def max_pool_maxima_are_unique(net, dtype: str, batch: int, seed: int = 0) -> bool:
    """In every maxpool window the largest value beats the runner-up by more than 1e-9 of the scale,
    on exactly the weights and input that `compare` uses.

    A max-pool's gradient jumps at a tie: when two values tie exactly in one backend and differ by
    one rounding step in the other, each routes the gradient to a different element. Generated
    networks make such ties common (constant regions from bilinear filters and zero padding).
    """
    from netdsl.backends.numpy_backend import _pad, _pool_geometry, _windows
    from netdsl.testing import MAX_OPS, adaptive_maxima_are_unique
    if not any(node.op in MAX_OPS for node in net.graph):
        return True
    values = _values_compare_sees(net, dtype, batch, seed, train=False)
    for node in net.graph:
        if node.op in ("adaptive_maxpool", "gmp"):
            if not adaptive_maxima_are_unique(node, values[node.inputs[0]].astype(np.float64)):
                return False
            continue
        if node.op != "maxpool":
            continue
        value = np.swapaxes(values[node.inputs[0]].astype(np.float64), 0, 1)  # (C, N, H, W)
        ho, wo, p, bottom, right, k = _pool_geometry(node, value.shape)
        padded = _pad(value, p, bottom, p, right, -np.inf)
        windows = _windows(padded, k, node.attrs["stride"], 1, ho, wo)
        flat = np.moveaxis(windows.reshape(value.shape[0], k * k, -1), 1, -1)
        if k * k < 2:
            continue
        top = np.sort(flat, axis=-1)[..., -2:]
        scale = max(float(np.abs(value).max()), 1.0)
        if np.min(top[..., 1] - top[..., 0]) <= 1e-9 * scale:
            return False
    return True
