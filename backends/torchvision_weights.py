"""Weights from torchvision, mapped by position onto the matching shipped network, or onto a
network you wrote whose layers follow the torchvision model's order.

torchvision's state_dict and the shipped network list the same tensors in the same order (each
was written to follow torchvision's module order), so the i-th torchvision tensor is the i-th
netdsl weight. Every shape and kind (weight, bias, running statistic) is checked, and the first
mismatch is reported with both names.
BatchNorm's `num_batches_tracked` has no counterpart and is skipped. GoogLeNet's and
Inception-v3's auxiliary classifiers are the nets' `aux{ }` heads (a state_dict without them, from
`aux_logits=False`, is refused with a note: the pretrained files have them). Two rules bridge what differs in form, not in content:
- an nn.Linear weight (out x in) fills a 1x1 convolution's (out x in x 1 x 1), reshaped: ConvNeXt's
  MLP is two nn.Linear on the channels-last tensor, a 1x1 conv on the channels-first one;
- per architecture (TENSOR_ORDER), torchvision's order is rearranged where a module registers a
  parameter before its layers: ConvNeXt's CNBlock lists `layer_scale` first, netdsl's block
  multiplies by it last. Files are read with torch.load(weights_only=True): nothing is unpickled beyond
tensors, and nothing is downloaded.

Note: torchvision's pretrained GoogLeNet and Inception-v3 apply `transform_input` (a fixed
re-normalisation of the input) before their first layer; it is not a weight, so `transform_input_note`
says how to feed the network instead (netdsl.import_torchvision warns, `netdsl compile --torchvision`
prints it).
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
    **{f"shufflenet_v2_{w}": f"shufflenet:shufflenet_v2_{w}" for w in ("x0_5", "x1_0", "x1_5", "x2_0")},
    **{f"regnet_{xy}_{size}": f"regnet:regnet_{xy}_{size}" for xy in ("y", "x")
       for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")},
    "convnext_tiny": "convnext:convnext_tiny", "convnext_small": "convnext:convnext_small",
    "convnext_base": "convnext:convnext_base", "convnext_large": "convnext:convnext_large",
    "inception_v3": "inception:inception_v3",
    "mobilenet_v2": "mobilenet:mobilenet_v2", "mobilenet_v3_large": "mobilenet:mobilenet_v3_large",
    "mobilenet_v3_small": "mobilenet:mobilenet_v3_small",
    **{f"efficientnet_{v}": f"efficientnet:efficientnet_{v}"
       for v in ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "v2_s", "v2_m", "v2_l")},
    "vit_b_16": "vit:vit_b_16", "vit_b_32": "vit:vit_b_32", "vit_l_16": "vit:vit_l_16",
    "deeplabv3_resnet50": "deeplabv3:deeplabv3_resnet50",
}


def layer_scale_after_its_block(tensors: list) -> list:
    """ConvNeXt's CNBlock registers `layer_scale` before `block`, so its state_dict lists each
    block's layer scale first (features.1.0.layer_scale, then features.1.0.block.0.weight, ...);
    netdsl's block applies it after the MLP. Moves each `X.layer_scale` after the last tensor of X."""
    result = list(tensors)
    i = 0
    while i < len(result):
        name = str(result[i][0])
        if name.endswith(".layer_scale"):
            prefix = name[:-len("layer_scale")]
            end = i + 1
            while end < len(result) and str(result[end][0]).startswith(prefix):
                end += 1
            result.insert(end - 1, result.pop(i))
            i = end
        else:
            i += 1
    return result


#: torchvision model -> how its state_dict's order becomes netdsl's weight order (default: as is)
def googlenet_aux_where_they_run(tensors: list) -> list:
    """torchvision's GoogLeNet registers its auxiliary classifiers after inception5b, so its
    state_dict lists them there; they run after inception4a and 4d, where netdsl's aux{ } heads
    are. Moves `aux1.*` before inception4b's first tensor and `aux2.*` before inception4e's."""
    result = list(tensors)
    for head, before in (("aux1.", "inception4b."), ("aux2.", "inception4e.")):
        block = [t for t in result if str(t[0]).startswith(head)]
        rest = [t for t in result if not str(t[0]).startswith(head)]
        at = next((i for i, t in enumerate(rest) if str(t[0]).startswith(before)), None)
        if not block or at is None:
            continue  # a state_dict without the heads: the count check names what is missing
        result = rest[:at] + block + rest[at:]
    return result


