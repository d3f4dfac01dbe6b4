"""The `netdsl` command. The only place that prints diagnostics and chooses exit codes:
0 success, 1 a mistake by the user (in the .net file, a weights file or the command line),
70 an internal error (a bug), 130 interrupted.
"""
from __future__ import annotations

import argparse
import errno
import json
import sys
import traceback
from typing import NoReturn

from . import __version__
from .errors import NetDSLError
from .limits import DEFAULT_LIMITS

EXIT_OK, EXIT_USER_ERROR = 0, 1

_EPILOG = """\
FILE is a .net file, FILE:NET for one net of a file with several, or the name of a shipped
network (vgg16, resnet50, vgg:D, ...).

examples:
  netdsl compile networks/vgg16.net
  netdsl summary resnet:resnet152 --depth 1
  netdsl check my.net --input 3x32x32 --strict
  netdsl expand networks/lenet5.net
  netdsl draw networks/resnet50.net -o resnet50.png
  netdsl run lenet5 --backend numpy --batch 8
"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line exits 1 like every other mistake of the user's (argparse's
    own convention is 2), after the usage of the command it was meant for."""

    def error(self, message: str) -> NoReturn:
        from .errors import printable
        self.print_usage(sys.stderr)
        hint = _option_hint(self, message)
        self.exit(EXIT_USER_ERROR, printable(f"{self.prog}: error: {message}\n{hint}", keep_newlines=True))


def _option_hint(parser: argparse.ArgumentParser, message: str) -> str:
    """'did you mean --depth?' for an unrecognized option close to one of the command's."""
    from .errors import suggest
    if not message.startswith("unrecognized arguments:"):
        return ""
    parsers = [parser]
    for action in parser._actions:  # the top-level parser reports its commands' extras
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())
    known = sorted({option for each in parsers for action in each._actions
                    for option in action.option_strings if option.startswith("--")})
    for word in message.split(":", 1)[1].split():
        close = suggest(word.split("=", 1)[0], known) if word.startswith("-") else None
        if close:
            return f"did you mean {close}?\n"
    return ""


def _shape_arg(text: str):
    from .shapes import parse_shape
    if len(text) > 200:
        raise argparse.ArgumentTypeError(f"not a shape: {len(text):,} characters")
    try:
        shape = parse_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    numbers = [d for d in shape if isinstance(d, int)]
    if max(numbers) > DEFAULT_LIMITS.max_dimension:
        raise argparse.ArgumentTypeError(
            f"{text}: {max(numbers):,} is over the limit of {DEFAULT_LIMITS.max_dimension:,} for one "
            f"dimension")
    return shape


