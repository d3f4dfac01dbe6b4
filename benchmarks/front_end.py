"""The front end (parse, expand, shape-check, measure) on networks of growing size.

    python benchmarks/front_end.py                     # resnet.net, then with a net of up to ~82k nodes
    python benchmarks/front_end.py --blocks 100 1000 --repeat 3

Each size is compiled by `netdsl.parse_all` as shipped (Python's garbage collector paused while it
builds) and, as the reference in the same run, by the same function with the collector running
(`ParsedModule.build_all.__wrapped__` after `parse_module`), interleaved, median of --repeat CPU times. The parser's caches are
cleared before every run, so each one parses the text from scratch. The per-node column shows
whether the work grows linearly with the network; the fuzzing tests allow 50 us a node.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import netdsl
from netdsl.network import shipped_networks_dir
from netdsl.parser import clear_caches
from netdsl.source import ParsedModule

sys.path.insert(0, str(Path(__file__).parent))
import timing  # noqa: E402  (beside this file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[250, 1000, 4000],
                        help="bottleneck blocks in each of two deepened stages (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    resnet = (shipped_networks_dir() / "resnet.net").read_text()
    cases = [("resnet.net (11 nets)", resnet)]
    for blocks in args.blocks:
        cases.append((f"+ net of 2x{blocks} blocks",
                      resnet + f"\nnet deep = stem - stage(64, {blocks}, 1) - stage(128, {blocks}, 2) - head\n"))

    print(f"median CPU seconds of {args.repeat}; nodes: all nets of the file")
    print(f"{'file':26} {'nodes':>7} {'paused s':>9} {'us/node':>8} {'running s':>10} {'ratio':>6}")
    for name, text in cases:
        nodes = sum(len(net.graph) for net in netdsl.parse_all(text, input="3x224x224"))  # warm-up
        # each run starts from the same heap; CPU time, so other processes do not count
        a, b = timing.paired(lambda: netdsl.parse_all(text, input="3x224x224"),
                             lambda: ParsedModule.build_all.__wrapped__(netdsl.parse_module(text),
                                                                        input="3x224x224"),
                             args.repeat, warmup=0, clock=time.process_time,
                             before=lambda: (clear_caches(), gc.collect()))
        print(f"{name:26} {nodes:7,} {a:9.3f} {a / nodes * 1e6:8.1f} {b:10.3f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
