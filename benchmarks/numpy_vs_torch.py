"""NumPy backend vs torch on the CPU: forward and forward+backward, float32, same thread count.

The torch side is torchvision's own model, so this runs in the torchvision environment
(.ci/torchvision-env prints its path), with netdsl from this checkout:

    PYTHONPATH=. $(bash .ci/torchvision-env)/bin/python benchmarks/numpy_vs_torch.py   # VGG-16, ResNet-50
    PYTHONPATH=. $(bash .ci/torchvision-env)/bin/python benchmarks/numpy_vs_torch.py --nets mobilenet_v2 --batch 2

Both sides run in this one process on the same input; each time is the median of --repeat runs
after one warm-up, interleaved with the other side's; then the fresh pages (minor page faults) a NumPy
forward writes, the mean of four more. Targets: forward <= 2x torch, forward+backward
<= 3x torch (issue 3); forward <= 1.5x torch on mobilenet_v2 and efficientnet_b0 (issue 12).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nets", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reference", action="store_true",
                        help="time the plain reference kernels (compile(\"numpy\", reference=True)) "
                             "instead of the default faster ones")
    args = parser.parse_args()
    # BLAS reads its thread count when it loads: set it before numpy is imported.
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    import numpy as np
    import torch

    import netdsl
    sys.path.insert(0, str(Path(__file__).parent))
    import timing
    import torchvision
    from load_summary import checkout_subpackages
    checkout_subpackages()

    torch.set_num_threads(args.threads)
    print(f"{'reference' if args.reference else 'default (numpy_fast)'} kernels; "
          f"batch {args.batch}, {args.size}x{args.size}, float32, {args.threads} threads, "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {np.__version__}; "
          f"median of {args.repeat}")
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    print(f"BLAS: {blas.get('openblas configuration') or blas.get('name', 'unknown')}; "
          f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} (netdsl's NumPy thread pool)")
    print(f"{'network':10} {'pass':17} {'numpy s':>9} {'torch s':>9} {'ratio':>7} {'target':>7}")

    def paired(first, second) -> tuple[float, float]:
        return timing.paired(first, second, args.repeat)

    for name in args.nets:
        net = netdsl.load(name, input=f"3x{args.size}x{args.size}")
        module = net.compile("numpy", dtype="float32", seed=0, reference=args.reference).train()
        x = np.random.default_rng(0).standard_normal((args.batch, *net.input_shape)).astype(np.float32)
        reference = torchvision.models.get_model(name, weights=None).train()
        xt = torch.from_numpy(x)

        def numpy_forward():
            return module(x)

        def numpy_both():
            y = module(x)
            module.backward(np.ones_like(y))

        def torch_forward():
            with torch.no_grad():
                return reference(xt)

        def torch_both():
            reference.zero_grad(set_to_none=True)
            y = reference(xt.requires_grad_(True))
            y.backward(torch.ones_like(y))

        forward_target = 1.5 if name in ("mobilenet_v2", "efficientnet_b0") else 2.0
        for label, ours, theirs, target in (("forward", numpy_forward, torch_forward, forward_target),
                                            ("forward+backward", numpy_both, torch_both, 3.0)):
            a, b = paired(ours, theirs)
            verdict = "ok" if a / b <= target else "MISSED"
            print(f"{name:10} {label:17} {a:9.3f} {b:9.3f} {a / b:7.2f} {'<=' + str(target):>7} {verdict}")
            sys.stdout.flush()
        # memory the system hands back zeroed, a page at a time, on first write (see
        # numpy_fast.keep_freed_memory): the mean over four more forwards
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(4):
            numpy_forward()
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // 4
        print(f"{name:10} fresh pages written by a NumPy forward (minor page faults, mean of 4): {faults:,}")


if __name__ == "__main__":
    main()
