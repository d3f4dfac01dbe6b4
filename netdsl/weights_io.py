"""Weights files: safetensors and .npz, read without ever unpickling, checked name by name.

safetensors is small enough to implement here (an 8-byte little-endian header length, a JSON
header of {name: {dtype, shape, data_offsets}}, then the raw bytes), which keeps the dependency
list short and lets every malformed file give a precise error instead of a traceback.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from .errors import NetDSLWeightsError
from .shapes import format_shape

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}
_NAMES = {np.dtype(v).str if v != "?" else "|b1": k for k, v in _DTYPES.items()}
_MAX_HEADER = 100_000_000
#: torch's BatchNorm keeps a step counter that no computation reads; other backends ignore it.
IGNORED_SUFFIXES = (".num_batches_tracked",)


def _fail(path, message: str, notes=()) -> NetDSLWeightsError:
    return NetDSLWeightsError(f"{path}: {message}", notes=list(notes))


def save_weights(path, weights: dict) -> None:
    """Write {name: array} as .safetensors or .npz (chosen by the file's extension)."""
    path = Path(path)
    arrays = {name: np.ascontiguousarray(np.asarray(value)) for name, value in weights.items()}
    if path.suffix == ".npz":
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
        return
    if path.suffix != ".safetensors":
        raise _fail(path, "weights files are .safetensors or .npz")
    header, offset, chunks = {}, 0, []
    for name in sorted(arrays):
        array = arrays[name]
        key = array.dtype.newbyteorder("<").str if array.dtype.kind != "b" else "|b1"
        if key not in _NAMES:
            raise _fail(path, f"{name}: cannot store dtype {array.dtype}")
        data = array.astype(key, copy=False).tobytes()
        header[name] = {"dtype": _NAMES[key], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little"))
        handle.write(text)
        for chunk in chunks:
            handle.write(chunk)


def read_weights(path) -> dict[str, np.ndarray]:
    """Every tensor in a .safetensors or .npz file, validated, as NumPy arrays."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise _fail(path, error.strerror or "cannot read the file") from None
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix != ".safetensors":
        raise _fail(path, "weights files are .safetensors or .npz")
    with open(path, "rb") as handle:
        raw_length = handle.read(8)
        if len(raw_length) < 8:
            raise _fail(path, "not a safetensors file: shorter than its 8-byte header length")
        length = int.from_bytes(raw_length, "little")
        if length > min(size - 8, _MAX_HEADER):
            raise _fail(path, f"not a safetensors file: header length {length:,} exceeds the file")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _fail(path, f"not a safetensors file: its header is not JSON ({error})") from None
        data = handle.read()
    if not isinstance(header, dict):
        raise _fail(path, "not a safetensors file: its header is not a JSON object")
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors[name] = _tensor(path, name, entry, data)
    return tensors


def _tensor(path, name: str, entry, data: bytes) -> np.ndarray:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise _fail(path, f"{name}: malformed entry (needs dtype, shape and data_offsets)")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype == "BF16":
        code = "<u2"
    elif dtype in _DTYPES:
        code = _DTYPES[dtype]
    else:
        raise _fail(path, f"{name}: unsupported dtype {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise _fail(path, f"{name}: malformed shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= len(data)):
        raise _fail(path, f"{name}: data offsets {offsets!r} fall outside the file")
    itemsize = np.dtype(code).itemsize
    if offsets[1] - offsets[0] != math.prod(shape) * itemsize:
        raise _fail(path, f"{name}: {offsets[1] - offsets[0]:,} bytes of data for shape "
                          f"{format_shape(shape) if shape else 'scalar'} of {dtype}")
    array = np.frombuffer(data, dtype=code, count=math.prod(shape), offset=offsets[0]).reshape(shape)
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.copy()


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as error:  # an object array would need pickle
        raise _fail(path, f"refusing to read it: {error}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _fail(path, f"not an .npz file ({error})") from None


def check_weights(network, weights: dict, source: str = "the weights") -> dict[str, np.ndarray]:
    """The weights as arrays, after checking that every name and shape is the network's."""
    expected = {spec.name: spec for spec in network.weights}
    given = {name: value for name, value in weights.items() if not name.endswith(IGNORED_SUFFIXES)}
    missing = [name for name in expected if name not in given]
    extra = [name for name in given if name not in expected]
    if missing:
        raise NetDSLWeightsError(
            f"{source}: {len(missing)} weight{'s' * (len(missing) != 1)} of {network.name} missing, "
            f"first {missing[0]} ({format_shape(expected[missing[0]].shape)})",
            notes=[f"unexpected names, first: {extra[0]}"] if extra else [])
    if extra:
        raise NetDSLWeightsError(f"{source}: {extra[0]} is not a weight of {network.name}",
                                 notes=[f"{len(extra)} unexpected name(s) in all"])
    arrays = {}
    for name, spec in expected.items():
        array = np.asarray(given[name])
        if tuple(array.shape) != spec.shape:
            raise NetDSLWeightsError(
                f"{source}: {name} has shape {format_shape(array.shape) or 'scalar'}, "
                f"{network.name} needs {format_shape(spec.shape)}")
        if array.dtype.kind not in "fiu":
            raise NetDSLWeightsError(f"{source}: {name} has dtype {array.dtype}, not a number type")
        arrays[name] = array
    return arrays


def load_weights(path, network) -> dict[str, np.ndarray]:
    """Read a weights file and check it against the network."""
    return check_weights(network, read_weights(path), source=str(path))