def _count_arg(minimum: int, what: str):
    """An argparse type for a whole number of at least `minimum` (the option's name comes from
    argparse: "argument --seed: must be 0 or more, got -1")."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} is a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        return value
    convert.__name__ = what  # argparse names the type in some messages
    return convert


def _input_layout_warning(shape) -> str | None:
    """Inputs are CxHxW; an HxWxC shape (224x224x3) would silently read as 224 channels. Warn when
    the last size looks like channels (at most 4, smaller than the other two)."""
    if (shape is not None and len(shape) == 3 and all(isinstance(d, int) for d in shape)
            and shape[2] <= 4 and shape[2] < min(shape[0], shape[1])):
        return (f"warning: inputs are CxHxW: did you mean {shape[2]}x{shape[0]}x{shape[1]}? "
                f"(--input {'x'.join(map(str, shape))} reads as {shape[0]} channels)")
    return None


def _common(parser: argparse.ArgumentParser, several: bool = False) -> None:
    if several:
        parser.add_argument("files", nargs="+", metavar="FILE", help="the .net file(s) to check")
    else:
        parser.add_argument("file", metavar="FILE", help="the .net file (or FILE:NET, or a shipped name)")
    parser.add_argument("--net", metavar="NAME", help="the net to use in a file that defines several")
    parser.add_argument("--input", metavar="SHAPE", type=_shape_arg,
                        help="input shape CxHxW or C (e.g. 3x224x224), overriding the file's `input`")
    parser.add_argument("--strict", action="store_true",
                        help="treat warnings (such as a stride that leaves input rows unused) as errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="netdsl", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        description="Compile networks written the way papers and slides write them, such as\n"
                    "  [(conv3-64)*2 - pool]*5 - fc4096*2 - fc1000\n"
                    "Shapes are checked before any tensor exists; statistics need no framework.")
    parser.add_argument("--version", action="version", version=f"netdsl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    check = commands.add_parser(
        "check", help="type-check .net files (every net in each file)",
        description="Parse, expand and shape-check every net in each FILE. Prints one line per net; "
                    "exit status 0 if all are correct, 1 if any has an error.")
    _common(check, several=True)
    check.add_argument("-q", "--quiet", action="store_true", help="print only errors and warnings")

    summary = commands.add_parser(
        "summary", help="per-layer shapes, params, MACs, receptive field",
        description="Print every layer's output shape, parameters, multiply-accumulates, receptive "
                    "field and effective stride, grouped by definition call, with totals.")
    _common(summary)
    summary.add_argument("--json", action="store_true",
                         help="print one JSON object (network, input, output, params, buffers, macs, "
                              "activations, layers, groups)")
    summary.add_argument("--depth", type=int, metavar="N",
                         help="show groups nested at most N deep (0: top-level rows only)")
    summary.add_argument("--explain", action="store_true",
                         help="under each layer's row, its arithmetic as the slides show it: output "
                              "size, params, MACs, im2col matrix, receptive field, and which rule "
                              "applied (floor or ceil mode, doesn't fit, a derived default, an "
                              "implicit activation)")

    expand = commands.add_parser(
        "expand", help="print the fully explicit program",
        description="Print the program with every definition call inlined (as a labelled group), "
                    "every repeat unrolled, every op in keyword form and every implicit activation "
                    "written out. The output parses back to the same network.")
    _common(expand)

    compile_ = commands.add_parser(
        "compile", help="check a network, print its summary, and write PyTorch source, ONNX or weights",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check the network and print its summary. With -o, also write it out:\n"
                    "  model.py           readable standalone PyTorch source (one class, layers named as in\n"
                    "                     the network, the .net line beside each); needs only torch\n"
                    "  model.onnx         ONNX (opset 17), checked by onnx.checker; needs torch and onnx\n"
                    "  w.safetensors/.npz the weights (seeded, loaded, imported or fine-tuned)",
        epilog="examples:\n"
               "  netdsl compile vgg16 -o vgg16.py\n"
               "  netdsl compile resnet50 --torchvision resnet50.pth --head 10 --freeze stage3 \\\n"
               "      --save-weights ft.safetensors -o resnet50_ft.py")
    _common(compile_)
    compile_.add_argument("--depth", type=int, metavar="N", help="as for summary")
    compile_.add_argument("-q", "--quiet", action="store_true",
                          help="print no summary table and no progress, only what was written")
    compile_.add_argument("-o", "--output", metavar="OUT", action="append", default=[],
                          help="write .py, .onnx, .safetensors or .npz (repeatable)")
    compile_.add_argument("--weights", metavar="FILE", help="start from these weights (.safetensors or .npz)")
    compile_.add_argument("--torchvision", metavar="FILE",
                          help="start from a torchvision state_dict file (.pth), mapped by position")
    compile_.add_argument("--arch", metavar="NAME",
                          help="the torchvision model of --torchvision (default: inferred, e.g. resnet50)")
    compile_.add_argument("--head", type=_count_arg(1, "a count"), metavar="N",
                          help="replace the output layer with one of N outputs (fc1000 -> fc10), and each "
                               "auxiliary head's, keeping every other weight")
    compile_.add_argument("--freeze", metavar="NAME",
                          help="freeze every weight up to and including this layer or scope (e.g. stage3)")
    compile_.add_argument("--seed", type=_count_arg(0, "a seed"), default=0,
                          help="seed of the initial weights (default 0)")
    compile_.add_argument("--backend", default="torch",
                          help="the backend whose module is built and written (default torch: .py, "
                               ".onnx, .safetensors, .npz; numpy and jax: .safetensors, .npz)")
    compile_.add_argument("--save-weights", metavar="FILE", help="write the weights (.safetensors or .npz)")

    run = commands.add_parser(
        "run", help="run a forward pass on seeded random input",
        description="Compile the network with a backend, run a forward pass (and with --backward a "
                    "backward pass) on seeded standard-normal input, and print the output shape, "
                    "a checksum and the time taken.")
    _common(run)
    run.add_argument("--backend", default="numpy", help="the backend to compile with (default numpy)")
    run.add_argument("--batch", type=_count_arg(1, "a count"), default=1, metavar="N",
                     help="batch size (default 1)")
    run.add_argument("--seed", type=_count_arg(0, "a seed"), default=0, metavar="S",
                     help="seed of the weights and the input (default 0)")
    run.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="number type (default float32)")
    run.add_argument("--weights", metavar="FILE",
                     help="weights to load (.safetensors or .npz) instead of the seeded initialisation")
    run.add_argument("--backward", action="store_true", help="also time a backward pass")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    draw = commands.add_parser(
        "draw", help="draw the network (SVG, PNG, DOT; no system Graphviz needed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw the network: layers in slide notation with their output shapes, edges "
                    "labelled with tensor shapes,\ndefinition calls as clusters, collapsed below "
                    "--depth into one box per call (repeats merged: bottleneck(256) x5).",
        epilog="Formats come from the -o extension: .svg .png .jpg (graphviz-pure, installed with\n"
               "netdsl), .dot/.gv (the DOT text), .pdf (needs a system Graphviz `dot`, used when\n"
               "present). Without -o the picture is written to NAME.svg in the current folder.")
    _common(draw)
    draw.add_argument("-o", "--output", metavar="OUT",
                      help="output file: .svg, .png, .jpg, .pdf or .dot (default NAME.svg)")
    level = draw.add_mutually_exclusive_group()
    level.add_argument("--depth", type=int, default=1, metavar="N",
                       help="draw definition calls nested less than N deep as clusters and collapse "
                            "deeper ones into boxes (default 1; 0 collapses every call)")
    level.add_argument("--expand", action="store_true", help="draw every layer")
    draw.add_argument("--rankdir", choices=("TB", "LR", "BT", "RL"), default="TB",
                      help="layout direction: TB top to bottom (default), LR left to right")
    draw.add_argument("--stats", action="store_true", help="add params, MACs and receptive field")
    draw.add_argument("--max-nodes", type=_count_arg(1, "a count"), default=None, metavar="N",
                      help="refuse drawings of more than N boxes (default 5000)")
    draw.add_argument("--renderer", choices=("auto", "dot", "pure"), default="auto",
                      help="auto: the system `dot` if installed, else graphviz-pure (default)")
    commands.add_parser(
        "lsp", help="run the language server on stdin/stdout (for editors; pip install 'netdsl[lsp]')",
        description="Speak the Language Server Protocol on stdin and stdout: diagnostics, hover, "
                    "completion, go to definition, symbols and rename for .net files. Editors start "
                    "it; see docs/editors.md.")
    serve = commands.add_parser(
        "serve", help="a live playground in the browser (pip install 'netdsl[serve]')",
        description="Serve an editor for FILE with its drawing, summary table and diagnostics, "
                    "updated as you type. Prints an address with a per-launch token; only that "
                    "address opens the page. Saving writes FILE and nothing else.")
    serve.add_argument("file", nargs="?", metavar="FILE", help="the .net file to edit and save")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1); another address makes the "
                            "server read-only unless --allow-save")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    serve.add_argument("--allow-save", action="store_true",
                       help="allow saving FILE when listening on an address other than loopback")
    for command in commands.choices.values():  # for mistakes found after parsing
        command.set_defaults(command_parser=command)
    return parser


def _load(args, file: str):
    from .network import load
    return load(file, net=args.net, input=args.input, strict=args.strict, limits=DEFAULT_LIMITS)


def _print_warnings(network) -> None:
    for warning in network.warnings:
        print(warning.render(), file=sys.stderr)


def _cmd_check(args) -> int:
    from .errors import printable
    from .network import parse_all, read_source, resolve_path
    from .shapes import format_shape
    status = EXIT_OK
    for target in args.files:
        try:
            path, net = resolve_path(target)
            net = args.net or net
            text = read_source(path)
            if net is not None:
                from .network import parse
                networks = [parse(text, input=args.input, net=net, path=path, strict=args.strict)]
            else:
                networks = parse_all(text, input=args.input, path=path, strict=args.strict)
        except NetDSLError as error:
            _report(error)
            status = EXIT_USER_ERROR
            continue
        if not networks and not args.quiet:
            print(f"{printable(path)}: ok (definitions only)")
        for network in networks:
            _print_warnings(network)
            if args.quiet:
                continue
            if network.symbolic:
                from .report import size_lines
                params = network.params
                print(printable(f"{path}: {network.name}: ok, {format_shape(network.input_shape)} -> "
                                f"{format_shape(network.output_shape)}, " +
                                (f"{params:,} params" if isinstance(params, int) else
                                 f"params depend on the input size ({', '.join(network.size_dependent_weights)})")))
                for line in size_lines(network):
                    print(printable("  " + line))
                continue
            print(printable(f"{path}: {network.name}: ok, {format_shape(network.input_shape)} -> "
                            f"{format_shape(network.output_shape)}, {network.params:,} params, "
                            f"{network.macs:,} MACs"))
    return status


def _cmd_summary(args) -> int:
    network = _load(args, args.file)
    _print_warnings(network)
    explain = getattr(args, "explain", False)
    if getattr(args, "json", False):
        summary = network.summary_dict()
        if explain:
            from .explain import explain_network
            for layer, explanation in zip(summary["layers"], explain_network(network)):
                layer["explain"] = explanation.to_dict()["lines"]
        print(json.dumps(_within_depth(network, summary, args.depth), indent=2))
    elif explain:
        from .report import summary_text
        print(summary_text(network, depth=args.depth, width=_table_width(), explain=True), end="")
    else:
        print(network.summary(depth=args.depth, width=_table_width()), end="")
    return EXIT_OK


def _table_width() -> int:
    """The terminal's width, or 100 columns when the output is not a terminal."""
    import shutil
    return max(60, shutil.get_terminal_size((100, 24)).columns)


