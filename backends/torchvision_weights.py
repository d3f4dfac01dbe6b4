"""Weights from torchvision, mapped by position onto the matching shipped network, or onto a
network you wrote whose layers follow the torchvision model's order.

torchvision's state_dict and the shipped network list the same tensors in the same order (each
was written to follow torchvision's module order), so the i-th torchvision tensor is the i-th
netdsl weight. Every shape and kind (weight, bias, running statistic) is checked, and the first
mismatch is reported with both names.
BatchNorm's `num_batches_tracked` and GoogLeNet's auxiliary classifiers have no counterpart and
are skipped. Files are read with torch.load(weights_only=True): nothing is unpickled beyond
tensors, and nothing is downloaded.

Note: torchvision's pretrained GoogLeNet applies `transform_input` (a fixed re-normalisation of
the input) before conv1; it is not a weight, so feed the network inputs normalised accordingly.
"""
from __future__ import annotations

from pathlib import Path

from netdsl.errors import NetDSLWeightsError
from netdsl.shapes import format_shape

#: torchvision model name -> shipped network
ARCHITECTURES = {
    "alexnet": "alexnet:alexnet_tv",
    "vgg11": "vgg:A", "vgg13": "vgg:B", "vgg16": "vgg:D", "vgg19": "vgg:E",
    "vgg11_bn": "vgg:A_BN", "vgg13_bn": "vgg:B_BN", "vgg16_bn": "vgg:D_BN", "vgg19_bn": "vgg:E_BN",
    "resnet18": "resnet:resnet18", "resnet34": "resnet:resnet34", "resnet50": "resnet:resnet50",
    "resnet101": "resnet:resnet101", "resnet152": "resnet:resnet152",
    "resnext50_32x4d": "resnext50",
    "googlenet": "googlenet:googlenet_tv",
    "resnext101_32x8d": "resnet:resnext101_32x8d", "resnext101_64x4d": "resnet:resnext101_64x4d",
    "wide_resnet50_2": "resnet:wide_resnet50_2", "wide_resnet101_2": "resnet:wide_resnet101_2",
    "densenet121": "densenet:densenet121", "densenet161": "densenet:densenet161",
    "densenet169": "densenet:densenet169", "densenet201": "densenet:densenet201",
    "squeezenet1_0": "squeezenet:squeezenet1_0", "squeezenet1_1": "squeezenet:squeezenet1_1",
    "mnasnet0_5": "mnasnet:mnasnet0_5", "mnasnet0_75": "mnasnet:mnasnet0_75",
    "mnasnet1_0": "mnasnet:mnasnet1_0", "mnasnet1_3": "mnasnet:mnasnet1_3",
    "vit_b_16": "vit:vit_b_16", "vit_b_32": "vit:vit_b_32", "vit_l_16": "vit:vit_l_16",
}

_SKIPPED_PREFIXES = ("aux1.", "aux2.")
_SKIPPED_SUFFIXES = (".num_batches_tracked",)
#: the kinds of tensor a torchvision name ends with; netdsl's weight of the same place has the same
_KINDS = ("weight", "bias", "running_mean", "running_var")


def _load_file(path: Path) -> dict:
    import torch
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NetDSLWeightsError(f"{path}: no such file") from None
    except Exception as error:  # torch raises many kinds for a bad or unsafe file
        raise NetDSLWeightsError(f"{path}: not a torch weights file ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0][:200]})",
                                 notes=["only tensors are read (weights_only=True)"]) from None
    for key in ("state_dict", "model"):  # checkpoints often wrap the state_dict
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise NetDSLWeightsError(f"{path}: holds a {type(data).__name__}, not a state_dict")
    return data


#: torchvision's VisionTransformer lists its own parameter, `class_token`, before its modules
#: (conv_proj, the encoder); the network puts the class token where it joins, after the patch
#: embedding, so the tensor moves there.
_CLASS_TOKEN = "class_token"


def _class_token_in_place(theirs: list, network) -> list:
    """theirs, with a leading `class_token` moved to the position of the network's first
    class_token weight (if it has one); every other tensor keeps its order."""
    if not theirs or theirs[0][0] != _CLASS_TOKEN:
        return theirs
    place = next((i for i, spec in enumerate(network.weight_specs)
                  if network.graph.node(spec.node).op == "class_token"), None)
    if place is None:
        return theirs
    return theirs[1:place + 1] + [theirs[0]] + theirs[place + 1:]


def matching_architecture(network) -> str | None:
    """The torchvision model whose tensors line up with `network`'s weights (the same shapes in
    the same order), or None: resnet50.net and resnet:resnet50 are both torchvision's resnet50."""
    import netdsl
    shapes = [spec.shape for spec in network.weight_specs]
    for arch, target in ARCHITECTURES.items():
        if [spec.shape for spec in netdsl.load(target).weight_specs] == shapes:
            return arch
    return None


def import_torchvision(state_dict_or_path, arch: str | None = None, network=None):
    """(network, {canonical name: tensor}) for a torchvision state_dict.

    Onto `network` when given (a network you wrote whose tensors line up with torchvision's:
    `arch` then only names the model in messages), else onto the shipped network of torchvision's
    model `arch`. Tensors are matched by position; each pair must agree in shape and in kind (the
    last part of torchvision's name: weight, bias, running_mean or running_var), and the first
    pair that does not is reported with both names."""
    import netdsl
    if network is None:
        if arch not in ARCHITECTURES:
            raise NetDSLWeightsError(f"no shipped network matches torchvision's {arch}",
                                     notes=[f"supported: {', '.join(ARCHITECTURES)}",
                                            "or import onto a network you wrote: "
                                            "import_torchvision(state_dict, network=net)"])
        network = netdsl.load(ARCHITECTURES[arch])
    source = "the state_dict"
    if isinstance(state_dict_or_path, (str, Path)):
        source = str(state_dict_or_path)
        state_dict = _load_file(Path(state_dict_or_path))
    else:
        state_dict = state_dict_or_path
    theirs = [(name, tensor) for name, tensor in state_dict.items()
              if not name.startswith(_SKIPPED_PREFIXES) and not name.endswith(_SKIPPED_SUFFIXES)]
    ours = network.weight_specs
    theirs = _class_token_in_place(theirs, network)
    question = f"is this a {arch} state_dict?" if arch else f"do {network.name}'s layers follow the model's?"
    for position, (spec, (name, tensor)) in enumerate(zip(ours, theirs)):
        shape = tuple(getattr(tensor, "shape", ()))
        kind = str(name).rsplit(".", 1)[-1]
        if shape != spec.shape or (kind in _KINDS and kind != spec.suffix.rsplit(".", 1)[-1]):
            raise NetDSLWeightsError(
                f"{source}: tensor {position} ({name}, {format_shape(shape) or 'scalar'}) does not "
                f"fit {spec.name} ({format_shape(spec.shape)}) of {network.name}",
                notes=[question])
    if len(theirs) != len(ours):
        more = theirs[len(ours)][0] if len(theirs) > len(ours) else ours[len(theirs)].name
        raise NetDSLWeightsError(
            f"{source}: {len(theirs)} tensors for the {len(ours)} weights of {network.name}",
            notes=[f"first one unmatched: {more}"])
    return network, {spec.name: tensor for spec, (_, tensor) in zip(ours, theirs)}
