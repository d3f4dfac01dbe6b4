"""The torch lowering: IR -> readable PyTorch source, one nn.Module class per block.

This source *is* the torch backend's module, as a torch.fx GraphModule's code is: `netdsl compile
-o model.py` writes it, and `net.compile("torch")` executes the same text (backends/torch_backend.py),
so the two cannot drift.

The module tree is the program's tree. Every scope of the layout (a definition call, a labelled
group, a merge and each of its branches) becomes a block: a child module with its own class and
forward, named as the scope is named, so `model.stage3(x)` runs stage 3, a forward hook on any
block fires, and `state_dict()` keys are netdsl's canonical weight names. Calls of one definition
that expand to the same layers share a class (`bottleneck(256)` x5 in ResNet-50 is one
`Bottleneck_256`); a definition whose calls differ (other widths, or the implicit activation an
output layer does not get) has one class per variant, named by its arguments.

A block takes the value its chain enters with (`x`), plus any tensor from outside that a layer
inside reads by reference (FCN's `@features.p4`, a crop's `like`), and returns its value followed
by whatever later code reads from inside it, in node order, as torchvision's IntermediateLayerGetter
returns the layers it was asked for.

Forward code is straight-line: no lambdas and no Python branch on a tensor or a shape, so
torch.fx.symbolic_trace, torch.export and torch.compile(fullgraph=True) see the whole network, and
every spatial size comes from the tensors (`x.flatten(1)`, crop extents from `like.shape`).

User text (file and net names, labels, the .net source quoted in comments) never becomes code:
names are checked identifiers (labels that clash with Python or nn.Module are refused by the
checker), and quoted text has every non-printable character escaped, so it stays inside its comment.

This module builds text only: it does not import torch.
"""
from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass, field

from netdsl.ir import Graph, LayoutAux, LayoutChain, LayoutMerge, LayoutOp, LayoutScope, Node
from netdsl.ops import OPS, format_shape

# -- one torch kernel per op: the module it builds and how forward applies it ---------------------


@dataclass(frozen=True)
class TorchKernel:
    """How one op lowers to torch.

    module(node, input shapes) -> the constructor source of its nn.Module, or None when forward
    computes it functionally (the kernel's module None, or returning None for that node);
    call(node, module, args, in_place) -> the forward expression;
    fused -> for activations, the in-place functional form applied to a layer's own output.
    support -> for a layer torch.nn lacks, the source of the small nn.Module class that the
    generated file defines for it (and that `module` constructs), so the file still needs only torch.
    """

    module: object  # Callable[[Node, list], str] | None
    call: object = None  # Callable[[Node, str, list[str], bool], str]; None: module(args[0])
    fused: str | None = None
    in_place_module: bool = False  # the module takes inplace=True when its input may be overwritten
    support: str | None = None  # a class of the generated file that `module` names, written once


def _axes(a, h: str, w: str) -> str:
    """3 where both axes agree, else (1, 7): as torchvision writes its convolutions."""
    return str(a[h]) if a[h] == a[w] else f"({a[h]}, {a[w]})"


def _conv(node: Node, inputs) -> str:
    a = node.attrs
    return (f"nn.Conv2d({inputs[0][0]}, {a['c']}, {_axes(a, 'kh', 'kw')}, "
            f"stride={_axes(a, 'stride_h', 'stride_w')}, padding={_axes(a, 'pad_h', 'pad_w')}, "
            f"dilation={a['dilation']}, groups={a['groups']}, bias={a['bias']})")


def _dwconv(node: Node, inputs) -> str:
    a = node.attrs
    c = inputs[0][0]
    return (f"nn.Conv2d({c}, {c * a['multiplier']}, {_axes(a, 'kh', 'kw')}, "
            f"stride={_axes(a, 'stride_h', 'stride_w')}, padding={_axes(a, 'pad_h', 'pad_w')}, "
            f"dilation={a['dilation']}, groups={c}, bias={a['bias']})")


def _deconv(node: Node, inputs) -> str:
    a = node.attrs
    return (f"nn.ConvTranspose2d({inputs[0][0]}, {a['c']}, {a['k']}, stride={a['stride']}, "
            f"padding={a['pad']}, output_padding={a['output_pad']}, groups={a['groups']}, "
            f"bias={a['bias']}, dilation={a['dilation']})")


