"""The `%%netdsl` cell magic: check a cell of .net text and show each network, or the error.

    %load_ext netdsl.jupyter

    %%netdsl --input 3x32x32
    [(conv3-64)*2 - pool]*3 - fc10

shows the summary table and the drawing of each net of the cell (`--net NAME` picks one), or the
compiler's message for a mistake, never a traceback. `--as NAME` also stores the Network (the list
of them, for a cell of several nets) in the notebook's variable NAME. Everything the user wrote is
HTML-escaped before it is shown.
"""
from __future__ import annotations

import argparse
import html
import shlex

from .errors import NetDSLError
from .network import Network, parse, parse_all


class _OptionError(Exception):
    pass


class _Options(argparse.ArgumentParser):
    def error(self, message: str):
        raise _OptionError(f"%%netdsl: {message}\nusage: {self.format_usage().removeprefix('usage: ')}")


def _shape(text: str):
    from .shapes import parse_shape
    try:
        return parse_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _options() -> _Options:
    parser = _Options(prog="%%netdsl", add_help=False)
    parser.add_argument("--input", type=_shape, metavar="SHAPE", help="input shape, e.g. 3x224x224")
    parser.add_argument("--net", metavar="NAME", help="the net to show, in a cell of several")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.add_argument("--as", dest="variable", metavar="NAME", help="store the result in NAME")
    return parser


class CellResult:
    """What a `%%netdsl` cell shows: its networks, or the error with the warnings before it."""

    def __init__(self, networks: list[Network] = (), error: str | None = None):
        self.networks = list(networks)
        self.error = error

    def _repr_html_(self) -> str:
        if self.error is not None:
            return f'<pre class="netdsl-error">{html.escape(self.error)}</pre>'
        if not self.networks:
            return "<p>ok (definitions only)</p>"
        return "".join(network._repr_html_() for network in self.networks)

    def __repr__(self) -> str:
        if self.error is not None:
            return self.error
        return "\n".join(repr(network) for network in self.networks) or "ok (definitions only)"


def check_cell(line: str, cell: str) -> tuple[CellResult, str | None]:
    """The result of one cell, and the variable its networks go to (if --as was given)."""
    try:
        args = _options().parse_args(shlex.split(line))
    except (_OptionError, ValueError) as error:  # ValueError: an unclosed quote
        return CellResult(error=str(error)), None
    try:
        if args.net is not None:
            networks = [parse(cell, input=args.input, net=args.net, strict=args.strict)]
        else:
            networks = parse_all(cell, input=args.input, strict=args.strict)
    except NetDSLError as error:
        text = "\n".join([*(warning.render() for warning in error.warnings), str(error)])
        return CellResult(error=text), None
    return CellResult(networks), args.variable


def load_ipython_extension(ipython) -> None:
    """`%load_ext netdsl.jupyter` registers the `%%netdsl` cell magic."""

    def netdsl(line: str, cell: str):
        result, variable = check_cell(line, cell)
        if variable is not None:
            ipython.user_ns[variable] = result.networks[0] if len(result.networks) == 1 \
                else result.networks
        return result

    ipython.register_magic_function(netdsl, magic_kind="cell", magic_name="netdsl")
