"""IR -> readable, standalone PyTorch source (`netdsl compile FILE -o model.py`).

The generated file imports only torch and holds one class, constructible with no arguments, whose
layers are named as in the IR and carry the .net source line they came from as a comment. Its
forward performs the same torch operations in the same order as the in-process module
(backends/torch_backend.py), so with the same weights its outputs are bit-identical.

This module builds text only: it does not import torch.
"""
from __future__ import annotations

import keyword
import math
import re

from netdsl.ir import Node
from netdsl.shapes import format_shape


def _conv(node: Node, inputs) -> str:
    a = node.attrs
    return (f"nn.Conv2d({inputs[0][0]}, {a['c']}, {a['k']}, stride={a['stride']}, padding={a['pad']}, "
            f"dilation={a['dilation']}, groups={a['groups']}, bias={a['bias']})")


def _deconv(node: Node, inputs) -> str:
    a = node.attrs
    return (f"nn.ConvTranspose2d({inputs[0][0]}, {a['c']}, {a['k']}, stride={a['stride']}, "
            f"padding={a['pad']}, output_padding={a['output_pad']}, groups={a['groups']}, "
            f"bias={a['bias']}, dilation={a['dilation']})")


def _pool(node: Node, inputs) -> str:
    a = node.attrs
    if node.op == "maxpool":
        return f"nn.MaxPool2d({a['k']}, {a['stride']}, {a['pad']}, ceil_mode={a['ceil']})"
    return (f"nn.AvgPool2d({a['k']}, {a['stride']}, {a['pad']}, ceil_mode={a['ceil']}, "
            f"count_include_pad={a['count_pad']})")


def _bn(node: Node, inputs) -> str:
    kind = "BatchNorm2d" if len(inputs[0]) == 3 else "BatchNorm1d"
    return f"nn.{kind}({inputs[0][0]}, eps={node.attrs['eps']!r}, momentum={node.attrs['momentum']!r})"


#: op -> the constructor expression of its torch.nn module (None: functional in forward).
MODULE_SOURCE = {
    "input": None,
    "conv": _conv,
    "deconv": _deconv,
    "maxpool": _pool,
    "avgpool": _pool,
    "gap": lambda node, inputs: "nn.AdaptiveAvgPool2d(1)",
    "fc": lambda node, inputs: f"nn.Linear({math.prod(inputs[0])}, {node.attrs['c']}, bias={node.attrs['bias']})",
    "bn": _bn,
    "lrn": lambda node, inputs: (f"nn.LocalResponseNorm({node.attrs['size']}, {node.attrs['alpha']!r}, "
                                 f"{node.attrs['beta']!r}, {node.attrs['k']!r})"),
    "dropout": lambda node, inputs: f"nn.Dropout({node.attrs['p']!r})",
    "relu": lambda node, inputs: "nn.ReLU()",
    "tanh": lambda node, inputs: "nn.Tanh()",
    "sigmoid": lambda node, inputs: "nn.Sigmoid()",
    "lrelu": lambda node, inputs: f"nn.LeakyReLU({node.attrs['slope']!r})",
    "elu": lambda node, inputs: f"nn.ELU({node.attrs['alpha']!r})",
    "softmax": lambda node, inputs: "nn.Softmax(dim=1)",
    "flatten": lambda node, inputs: "nn.Flatten()",
    "crop": None,
    "concat": None,
    "add": None,
}


def _call_source(node: Node, module: str, args: list[str], in_shapes, in_place: bool = False) -> str:
    """The forward expression of one node, matching torch_backend.TORCH_CALLS."""
    if node.op == "fc":
        return f"{module}(torch.flatten({args[0]}, 1))" if len(in_shapes[0]) == 3 else f"{module}({args[0]})"
    if node.op == "crop":
        o = node.attrs["offset"]
        return f"{args[0]}[:, :, {o}:{o} + {args[1]}.shape[2], {o}:{o} + {args[1]}.shape[3]]"
    if node.op == "concat":
        return f"torch.cat([{', '.join(args)}], dim=1)"
    if node.op == "add":
        if in_place:
            return args[0] + "".join(f".add_({arg})" for arg in args[1:])
        return " + ".join(args)
    return f"{module}({args[0]})"


#: A layer's fused activation, matching torch_backend.TORCH_ACTIVATIONS.
ACTIVATION_SOURCE = {
    "relu": "F.relu({}, inplace=True)",
    "tanh": "torch.tanh_({})",
    "sigmoid": "torch.sigmoid_({})",
    "lrelu": "F.leaky_relu({}, 0.01, inplace=True)",
    "elu": "F.elu({}, inplace=True)",
}