def _maxpool(node: Node, inputs) -> str:
    a = node.attrs
    return f"nn.MaxPool2d({a['k']}, {a['stride']}, {a['pad']}, ceil_mode={a['ceil']})"


def _avgpool(node: Node, inputs) -> str:
    a = node.attrs
    return (f"nn.AvgPool2d({a['k']}, {a['stride']}, {a['pad']}, ceil_mode={a['ceil']}, "
            f"count_include_pad={a['count_pad']})")


def _fc(node: Node, inputs) -> str:
    features = inputs[0][1] if len(inputs[0]) == 2 else math.prod(inputs[0])  # a token's, or all
    return f"nn.Linear({features}, {node.attrs['c']}, bias={node.attrs['bias']})"


def _fc_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    return f"{module}({args[0]}.flatten(1))" if len(inputs[0]) == 3 else f"{module}({args[0]})"


def _bn(node: Node, inputs) -> str:
    kind = "BatchNorm2d" if len(inputs[0]) == 3 else "BatchNorm1d"
    return f"nn.{kind}({inputs[0][0]}, eps={node.attrs['eps']!r}, momentum={node.attrs['momentum']!r})"


def _lrn(node: Node, inputs) -> str:
    a = node.attrs
    return f"nn.LocalResponseNorm({a['size']}, {a['alpha']!r}, {a['beta']!r}, {a['k']!r})"


def _crop_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    x, like = args
    if node.attrs["center"]:  # margins rounded down, as netdsl.ops.structure.crop_offsets
        top, left = (f"({x}.shape[{d}] - {like}.shape[{d}]) // 2" for d in (2, 3))
    else:
        top = left = str(node.attrs["offset"])
    return f"{x}[:, :, {top}:{top} + {like}.shape[2], {left}:{left} + {like}.shape[3]]"


def _concat_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    return f"torch.cat([{', '.join(args)}], dim=1)"


def _add_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    if in_place:  # as torchvision's `out += identity`
        return args[0] + "".join(f".add_({arg})" for arg in args[1:])
    return " + ".join(args)


#: ConvNeXt's layer scale; torchvision keeps it as a bare parameter of the block (`layer_scale`,
#: C x 1 x 1), and multiplies it in front: the product is the same.
_LAYER_SCALE = '''class LayerScale(nn.Module):
    """x times a learned scale per channel (ConvNeXt's layer_scale)."""

    def __init__(self, shape, init):
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, init))

    def forward(self, x):
        return x * self.weight'''

#: torchvision.ops.StochasticDepth(p, mode="row") restated, so that netdsl needs no torchvision:
#: the same draws from torch's generator, the same arithmetic.
_STOCHASTIC_DEPTH = '''class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth(p, mode="row"): while training, each sample is zeroed with
    probability p and the others are scaled by 1/(1-p); the identity in eval mode."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p  # above 0: p < 1
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device)
        noise = noise.bernoulli_(survival)
        noise.div_(survival)
        return x * noise'''


#: torchvision's LayerNorm2d (ConvNeXt): nn.LayerNorm over the channels at each position, by
#: moving them last and back, so its state_dict holds `weight` and `bias` as nn.LayerNorm's.
_LAYER_NORM_2D = '''class LayerNorm2d(nn.LayerNorm):
    """nn.LayerNorm over the channels of an N x C x H x W tensor, at each position (ConvNeXt's)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)'''


def _layernorm(node: Node, inputs) -> str:
    shape = inputs[0]
    if len(shape) == 3:
        return f"LayerNorm2d({shape[0]}, eps={node.attrs['eps']!r})"
    # a flat tensor's features, or each token's (the last axis), as nn.LayerNorm normalises
    return f"nn.LayerNorm({shape[-1]}, eps={node.attrs['eps']!r})"


def _layerscale(node: Node, inputs) -> str:
    (_, shape, _), = OPS["layerscale"].weights(node, inputs)  # C x 1 x 1, C, or D for tokens
    return f"LayerScale({shape!r}, {node.attrs['init']!r})"