def _within_depth(network, summary: dict, depth: int | None) -> dict:
    """The JSON summary cut at `depth` as the table is: groups and layers nested deeper go."""
    if depth is None:
        return summary
    from .report import layout_rows
    rows = layout_rows(network.graph, network.layout)
    shallow = {row.name for row in rows if row.kind == "layer" and row.depth <= depth}
    return {**summary, "depth": depth,
            "layers": [layer for layer in summary["layers"] if layer["name"] in shallow],
            "groups": [group for group in summary["groups"] if group["depth"] <= depth]}


def _cmd_expand(args) -> int:
    network = _load(args, args.file)
    _print_warnings(network)
    print(network.expand(), end="")
    return EXIT_OK


def _backend(name: str):
    """The backend called `name` (a bad name is a usage error naming the installed ones)."""
    from .plugins import BackendUnavailable, get_backend
    try:
        return get_backend(name)
    except BackendUnavailable as error:
        raise NetDSLError(f"this needs {error.missing}: pip install 'netdsl[{name}]'") from None
    except ValueError as error:
        raise _UsageError(str(error)) from None


def _cmd_run(args) -> int:
    import time

    import numpy as np

    from .backend import DifferentiableModule
    if args.batch < 1:
        raise _UsageError("--batch must be at least 1")
    backend = _backend(args.backend)
    if args.dtype not in backend.dtypes:
        raise _UsageError(f"the {backend.name} backend computes in {', '.join(backend.dtypes)}, "
                          f"not {args.dtype}")
    network = _load(args, args.file)
    _print_warnings(network)
    from .shapes import format_shape
    sample = network
    if network.symbolic:  # the module takes every valid size; one is needed to run it
        sample = network.at(network.example_shape())
        print(f"{network.name} takes {'; '.join(s.describe() for s in network.valid_sizes.values())}: "
              f"running at {format_shape(sample.input_shape)}, the example size")
    _check_batch(sample, args.batch)
    bar = _progress(2, f"building {network.name}", args.quiet)
    start = time.perf_counter()
    weights = None
    if args.weights:
        from .weights_io import read_weights_checked
        weights = read_weights_checked(args.weights, network)
    module = backend.compile(network, dtype=args.dtype, seed=args.seed, weights=weights)
    module.eval()
    built = time.perf_counter() - start
    bar.update()
    bar.set_description("forward")
    x = np.random.default_rng(args.seed).standard_normal((args.batch, *sample.input_shape))
    x = x.astype(args.dtype)
    start = time.perf_counter()
    y = module.run(x)
    forward = time.perf_counter() - start
    bar.update()
    bar.close()
    print(f"{network.name} on {backend.name} ({args.dtype}), batch {args.batch}")
    print(f"output    {'x'.join(map(str, y.shape))}")
    print(f"checksum  sum {float(y.sum(dtype=np.float64)):.6e}, "
          f"mean |y| {float(np.abs(y).mean(dtype=np.float64)):.6e}")
    print(f"time      build {built * 1e3:.1f} ms, forward {forward * 1e3:.1f} ms")
    if args.backward:
        if not isinstance(module, DifferentiableModule):
            raise NetDSLError(f"the {backend.name} backend gives no gradients; --backward needs one that does")
        start = time.perf_counter()
        module.gradients(x, np.ones_like(y))
        print(f"          forward+backward {(time.perf_counter() - start) * 1e3:.1f} ms")
    return EXIT_OK


