"""Weights files: safetensors and .npz, read without ever unpickling, checked before they are loaded.

safetensors files are written and read through the `safetensors` package. Before it sees a file,
netdsl checks the header itself with bounds (its length, its JSON nesting and numbers, each
entry's dtype, rank and byte range against the file's size), so a hostile file gives a precise
error instead of a traceback or a huge allocation. Given the network (`read_weights_checked`),
names and shapes are compared with the header before a single tensor is read.

.npz archives are read member by member: the pickle flag is off, each member's .npy header (dtype,
shape) is read and checked before its data, and the archive's total inflated size is bounded, so
a small archive of zeros that would inflate to gigabytes fails at once.
"""
from __future__ import annotations

import math
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NetDSLWeightsError
from .shapes import format_shape

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?", "BF16": "<u2"}
#: torch's BatchNorm keeps a step counter that no computation reads; other backends ignore it.
IGNORED_SUFFIXES = (".num_batches_tracked",)

#: Bounds on what a weights file may claim; each is far past any real network.
MAX_HEADER_BYTES = 100_000_000  # the safetensors package's own cap on the JSON header
MAX_JSON_DEPTH = 4  # {"name": {"shape": [..]}} is 3 deep
MAX_NUMBER_DIGITS = 20  # an int64 has at most 19
MAX_RANK = 8
MAX_TENSORS = 1_000_000
MAX_INFLATED_BYTES = 16 * 2**30  # the data of all tensors of one file together
_ZIP_RATIO = 100  # a member inflating more than this much (and past 64 MB) is a zip bomb
_ZIP_RATIO_FLOOR = 64 * 2**20
# What zipfile raises for a damaged or unusual archive (found by fuzzing: a flipped byte makes
# "zip file version 6.4", an encrypted flag, an unknown compression method).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, OSError, EOFError,
               ValueError)


def _fail(path, message: str, notes=()) -> NetDSLWeightsError:
    return NetDSLWeightsError(f"{path}: {message}", notes=list(notes))


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """What a file's header says about one tensor, before its data is read."""

    name: str
    dtype: str  # the safetensors name: F32, F64, BF16, ...
    shape: tuple[int, ...]


# -- writing -----------------------------------------------------------------------------------------

def save_weights(path, weights: dict) -> None:
    """Write {name: array} as .safetensors or .npz (chosen by the file's extension)."""
    path = Path(path)
    arrays = {name: np.ascontiguousarray(np.asarray(value)) for name, value in weights.items()}
    if path.suffix == ".npz":
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub: a name could be allow_pickle
        return
    if path.suffix != ".safetensors":
        raise _fail(path, "weights files are .safetensors or .npz")
    from safetensors.numpy import save
    for name, array in arrays.items():
        code = array.dtype.newbyteorder("<").str if array.dtype.kind != "b" else "?"
        if code not in _DTYPES.values() or code == "<u2":
            raise _fail(path, f"{name}: cannot store dtype {array.dtype}")
        arrays[name] = array.astype(code, copy=False)
    data = save(arrays)
    with open(path, "wb") as handle:  # written here, so a full disk is an OSError like any other
        handle.write(data)


# -- reading -----------------------------------------------------------------------------------------

def read_weights(path) -> dict[str, np.ndarray]:
    """Every tensor in a .safetensors or .npz file, validated, as NumPy arrays."""
    return _read(Path(path), None)


def read_weights_checked(path, network) -> dict[str, np.ndarray]:
    """The tensors of a weights file for `network`: every name and shape is compared with the
    file's header before any tensor data is read (a 3 GB file for another network fails at once)."""
    path = Path(path)
    checked = _read(path, network)
    return check_weights(network, checked, source=str(path))


def load_weights(path, network) -> dict[str, np.ndarray]:
    """Read a weights file and check it against the network."""
    return read_weights_checked(path, network)


def read_header(path) -> list[TensorInfo]:
    """What a weights file holds (names, dtypes, shapes), read and bounded without its data."""
    path = Path(path)
    size = _file_size(path)
    if path.suffix == ".npz":
        return [info for info, _ in _npz_members(path, size)]
    if path.suffix != ".safetensors":
        raise _fail(path, "weights files are .safetensors or .npz")
    return [info for info, _ in _safetensors_header(path, size)]


def _read(path: Path, network) -> dict[str, np.ndarray]:
    size = _file_size(path)
    if path.suffix == ".npz":
        members = _npz_members(path, size)
        _check_against(network, [info for info, _ in members], path)
        return _read_npz(path, members)
    if path.suffix != ".safetensors":
        raise _fail(path, "weights files are .safetensors or .npz")
    entries = _safetensors_header(path, size)
    _check_against(network, [info for info, _ in entries], path)
    return _read_safetensors(path, entries)


