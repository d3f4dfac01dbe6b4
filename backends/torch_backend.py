"""The torch backend: an nn.Module built from standard torch.nn layers, for CPU and CUDA.

Every layer is the torch.nn module you would write by hand (Conv2d, BatchNorm2d, Linear, ...),
nested by the IR's scopes, so `state_dict()` keys are the canonical weight names
(`stage2.bottleneck1.add1.b1.cbr1.conv1.weight`) and weights move between backends unrenamed.
`forward` walks a fixed plan of steps, which torch.compile traces into one graph.

>>> model = netdsl.load("resnet50").compile("torch", device="cpu", seed=0)
>>> model(torch.zeros(1, 3, 224, 224)).shape
torch.Size([1, 1000])
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from netdsl.ir import Node
from netdsl.weights import bilinear_weight


def _conv(node: Node, inputs) -> nn.Module:
    a = node.attrs
    return nn.Conv2d(inputs[0][0], a["c"], a["k"], stride=a["stride"], padding=a["pad"],
                     dilation=a["dilation"], groups=a["groups"], bias=a["bias"])


def _deconv(node: Node, inputs) -> nn.Module:
    a = node.attrs
    return nn.ConvTranspose2d(inputs[0][0], a["c"], a["k"], stride=a["stride"], padding=a["pad"],
                              output_padding=a["output_pad"], groups=a["groups"], bias=a["bias"],
                              dilation=a["dilation"])


def _fc(node: Node, inputs) -> nn.Module:
    return nn.Linear(math.prod(inputs[0]), node.attrs["c"], bias=node.attrs["bias"])


def _bn(node: Node, inputs) -> nn.Module:
    kind = nn.BatchNorm2d if len(inputs[0]) == 3 else nn.BatchNorm1d
    return kind(inputs[0][0], eps=node.attrs["eps"], momentum=node.attrs["momentum"])


def _pool(node: Node, inputs) -> nn.Module:
    a = node.attrs
    if node.op == "maxpool":
        return nn.MaxPool2d(a["k"], a["stride"], a["pad"], ceil_mode=a["ceil"])
    return nn.AvgPool2d(a["k"], a["stride"], a["pad"], ceil_mode=a["ceil"],
                        count_include_pad=a["count_pad"])


#: op -> the torch.nn module that computes it (None: done functionally in forward).
TORCH_MODULES: dict[str, Callable[[Node, list], nn.Module] | None] = {
    "input": None,
    "conv": _conv,
    "deconv": _deconv,
    "maxpool": _pool,
    "avgpool": _pool,
    "gap": lambda node, inputs: nn.AdaptiveAvgPool2d(1),
    "fc": _fc,
    "bn": _bn,
    "lrn": lambda node, inputs: nn.LocalResponseNorm(node.attrs["size"], node.attrs["alpha"],
                                                      node.attrs["beta"], node.attrs["k"]),
    "dropout": lambda node, inputs: nn.Dropout(node.attrs["p"]),
    "relu": lambda node, inputs: nn.ReLU(),
    "tanh": lambda node, inputs: nn.Tanh(),
    "sigmoid": lambda node, inputs: nn.Sigmoid(),
    "lrelu": lambda node, inputs: nn.LeakyReLU(node.attrs["slope"]),
    "elu": lambda node, inputs: nn.ELU(node.attrs["alpha"]),
    "softmax": lambda node, inputs: nn.Softmax(dim=1),
    "flatten": lambda node, inputs: nn.Flatten(),
    "crop": None,
    "concat": None,
    "add": None,
}


def _call(module, inputs, attrs):
    return module(inputs[0])


def _overwritable(graph, readers, node_id: int) -> bool:
    """Whether a value may be overwritten in place by its reader, as torchvision's
    ReLU(inplace=True) and `out += identity` do: it has one reader, and the op that made it does
    not need its own output for backward (autograd would refuse the rest)."""
    node = graph.nodes[node_id]
    return (node_id != 0 and len(readers[node_id]) == 1 and node.op in _KEEPS_NO_OUTPUT
            and node.attrs.get("act", "none") == "none")


_KEEPS_NO_OUTPUT = frozenset({"conv", "deconv", "fc", "bn", "add"})


def _fc_call(module, inputs, attrs):
    x = inputs[0]
    return module(torch.flatten(x, 1) if x.dim() > 2 else x)


def _crop_call(module, inputs, attrs):
    x, like = inputs
    o = attrs["offset"]
    return x[:, :, o:o + like.shape[2], o:o + like.shape[3]]


def _concat_call(module, inputs, attrs):
    return torch.cat(inputs, dim=1)


def _add_call(module, inputs, attrs):
    y = inputs[0]
    for x in inputs[1:]:
        y = y + x
    return y


def _add_in_place_call(module, inputs, attrs):
    y = inputs[0]
    for x in inputs[1:]:
        y = y.add_(x)
    return y


#: op -> how forward applies it to its inputs.
TORCH_CALLS: dict[str, Callable] = {op: _call for op in TORCH_MODULES} | {
    "fc": _fc_call, "crop": _crop_call, "concat": _concat_call, "add": _add_call}

#: A layer's fused activation (`act`), applied to the layer's own output, in place like
#: torchvision's ReLU(inplace=True).
TORCH_ACTIVATIONS: dict[str, Callable] = {
    "relu": lambda x: F.relu(x, inplace=True),
    "tanh": lambda x: torch.tanh_(x),
    "sigmoid": lambda x: torch.sigmoid_(x),
    "lrelu": lambda x: F.leaky_relu(x, 0.01, inplace=True),
    "elu": lambda x: F.elu(x, inplace=True),
}


def _container(root: nn.Module, path: list[str]) -> nn.Module:
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            child = nn.Module()
            module.add_module(part, child)
        module = child
    return module


class NetdslModule(nn.Module):
    """A network compiled to torch.nn layers. Input (N, *input_shape), batch first."""

    def __init__(self, network):
        super().__init__()
        self.network_name = network.name
        self.input_shape = tuple(network.input_shape)
        graph, shapes = network.graph, network.shapes
        last_use = [0] * len(graph.nodes)
        for node in graph.nodes:
            for i in node.inputs:
                last_use[i] = node.id
        readers = graph.consumers()
        steps = []
        for node in graph.nodes[1:]:
            builder = TORCH_MODULES[node.op]
            module = None
            in_place = _overwritable(graph, readers, node.inputs[0])
            call = TORCH_CALLS[node.op]
            if node.op == "add" and in_place:
                call = _add_in_place_call
            if builder is not None:
                module = builder(node, [shapes[i] for i in node.inputs])
                if in_place and hasattr(module, "inplace"):  # ReLU, LeakyReLU, ELU, Dropout
                    module.inplace = True
                *scope, local = node.name.split(".")
                _container(self, scope).add_module(local, module)
                if node.attrs.get("fixed"):
                    for parameter in module.parameters():
                        parameter.requires_grad_(False)
            act = node.attrs.get("act", "none")
            free = tuple(i for i in node.inputs if last_use[i] == node.id)
            steps.append((node.id, call, module, node.inputs,
                          TORCH_ACTIVATIONS[act] if act != "none" else None, free, dict(node.attrs)))
        # A plain tuple, not registered: the modules in it are registered above under their names.
        self._steps = tuple(steps)
        self._length = len(graph.nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list = [None] * self._length
        values[0] = x
        for node_id, call, module, inputs, act, free, attrs in self._steps:
            y = call(module, [values[i] for i in inputs], attrs)
            if act is not None:
                y = act(y)
            values[node_id] = y
            for i in free:  # drop what no later step reads, as a hand-written forward would
                values[i] = None
        return values[-1]

    @torch.no_grad()
    def trace(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every node's output for input x, in node order (copies: later steps may work in place)."""
        values: list = [None] * self._length
        values[0] = x
        for node_id, call, module, inputs, act, free, attrs in self._steps:
            y = call(module, [values[i].clone() for i in inputs], attrs)
            values[node_id] = act(y) if act is not None else y
        return values

    def extra_repr(self) -> str:
        return f"network={self.network_name!r}, input={self.input_shape}"


