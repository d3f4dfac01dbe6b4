"""`netdsl.load("resnet", net="resnet152")` plus `.summary()` in process, and against torchinfo.

    python benchmarks/load_summary.py                      # netdsl alone (any environment)
    PYTHONPATH=. ~/.cache/netdsl-ci/torchvision-torch2.14.1-tv0.29.1-py3.11/bin/python \
        benchmarks/load_summary.py --torchinfo              # beside torchinfo (issue 14's 0.03)

Prints the first call in this process (after `import netdsl`, so the grammar's tables are loaded,
nothing else) and the warm call, a repeat of the same call: median of --repeat, wall clock and
CPU time of this process. The warm call finds resnet.net parsed already (netdsl.parser keeps
parsed files by path and text; the file is still read and compared each time) and expands,
shape-checks, measures and tabulates resnet152 from scratch.

With --torchinfo (needs torch, torchvision and torchinfo), torchinfo's summary of torchvision's
resnet152 (`torchinfo.summary(model, input_size=(1, 3, 224, 224), verbose=0)`, the model built
beforehand and not timed, so the ratio is the strictest one) is timed interleaved with netdsl's
warm call, --pairs pairs, and the ratio of the medians printed (netdsl's call right after a
torchinfo run is slower than alone: torch's forward pass has just evicted its caches). Target: netdsl <= 0.03 of it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import paired  # noqa: E402

TARGET_MS = 20
TARGET_RATIO = 0.03
PARAMS = 60_192_808  # torchvision's resnet152


def netdsl_call():
    import netdsl
    network = netdsl.load("resnet", net="resnet152")
    text = network.summary()
    assert network.params == PARAMS and "resnet152" in text
    return text


def median(fn, repeat: int, clock) -> float:
    runs = []
    for _ in range(repeat):
        start = clock()
        fn()
        runs.append(clock() - start)
    return statistics.median(runs)


def checkout_subpackages() -> None:
    """Run from a checkout through PYTHONPATH (not installed), `netdsl.networks`, `.grammars` and
    `.backends` are not found: pyproject maps them from the checkout's networks/, grammars/ and
    backends/. Let the package look there too (an installed netdsl needs nothing)."""
    import netdsl
    try:
        import netdsl.networks  # noqa: F401
    except ImportError:
        root = Path(netdsl.__file__).parent.parent
        if (root / "networks" / "__init__.py").is_file():
            netdsl.__path__.append(str(root))


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--repeat", type=int, default=20)
    options.add_argument("--pairs", type=int, default=5,
                         help="interleaved pairs against torchinfo (each of its runs takes seconds)")
    options.add_argument("--torchinfo", action="store_true",
                         help="also time torchinfo's summary of torchvision's resnet152, interleaved")
    args = options.parse_args()

    checkout_subpackages()
    import netdsl
    start = time.perf_counter()
    netdsl_call()
    first = time.perf_counter() - start
    wall = median(netdsl_call, args.repeat, time.perf_counter)
    cpu = median(netdsl_call, args.repeat, time.process_time)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"netdsl {netdsl.__version__} from {Path(netdsl.__file__).parent}, python "
          f"{sys.version.split()[0]}; {os.cpu_count()} CPUs, load average {load}")
    print(f"{'first call in this process':34s} {first * 1e3:8.1f} ms")
    print(f"{'warm call, wall clock':34s} {wall * 1e3:8.1f} ms   median of {args.repeat}, "
          f"target < {TARGET_MS} ms")
    print(f"{'warm call, CPU time':34s} {cpu * 1e3:8.1f} ms   median of {args.repeat}")

    if args.torchinfo:
        import torch
        import torchinfo
        import torchvision
        torch.set_num_threads(os.cpu_count() or 1)
        model = torchvision.models.resnet152()
        model.eval()

        def torchinfo_call():
            stats = torchinfo.summary(model, input_size=(1, 3, 224, 224), verbose=0)
            assert stats.trainable_params == PARAMS
        ours, theirs = paired(netdsl_call, torchinfo_call, args.pairs, warmup=1)
        print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, torchinfo "
              f"{getattr(torchinfo, '__version__', '?')}; {torch.get_num_threads()} threads; "
              f"{args.pairs} interleaved pairs, median")
        print(f"{'netdsl load + summary':34s} {ours * 1e3:8.1f} ms")
        print(f"{'torchinfo.summary(resnet152)':34s} {theirs * 1e3:8.1f} ms")
        print(f"{'ratio':34s} {ours / theirs:8.4f}      target <= {TARGET_RATIO}")


if __name__ == "__main__":
    main()