def _file_size(path: Path) -> int:
    try:
        info = os.stat(path)
    except OSError as error:
        raise _fail(path, error.strerror or "cannot read the file") from None
    if not stat.S_ISREG(info.st_mode):
        raise _fail(path, "not a regular file" if not stat.S_ISDIR(info.st_mode) else "is a directory")
    return info.st_size


def _check_against(network, infos: list[TensorInfo], path: Path) -> None:
    """Names and shapes from the header against the network's, before any data is read."""
    if network is None:
        return
    check_weights(network, {info.name: _ShapeOnly(info.shape, info.dtype) for info in infos},
                  source=str(path))


class _ShapeOnly:
    """Stands in for an array in check_weights while only the header has been read."""

    def __init__(self, shape: tuple[int, ...], dtype: str):
        self.shape = shape
        self.dtype = np.dtype(_DTYPES.get(dtype, "<f4")) if dtype != "BF16" else np.dtype("<f4")


# -- safetensors -------------------------------------------------------------------------------------

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def _safetensors_header(path: Path, size: int) -> list[tuple[TensorInfo, tuple[int, int]]]:
    import json
    with open(path, "rb") as handle:
        raw_length = handle.read(8)
        if len(raw_length) < 8:
            raise _fail(path, "not a safetensors file: shorter than its 8-byte header length")
        length = int.from_bytes(raw_length, "little")
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise _fail(path, f"not a safetensors file: header length {length:,} exceeds the file")
        raw = handle.read(length)
    depth = deepest = 0
    for bracket in _BRACKET.finditer(_STRING.sub(b'""', raw)):  # nesting, before json recurses
        depth += 1 if bracket.group() in b"[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            raise _fail(path, f"not a safetensors file: its header nests deeper than {MAX_JSON_DEPTH}")
    try:
        header = json.loads(raw.decode("utf-8"), parse_int=_bounded_int, parse_float=_no_float,
                            parse_constant=_no_float)
    except (UnicodeDecodeError, ValueError) as error:
        raise _fail(path, f"not a safetensors file: its header is not JSON ({_short(error)})") from None
    if not isinstance(header, dict):
        raise _fail(path, "not a safetensors file: its header is not a JSON object")
    if len(header) > MAX_TENSORS:
        raise _fail(path, f"more than {MAX_TENSORS:,} tensors")
    data_size = size - 8 - length
    entries, total = [], 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        info, offsets = _entry(path, name, entry, data_size)
        total += offsets[1] - offsets[0]
        entries.append((info, offsets))
    if total > data_size:  # overlapping claims: more bytes than the file holds
        raise _fail(path, f"its tensors claim {total:,} bytes, the file holds {data_size:,}")
    return entries


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number of {len(text):,} digits")
    return int(text)


def _no_float(text: str):
    raise ValueError(f"unexpected number {text[:20]}")


def _short(error: Exception) -> str:
    return str(error)[:200]


