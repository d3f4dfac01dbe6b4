"""ONNX export of a compiled torch module (`netdsl compile FILE -o model.onnx`), with torch's
current exporter: torch.export captures the generated module's graph and onnxscript translates it
(`torch.onnx.export(..., dynamo=True)`). The batch axis is dynamic, and so are the height and width
of a net with size names (3xHxW), named after them; input and output are named `input` and
`output`. The file is checked with onnx.checker."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

from netdsl.errors import NetDSLError

OPSET = 18  # the exporter's own default: LRN, ceil-mode pooling, transposed convolution


def dynamic_shapes(network) -> tuple:
    """torch.export's `dynamic_shapes` for the module's one input: a dynamic batch, and for a net
    with size names (3xHxW) one dimension per name with its true bounds and step.

    A size takes the set where every window fits exactly (the --strict set: U-Net's
    H = 16k + 12 from 188, expressed as 16*k + 12 with k >= 11), when that is one arithmetic
    progression, else the plain valid set from its smallest size. torch.export cannot take a set
    of several residue classes, so such a net exports from the smallest size with no step, and
    the docstring of the generated source names the exact set."""
    import torch
    axes = {0: torch.export.Dim("batch", min=1)}
    made: dict = {}
    for axis, size in enumerate(network.input_shape, start=1):
        if isinstance(size, int):
            continue
        name = next(iter(size.names()))
        if name not in made:
            made[name] = _dimension(torch, name, network.strict_sizes[name], network.valid_sizes[name])
        axes[axis] = made[name]
    return (axes,)


def _dimension(torch, name: str, strict, valid):
    exact = strict.progression() if not strict.is_empty() else None
    if exact is not None and exact[0] > 1:
        m, r, start = exact
        # torch.export specialises sizes 0 and 1, so every dimension starts at 2
        steps = torch.export.Dim(f"{name}_steps", min=max(-(-(max(start, 2) - r) // m), 0))
        return m * steps + r
    chosen = strict if exact is not None else valid
    return torch.export.Dim(name, min=max(2, chosen.smallest() or 2))


def export(model, network, batch: int = 2):
    """torch.export.export of the module at its example size, with `dynamic_shapes` above. The
    example batch is at least 2: torch.export specialises a dimension it sees at 1."""
    import torch
    batch = max(batch, 2)
    parameter = next(iter(model.parameters()), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    example = torch.zeros(batch, *network.example_shape(), dtype=dtype)
    if network.symbolic:  # the example must lie in the exported set
        example = torch.zeros(batch, *_exported_example(network), dtype=dtype)
    return torch.export.export(size_checked(model.eval(), network), (example,),
                               dynamic_shapes=dynamic_shapes(network))


def size_checked(model, network):
    """`model` with its forward preceded by torch._check of each size's step (H % 16 == 12).

    torch.export's derived dimensions (16*k + 12) bound the sizes, but the exported program does
    not check at run time that a size has that form; a torch._check in the traced code becomes a
    run-time assertion in the program. A shallow copy of another class (the generated class, with
    this forward) keeps every parameter shared and every state_dict name unchanged.
    """
    checks = []
    for axis, size in enumerate(network.input_shape, start=1):
        if isinstance(size, int):
            continue
        name = next(iter(size.names()))
        strict = network.strict_sizes[name]
        exact = strict.progression() if not strict.is_empty() else None
        if exact is not None and exact[0] > 1:
            checks.append((axis, name, exact[0], exact[1] % exact[0], strict.describe()))
    if not checks:
        return model
    import copy

    import torch

    base = type(model)

    def forward(self, x):
        for axis, name, step, residue, text in checks:
            torch._check(x.shape[axis] % step == residue, lambda: f"{network.name} takes {text}")
        return base.forward(self, x)

    checked = copy.copy(model)
    checked.__class__ = type(base.__name__, (base,), {"forward": forward, "__module__": base.__module__})
    return checked


def _exported_example(network) -> tuple:
    chosen = {}
    for name in network.valid_sizes:
        strict = network.strict_sizes[name]
        sizes = strict if not strict.is_empty() and strict.progression() else network.valid_sizes[name]
        below, above = sizes.nearest(32)
        chosen[name] = 32 if 32 in sizes else (above or below)
    return tuple(d if isinstance(d, int) else d.evaluate(chosen) for d in network.input_shape)


def export_onnx(model, network, path) -> None:
    """Write `model` as ONNX with a dynamic batch dimension, then check it with onnx.checker."""
    import torch
    try:
        import onnx
        import onnxscript  # noqa: F401 - the exporter needs it; say so before torch fails deep inside
    except ImportError as error:
        raise NetDSLError(f"ONNX export needs {error.name}: pip install 'netdsl[onnx]'") from None
    for node in network.graph:  # checked first: torch's exporter fails deep inside, as a bug
        if node.op == "adaptive_maxpool" and node.attrs["size"] > 1:
            raise NetDSLError(f"{node.name} ({node.op}({node.attrs['size']})) cannot be written as ONNX",
                              node.span, ["torch's ONNX exporter has no function for "
                                          "aten.adaptive_max_pool2d (gmp, its size 1, exports)"])
    model = model.eval()
    parameter = next(iter(model.parameters()), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    example = torch.zeros(2, *(_exported_example(network) if network.symbolic else network.input_shape),
                          dtype=dtype)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            # The exporter reports each of its stages on stdout; netdsl prints one line when done.
            warnings.simplefilter("ignore")
            program = torch.onnx.export(size_checked(model, network), (example,), dynamo=True, opset_version=OPSET,
                                        input_names=["input"], output_names=["output"],
                                        dynamic_shapes=dynamic_shapes(network), verbose=False)
    finally:
        exporter_log.setLevel(level)
    program.save(str(path))
    if network.symbolic:
        _name_size_axes(onnx, network, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _name_size_axes(onnx, network, path) -> None:
    """Label the dynamic axes with netdsl's names: the input's H and W (the exporter writes
    `16*H_steps + 12`) and the output's formulas in them (it writes its own symbols, `16*s23 - 172`),
    and record the valid sizes in the model's doc string."""
    model = onnx.load(str(path))
    graph = model.graph
    for value, shape in ((graph.input[0], network.input_shape), (graph.output[0], network.output_shape)):
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(list(dims)[1:], shape):
            if not isinstance(size, int):
                dim.dim_param = str(size)
    model.doc_string = (f"netdsl net {network.name}: valid sizes "
                        + "; ".join(s.describe() for s in network.valid_sizes.values())
                        + "; exact (--strict, what this model checks) "
                        + "; ".join(s.describe() for s in network.strict_sizes.values()))
    onnx.save(model, str(path))
