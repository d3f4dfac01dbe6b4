"""The torch backend: the generated PyTorch source (backends/torch_codegen.py), executed.

`net.compile("torch")` runs exactly the code `netdsl compile -o model.py` writes, as a torch.fx
GraphModule runs its own generated code: one nn.Module class per block, standard torch.nn layers,
`state_dict()` keys that are the canonical weight names. The root module also offers the backend
contract (netdsl/backend.py): `run`, `weights`, `load_weights`, `save_weights`, `freeze`,
`trainable`, `gradients`.

Pickling (`torch.save(model)`, `copy.deepcopy`, multiprocessing) stores each block as its source
and its state, so a fresh process that imports netdsl can load it: the classes are rebuilt from
the source, as torch.fx does for GraphModule.

>>> model = netdsl.load("resnet50").compile("torch", device="cpu", seed=0)
>>> model.stage3                                   # a real block: hooks fire, fx traces it
>>> model(torch.zeros(1, 3, 224, 224)).shape
torch.Size([1, 1000])
"""
from __future__ import annotations

import hashlib
import linecache
import os
import sys
import types
from functools import lru_cache
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from netdsl.backend import WEIGHT_WRITERS, Backend
from netdsl.backends.torch_codegen import generate_source, lower
from netdsl.errors import NetDSLError, NetDSLNameError
from netdsl.weights import bilinear_weight

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def _dtype(value) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if value not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {value!r}")
    return _DTYPES[value]


# -- the generated code as a module -----------------------------------------------------------------

@lru_cache(maxsize=64)
def _namespace(source: str) -> dict:
    """Executes generated source once per distinct text, in a module of its own whose classes
    pickle by source (see _restore)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    name = f"netdsl_generated_{digest}"
    filename = f"<netdsl-generated-{digest}>"
    # Registered with linecache so tracebacks, inspect and torch.compile can show the code.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    code = compile(source, filename, "exec")
    exec(code, module.__dict__)  # noqa: S102 - our own generated text; user text is never code
    for value in list(module.__dict__.values()):
        if isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == name:
            value.__reduce_ex__ = _reduce_block
            value._netdsl_source = source
    return module.__dict__


def _reduce_block(self, protocol):
    cls = type(self)
    root = getattr(cls, "_netdsl_root", False)
    name = cls.__bases__[0].__name__ if root else cls.__name__
    return (_restore, (cls._netdsl_source, name, root), self.__dict__.copy())


def _restore(source: str, name: str, root: bool):
    """Unpickling: the class `name` of `source` (the root with the contract when `root`)."""
    cls = _root_class(source, name) if root else _namespace(source)[name]
    return cls.__new__(cls)


@lru_cache(maxsize=64)
def _root_class(source: str, name: str) -> type:
    generated = _namespace(source)[name]
    cls = type(name, (generated, TorchModule), {"_netdsl_root": True,
                                                "__module__": generated.__module__,
                                                "__qualname__": name})
    return cls


class TorchModule:
    """The backend contract on the generated root module (mixed into its class)."""

    network: Any

    def run(self, x: np.ndarray):
        """The forward pass, NumPy in and out (a tuple with auxiliary outputs in training mode)."""
        with torch.no_grad():
            y = self(self._as_input(x))
        return tuple(_as_numpy(v) for v in y) if isinstance(y, tuple) else _as_numpy(y)

    def gradients(self, x: np.ndarray, dy):
        """(d sum(y*dy)/dx, {name: gradient}); with auxiliary outputs in training mode `dy` may be
        a tuple (d output, d aux1, ...), and one array leaves the heads out."""
        xt = self._as_input(x).requires_grad_(True)
        for p in self.parameters():
            p.grad = None
        y = self(xt)
        if isinstance(dy, (tuple, list)):
            outputs = y if isinstance(y, tuple) else (y,)
            if len(dy) != len(outputs):
                raise ValueError(f"gradients takes {len(outputs)} output gradients, got {len(dy)}")
            torch.autograd.backward(list(outputs), [self._as_input(d) for d in dy])
        else:
            (y[0] if isinstance(y, tuple) else y).backward(self._as_input(dy))
        grads = {name: _as_numpy(p.grad) for name, p in self.named_parameters()
                 if p.requires_grad and p.grad is not None}
        dx = _as_numpy(xt.grad) if xt.grad is not None else np.zeros_like(np.asarray(x))
        return dx, grads

    def _netdsl_tensor(self) -> torch.Tensor | None:
        """A floating-point weight or buffer: where and in what the module computes."""
        for tensor in (*self.parameters(), *self.buffers()):
            if tensor.is_floating_point():
                return tensor
        return None

    @property
    def _netdsl_dtype(self) -> torch.dtype:
        """The dtype the module computes in: its weights', or what it was compiled with."""
        tensor = self._netdsl_tensor()
        return tensor.dtype if tensor is not None else self.__dict__.get("_netdsl_compiled_dtype",
                                                                        torch.float32)

    @property
    def _netdsl_device(self) -> torch.device:
        tensor = self._netdsl_tensor()
        return tensor.device if tensor is not None else torch.device("cpu")

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        return {name: value for name, value in self.state_dict().items()
                if not name.endswith("num_batches_tracked")}

    def load_weights(self, weights, strict: bool = True) -> None:
        from netdsl.weights_io import check_weights, read_weights
        source = "the weights"
        if isinstance(weights, (str, os.PathLike)):
            source = str(weights)
            weights = read_weights(weights)
        arrays = {name: _as_numpy(value) for name, value in weights.items()}
        if not strict:  # a subset: the names it lacks keep their current values
            arrays = {**{name: _as_numpy(value) for name, value in self.weights.items()}, **arrays}
        checked = check_weights(self.network, arrays, source)
        state = self.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, array in checked.items():
                target = state[name]
                target.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(dtype=target.dtype,
                                                                               device=target.device))

    def save_weights(self, path) -> None:
        from netdsl.weights_io import save_weights
        save_weights(path, {name: _as_numpy(value) for name, value in self.weights.items()})

    def freeze(self, names: Iterable[str]) -> None:
        parameters = dict(self.named_parameters())
        for name in names:
            if name not in parameters:
                raise NetDSLNameError(f"{name} is not a trainable weight of {self.network.name}")
            parameters[name].requires_grad_(False)

    def trainable(self) -> list[str]:
        return [name for name, p in self.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def trace(self, x) -> list:
        """Each node's output for input x (a tensor or a NumPy array), in node order, as forward
        hooks see it (copies, since later layers may work in place): the output of the module of
        that name. None where no hook sees the node's value: a layer whose activation is fused
        into its block's forward, and ops computed inside a block's forward (crop)."""
        x = self._as_input(x)
        values: list = [None] * len(self.network.graph.nodes)
        values[0] = x.clone()
        index = {node.name: node.id for node in self.network.graph.nodes
                 if node.attrs.get("act", "none") == "none"}
        handles = []
        for name, module in self.named_modules():
            if name in index:
                def record(module, inputs, output, node_id=index[name]):
                    values[node_id] = (output[0] if isinstance(output, tuple) else output).clone()
                handles.append(module.register_forward_hook(record))
        try:
            self(x)
        finally:
            for handle in handles:
                handle.remove()
        return values

    def _as_input(self, x) -> torch.Tensor:
        """x as a tensor of the module's dtype, on its device."""
        return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(
            device=self._netdsl_device, dtype=self._netdsl_dtype)

    def source(self) -> str:
        """The PyTorch source this module runs (what `netdsl compile -o model.py` writes)."""
        return type(self)._netdsl_source

    def dynamic_shapes(self) -> tuple:
        """torch.export's `dynamic_shapes` for this module's input: a dynamic batch, and for a net
        with size names (3xHxW) its height and width with their true bounds and step."""
        from netdsl.backends.torch_export import dynamic_shapes
        return dynamic_shapes(self.network)

    def export(self, batch: int = 2):
        """`torch.export.export` of this module (in eval mode) with `dynamic_shapes()`."""
        from netdsl.backends.torch_export import export
        return export(self, self.network, batch)


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.to(torch.float32)
        return value.numpy()
    return np.asarray(value)


def build(network, source: str | None = None) -> nn.Module:
    """An instance of the network's generated root class (torch's default initialisation)."""
    source = source if source is not None else generate_source(network)
    _, root = lower(network) if source is None else (None, _root_name(source))
    model = _root_class(source, root)()
    model.network = network
    return model


def _root_name(source: str) -> str:
    marker = "    model = "
    for line in reversed(source.splitlines()):
        if line.startswith(marker):
            return line[len(marker):].split("(", 1)[0]
    raise AssertionError("generated source without its __main__ block")  # pragma: no cover


def initialise(model: nn.Module, network) -> None:
    """FCN's bilinear deconvs (every other layer initialises itself as torch does)."""
    for node in network.graph.nodes:
        if node.op == "deconv" and node.attrs["init"] == "bilinear":
            module = model.get_submodule(node.name)
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(bilinear_weight(tuple(module.weight.shape),
                                                                     node.attrs["groups"])))
                if module.bias is not None:
                    module.bias.zero_()


