"""The `netdsl` command. The only place that prints diagnostics and chooses exit codes:
0 success, 1 a mistake by the user (in the .net file, a weights file or the command line),
70 an internal error (a bug), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback

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

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def _shape_arg(text: str):
    from .shapes import parse_shape
    try:
        return parse_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    parser.add_argument("--version", action="version", version="netdsl 0.1.0")
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
    compile_.add_argument("-o", "--output", metavar="OUT", action="append", default=[],
                          help="write .py, .onnx, .safetensors or .npz (repeatable)")
    compile_.add_argument("--weights", metavar="FILE", help="start from these weights (.safetensors or .npz)")
    compile_.add_argument("--torchvision", metavar="FILE",
                          help="start from a torchvision state_dict file (.pth), mapped by position")
    compile_.add_argument("--arch", metavar="NAME",
                          help="the torchvision model of --torchvision (default: inferred, e.g. resnet50)")
    compile_.add_argument("--head", type=int, metavar="N",
                          help="replace the output layer with one of N outputs (fc1000 -> fc10), keeping "
                               "every other weight")
    compile_.add_argument("--freeze", metavar="NAME",
                          help="freeze every weight up to and including this layer or scope (e.g. stage3)")
    compile_.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default 0)")
    compile_.add_argument("--save-weights", metavar="FILE", help="write the weights (.safetensors or .npz)")

    run = commands.add_parser(
        "run", help="run a forward pass on seeded random input",
        description="Compile the network with a backend, run a forward pass (and with --backward a "
                    "backward pass) on seeded standard-normal input, and print the output shape, "
                    "a checksum and the time taken.")
    _common(run)
    run.add_argument("--backend", default="numpy", help="the backend to compile with (default numpy)")
    run.add_argument("--batch", type=int, default=1, metavar="N", help="batch size (default 1)")
    run.add_argument("--seed", type=int, default=0, metavar="S",
                     help="seed of the weights and the input (default 0)")
    run.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="number type (default float32)")
    run.add_argument("--weights", metavar="FILE",
                     help="weights to load (.safetensors or .npz) instead of the seeded initialisation")
    run.add_argument("--backward", action="store_true", help="also time a backward pass")

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
    draw.add_argument("--renderer", choices=("auto", "dot", "pure"), default="auto",
                      help="auto: the system `dot` if installed, else graphviz-pure (default)")
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
            print(f"{path}: ok (definitions only)")
        for network in networks:
            _print_warnings(network)
            if not args.quiet:
                print(f"{path}: {network.name}: ok, {format_shape(network.input_shape)} -> "
                      f"{format_shape(network.output_shape)}, {network.params:,} params, "
                      f"{network.macs:,} MACs")
    return status


def _cmd_summary(args) -> int:
    network = _load(args, args.file)
    _print_warnings(network)
    if getattr(args, "json", False):
        print(json.dumps(network.summary_dict(), indent=2))
    else:
        print(network.summary(depth=args.depth), end="")
    return EXIT_OK


def _cmd_expand(args) -> int:
    network = _load(args, args.file)
    _print_warnings(network)
    print(network.expand(), end="")
    return EXIT_OK


def _cmd_run(args) -> int:
    import time

    import numpy as np
    if args.batch < 1:
        raise _UsageError("--batch must be at least 1")
    network = _load(args, args.file)
    _print_warnings(network)
    start = time.perf_counter()
    try:
        module = network.compile(args.backend, dtype=args.dtype, seed=args.seed)
    except ValueError as error:
        raise _UsageError(str(error)) from None
    if args.weights:
        module.load(args.weights)
    module.eval()
    built = time.perf_counter() - start
    x = np.random.default_rng(args.seed).standard_normal((args.batch, *network.input_shape))
    start = time.perf_counter()
    y = np.asarray(module(x.astype(args.dtype)))
    forward = time.perf_counter() - start
    print(f"{network.name} on {args.backend} ({args.dtype}), batch {args.batch}")
    print(f"output    {'x'.join(map(str, y.shape))}")
    print(f"checksum  sum {float(y.sum(dtype=np.float64)):.6e}, "
          f"mean |y| {float(np.abs(y).mean(dtype=np.float64)):.6e}")
    print(f"time      build {built * 1e3:.1f} ms, forward {forward * 1e3:.1f} ms")
    if args.backward:
        start = time.perf_counter()
        module.backward(np.ones_like(y))
        print(f"          backward {(time.perf_counter() - start) * 1e3:.1f} ms")
    return EXIT_OK


def _infer_arch(network) -> str:
    from pathlib import Path

    from .backends.torchvision_weights import ARCHITECTURES
    here = (Path(network.path).stem, network.name)
    for arch, target in ARCHITECTURES.items():
        file, _, name = target.partition(":")
        if (file, name or file) == here:
            return arch
    raise _UsageError(f"cannot tell which torchvision model {network.name} is; pass --arch "
                      f"({', '.join(ARCHITECTURES)})")


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
    needs_model = args.weights or args.torchvision or args.head or args.freeze or args.save_weights \
        or any(out.suffix != ".py" for out in outputs)
    weights = None
    if args.torchvision:
        from .backends.torchvision_weights import import_torchvision
        _, weights = import_torchvision(args.torchvision, args.arch or _infer_arch(network))
    elif args.weights:
        from .weights_io import read_weights
        weights = read_weights(args.weights)
    target, model = network, None
    if needs_model:
        model = _torch_model(network, weights, args)
        target = model.network
    print(target.summary(depth=args.depth), end="")
    if model is not None:
        from .finetune import trainable_counts
        trainable, frozen = trainable_counts(model)
        print(f"trainable    {trainable:>17,}\nfrozen       {frozen:>17,}")
    for out in outputs:
        _write_output(out, target, model)
    if args.save_weights:
        from .weights_io import save_weights
        save_weights(args.save_weights, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
                                         if not k.endswith("num_batches_tracked")})
        print(f"wrote {args.save_weights}")
    return EXIT_OK


def _torch_model(network, weights, args):
    try:
        import torch  # noqa: F401
    except ImportError:
        raise NetDSLError("this needs torch: pip install 'netdsl[torch]'") from None
    from .finetune import finetune
    if weights is None:
        weights = network.compile("torch", seed=args.seed).state_dict()
    return finetune(network, weights, head=args.head, freeze=args.freeze, backend="torch", seed=args.seed)


def _write_output(out, network, model) -> None:
    if out.suffix == ".py":
        from . import __version__
        from .backends.torch_codegen import generate_source
        out.write_text(generate_source(network, __version__), encoding="utf-8")
    elif out.suffix == ".onnx":
        from .backends.torch_export import export_onnx
        export_onnx(model, network, out)
    else:
        from .weights_io import save_weights
        save_weights(out, {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()
                           if not k.endswith("num_batches_tracked")})
    print(f"wrote {out}")


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
                         stats=args.stats)
    data = graph.source.encode() if fmt == "dot" else render(graph.source, fmt, args.renderer)
    output = output or Path(f"{network.name}.svg")
    try:
        output.write_bytes(data)
    except OSError as error:
        raise NetDSLError(f"cannot write {output}: {error.strerror}") from None
    print(f"wrote {output} ({len(data):,} bytes)")
    return EXIT_OK


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


COMMANDS = {"check": _cmd_check, "summary": _cmd_summary, "expand": _cmd_expand,
            "compile": _cmd_compile, "draw": _cmd_draw, "run": _cmd_run,
            "serve": _cmd_serve}


def _report(error: NetDSLError) -> None:
    for warning in error.warnings:
        print(warning.render(), file=sys.stderr)
    print(str(error), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parser = args.command_parser
    if getattr(args, "depth", None) is not None and args.depth < 0:
        parser.error("--depth must be 0 or more")
    try:
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
    except Exception:  # an internal error is a bug: say so, and keep the evidence
        traceback.print_exc()
        print("netdsl: internal error: this is a bug in netdsl, please report it with the input "
              "that caused it", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