def _mul_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    return " * ".join(args)  # a Cx1x1 gate broadcasts, as torchvision's SqueezeExcitation's scale * input


def _channels_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    return f"{args[0]}[:, {node.attrs['start']}:{node.attrs['end']}]"


def _shuffle_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    # torchvision's channel_shuffle: view as (N, groups, C/groups, ...), transpose 1 and 2, flatten
    return f"{args[0]}.unflatten(1, ({node.attrs['groups']}, -1)).transpose(1, 2).flatten(1, 2)"


def _upsample_module(node: Node, inputs) -> str | None:
    a = node.attrs
    if len(inputs) == 2:
        return None  # to the `like` tensor's size: F.interpolate in forward
    corners = f", align_corners={a['align_corners']}" if a["mode"] == "bilinear" else ""
    return f"nn.Upsample(scale_factor={a['factor']}, mode={a['mode']!r}{corners})"


def _upsample_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    a = node.attrs
    if len(args) == 1:
        return f"{module}({args[0]})"
    corners = f", align_corners={a['align_corners']}" if a["mode"] == "bilinear" else ""
    return f"F.interpolate({args[0]}, size={args[1]}.shape[2:], mode={a['mode']!r}{corners})"


#: ViT's class token and position embedding, as torchvision's VisionTransformer keeps them (bare
#: parameters: class_token 1x1xD, encoder.pos_embedding 1xTxD), each in a module of its own.
_CLASS_TOKEN = '''class ClassToken(nn.Module):
    """A learned token put before the others: (N, T, D) -> (N, T+1, D) (ViT's class token)."""

    def __init__(self, features):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, features))

    def forward(self, x):
        return torch.cat([self.weight.expand(x.shape[0], -1, -1), x], dim=1)'''

_POS_EMBEDDING = '''class PositionEmbedding(nn.Module):
    """A learned embedding added to each token position: (N, T, D) + (1, T, D)."""

    def __init__(self, tokens, features):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, tokens, features).normal_(std=0.02))

    def forward(self, x):
        return x + self.weight'''


def _tokens_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    return f"{args[0]}.flatten(2).transpose(1, 2)"  # (N, C, H, W) -> (N, H*W, C)


def _attention_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    x = args[0]
    return f"{module}({x}, {x}, {x}, need_weights=False)[0]"


def _token_call(node: Node, module: str, args: list[str], in_place: bool, inputs) -> str:
    return f"{args[0]}[:, {node.attrs['index']}]"


def _constant(text: str):
    def module(node: Node, inputs) -> str:
        return text
    return module