#: Modules built with inplace=True when their input may be overwritten (see torch_backend).
_IN_PLACE_MODULES = frozenset({"relu", "lrelu", "elu", "dropout"})


def _overwritable(graph, readers, node_id: int) -> bool:
    """The same rule as torch_backend._overwritable (kept textually alike: this module must not
    import torch)."""
    node = graph.nodes[node_id]
    return (node_id != 0 and len(readers[node_id]) == 1 and node.op in _KEEPS_NO_OUTPUT
            and node.attrs.get("act", "none") == "none")


_KEEPS_NO_OUTPUT = frozenset({"conv", "deconv", "fc", "bn", "add"})


def class_name(name: str) -> str:
    """vgg16 -> Vgg16, resnet50_v1 -> Resnet50V1 (a valid Python identifier)."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    text = "".join(p[:1].upper() + p[1:] for p in parts) or "Network"
    return text if text[0].isalpha() else "Net" + text


def _access(path: str) -> str:
    """self.block1.conv1, or getattr(...) for a segment that is a Python keyword (a .net label
    may be `class` or `lambda`)."""
    text = "self"
    for part in path.split("."):
        text = f"getattr({text}, {part!r})" if keyword.iskeyword(part) else f"{text}.{part}"
    return text


def _assign(path: str, expression: str) -> str:
    *parents, last = path.split(".")
    owner = _access(".".join(parents)) if parents else "self"
    if keyword.iskeyword(last):
        return f"setattr({owner}, {last!r}, {expression})"
    return f"{owner}.{last} = {expression}"


_TAKEN = {"x", "self", "torch", "F", "nn"}


def _comment(node: Node) -> str:
    if node.span is None:
        return ""
    line = node.span.source.line_text(node.span.line).strip()
    where = f"{node.span.source.path.rsplit('/', 1)[-1]}:{node.span.line}"
    if len(line) > 70:
        line = line[:67] + "..."
    return f"  # {where}: {line}"


def generate_source(network, version: str = "") -> str:
    """Standalone PyTorch source for `network`."""
    graph, shapes = network.graph, network.shapes
    cls = class_name(network.name)
    lines = [
        f"# Generated by netdsl{' ' + version if version else ''} from {network.path.rsplit('/', 1)[-1]}"
        f" (net {network.name}). Standalone: it needs only torch.",
        f"# Input (N, {', '.join(map(str, network.input_shape))}) -> output (N, "
        f"{', '.join(map(str, network.output_shape))}). {network.params:,} params, {network.macs:,} MACs.",
        "# state_dict() keys are netdsl's canonical weight names: load weights saved by any netdsl backend.",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
        "",
        "",
        f"class {cls}(nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
    ]
    containers: set[str] = set()
    readers = graph.consumers()
    in_place = {node.id: _overwritable(graph, readers, node.inputs[0]) for node in graph.nodes[1:]}
    for node in graph.nodes[1:]:
        builder = MODULE_SOURCE[node.op]
        if builder is None:
            continue
        parts = node.name.split(".")
        for depth in range(1, len(parts)):
            path = ".".join(parts[:depth])
            if path not in containers:
                containers.add(path)
                lines.append(f"        {_assign(path, 'nn.Module()')}")
        expression = builder(node, [shapes[i] for i in node.inputs])
        if in_place[node.id] and node.op in _IN_PLACE_MODULES:
            expression = expression[:-1] + (", " if expression[-2] != "(" else "") + "inplace=True)"
        lines.append(f"        {_assign(node.name, expression)}{_comment(node)}")
        if node.attrs.get("fixed"):
            lines.append(f"        {_access(node.name)}.requires_grad_(False)  # fixed: not trained")
    lines += ["", "    def forward(self, x):"]
    names = {0: "x"}
    taken = set(_TAKEN)
    for node in graph.nodes[1:]:
        args = [names[i] for i in node.inputs]
        expression = _call_source(node, _access(node.name), args, [shapes[i] for i in node.inputs],
                                  in_place[node.id])
        act = node.attrs.get("act", "none")
        if act != "none":
            expression = ACTIVATION_SOURCE[act].format(expression)
        variable = node.name.replace(".", "_")
        if variable in taken or keyword.iskeyword(variable):
            variable = f"{variable}_{node.id}"
        taken.add(variable)
        names[node.id] = variable
        lines.append(f"        {variable} = {expression}  # {format_shape(shapes[node.id])}")
    lines.append(f"        return {names[graph.nodes[-1].id]}")
    lines += ["", "", "if __name__ == \"__main__\":",
              f"    model = {cls}().eval()",
              f"    print(model(torch.zeros(1, {', '.join(map(str, network.input_shape))})).shape)", ""]
    return "\n".join(lines)
