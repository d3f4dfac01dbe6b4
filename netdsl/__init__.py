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
from .network import Network, load, parse, parse_all

__version__ = "0.1.0"

__all__ = ["parse", "parse_all", "load", "Network", "Limits", "NetDSLError", "NetDSLSyntaxError",
           "NetDSLNameError", "NetDSLShapeError", "NetDSLLimitError", "NetDSLWeightsError", "Span"]