KERNELS: dict[str, TorchKernel] = {
    "input": TorchKernel(None, lambda node, module, args, in_place, inputs: args[0]),
    "conv": TorchKernel(_conv),
    "deconv": TorchKernel(_deconv),
    "maxpool": TorchKernel(_maxpool),
    "avgpool": TorchKernel(_avgpool),
    "gap": TorchKernel(_constant("nn.AdaptiveAvgPool2d(1)")),
    "fc": TorchKernel(_fc, _fc_call),
    "bn": TorchKernel(_bn),
    "lrn": TorchKernel(_lrn),
    "dropout": TorchKernel(lambda node, inputs: f"nn.Dropout({node.attrs['p']!r})", in_place_module=True),
    "relu": TorchKernel(_constant("nn.ReLU()"), fused="F.relu({}, inplace=True)", in_place_module=True),
    "tanh": TorchKernel(_constant("nn.Tanh()"), fused="torch.tanh_({})"),
    "sigmoid": TorchKernel(_constant("nn.Sigmoid()"), fused="torch.sigmoid_({})"),
    "lrelu": TorchKernel(lambda node, inputs: f"nn.LeakyReLU({node.attrs['slope']!r})",
                         fused="F.leaky_relu({}, 0.01, inplace=True)", in_place_module=True),
    "elu": TorchKernel(lambda node, inputs: f"nn.ELU({node.attrs['alpha']!r})",
                       fused="F.elu({}, inplace=True)", in_place_module=True),
    "hardswish": TorchKernel(_constant("nn.Hardswish()"), fused="F.hardswish({}, inplace=True)",
                             in_place_module=True),
    "relu6": TorchKernel(_constant("nn.ReLU6()"), fused="F.relu6({}, inplace=True)", in_place_module=True),
    "hardsigmoid": TorchKernel(_constant("nn.Hardsigmoid()"), fused="F.hardsigmoid({}, inplace=True)",
                               in_place_module=True),
    "silu": TorchKernel(_constant("nn.SiLU()"), fused="F.silu({}, inplace=True)", in_place_module=True),
    "gelu": TorchKernel(_constant("nn.GELU()"), fused="F.gelu({})"),  # torch has no in-place GELU
    "gelu_tanh": TorchKernel(_constant("nn.GELU(approximate='tanh')"), fused="F.gelu({}, approximate='tanh')"),
    "layerscale": TorchKernel(_layerscale, support=_LAYER_SCALE),
    "stochastic_depth": TorchKernel(lambda node, inputs: f"StochasticDepth({node.attrs['p']!r})",
                                    support=_STOCHASTIC_DEPTH),
    "softmax": TorchKernel(_constant("nn.Softmax(dim=1)")),
    "flatten": TorchKernel(_constant("nn.Flatten()")),
    "crop": TorchKernel(None, _crop_call),
    "concat": TorchKernel(None, _concat_call),
    "add": TorchKernel(None, _add_call),
    "dwconv": TorchKernel(_dwconv),
    "adaptive_avgpool": TorchKernel(lambda node, inputs: f"nn.AdaptiveAvgPool2d({node.attrs['size']})"),
    "adaptive_maxpool": TorchKernel(lambda node, inputs: f"nn.AdaptiveMaxPool2d({node.attrs['size']})"),
    "gmp": TorchKernel(_constant("nn.AdaptiveMaxPool2d(1)")),
    "mul": TorchKernel(None, _mul_call),
    "channels": TorchKernel(None, _channels_call),
    "shuffle": TorchKernel(None, _shuffle_call),
    "upsample": TorchKernel(_upsample_module, _upsample_call),
    "aux": TorchKernel(None, lambda node, module, args, in_place, inputs: args[0]),
    "tokens": TorchKernel(None, _tokens_call),
    "class_token": TorchKernel(lambda node, inputs: f"ClassToken({inputs[0][1]})", support=_CLASS_TOKEN),
    "pos_embedding": TorchKernel(lambda node, inputs: f"PositionEmbedding({inputs[0][0]}, {inputs[0][1]})",
                                 support=_POS_EMBEDDING),
    "attention": TorchKernel(lambda node, inputs: f"nn.MultiheadAttention({inputs[0][1]}, "
                             f"{node.attrs['heads']}, batch_first=True)", _attention_call),
    "token": TorchKernel(None, _token_call),
    "layernorm": TorchKernel(_layernorm, support=_LAYER_NORM_2D),
}

#: Ops whose own output autograd does not need for backward: a value they make may be overwritten
#: in place by its only reader, as torchvision's ReLU(inplace=True) and `out += identity` do.
_KEEPS_NO_OUTPUT = frozenset({"conv", "deconv", "fc", "bn", "add", "dwconv", "layerscale"})
#: Ops that in eval mode (or at p = 0) return their input itself: their value may be overwritten
#: where their input's may (torchvision's MBConv adds the block's input onto its stochastic
#: depth's output in place).
_MAY_RETURN_INPUT = frozenset({"stochastic_depth", "dropout"})


def _overwritable(graph: Graph, readers: list[list[int]], node_id: int) -> bool:
    node = graph.nodes[node_id]
    if node_id == 0 or len(readers[node_id]) != 1 or node.attrs.get("act", "none") != "none":
        return False
    if node.op in _MAY_RETURN_INPUT:
        return _overwritable(graph, readers, node.inputs[0])
    return node.op in _KEEPS_NO_OUTPUT


# -- text that comes from the user -----------------------------------------------------------------

def quoted(text: str, limit: int = 80) -> str:
    """User text made safe for a comment: non-printable characters (line breaks, NUL, terminal
    escapes) escaped, so it can never end the comment; clipped to `limit` characters."""
    safe = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return safe if len(safe) <= limit else safe[:limit - 3] + "..."


