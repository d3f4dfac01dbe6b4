"""The backend contract: what a backend's `compile` takes and what the module it returns offers.

A backend is an entry point in the `netdsl.backends` group that loads a `Backend` (the built-in
numpy and torch backends register exactly as a third-party one would). Everything outside the
backends - the CLI's `run` and `compile -o`, fine-tuning, the conformance kit
`netdsl.testing.check_backend` - uses only what is written here.

    backend = netdsl.plugins.get_backend("numpy")
    module = backend.compile(net, dtype="float64", seed=0)     # or net.compile("numpy", ...)
    y = module.run(x)                    # NumPy in, NumPy out, whatever the backend computes with
    module.load_weights("w.safetensors")  # or {canonical name: array}; every name and shape checked
    module.freeze(["conv1.weight"])
    backend.writers[".safetensors"](module, "w.safetensors")

Outputs: a network has one output today; a net with several outputs (auxiliary heads) will return
a tuple in declaration order from `__call__` and `run`, and `gradients` will take one output
gradient per output, in the same order.

Kernel-table backends (numpy, jax) share one evaluation loop, `interpret`, as JAX's eval_jaxpr
and torch.fx's Interpreter do: a backend supplies one kernel per op, and fused activations
(`conv3-64+relu`) are applied by the loop through the activation op's own kernel, so no backend
handles an activation twice.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

from .ir import Graph, Node
from .ops import fused_activation

if TYPE_CHECKING:
    import numpy as np

    from .network import Network

WeightsArg = Mapping[str, Any] | str | os.PathLike


def check_input(network: "Network", shape: Sequence[int]) -> None:
    """Raise ValueError unless `shape` (batch first) is an input the network takes: its own shape,
    or for a net with size names (3xHxW) any valid size, named with the nearest valid ones."""
    expected = network.input_shape
    sample = tuple(int(d) for d in shape[1:])
    if len(shape) == len(expected) + 1 and network.accepts(sample):
        return
    wanted = ", ".join(map(str, expected))
    if network.symbolic and len(shape) == len(expected) + 1:
        sets = network.strict_sizes if network.strict else network.valid_sizes
        problems = []
        for want, got in zip(expected, sample):
            if isinstance(want, int):
                if want != got:
                    problems.append(f"{got} channels, not {want}")
                continue
            sizes = sets[next(iter(want.names()))]
            if got not in sizes:
                near = [str(v) for v in sizes.nearest(got) if v is not None]
                problems.append(f"{got} does not fit ({sizes.describe()}"
                                + (f"; {' and '.join(near)} {'do' if len(near) > 1 else 'does'})" if near else ")"))
        if not problems:
            problems.append("the same size name must have the same value")
        raise ValueError(f"{network.name} takes input of shape (N, {wanted}): got {tuple(shape)}: "
                         + "; ".join(dict.fromkeys(problems)))
    raise ValueError(f"{network.name} takes input of shape (N, {wanted}), got {tuple(shape)}")


@runtime_checkable
class CompiledModule(Protocol):
    """A network compiled by a backend. Inputs are batch first: (N, *network.input_shape)."""

    network: "Network"
    training: bool

    def __call__(self, x: Any) -> Any:
        """The forward pass on the backend's own arrays (NumPy arrays, torch tensors, jax arrays)."""

    def run(self, x: "np.ndarray") -> "np.ndarray":
        """The forward pass, NumPy in and NumPy out, in the module's current mode and dtype."""

    def train(self, mode: bool = True) -> "CompiledModule":
        """Training mode (batch statistics, dropout) or, with mode=False, evaluation mode."""

    def eval(self) -> "CompiledModule":
        """Evaluation mode: running statistics, no dropout."""

    @property
    def weights(self) -> dict[str, Any]:
        """Every parameter and buffer under its canonical name (block1.conv1.weight), as the
        backend's arrays, in network order."""

    def load_weights(self, weights: WeightsArg, strict: bool = True) -> None:
        """Replace weights from {canonical name: array or tensor} or a .safetensors/.npz path.
        Every name and shape is checked first; strict=False accepts a subset (no unknown names)."""

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write every weight and buffer to .safetensors or .npz (by the suffix)."""

    def freeze(self, names: Iterable[str]) -> None:
        """Stop training these weights (canonical names); an unknown name is an error."""

    def trainable(self) -> list[str]:
        """The canonical names of the weights an optimiser would update, in network order."""


@runtime_checkable
class DifferentiableModule(CompiledModule, Protocol):
    """A module that can give gradients (numpy, torch, jax). Optional for a backend."""

    def gradients(self, x: "np.ndarray", dy: "np.ndarray") -> tuple["np.ndarray", dict[str, "np.ndarray"]]:
        """(d sum(y*dy)/dx, {trainable name: gradient}) for one forward and backward pass in the
        current mode, NumPy in and out."""


Writer = Callable[[CompiledModule, "str | os.PathLike"], None]


@dataclass(frozen=True)
class Backend:
    """What a `netdsl.backends` entry point loads.

    `compile(network, *, dtype="float32", seed=0, weights=None, **backend_options)` returns a
    CompiledModule. `seed` makes the initial weights reproducible (None: unseeded); `weights`
    replaces them ({canonical name: array} or a weights file path), checked name by name.
    Backend-specific options (torch's `device`, `channels_last`) are keyword arguments too.
    `writers` maps an output suffix (".py", ".onnx", ".safetensors", ".npz") to a function
    writing a compiled module there: what `netdsl compile -o FILE` offers for this backend.
    """

    name: str
    compile: Callable[..., CompiledModule]
    dtypes: tuple[str, ...] = ("float32", "float64")
    writers: Mapping[str, Writer] = field(default_factory=dict)
    description: str = ""


def save_weights_writer(module: CompiledModule, path) -> None:
    """The writer every backend offers for .safetensors and .npz."""
    module.save_weights(path)


WEIGHT_WRITERS: Mapping[str, Writer] = {".safetensors": save_weights_writer, ".npz": save_weights_writer}


def last_use(graph: Graph) -> list[int]:
    """For each node id, the id of the last node that reads it (the output counts as read at the end)."""
    last = list(range(len(graph.nodes)))
    for node in graph.nodes:
        for i in node.inputs:
            last[i] = max(last[i], node.id)
    last[-1] = len(graph.nodes)
    return last


Kernel = Callable[[Node, Sequence[Any]], Any]


def interpret(graph: Graph, kernel: Callable[[Node], Kernel], x: Any, keep: bool = False,
              only: frozenset[int] | None = None) -> list[Any]:
    """Evaluate `graph` on input `x`: kernel(node)(node, inputs) for each node in order, then the
    fused activation's kernel on the result. Values no later node reads are dropped as soon as
    possible unless `keep` (then every node's output is returned, for checking shapes). With
    `only`, the nodes outside it are not run (eval mode leaves out the auxiliary heads:
    `graph.inference_nodes()`).

    Returns the list of node values (None where dropped or not run); the output is the last.
    """
    values: list[Any] = [None] * len(graph.nodes)
    values[0] = x
    last = last_use(graph)
    for node in graph.nodes[1:]:
        if only is not None and node.id not in only:
            continue
        y = kernel(node)(node, [values[i] for i in node.inputs])
        act = fused_activation(node)
        if act is not None:
            y = kernel(act)(act, [y])
        values[node.id] = y
        if not keep:
            for i in node.inputs:
                if last[i] == node.id and i != 0:
                    values[i] = None
    return values
