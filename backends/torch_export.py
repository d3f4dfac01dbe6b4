"""ONNX export of a compiled torch module (`netdsl compile FILE -o model.onnx`)."""
from __future__ import annotations

import warnings

from netdsl.errors import NetDSLError

OPSET = 17  # has every op the language uses (LRN, ceil-mode pooling, transposed convolution)


def export_onnx(model, network, path) -> None:
    """Write `model` as ONNX with a dynamic batch dimension, then check it with onnx.checker."""
    import torch
    try:
        import onnx
    except ImportError:
        raise NetDSLError("ONNX export needs the onnx package: pip install 'netdsl[onnx]'") from None
    model = model.eval()
    example = torch.zeros(1, *network.input_shape, dtype=next(model.parameters()).dtype)
    with warnings.catch_warnings():
        # The TorchScript-based exporter needs nothing beyond onnx; torch now prefers the
        # torch.export-based one, which needs onnxscript too.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