def _check_batch(network, batch: int) -> None:
    """Refuse a batch whose largest tensor would pass the tensor limit, before allocating it."""
    import math
    largest = max(math.prod(shape) for shape in network.shapes) * batch
    limit = network.limits.max_tensor_elements
    if largest > limit:
        raise _UsageError(f"--batch {batch:,}: {network.name}'s largest tensor would hold "
                          f"{largest:,} values, over the limit of {limit:,}")


def _infer_arch(network) -> str | None:
    """The torchvision model `network` is, for messages; None for a network of your own, whose
    weights are then matched to the file's tensors by position."""
    from .backends.torchvision_weights import matching_architecture
    return matching_architecture(network)


def _cmd_compile(args) -> int:
    from pathlib import Path
    outputs = [Path(out) for out in args.output]
    for out in outputs:
        if out.suffix not in (".py", ".onnx", ".safetensors", ".npz"):
            raise _UsageError(f"-o {out}: write .py, .onnx, .safetensors or .npz")
    if args.weights and args.torchvision:
        raise _UsageError("give --weights or --torchvision, not both")
    network = _load(args, args.file)
    _print_warnings(network)
    needs_module = args.weights or args.torchvision or args.head or args.freeze or args.save_weights \
        or outputs
    # A module is built only when something needs one: a summary alone never imports torch.
    backend = _backend(args.backend) if needs_module else None
    for out in outputs:
        assert backend is not None  # outputs need a module
        if out.suffix not in backend.writers:
            raise _UsageError(f"-o {out}: the {backend.name} backend writes "
                              f"{', '.join(backend.writers)}"
                              + (" (.py and .onnx come from --backend torch)" if backend.name != "torch" else ""))
    weights = None
    if args.torchvision:
        from .backends.torchvision_weights import import_torchvision, transform_input_note
        arch = args.arch or _infer_arch(network)
        _, weights = import_torchvision(args.torchvision, arch, network)
        note = transform_input_note(arch)
        if note:
            print(f"note: {note}", file=sys.stderr)
    elif args.weights:
        from .weights_io import read_weights_checked
        weights = read_weights_checked(args.weights, network)
    target, module = network, None
    if backend is not None:
        from .finetune import finetune
        module = finetune(network, weights, head=args.head, freeze=args.freeze, backend=backend.name,
                          seed=args.seed)
        target = module.network
    if not args.quiet:
        print(target.summary(depth=args.depth, width=_table_width()), end="")
    if module is not None and not args.quiet:
        from .finetune import trainable_counts
        trainable, frozen = trainable_counts(module)
        print(f"trainable    {trainable:>17,}\nfrozen       {frozen:>17,}")
    if backend is not None and module is not None:
        with _progress(len(outputs), "writing", args.quiet) as bar:
            for out in outputs:
                bar.set_postfix_str(out.name)
                backend.writers[out.suffix](module, out)
                _wrote(out)
                bar.update()
        if args.save_weights:
            module.save_weights(args.save_weights)
            _wrote(Path(args.save_weights))
    if module is not None and not (args.weights or args.torchvision):
        print(f"the weights are random (seed {args.seed}); start from trained ones with --weights "
              f"or --torchvision")
    return EXIT_OK


