"""DAS or SAM under DistributedDataParallel, launched with torchrun.

    torchrun --standalone --nproc_per_node 2 examples/ddp_train.py                 # DAS, CPU/gloo or GPU/nccl
    torchrun --standalone --nproc_per_node 2 examples/ddp_train.py --optimizer sam
    torchrun --standalone --nproc_per_node 2 examples/ddp_train.py --optimizer sgd  # plain DDP, for timing

A tiny tensorized MLP (a TT layer and a CP layer) learns a random linear map. Every rank takes its
slice of the same global batch; DDP averages the gradients in ``backward()``, so DAS, which runs
after that, computes the same scales on every rank, and SAM's perturbation and second-pass
gradient are the global-batch ones. With ``--accum k`` each rank splits its slice into ``k``
micro-batches and runs the first ``k - 1`` under ``no_sync()``: the all-reduce and the DAS scaling
happen once, at the last micro-batch. Rank 0 prints the loss and the mean time per step.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import tensordas as td


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=["das", "sam", "sgd"], default="das")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256, help="global batch size")
    parser.add_argument("--accum", type=int, default=1, help="micro-batches per step")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--rho", type=float, default=0.05)
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if args.batch % (world * args.accum):
        raise SystemExit(f"--batch {args.batch} is not divisible by world size {world} x --accum {args.accum}")

    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    w = args.width
    module = nn.Sequential(
        td.TensorizedLinear(w, w, "tt", rank=8), nn.ReLU(), td.TensorizedLinear(w, 16, "cp", rank=8)
    ).to(device)
    model = DDP(module)
    target = torch.randn(w, 16, device=device) / w**0.5

    params = module.parameters()
    if args.optimizer == "das":
        groups = td.find_core_groups(module)  # find groups on the inner module, not the DDP wrapper
        opt = td.DAS(params, torch.optim.SGD, core_groups=groups, alpha=args.alpha, lr=args.lr, momentum=0.9)
    elif args.optimizer == "sam":
        opt = td.SAM(params, torch.optim.SGD, rho=args.rho, lr=args.lr, momentum=0.9)
    else:
        opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9)

    local = args.batch // world
    times = []
    for step in range(args.steps):
        g = torch.Generator().manual_seed(step)  # the same global batch on every rank
        x = torch.randn(args.batch, w, generator=g).to(device)
        x = x[rank * local : (rank + 1) * local]
        y = x @ target
        if use_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        if args.optimizer == "sam":
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()  # synchronised: never put SAM's first pass under no_sync()
            opt.first_step(zero_grad=True)
            nn.functional.mse_loss(model(x), y).backward()  # synchronised as well
            opt.second_step(zero_grad=True)
        else:
            for i, (xm, ym) in enumerate(zip(x.chunk(args.accum), y.chunk(args.accum))):
                sync = i == args.accum - 1
                with contextlib.nullcontext() if sync else model.no_sync():
                    loss = nn.functional.mse_loss(model(xm), ym)
                    (loss / args.accum).backward()
            opt.step()  # DAS scales here, once, after the all-reduce of the last micro-batch
        if use_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.5f}", flush=True)

    if rank == 0:
        tail = times[len(times) // 5 :]  # skip warm-up
        print(f"{args.optimizer}: {world} ranks, {1e3 * sum(tail) / len(tail):.3f} ms/step", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
