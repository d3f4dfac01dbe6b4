"""Data-parallel training of a netdsl module with torch DistributedDataParallel.

On GPUs, one process per GPU (NCCL):
    torchrun --nproc_per_node=8 examples/train_ddp.py --net resnet50 --backend nccl --steps 100
On CPUs, or in the tests (gloo):
    torchrun --nproc_per_node=2 examples/train_ddp.py --net lenet5 --steps 3

Each process trains on its own synthetic batches; DDP averages the gradients, so every replica
holds the same parameters after every step. With --check, rank 0 verifies exactly that.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import netdsl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="lenet5")
    parser.add_argument("--input", help="input shape override, e.g. 3x64x64")
    parser.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--check", action="store_true", help="verify the replicas' parameters agree")
    parser.add_argument("--init-method", default="env://",
                        help="rendezvous: env:// (torchrun's MASTER_ADDR/PORT, the default) or file://PATH")
    args = parser.parse_args()

    # rank and world size come from torchrun's environment (RANK, WORLD_SIZE)
    dist.init_process_group(args.backend, init_method=args.init_method,
                            rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    rank = dist.get_rank()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if args.backend == "nccl" \
        else torch.device("cpu")
    net = netdsl.load(args.net, input=args.input)
    model = net.compile("torch", seed=0, device=device)  # the same initial weights everywhere
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimiser = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(1000 + rank)  # each rank sees different data
    classes = net.output_shape[0]
    for step in range(args.steps):
        x = torch.randn(args.batch, *net.input_shape, generator=data).to(device)
        y = torch.randint(0, classes, (args.batch,), generator=data).to(device)
        loss = F.cross_entropy(ddp(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if rank == 0:
            print(f"step {step + 1}: loss {loss.item():.4f}", flush=True)
    if args.check:
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        if rank == 0:
            same = all(torch.equal(gathered[0], other) for other in gathered[1:])
            moved = not torch.equal(flat.cpu(), before.cpu())
            print(f"replicas identical: {same}; parameters changed: {moved}", flush=True)
            if not (same and moved):
                raise SystemExit(1)
    dist.barrier()  # leave together: gloo aborts a process whose peer tears down mid-exchange
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