def _entry(path, name: str, entry, data_size: int) -> tuple[TensorInfo, tuple[int, int]]:
    shown = name[:200]
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise _fail(path, f"{shown}: malformed entry (needs dtype, shape and data_offsets)")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise _fail(path, f"{shown}: unsupported dtype {str(dtype)[:40]!r}")
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK
            and all(type(d) is int and d >= 0 for d in shape)):
        raise _fail(path, f"{shown}: malformed shape {str(shape)[:80]}",
                    [f"a shape is a list of at most {MAX_RANK} sizes"])
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size):
        raise _fail(path, f"{shown}: data offsets {str(offsets)[:80]} fall outside the file")
    itemsize = np.dtype(_DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != math.prod(shape) * itemsize:
        raise _fail(path, f"{shown}: {offsets[1] - offsets[0]:,} bytes of data for shape "
                          f"{format_shape(tuple(shape)) if shape else 'scalar'} of {dtype}")
    return TensorInfo(name, dtype, tuple(shape)), (offsets[0], offsets[1])


def _read_safetensors(path: Path, entries) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open
    tensors: dict[str, np.ndarray] = {}
    try:
        with safe_open(str(path), framework="numpy") as handle:
            for info, offsets in entries:
                if info.dtype == "BF16":  # NumPy has no bfloat16: read the bits, widen to float32
                    tensors[info.name] = _bf16(path, info, offsets)
                else:
                    tensors[info.name] = handle.get_tensor(info.name)
    except SafetensorError as error:
        raise _fail(path, f"not a valid safetensors file ({_short(error)})") from None
    return tensors


def _bf16(path: Path, info: TensorInfo, offsets: tuple[int, int]) -> np.ndarray:
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        handle.seek(8 + length + offsets[0])
        bits = np.frombuffer(handle.read(offsets[1] - offsets[0]), dtype="<u2").reshape(info.shape)
    return (bits.astype(np.uint32) << 16).view(np.float32)


# -- npz ---------------------------------------------------------------------------------------------

def _npz_members(path: Path, size: int) -> list[tuple[TensorInfo, zipfile.ZipInfo]]:
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic == b"\x93NUMPY":
        raise _fail(path, "a single .npy array, not an .npz archive",
                    ["save the weights with numpy.savez(path, **{name: array})"])
    try:
        archive = zipfile.ZipFile(path)
    except _ZIP_ERRORS as error:
        raise _fail(path, f"not an .npz file ({_short(error)})") from None
    members, total = [], 0
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_TENSORS:
            raise _fail(path, f"more than {MAX_TENSORS:,} arrays")
        for member in infos:
            if not member.filename.endswith(".npy"):
                raise _fail(path, f"{member.filename[:200]}: not an array (.npy) member")
            if member.file_size > _ZIP_RATIO_FLOOR and member.file_size > _ZIP_RATIO * max(1, member.compress_size):
                raise _fail(path, f"{member.filename[:200]}: {member.compress_size:,} bytes inflate to "
                                  f"{member.file_size:,}; refusing what looks like a zip bomb")
            total += member.file_size
            if total > MAX_INFLATED_BYTES:
                raise _fail(path, f"its arrays inflate to more than {MAX_INFLATED_BYTES:,} bytes")
            info = _npy_header(path, archive, member)
            members.append((info, member))
    return members


def _npy_header(path: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> TensorInfo:
    """A member's dtype and shape from its .npy header, checked against the member's size."""
    name = member.filename[:-4]
    try:
        with archive.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unknown .npy version {version}")
            header_bytes = stream.tell()
    except (*_ZIP_ERRORS, SyntaxError) as error:
        raise _fail(path, f"{name[:200]}: not a readable array ({_short(error)})") from None
    if dtype.hasobject:
        raise _fail(path, f"refusing to read it: {name[:200]} holds Python objects, which would need "
                          f"pickle")
    if len(shape) > MAX_RANK:
        raise _fail(path, f"{name[:200]}: {len(shape)} dimensions, more than {MAX_RANK}")
    claimed = math.prod(shape) * dtype.itemsize
    if header_bytes + claimed != member.file_size:
        raise _fail(path, f"{name[:200]}: its header claims {format_shape(shape) or 'a scalar'} of "
                          f"{dtype} ({claimed:,} bytes), the member holds "
                          f"{member.file_size - header_bytes:,}")
    code = {v: k for k, v in _DTYPES.items()}.get(dtype.newbyteorder("<").str if dtype.kind != "b"
                                                  else "?", "F32")
    del fortran
    return TensorInfo(name, code, tuple(shape))


def _read_npz(path: Path, members) -> dict[str, np.ndarray]:
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info, member in members:
                with archive.open(member) as stream:
                    arrays[info.name] = np.lib.format.read_array(stream, allow_pickle=False)
    except _ZIP_ERRORS as error:
        raise _fail(path, f"not a readable .npz file ({_short(error)})") from None
    return arrays


# -- checking ----------------------------------------------------------------------------------------

def check_weights(network, weights: dict, source: str = "the weights") -> dict[str, Any]:
    """The weights as arrays, after checking that every name and shape is the network's."""
    expected = {spec.name: spec for spec in network.weight_specs}
    given = {name: value for name, value in weights.items() if not name.endswith(IGNORED_SUFFIXES)}
    missing = [name for name in expected if name not in given]
    extra = [name for name in given if name not in expected]
    if missing:
        raise NetDSLWeightsError(
            f"{source}: {len(missing)} weight{'s' * (len(missing) != 1)} of {network.name} missing, "
            f"first {missing[0]} ({format_shape(expected[missing[0]].shape)})",
            notes=[f"unexpected names, first: {extra[0][:200]}"] if extra else [])
    if extra:
        raise NetDSLWeightsError(f"{source}: {extra[0][:200]} is not a weight of {network.name}",
                                 notes=[f"{len(extra)} unexpected name(s) in all"])
    arrays: dict[str, Any] = {}
    for name, spec in expected.items():
        value = given[name]
        array = value if isinstance(value, _ShapeOnly) else np.asarray(value)
        if tuple(array.shape) != spec.shape:
            raise NetDSLWeightsError(
                f"{source}: {name} has shape {format_shape(array.shape) or 'scalar'}, "
                f"{network.name} needs {format_shape(spec.shape)}")
        if array.dtype.kind not in "fiu":
            raise NetDSLWeightsError(f"{source}: {name} has dtype {array.dtype}, not a number type")
        arrays[name] = array
    return arrays