def deeplabv3_aux_where_it_runs(tensors: list) -> list:
    """torchvision's DeepLabV3 registers its backbone, then `classifier`, then `aux_classifier`
    (the FCN head on layer3's output); netdsl's aux{ } head sits after layer3, so its weights come
    before layer4's. Moves `aux_classifier.*` before `backbone.layer4.`'s first tensor."""
    head = [t for t in tensors if str(t[0]).startswith("aux_classifier.")]
    rest = [t for t in tensors if not str(t[0]).startswith("aux_classifier.")]
    at = next((i for i, t in enumerate(rest) if str(t[0]).startswith("backbone.layer4.")), None)
    if not head or at is None:
        return list(tensors)  # a state_dict without the head: the aux check names what is missing
    return rest[:at] + head + rest[at:]


TENSOR_ORDER = {**{arch: layer_scale_after_its_block
                   for arch in ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large")},
                "googlenet": googlenet_aux_where_they_run}
TENSOR_ORDER["deeplabv3_resnet50"] = deeplabv3_aux_where_it_runs

#: torchvision models whose pretrained weights expect `transform_input`
_TRANSFORMS_INPUT = frozenset({"googlenet", "inception_v3"})


def transform_input_note(arch: str | None) -> str | None:
    """What to feed a network whose pretrained torchvision weights expect `transform_input`."""
    if arch not in _TRANSFORMS_INPUT:
        return None
    return (f"torchvision's pretrained {arch} re-normalises its input before the first layer "
            f"(transform_input=True), which the netdsl network does not: feed it images scaled as "
            f"(x - 0.5) / 0.5 (pixels in [0, 1] to [-1, 1]), not ImageNet's mean and std")


_SKIPPED_PREFIXES: tuple[str, ...] = ()
#: where torchvision's auxiliary classifiers are in a state_dict
_AUX_PREFIXES = {"googlenet": "aux1.", "inception_v3": "AuxLogits."}
_AUX_PREFIXES["deeplabv3_resnet50"] = "aux_classifier."
#: the torchvision keyword that builds the auxiliary classifiers, where it is not aux_logits
_AUX_KEYWORD = {"deeplabv3_resnet50": "aux_loss"}
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
    model `arch`. Tensors are matched by position, in torchvision's order rearranged by
    TENSOR_ORDER[arch] (ConvNeXt's layer scales); each pair must agree in shape and in kind (the
    last part of torchvision's name: weight, bias, running_mean or running_var), and the first
    pair that does not is reported with both names. An nn.Linear weight (out x in) fills a 1x1
    conv weight (out x in x 1 x 1), reshaped."""
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
    if (network.graph.aux_outputs and arch in _AUX_PREFIXES
            and not any(str(name).startswith(_AUX_PREFIXES[arch]) for name, _ in theirs)):
        raise NetDSLWeightsError(
            f"{source}: no auxiliary classifiers ({_AUX_PREFIXES[arch]}*), but {network.name} has "
            f"{len(network.graph.aux_outputs)}", notes=[
                f"build torchvision's {arch} with {_AUX_KEYWORD.get(arch, 'aux_logits')}=True "
                f"(its pretrained weights have them), "
                f"or import onto a network of yours without aux{{ }}: import_torchvision(sd, network=net)"])
    if arch in TENSOR_ORDER:
        theirs = TENSOR_ORDER[arch](theirs)
    ours = network.weight_specs
    theirs = _class_token_in_place(theirs, network)
    question = f"is this a {arch} state_dict?" if arch else f"do {network.name}'s layers follow the model's?"
    weights = {}
    for position, (spec, (name, tensor)) in enumerate(zip(ours, theirs)):
        shape = tuple(getattr(tensor, "shape", ()))
        kind = str(name).rsplit(".", 1)[-1]
        fits = shape == spec.shape or _linear_onto_1x1_conv(shape, spec.shape)
        if not fits or (kind in _KINDS and kind != spec.suffix.rsplit(".", 1)[-1]):
            raise NetDSLWeightsError(
                f"{source}: tensor {position} ({name}, {format_shape(shape) or 'scalar'}) does not "
                f"fit {spec.name} ({format_shape(spec.shape)}) of {network.name}",
                notes=[question])
        # an nn.Linear weight becomes the 1x1 conv's: the same out*in values, in the same order
        weights[spec.name] = tensor if shape == spec.shape else tensor.reshape(spec.shape)
    if len(theirs) != len(ours):
        more = theirs[len(ours)][0] if len(theirs) > len(ours) else ours[len(theirs)].name
        raise NetDSLWeightsError(
            f"{source}: {len(theirs)} tensors for the {len(ours)} weights of {network.name}",
            notes=[f"first one unmatched: {more}"])
    return network, weights


def _linear_onto_1x1_conv(theirs: tuple, ours: tuple) -> bool:
    """An nn.Linear weight (out x in) where netdsl has a 1x1 conv weight (out x in x 1 x 1)."""
    return len(theirs) == 2 and len(ours) == 4 and ours == (*theirs, 1, 1)
