"""netdsl's torch module against torchvision's own model, on the CPU (or CUDA).

Run in the torchvision environment (.ci/torchvision-env prints its path):

    PYTHONPATH=. $(bash .ci/torchvision-env)/bin/python benchmarks/torch_vs_torchvision.py
    PYTHONPATH=. $(bash .ci/torchvision-env)/bin/python benchmarks/torch_vs_torchvision.py --compile
    PYTHONPATH=. $(bash .ci/torchvision-env)/bin/python benchmarks/torch_vs_torchvision.py \
        --device cuda --dtype bfloat16 --channels-last

Any model of docs/zoo.md can be named with --nets (torchvision's name is the shipped net's).

For each network: construction (from a checked Network to a ready module: code generation, exec
of the generated source and torch's initialisation, with netdsl's caches of generated code
cleared, against torchvision's constructor), forward (eval, no_grad) and forward+backward
(training mode), batch 8, 224x224. Each time is the median of --pairs interleaved pairs (A, B, B,
A, ...: each side first in half of them). Beside each pass, an A/A twin row times a second torchvision model against the first:
the noise floor. A pass whose twin falls outside 0.98-1.02 is measured again (up to --attempts
times) and the attempt with the steadiest twin is printed. Targets (issue 11): ratios within 2%
(0.98-1.02 is noise), construction <= 1.1x. With --compile, each pass is also timed with both
models under torch.compile (netdsl's with fullgraph=True), beside netdsl's eager time.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_NETS = ["vgg16", "resnet50"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=DEFAULT_NETS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time both under torch.compile")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    import torch
    import torchvision

    import netdsl
    sys.path.insert(0, str(Path(__file__).parent))
    import timing
    from load_summary import checkout_subpackages
    checkout_subpackages()
    from netdsl.backends import torch_backend

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(f"device {args.device}, {args.dtype}{', channels_last' if args.channels_last else ''}, batch {args.batch}, {args.size}x{args.size}, "
          f"{args.threads} threads, torch {torch.__version__}, torchvision {torchvision.__version__}; "
          f"median of {args.pairs} interleaved pairs")
    print(f"{'network':10} {'pass':28} {'netdsl s':>9} {'torchvision s':>13} {'ratio':>6}")
    for name in args.nets:
        net = netdsl.load(name, input=f"3x{args.size}x{args.size}")

        def build_ours():
            torch_backend._namespace.cache_clear()
            torch_backend._root_class.cache_clear()
            return net.compile("torch", seed=0)

        def build_theirs():
            return torchvision.models.get_model(name, weights=None)

        a, b = timing.paired(build_ours, build_theirs, max(3, args.pairs // 3), 1)
        print(f"{name:10} {'construction':28} {a:9.3f} {b:13.3f} {a / b:6.3f}", flush=True)
        def placed(model):
            return model.to(device=device, dtype=dtype, memory_format=memory)

        ours, theirs, twin = placed(net.compile("torch", seed=0)), placed(build_theirs()), placed(build_theirs())
        x = torch.randn(args.batch, 3, args.size, args.size, device=device, dtype=dtype)
        x = x.contiguous(memory_format=memory)

        def forward(model):
            model.eval()
            with torch.no_grad():
                model(x)

        def training(model):
            model.train()
            model.zero_grad(set_to_none=True)
            model(x).float().sum().backward()

        for label, step in (("forward", forward), ("forward+backward", training)):
            best = None
            for attempt in range(args.attempts):
                a, b = timing.paired(lambda: step(ours), lambda: step(theirs), args.pairs, 2, sync)
                t, u = timing.paired(lambda: step(twin), lambda: step(theirs), args.pairs, 1, sync)
                if best is None or abs(t / u - 1) < abs(best[2] / best[3] - 1):
                    best = (a, b, t, u)
                if 0.98 <= t / u <= 1.02:
                    break
            a, b, t, u = best
            print(f"{name:10} {label:28} {a:9.3f} {b:13.3f} {a / b:6.3f}", flush=True)
            print(f"{name:10} {label + ' (A/A twin)':28} {t:9.3f} {u:13.3f} {t / u:6.3f}", flush=True)
        if args.compile:
            compiled_ours = torch.compile(ours, fullgraph=True)
            compiled_theirs = torch.compile(theirs)
            for label, step in (("forward", forward), ("forward+backward", training)):
                eager = timing.timed(lambda: step(ours), args.pairs, 2, sync)
                a, b = timing.paired(lambda: step(compiled_ours), lambda: step(compiled_theirs), args.pairs, 2, sync)
                print(f"{name:10} {label + ' (torch.compile)':28} {a:9.3f} {b:13.3f} {a / b:6.3f}"
                      f"   gain vs netdsl eager {eager / a:.2f}x", flush=True)


if __name__ == "__main__":
    main()