def class_name(name: str) -> str:
    """vgg16 -> Vgg16, resnet50_v1 -> Resnet50V1, bottleneck -> Bottleneck (a valid identifier)."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    text = "".join(p[:1].upper() + p[1:] for p in parts) or "Network"
    return text if text[0].isalpha() else "Net" + text


_RESERVED_CLASS_NAMES = frozenset({"F", "nn", "torch", "Tensor", "LayerScale", "StochasticDepth",
                                   "ClassToken", "PositionEmbedding", "LayerNorm2d"})
_RESERVED_VARIABLES = frozenset({"self", "torch", "nn", "F", "input"})


def _variable(name: str, taken: set[str]) -> str:
    text = name.replace(".", "_")
    if keyword.iskeyword(text) or text in _RESERVED_VARIABLES or text in taken:
        base, n = text + "_", 2
        text = base
        while text in taken:
            text, n = f"{base}{n}", n + 1
    taken.add(text)
    return text


# -- blocks ------------------------------------------------------------------------------------------

@dataclass
class _Block:
    """A scope of the layout, lowered to one nn.Module: its children and ops in node order."""

    local: str  # the attribute name in its parent ("" for the root)
    path: str  # the full scope path ("" for the root)
    kind: str  # "net", "call", "group", "merge", "branch" or "aux"
    title: str  # bottleneck(256), p3, add, ...
    entry: int  # the node whose value the block starts from
    result: int  # the node whose value the block gives
    items: list = field(default_factory=list)  # node ids and child _Blocks, in order
    nodes: set = field(default_factory=set)  # every node id inside, children's included
    inputs: list = field(default_factory=list)  # node ids read from outside, entry first
    outputs: list = field(default_factory=list)  # node ids returned, result first
    class_ref: int = -1  # index into the class table


def _blocks(graph: Graph, layout: LayoutChain) -> _Block:
    root = _Block("", "", "net", graph.name, 0, layout.output)
    _fill(graph, root, layout)
    return root


def _fill(graph: Graph, block: _Block, chain: LayoutChain) -> None:
    for item in chain.items:
        if isinstance(item, LayoutOp):
            block.items.append(item.node)
            block.nodes.add(item.node)
        elif isinstance(item, LayoutScope):
            path = f"{block.path}.{item.name}" if block.path else item.name
            child = _Block(item.name, path, "call" if item.call else "group", item.call or item.name,
                           item.body.input, item.body.output)
            _fill(graph, child, item.body)
            _add_child(block, child)
        elif isinstance(item, LayoutMerge):
            node = graph[item.node]
            local = node.name.rsplit(".", 1)[-1]
            merge = _Block(local, node.name, "merge", OPS[node.op].merge_word, chain_entry(item),
                           item.node)
            for i, branch in enumerate(item.branches, 1):
                child = _Block(f"b{i}", f"{node.name}.b{i}", "branch", f"branch {i}", branch.input,
                               branch.output)
                _fill(graph, child, branch)
                if child.items:
                    _add_child(merge, child)
            merge.items.append(item.node)
            merge.nodes.add(item.node)
            _add_child(block, merge)
        elif isinstance(item, LayoutAux):  # a head whose result the net returns in training
            node = graph[item.node]
            head = _Block(node.name.rsplit(".", 1)[-1], node.name, "aux", node.name, item.input, item.node)
            _fill(graph, head, item.head)
            head.items.append(item.node)
            head.nodes.add(item.node)
            _add_child(block, head)


def chain_entry(merge: LayoutMerge) -> int:
    """The value a merge's branches start from (a branch may start from a label instead)."""
    return merge.input


def _add_child(parent: _Block, child: _Block) -> None:
    parent.items.append(child)
    parent.nodes |= child.nodes