def compile_network(network, dtype="float32", device="cpu", seed: int | None = 0,
                    weights: Mapping | str | os.PathLike | None = None,
                    channels_last: bool = False) -> nn.Module:
    """The `torch` backend's compile: `net.compile("torch", dtype="float32", device="cuda")`."""
    torch_dtype = _dtype(dtype)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NetDSLError("device cuda: this machine has no CUDA GPU that torch can use",
                          notes=["compile with device='cpu', or install a CUDA build of torch"])
    source = generate_source(network)
    if weights is not None:
        # Given weights replace every value: build without initialising, then fill (after the
        # dtype conversion, so float64 weights keep every bit).
        with torch.device("meta"):
            model = build(network, source)
        model = model.to_empty(device=device).to(dtype=torch_dtype)
        for name, buffer in model.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.zero_()
        model.load_weights(weights)
    else:
        with torch.random.fork_rng(devices=[]):  # a seed must not disturb the caller's random state
            if seed is not None:
                torch.manual_seed(seed)
            model = build(network, source)
            initialise(model, network)
        model = model.to(device=device, dtype=torch_dtype)
    model._netdsl_compiled_dtype = torch_dtype  # for a network without weights (`input 1 - relu`)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def write_source(module, path) -> None:
    from netdsl import __version__
    from pathlib import Path
    Path(path).write_text(generate_source(module.network, __version__), encoding="utf-8")


def write_onnx(module, path) -> None:
    from netdsl.backends.torch_export import export_onnx
    export_onnx(module, module.network, path)


BACKEND = Backend(
    "torch", compile=compile_network, dtypes=tuple(_DTYPES),
    writers={".py": write_source, ".onnx": write_onnx, **WEIGHT_WRITERS},
    description="a torch.nn.Module of standard layers, one class per block (CPU and CUDA)")
