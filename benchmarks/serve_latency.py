"""Edit-to-update latency of `netdsl serve`, server side: what one edit of resnet.net (net resnet152)
costs before the page can show it: parse and check, the summary, and the collapsed drawing as SVG.

Times netdsl.serve.analysis.analyse, the function the /api/check handler runs, plus the JSON
encoding of its answer, median of --repeat runs after a warm-up, and splits it into its stages.
Each run edits the text (a comment with the run's number, at the end, or with --edit-middle
before the first net, which moves every later statement), so the checked network and the parsed
file are never served from a cache; the statements the edit left alone are (netdsl.parser keeps
their parse trees), as they are while someone types.

    python benchmarks/serve_latency.py [--repeat 20] [--edit-middle] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import timed  # noqa: E402

import netdsl  # noqa: E402
from netdsl.draw import render  # noqa: E402
from netdsl.report import summary_dict  # noqa: E402
from netdsl.network import read_source, resolve_path  # noqa: E402
from netdsl.source import parse_module  # noqa: E402
from netdsl.serve.analysis import SERVE_LIMITS, analyse  # noqa: E402

TARGET_MS = 50


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--repeat", type=int, default=20)
    options.add_argument("--profile", action="store_true", help="print where the time goes")
    options.add_argument("--edit-middle", action="store_true",
                         help="edit before the first net instead of at the end of the file")
    args = options.parse_args()

    path, _ = resolve_path("resnet")
    text = read_source(path)
    edits = iter(range(10**9))

    middle = text.index("\nnet ") + 1

    def edited() -> str:
        if args.edit_middle:
            return f"{text[:middle]}# edit {next(edits)}\n{text[middle:]}"
        return f"{text}\n# edit {next(edits)}\n"

    def update():
        result = analyse(edited(), net="resnet152", depth=1, path=path)
        assert result["ok"] and result["summary"]["params"] == 60_192_808
        return json.dumps(result)

    total = timed(update, args.repeat, warmup=2)
    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    cpu_start, renderer_start = time.process_time(), children_cpu()
    for _ in range(args.repeat):
        update()
    cpu = (time.process_time() - cpu_start) / args.repeat  # the server process, all threads
    renderer_cpu = (children_cpu() - renderer_start) / args.repeat  # graphviz-pure, overlapped
    network = parse_module(text, path, SERVE_LIMITS).build("resnet152")
    dot = network.draw(depth=1).source
    result = analyse(text, net="resnet152", depth=1, path=path)
    stages = {
        "parse the edited file (parse_module)": lambda: parse_module(edited(), path, SERVE_LIMITS),
        "parse + expand + check resnet152": lambda: parse_module(edited(), path,
                                                                 SERVE_LIMITS).build("resnet152"),
        "summary_dict (fresh network each run)": lambda: summary_dict(next(fresh), groups=False),
        "draw (DOT)": lambda: network.draw(depth=1),
        "render DOT -> SVG (graphviz-pure)": lambda: render(dot, "svg"),
        "JSON encoding of the answer": lambda: json.dumps(result),
    }
    fresh = iter([parse_module(text, path, SERVE_LIMITS).build("resnet152")
                  for _ in range(args.repeat + 1)])  # summary_dict measures on first use
    times = {name: timed(fn, args.repeat, warmup=1) for name, fn in stages.items()}

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    where = "before the first net" if args.edit_middle else "at the end"
    print(f"netdsl {netdsl.__version__}, resnet.net net resnet152 ({len(network.graph)} nodes), "
          f"each run edited {where}, median of {args.repeat}; {os.cpu_count()} CPUs, "
          f"load average {load}")
    print(f"{'edit to update (analyse + JSON)':40s} {total * 1e3:7.1f} ms   target < {TARGET_MS} ms")
    print(f"  {'its CPU time in the server process':38s} {cpu * 1e3:7.1f} ms   (mean)")
    print(f"  {'and in the renderer (a subprocess)':38s} {renderer_cpu * 1e3:7.1f} ms   (mean)")
    for name, seconds in times.items():
        print(f"  {name:38s} {seconds * 1e3:7.1f} ms")
    print(f"  (the SVG is {len(result['svg']):,} bytes; the answer {len(json.dumps(result)):,})")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.repeat):
            update()
        profiler.disable()
        stats = pstats.Stats(profiler)
        by_module: dict[str, float] = {}
        for (file, _, _), (_, _, own, _, _) in stats.stats.items():
            key = "lark" if "/lark/" in file else Path(file).name
            by_module[key] = by_module.get(key, 0.0) + own
        whole = sum(by_module.values())
        print("own time by module (profiled, so slower than above):")
        for name, seconds in sorted(by_module.items(), key=lambda kv: -kv[1])[:10]:
            print(f"  {name:38s} {100 * seconds / whole:5.1f} %")


if __name__ == "__main__":
    main()