def _wire(graph: Graph, block: _Block, readers: list[list[int]]) -> None:
    """Each block's inputs (entry first, then what it reads from outside) and outputs (its result,
    then what later code reads from inside it)."""
    for item in block.items:
        if isinstance(item, _Block):
            _wire(graph, item, readers)
    external = sorted({source for i in block.nodes for source in graph[i].inputs
                       if source not in block.nodes})
    if block.result not in block.nodes and block.result not in external:
        external.append(block.result)  # a block that passes its input through (`def f = id`)
    block.inputs = [block.entry] + [i for i in external if i != block.entry]
    inside_read_outside = sorted(i for i in block.nodes if i != block.result and (
        any(r not in block.nodes for r in readers[i]) or i == len(graph.nodes) - 1))
    block.outputs = [block.result] + inside_read_outside


# -- classes -------------------------------------------------------------------------------------------

def _top_level_arguments(text: str) -> list[str]:
    """"3, f(1, 2), 4" -> ["3", "f(1, 2)", "4"]: split at the commas outside brackets."""
    arguments, depth, start = [], 0, 0
    for position, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            arguments.append(text[start:position].strip())
            start = position + 1
    if text.strip():
        arguments.append(text[start:].strip())
    return arguments


def _short_number(text: str) -> str:
    """A decimal to four significant digits for a class name (0.037500000000000006 -> 0.0375);
    anything else as it is."""
    if "." not in text and "e" not in text:
        return text
    try:
        return f"{float(text):.4g}"
    except ValueError:
        return text


@dataclass
class _Class:
    base: str  # Bottleneck
    variant: tuple[str, ...]  # the call's arguments, for naming variants: ("128", "4", "2")
    body: list  # lines; a child class appears as the placeholder \x00N\x00
    name: str = ""