def _progress(total: int, description: str, quiet: bool = False):
    """A progress bar on stderr when it is a terminal; silent when piped, redirected or quiet."""
    from tqdm import tqdm
    return tqdm(total=total, desc=description, file=sys.stderr, leave=False, unit="step",
                disable=quiet or not sys.stderr.isatty())


def _wrote(out) -> None:
    from .errors import printable
    print(printable(f"wrote {out} ({out.stat().st_size:,} bytes)" if out.is_file() else f"wrote {out}"))


_DRAW_FORMATS = {".svg": "svg", ".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".pdf": "pdf",
                 ".dot": "dot", ".gv": "dot"}


def _cmd_draw(args) -> int:
    from pathlib import Path

    from .draw import render
    output = Path(args.output) if args.output else None
    fmt = _DRAW_FORMATS.get(output.suffix.lower()) if output else "svg"
    if fmt is None:
        raise _UsageError(f"-o {args.output}: unknown format; use one of "
                          f"{', '.join(sorted(_DRAW_FORMATS))}")
    network = _load(args, args.file)
    _print_warnings(network)
    graph = network.draw(depth=None if args.expand else args.depth, rankdir=args.rankdir,
                         stats=args.stats, max_nodes=args.max_nodes)
    data = graph.source.encode() if fmt == "dot" else render(graph.source, fmt, args.renderer)
    output = output or Path(f"{network.name}.svg")
    try:
        output.write_bytes(data)
    except OSError as error:
        raise NetDSLError(f"cannot write {output}: {error.strerror}") from None
    from .errors import printable
    print(printable(f"wrote {output} ({len(data):,} bytes)"))
    return EXIT_OK


