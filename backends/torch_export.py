"""ONNX export of a compiled torch module (`netdsl compile FILE -o model.onnx`), with torch's
current exporter: torch.export captures the generated module's graph and onnxscript translates it
(`torch.onnx.export(..., dynamo=True)`). The batch axis is dynamic; input and output are named
`input` and `output`. The file is checked with onnx.checker."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings

from netdsl.errors import NetDSLError

OPSET = 18  # the exporter's own default: LRN, ceil-mode pooling, transposed convolution


def export_onnx(model, network, path) -> None:
    """Write `model` as ONNX with a dynamic batch dimension, then check it with onnx.checker."""
    import torch
    try:
        import onnx
        import onnxscript  # noqa: F401 - the exporter needs it; say so before torch fails deep inside
    except ImportError as error:
        raise NetDSLError(f"ONNX export needs {error.name}: pip install 'netdsl[onnx]'") from None
    model = model.eval()
    parameter = next(iter(model.parameters()), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    example = torch.zeros(2, *network.input_shape, dtype=dtype)
    batch = torch.export.Dim("batch", min=1)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            # The exporter reports each of its stages on stdout; netdsl prints one line when done.
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET,
                                        input_names=["input"], output_names=["output"],
                                        dynamic_shapes=({0: batch},), verbose=False)
    finally:
        exporter_log.setLevel(level)
    program.save(str(path))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