class _Lowering:
    def __init__(self, network):
        self.network = network
        self.graph = network.graph
        self.shapes = network.shapes
        self.readers = self.graph.consumers()
        self.classes: list[_Class] = []
        self.by_text: dict[tuple, int] = {}

    def lower(self, block: _Block, owner: str) -> int:
        """Builds `block`'s class (children first); returns its index in the class table."""
        base, variant = self._naming(block, owner)
        for item in block.items:
            if isinstance(item, _Block):
                item.class_ref = self.lower(item, base)
        header = self._header(block)
        body = header + self._init(block, header) + [""] + self._forward(block)
        key = (base, tuple(body))
        if key not in self.by_text:
            self.by_text[key] = len(self.classes)
            self.classes.append(_Class(base, variant, body))
        return self.by_text[key]

    def _naming(self, block: _Block, owner: str) -> tuple[str, tuple[str, ...]]:
        if block.kind == "call":
            name, _, args = block.title.partition("(")
            return class_name(name), tuple(re.sub(r"[^0-9A-Za-z]+", "_", _short_number(arg)).strip("_")
                                           for arg in _top_level_arguments(args[:-1]))
        if block.kind == "group":
            return class_name(block.local), ()
        if block.kind == "merge":
            return owner + class_name(block.title), ()
        if block.kind == "branch":
            return owner + "Branch" + block.local[1:], ()
        if block.kind == "aux":
            return "AuxiliaryHead", ()
        return class_name(self.network.name), ()

    def _comment(self, node: Node) -> str:
        """`file:line: the .net source line` of a node, quoted safely."""
        if node.span is None:
            return ""
        where = f"{node.span.source.path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{node.span.line}"
        line = node.span.source.line_text(node.span.line).strip()
        return f"{quoted(where, 40)}: {quoted(line, 70)}"

    def _header(self, block: _Block) -> list[str]:
        """The class's first lines: what it is, and the .net line its layers come from."""
        what = {"net": f"net {quoted(self.network.name, 60)}", "call": quoted(block.title, 70),
                "group": f"group {block.local}", "merge": f"{block.title}{{}} merge",
                "branch": block.title, "aux": f"{block.title}: an auxiliary output (returned in training)"}[block.kind]
        lines = [f"    # {what}"]
        first = next((item for item in block.items if not isinstance(item, _Block)), None)
        # every block names its .net line once; a layer repeats it only where its own line differs
        if first is not None and block.kind != "net" and self.graph[first].span is not None:
            lines.append(f"    # {self._comment(self.graph[first])}")
        return lines

    def _init(self, block: _Block, header: list[str]) -> list[str]:
        lines = ["    def __init__(self):", "        super().__init__()"]
        for item in block.items:
            if isinstance(item, _Block):
                lines.append(f"        self.{item.local} = \x00{item.class_ref}\x00()")
                continue
            node = self.graph[item]
            kernel = KERNELS[node.op]
            if kernel.module is None:
                continue
            expression = kernel.module(node, [self.shapes[i] for i in node.inputs])
            if expression is None:  # this use of the op is computed in forward (upsample to `like`)
                continue
            if kernel.in_place_module and _overwritable(self.graph, self.readers, node.inputs[0]):
                expression = expression[:-1] + (", " if expression[-2] != "(" else "") + "inplace=True)"
            local = node.name.rsplit(".", 1)[-1]
            comment = self._comment(node)
            shown = f"  # {comment}" if comment and f"    # {comment}" not in header else ""
            lines.append(f"        self.{local} = {expression}{shown}")
            if node.attrs.get("fixed"):
                lines.append(f"        self.{local}.requires_grad_(False)  # fixed: not trained")
        if len(lines) == 2:
            lines[1] += "  # no layers of its own"
        return lines

    def _forward(self, block: _Block) -> list[str]:
        taken: set[str] = set()
        names: dict[int, str] = {}
        params = []
        for position, node_id in enumerate(block.inputs):
            name = "x" if position == 0 else _variable(self.graph[node_id].name, taken)
            taken.add(name)
            names[node_id] = name
            params.append(name)
        lines = [f"    def forward(self, {', '.join(params)}):"]
        # where each value is read last (a block's outputs: at its return), so that a chain can be
        # written as hand-written torch code is, x = self.layer(x), and each tensor is let go as
        # soon as the next layer has read it (a tensor held to the end of forward kept memory
        # from being reused: 4% of EfficientNet-B0's forward)
        last_read: dict[int, int] = {}
        for position, item in enumerate(block.items):
            for source in (item.inputs if isinstance(item, _Block) else self.graph[item].inputs):
                last_read[source] = position
        for source in block.outputs:
            last_read[source] = len(block.items)

        def chained(position: int, inputs) -> bool:
            """Whether this item's output may take the name x: it reads x, and x is read no later."""
            return bool(inputs) and names[inputs[0]] == "x" and last_read[inputs[0]] == position

        for position, item in enumerate(block.items):
            if isinstance(item, _Block):
                args = ", ".join(names[i] for i in item.inputs)
                if len(item.outputs) == 1 and item.kind != "aux" and chained(position, item.inputs):
                    targets = ["x"]
                else:
                    targets = [_variable(item.local if i == item.result else
                                         self.graph[i].name[len(block.path) + 1 if block.path else 0:],
                                         taken) for i in item.outputs]
                for node_id, target in zip(item.outputs, targets):
                    names[node_id] = target
                shown = format_shape(self.shapes[item.result])
                # an auxiliary head runs only in training, as torchvision's do
                when = " if self.training else None" if item.kind == "aux" else ""
                lines.append(f"        {', '.join(targets)} = self.{item.local}({args}){when}  # {shown}")
                continue
            node = self.graph[item]
            if node.op == "aux":  # the head's result itself: nothing to compute
                names[node.id] = names[node.inputs[0]]
                continue
            kernel = KERNELS[node.op]
            local = node.name.rsplit(".", 1)[-1]
            args = [names[i] for i in node.inputs]
            in_place = _overwritable(self.graph, self.readers, node.inputs[0])
            if kernel.call is None:
                expression = f"self.{local}({args[0]})"
            else:
                expression = kernel.call(node, f"self.{local}", args, in_place,
                                         [self.shapes[i] for i in node.inputs])
            act = node.attrs.get("act", "none")
            if act != "none":
                expression = KERNELS[act].fused.format(expression)
            variable = "x" if chained(position, node.inputs) else _variable(local, taken)
            names[node.id] = variable
            lines.append(f"        {variable} = {expression}  # {format_shape(self.shapes[node.id])}")
        returned = [names[i] for i in block.outputs]
        aux = [names[node.id] for node in self.graph.aux_outputs] if block.kind == "net" else []
        if aux:  # as torchvision's GoogLeNet and Inception-v3: the heads only while training
            lines.append("        if self.training:")
            lines.append(f"            return {', '.join(returned + aux)}")
        lines.append(f"        return {', '.join(returned)}")
        return lines

    def name_classes(self, root_index: int) -> None:
        """Class names: the definition's name, or with the call's arguments where one definition
        has several variants (Bottleneck_64, Bottleneck_128); taken names get a number."""
        groups: dict[str, list[_Class]] = {}
        for cls in self.classes:
            groups.setdefault(cls.base, []).append(cls)
        used: set[str] = set(_RESERVED_CLASS_NAMES)
        order = [self.classes[root_index]] + [c for c in self.classes if c is not self.classes[root_index]]
        for cls in order:
            variants = [c.variant for c in groups[cls.base]]
            # only the arguments that tell the variants apart: Cbs_3_32_2, not Cbs_3_32_2_1e_05_0_1
            # when every call passes the same eps and momentum
            telling = [i for i in range(len(cls.variant))
                       if len({len(v) for v in variants}) > 1 or len({v[i] for v in variants}) > 1]
            suffix = "_".join(cls.variant[i] for i in telling)
            name = f"{cls.base}_{suffix}" if len(variants) > 1 and suffix else cls.base
            candidate, n = name, 2
            while candidate in used:
                candidate, n = f"{name}_{n}", n + 1
            cls.name = candidate
            used.add(candidate)


