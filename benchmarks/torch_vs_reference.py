"""netdsl's torch module vs a hand-written torch model of the same architecture (torchvision's
definition, written out in reference_models.py), on the CPU or CUDA.

    python benchmarks/torch_vs_reference.py                       # CPU, float32, batch 8
    python benchmarks/torch_vs_reference.py --device cuda --dtype bfloat16 --channels-last

Measured in this one process: forward (inference, no_grad) and forward+backward (training mode),
eager and with torch.compile, and the time to construct each module. Targets (issue 4): the
ratios netdsl/reference <= 1.02; torch.compile no slower than eager; construction <= 1.1x.
Each time is the median of --repeat runs after warm-up, interleaved with the reference's.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    import torch

    import netdsl
    sys.path.insert(0, str(Path(__file__).parent))
    import timing
    from reference_models import NETWORKS, REFERENCES

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def paired(first, second, warmup=2) -> tuple[float, float]:
        return timing.paired(first, second, args.repeat, warmup, sync)

    print(f"device {args.device}, {args.dtype}{', channels_last' if args.channels_last else ''}, "
          f"batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, torch {torch.__version__}; "
          f"median of {args.repeat}")
    print(f"{'network':15} {'pass':36} {'netdsl s':>9} {'reference s':>11} {'ratio':>6}")
    print("(rows marked 'reference twin' time a second reference against the first: the noise floor)")
    for name in args.nets:
        net = netdsl.load(NETWORKS[name], input=f"3x{args.size}x{args.size}")
        build_ours, build_ref = paired(lambda: net.compile("torch", seed=0), lambda: REFERENCES[name](),
                                       warmup=1)
        print(f"{name:15} {'construction':36} {build_ours:9.3f} {build_ref:11.3f} {build_ours / build_ref:6.3f}")
        ours = net.compile("torch", seed=0).to(device=device, dtype=dtype, memory_format=memory)
        reference = REFERENCES[name]().to(device=device, dtype=dtype, memory_format=memory)
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

        rows = [("forward", forward), ("forward+backward", training)]
        for label, step in rows:
            a, b = paired(lambda: step(ours), lambda: step(reference))
            print(f"{name:15} {label:36} {a:9.3f} {b:11.3f} {a / b:6.3f}", flush=True)
        # The noise floor: a second copy of the reference against the first, timed the same way.
        twin = REFERENCES[name]().to(device=device, dtype=dtype, memory_format=memory)
        for label, step in rows:
            a, b = paired(lambda: step(twin), lambda: step(reference))
            print(f"{name:15} {label + ' (reference twin)':36} {a:9.3f} {b:11.3f} {a / b:6.3f}", flush=True)
        if not args.no_compile:
            compiled_ours = torch.compile(ours, fullgraph=True)
            compiled_ref = torch.compile(reference)
            for label, step in rows:
                eager = timing.timed(lambda: step(ours), args.repeat, 2, sync)
                a, b = paired(lambda: step(compiled_ours), lambda: step(compiled_ref))
                print(f"{name:15} {label + ' (torch.compile)':36} {a:9.3f} {b:11.3f} {a / b:6.3f}"
                      f"   compile gain vs eager {eager / a:.2f}x", flush=True)


if __name__ == "__main__":
    main()