def _dtype(value) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    names = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
             "float16": torch.float16}
    if value not in names:
        raise ValueError(f"dtype must be one of {', '.join(names)}, got {value!r}")
    return names[value]


def initialise(model: NetdslModule, network) -> None:
    """torch's default initialisation (done by each nn layer), plus FCN's bilinear deconvs."""
    for node in network.graph.nodes:
        if node.op == "deconv" and node.attrs["init"] == "bilinear":
            *scope, local = node.name.split(".")
            module = _container(model, scope)._modules[local]
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(bilinear_weight(tuple(module.weight.shape),
                                                                     node.attrs["groups"])))
                if module.bias is not None:
                    module.bias.zero_()


def load_weights_into(model: nn.Module, network, weights: dict, source: str = "the weights") -> None:
    """Copy {canonical name: array or tensor} into the model, after checking every name and shape."""
    from netdsl.weights_io import check_weights
    checked = check_weights(network, {k: _as_numpy(v) for k, v in weights.items()}, source)
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, array in checked.items():
            target = state[name]
            target.copy_(torch.from_numpy(array).to(dtype=target.dtype, device=target.device))


def _as_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64 if value.is_floating_point() else value.dtype).numpy()
    return value


def compile_network(network, dtype="float32", device="cpu", seed: int | None = 0,
                    weights: dict | None = None, channels_last: bool = False) -> NetdslModule:
    """Entry point of the `torch` backend: `net.compile("torch", dtype=torch.float32, device="cuda")`."""
    if weights is not None:
        # Given weights replace every value: build without initialising, then fill (after the
        # dtype conversion, so float64 weights keep every bit). Leftover buffers such as
        # BatchNorm's step counter start at zero.
        with torch.device("meta"):
            model = NetdslModule(network)
        model = model.to_empty(device=device).to(dtype=_dtype(dtype))
        for name, buffer in model.named_buffers():
            if name.endswith("num_batches_tracked"):
                buffer.zero_()
        load_weights_into(model, network, weights)
    else:
        with torch.random.fork_rng(devices=[]):  # a seed must not disturb the caller's random state
            if seed is not None:
                torch.manual_seed(seed)
            model = NetdslModule(network)
            initialise(model, network)
        model = model.to(device=device, dtype=_dtype(dtype))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
