"""Hostile inputs (issue 13): wall time and peak memory of the `netdsl` command on each, the
figures tests/test_redteam.py leaves to a benchmark (a timed test fails on a busy machine).

    python benchmarks/redteam.py             # every case, one run each
    python benchmarks/redteam.py --only npz   # the cases whose name contains "npz"

Each case is the real command in a fresh process; its peak resident memory comes from wait4's
rusage of that one child. The target is every case under 2 s and 500 MB on an idle 2-core
machine; the last column flags a case past it. Interpreter start and imports are included
(about 0.3 s and 60 MB for the front end, more where NumPy loads weights).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

SECONDS, MEGABYTES = 2.0, 500


def _safetensors(header: bytes, data: bytes = b"") -> bytes:
    return len(header).to_bytes(8, "little") + header + data


def _entry(entry: dict) -> bytes:
    return json.dumps({"conv1.weight": entry}).encode()


def _zip_bomb(path: Path, size: int) -> None:
    """An .npz of one float32 member of `size` bytes of zeros, deflated (3 GiB -> about 3 MB)."""
    header = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + repr(
        {"descr": "<f4", "fortran_order": False, "shape": (size // 4,)}).encode().ljust(117) + b"\n"
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(header)
    parts = [compressor.compress(header)]
    zero = bytes(2**24)
    for _ in range(size // len(zero)):
        parts.append(compressor.compress(zero))
        crc = zlib.crc32(zero, crc)
    parts.append(compressor.flush())
    deflated = b"".join(parts)
    name = b"conv1.weight.npy"
    total = len(header) + size
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 8, 0, 0, crc, len(deflated),
                        min(total, 0xFFFFFFFF), len(name), 0) + name
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 8, 0, 0, crc, len(deflated),
                          min(total, 0xFFFFFFFF), len(name), 0, 0, 0, 0, 0, 0) + name
    if total > 0xFFFFFFFF:  # zip64: the real size in an extra field
        extra = struct.pack("<HHQ", 1, 8, total)
        central = central[:30] + struct.pack("<H", len(extra)) + central[32:] + extra
        central = central[:20] + struct.pack("<I", len(deflated)) + struct.pack("<I", 0xFFFFFFFF) + central[28:]
    body = local + deflated
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(body), 0)
    path.write_bytes(body + central + end)


def cases(folder: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) for every case; the files they need are written into `folder`."""
    def net(name: str, text: str | bytes) -> str:
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        return name

    def weights(name: str, content: bytes) -> list[str]:
        (folder / name).write_bytes(content)
        return ["run", "lenet5", "--weights", name]

    with open(folder / "sparse.net", "wb") as handle:
        handle.truncate(2**30)
    os.mkfifo(folder / "fifo.net")
    defs = "input 8\n" + "".join(f"def block{i} = fc8\n" for i in range(14_000)) + "blokc13999\n"
    warnings = "input 1x7x7\n" + "#\n" * 900_000 + "".join(f"net n{i} = conv3-1/3(pad=0) - fc10\n"
                                                          for i in range(1000))
    deep = "input 8\n" + "\n".join(f"def d{i} = " + "(" * 60 + (f"d{i - 1}" if i else "fc8") + ")" * 60
                                   for i in range(30)) + "\nd29\n"
    import numpy as np
    np.save(folder / "plain.npy", np.zeros(3))
    os.replace(folder / "plain.npy", folder / "plain.npz")
    _zip_bomb(folder / "bomb.npz", 3 * 2**30)
    return [
        ("literal of 5000 digits", ["check", net("digits.net", "input 3x8x8\nconv3-" + "9" * 5000)]),
        ("990 minus signs", ["check", net("minus.net", "input 8\nfc{" + "1-" * 990 + "10}")]),
        ("sum of 3000 ones", ["check", net("sum.net", "input 8\nfc(c=" + "1+" * 3000 + "1)")]),
        ("30 calls x 60 brackets", ["check", net("deep.net", deep)]),
        ("NaN attribute", ["check", net("nan.net", "input 8\nfc10 - dropout(p=1e999-1e999)")]),
        ("five nets at the node limit", ["check", net("five.net", "input 8\n" + "".join(
            f"net n{i} = (fc8*9999)*10\n" for i in range(5)))]),
        ("one net at the node limit", ["check", net("one.net", "input 8\nnet n = (fc8*9999)*10\n")]),
        ("1,000,000-character name", ["check", net("name.net", "input 8\nfc8 - " + "x" * 1_000_000)]),
        ("unknown name among 14,000 defs", ["check", net("defs.net", defs)]),
        ("1000 warnings after 900,000 comments", ["check", net("warn.net", warnings)]),
        ("1 GB sparse file", ["check", "sparse.net"]),
        ("/dev/zero", ["check", "/dev/zero"]),
        ("FIFO", ["check", "fifo.net"]),
        ("draw (fc8*10000)*9", ["draw", net("wide.net", "input 8\n(fc8*10000)*9"), "-o", "wide.svg"]),
        ("draw cat{} of 12,000 branches", ["draw", net("cat.net", "input 8\nfc8 - cat{ " +
                                                       " | ".join(["fc1"] * 12_000) + " }"), "-o", "cat.svg"]),
        ("run --batch 1000000000", ["run", "lenet5", "--batch", "1000000000"]),
        ("--input 1x1x2000000000", ["check", "lenet5", "--input", "1x1x2000000000"]),
        ("safetensors: 100,000-deep JSON", weights("deep.safetensors", _safetensors(b"[" * 100_000 + b"]" * 100_000))),
        ("safetensors: 5000-digit number", weights("digits.safetensors", _safetensors(
            b'{"w":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,4]}}', b"0000"))),
        ("safetensors: 100 dimensions", weights("rank.safetensors", _safetensors(
            _entry({"dtype": "F32", "shape": [1] * 100, "data_offsets": [0, 4]}), b"0000"))),
        ("npz: member claiming 1e9x1e9", weights("claim.npz", _npz_claim())),
        ("npz: plain .npy", ["run", "lenet5", "--weights", "plain.npz"]),
        ("npz: 3 GiB of zeros in 3 MB", ["run", "lenet5", "--weights", "bomb.npz"]),
    ]


def _npz_claim() -> bytes:
    import io
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (10**9, 10**9)}).encode()
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + b"\0" * 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("conv1.weight.npy", raw)
    return buffer.getvalue()


def measure(argv: list[str], cwd: Path) -> tuple[int, float, float]:
    """Exit status, wall seconds and peak resident MB of `netdsl ARGV` in a fresh process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", "import sys; from netdsl.cli import main; "
                                "sys.exit(main(sys.argv[1:]))", *argv], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'case':40} {'exit':>4} {'seconds':>8} {'peak MB':>8}")
        for name, argv in cases(Path(folder)):
            if args.only not in name:
                continue
            status, seconds, megabytes = measure(argv, Path(folder))
            over = "  OVER" if seconds > SECONDS or megabytes > MEGABYTES else ""
            print(f"{name:40} {status:>4} {seconds:8.2f} {megabytes:8.0f}{over}", flush=True)


if __name__ == "__main__":
    main()
