"""netdsl: write neural networks the way papers and slides do; type-check, measure, draw and compile them.

>>> import netdsl
>>> net = netdsl.load("vgg16")                  # the shipped networks/vgg16.net
>>> net.params, net.macs, net.output_shape
(138357544, 15470264320, (1000,))
>>> print(net.summary())

Importing netdsl imports no backend: torch is loaded only when a torch module is compiled.
"""
from .errors import (NetDSLError, NetDSLLimitError, NetDSLNameError, NetDSLShapeError,
                     NetDSLSyntaxError, NetDSLWeightsError, Span)
from .limits import Limits
from .finetune import finetune, with_head
from .network import Network, load, parse, parse_all
from .source import ModuleCheck, ParsedModule, parse_module

__version__ = "0.3.0"

__all__ = ["parse", "parse_all", "load", "Network", "parse_module", "ParsedModule", "ModuleCheck", "finetune", "with_head", "import_torchvision", "Limits", "NetDSLError", "NetDSLSyntaxError",
           "NetDSLNameError", "NetDSLShapeError", "NetDSLLimitError", "NetDSLWeightsError", "Span"]


def import_torchvision(state_dict_or_path, arch: str | None = None, network: "Network | None" = None):
    """Weights of a torchvision model (a state_dict in memory, or a file you have) renamed to the
    canonical names of the shipped network of model `arch`, or of `network` (one you wrote whose
    tensors line up with the model's), by position, every shape checked. Returns
    (network, weights). Nothing is downloaded. See backends/torchvision_weights.py."""
    import warnings

    from .backends.torchvision_weights import import_torchvision as run
    from .backends.torchvision_weights import transform_input_note
    result = run(state_dict_or_path, arch, network)
    note = transform_input_note(arch)
    if note:
        warnings.warn(note, UserWarning, stacklevel=2)
    return result