def _cmd_lsp(args) -> int:
    try:
        from .lsp import main as serve
    except ImportError as error:
        if error.name not in ("pygls", "lsprotocol") and not str(error.name).startswith("pygls."):
            raise
        raise NetDSLError("netdsl lsp needs pygls: pip install 'netdsl[lsp]'") from None
    return serve()


def _cmd_serve(args) -> int:
    if not 0 <= args.port <= 65535:
        raise _UsageError("--port must be 0..65535")
    try:
        from .serve.app import serve
    except ImportError as error:
        raise NetDSLError(f"netdsl serve needs the serve extra "
                          f"({(error.name or 'a module').split('.')[0]} is missing)",
                          notes=["pip install 'netdsl[serve]'"]) from None
    serve(args.file, host=args.host, port=args.port, allow_save=args.allow_save,
          announce=lambda line: print(line, flush=True))
    return EXIT_OK


COMMANDS = {"lsp": _cmd_lsp, "check": _cmd_check, "summary": _cmd_summary, "expand": _cmd_expand,
            "compile": _cmd_compile, "draw": _cmd_draw, "run": _cmd_run, "serve": _cmd_serve}


def _report(error: NetDSLError) -> None:
    for warning in error.warnings:
        print(warning.render(), file=sys.stderr)
    print(str(error), file=sys.stderr)


#: The extra that provides each optional module netdsl imports.
_EXTRAS = {"torch": "torch", "torchvision": "torch", "onnx": "onnx", "onnxscript": "onnx",
           "onnxruntime": "onnx", "safetensors": "safetensors"}
# Write failures that come from the machine, not from netdsl: the disk, a quota, a read-only mount.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _outputs(args) -> list[str]:
    outputs = getattr(args, "output", None) or []
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    if getattr(args, "save_weights", None):
        outputs.append(args.save_weights)
    return outputs


def _check_outputs(args) -> None:
    """Refuse an output that cannot be written before any work: into a missing folder, onto a
    folder (a device such as /dev/null is allowed: writing to it is the user's choice)."""
    import os
    for out in _outputs(args):
        parent = os.path.dirname(out) or "."
        if os.path.isdir(out):
            raise _UsageError(f"{out} is a directory; name a file to write")
        if not os.path.isdir(parent):
            raise NetDSLError(f"cannot write {out}: there is no folder {parent}")


def _missing_module(error: ImportError) -> str | None:
    root = (error.name or "").split(".")[0]
    return root if root in _EXTRAS else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parser: _Parser = args.command_parser
    if getattr(args, "depth", None) is not None and args.depth < 0:
        parser.error("--depth must be 0 or more")
    warning = _input_layout_warning(getattr(args, "input", None))
    if warning:
        print(warning, file=sys.stderr)
    try:
        _check_outputs(args)
        return COMMANDS[args.command](args)
    except NetDSLError as error:
        _report(error)
        return EXIT_USER_ERROR
    except _UsageError as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except ImportError as error:
        module = _missing_module(error)
        if module is None:
            return _internal_error()
        print(f"error: this needs {module}: pip install 'netdsl[{_EXTRAS[module]}]'", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:
        from .errors import printable
        if error.errno not in _FULL and str(error.filename) not in _outputs(args):
            return _internal_error()
        target = error.filename or " or ".join(_outputs(args)) or "the output"
        print(printable(f"error: cannot write {target}: {error.strerror}"), file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception:
        return _internal_error()


def _internal_error() -> int:
    """An internal error is a bug: say so, and keep the evidence."""
    traceback.print_exc()
    print("netdsl: internal error: this is a bug in netdsl, please report it with the input "
          "that caused it", file=sys.stderr)
    return 70


if __name__ == "__main__":
    sys.exit(main())
