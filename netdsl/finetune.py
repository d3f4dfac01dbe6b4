"""Fine-tuning (seed 002): replace the head, keep every other weight, freeze what should not train.

    net = netdsl.load("resnet50")
    model = netdsl.finetune(net, pretrained, head=10, freeze="stage3")   # a torch module
    # every weight but the new fc10 comes from `pretrained`; stem..stage3 have requires_grad=False

`pretrained` is {canonical name: array or tensor}: a netdsl weights file, another backend's
`weights`, or `import_torchvision(...)`'s result. It is checked against the original network
before anything is replaced.
"""
from __future__ import annotations

import dataclasses

from .errors import NetDSLNameError
from .ir import Graph, freeze_attrs
from .network import Network
from .ops import OPS, WEIGHT_OPS


def _head_along(graph: Graph, node, readers: list[list[int]]):
    """The last fc or conv that feeds `node` through weightless ops that are no merges (an
    upsample's or a crop's `like=` tensor is read for its size only) and that nothing else reads,
    or None: a node another layer reads too belongs to the rest of the net."""
    while len(readers[node.id]) <= 1:
        if node.op in WEIGHT_OPS:
            return node
        if not node.inputs or OPS[node.op].merge_word:
            return None
        node = graph.nodes[node.inputs[0]]
    return None


def head_layer(network: Network):
    """The network's output layer: the last fc (or conv) that feeds the output through weightless ops."""
    graph = network.graph
    head = _head_along(graph, graph.output, graph.consumers())
    if head is None:
        raise NetDSLNameError(f"{network.name} has no single output layer to replace",
                              notes=["a head is the last fc or conv before the output"])
    return head


def head_layers(network: Network) -> list:
    """The output layer, then each auxiliary output's (aux{ }: GoogLeNet's and Inception-v3's
    classifiers, DeepLabv3's FCN head); an auxiliary output of a tensor of the main net itself has
    none."""
    graph = network.graph
    readers = graph.consumers()
    auxiliary = (_head_along(graph, graph.nodes[aux.inputs[0]], readers) for aux in graph.aux_outputs)
    return [head_layer(network), *(head for head in auxiliary if head is not None)]


def with_head(network: Network, classes: int) -> Network:
    """The same network with its output layer giving `classes` outputs (fc1000 -> fc10), and
    each auxiliary output's too (they are trained on the same classes)."""
    if classes < 1:
        raise ValueError(f"a head needs at least one output, got {classes}")
    heads = {node.id for node in head_layers(network)}
    nodes = tuple(dataclasses.replace(n, attrs=freeze_attrs({**n.attrs, "c": classes})) if n.id in heads
                  else n for n in network.graph.nodes)
    expanded = dataclasses.replace(network._expanded, graph=Graph(network.graph.name, nodes))
    return Network(expanded, network.input_shape, network.path, network.limits, network.strict)


def frozen_names(network: Network, until: str) -> list[str]:
    """Every weight of the nodes up to and including `until` (a node name, a scope such as
    `stage3`, or a label), in program order."""
    graph = network.graph
    matches = [n.id for n in graph.nodes if n.name == until or n.name.startswith(until + ".")]
    if not matches:
        names = sorted({n.name.split(".")[0] for n in graph.nodes[1:]})
        raise NetDSLNameError(f"{network.name} has no layer or scope named {until}",
                              notes=[f"top-level names: {', '.join(names)}"])
    last = max(matches)
    return [spec.name for spec in network.weight_specs
            if spec.trainable and graph.node(spec.node).id <= last]


def finetune(network: Network, weights: dict | None, head: int | None = None,
             freeze: str | None = None, backend: str = "torch", **options):
    """A compiled module for fine-tuning, through any backend's contract (netdsl/backend.py):
    pretrained `weights` everywhere but a new, freshly initialised head of `head` outputs (and
    likewise each auxiliary output's head), with
    the weights up to and including `freeze` frozen. weights=None keeps the seeded initial weights
    (only the head and the freezing change)."""
    from .weights_io import check_weights
    checked = check_weights(network, weights, "the pretrained weights") if weights is not None else {}
    target = with_head(network, head) if head is not None else network
    module = target.compile(backend, **options)
    if checked:
        replaced: set[str] = set()
        if head is not None:
            head_names = {node.name for node in head_layers(network)}
            replaced = {spec.name for spec in network.weight_specs if spec.node in head_names}
        module.load_weights({name: value for name, value in checked.items() if name not in replaced},
                            strict=not replaced)
    if freeze is not None:
        module.freeze(frozen_names(target, freeze))
    return module


def trainable_counts(module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts of a compiled module, from its contract's trainable()."""
    trainable = set(module.trainable())
    specs = [spec for spec in module.network.weight_specs if spec.trainable]
    return (sum(spec.size for spec in specs if spec.name in trainable),
            sum(spec.size for spec in specs if spec.name not in trainable))