def lower(network) -> tuple[list[tuple[str, list[str]]], str]:
    """[(class name, body lines)] in definition order (children before parents), and the root's name."""
    graph = network.graph
    root = _blocks(graph, network.layout)
    _wire(graph, root, graph.consumers())
    lowering = _Lowering(network)
    root_index = lowering.lower(root, class_name(network.name))
    lowering.name_classes(root_index)
    resolved = []
    for cls in lowering.classes:
        lines = [re.sub("\x00(\\d+)\x00", lambda m: lowering.classes[int(m.group(1))].name, line)
                 for line in cls.body]
        resolved.append((cls.name, lines))
    return resolved, lowering.classes[root_index].name


def generate_source(network, version: str = "") -> str:
    """Standalone PyTorch source for `network`: it imports only torch."""
    classes, root = lower(network)
    shape = ", ".join(map(str, network.input_shape))
    lines = [
        f"# Generated by netdsl{' ' + quoted(version, 20) if version else ''} from "
        f"{quoted(network.path.replace(chr(92), '/').rsplit('/', 1)[-1], 60)} "
        f"(net {quoted(network.name, 60)}). Standalone: it needs only torch.",
    ]
    if network.symbolic:
        # Size names are identifiers (netdsl.shapes), and formulas are made of them, numbers and
        # + - * // ( ): nothing here can end the docstring.
        lines += ['"""Input (N, ' + shape + ") -> output (N, " + ", ".join(map(str, network.output_shape)) + ").",
                  "",
                  "Valid input sizes (checked by netdsl, exactly):",
                  *(f"    {sizes.describe()}" for sizes in network.valid_sizes.values()),
                  "Sizes where every window fits exactly, nothing rounded away (netdsl --strict):",
                  *(f"    {sizes.describe()}" for sizes in network.strict_sizes.values()),
                  f"{network.params:,} params.",
                  '"""']
    else:
        lines.append(f"# Input (N, {shape}) -> output (N, {', '.join(map(str, network.output_shape))}). "
                     f"{network.params:,} params, {network.macs:,} MACs.")
    shape = ", ".join(map(str, network.example_shape()))
    lines += [
        "# state_dict() keys are netdsl's canonical weight names: load weights saved by any netdsl backend.",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
    ]
    used = {node.op for node in network.graph.nodes}
    for op, kernel in KERNELS.items():
        if kernel.support and op in used:
            lines += ["", "", *kernel.support.splitlines()]
    for name, body in classes:
        lines += ["", "", f"class {name}(nn.Module):", *body]
    lines += ["", "", "if __name__ == \"__main__\":",
              f"    model = {root}().eval()",
              f"    print(model(torch.zeros(1, {shape})).shape)", ""]
    return "\n".join(lines)
