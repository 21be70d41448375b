"""Wall time per training step under 2-rank DDP: plain SGD vs DAS on SGD vs SAM on SGD, side by side.

    torchrun --standalone --nproc_per_node 2 benchmarks/ddp_step.py [--rounds 15] [--steps-per-round 5] [--threads 1]
    torchrun --standalone --nproc_per_node 2 benchmarks/ddp_step.py --device cuda   # nccl, one GPU per rank

Every rank holds three DDP-wrapped copies of the same small tensorized MLP (``td.TensorizedLinear``
TT and CP layers) and trains each on its half of one fixed global batch. Every round runs a block
of ``--steps-per-round`` full steps (zero_grad, forward, backward with DDP's all-reduce, optimizer
step; SAM: two synchronised passes) for each optimizer in a rotating order; each block starts and
ends with a barrier, so both ranks time the same block. Warm-up rounds are discarded. Rank 0 prints
the median per-step times (the slower rank's time per block) and the median per-round (paired)
ratios DAS/plain and DAS/SAM with their quartiles. ``--device cuda`` uses NCCL when every rank
has its own GPU and gloo (which reduces CUDA tensors through the host) when ranks share one.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import torch.distributed as dist
from step_overhead import quantiles, time_block
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import tensordas as td

KINDS = ("plain", "das", "sam")


def make_model(width: int, depth: int, rank: int) -> nn.Sequential:
    torch.manual_seed(0)  # the same initial weights on every rank and for every optimizer
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [td.TensorizedLinear(width, width, "tt" if i % 2 == 0 else "cp", rank=rank), nn.ReLU()]
    layers.append(td.TensorizedLinear(width, 16, "tt", rank=rank))
    return nn.Sequential(*layers)


def make_step(kind: str, args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor):
    module = make_model(args.width, args.depth, args.rank).to(x.device)
    model = DDP(module, device_ids=[x.device.index] if x.device.type == "cuda" else None)
    params = module.parameters()
    if kind == "das":
        groups = td.find_core_groups(module)  # the inner module, not the DDP wrapper
        opt = td.DAS(params, torch.optim.SGD, core_groups=groups, alpha=args.alpha, lr=args.lr, momentum=0.9)
    elif kind == "sam":
        opt = td.SAM(params, torch.optim.SGD, rho=args.rho, lr=args.lr, momentum=0.9)
    else:
        opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9)
    loss_fn = nn.MSELoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()  # DDP all-reduces (averages) the gradients here
        if kind == "sam":
            opt.first_step(zero_grad=True)
            loss_fn(model(x), y).backward()  # synchronised as well
            opt.second_step(zero_grad=True)
        else:
            opt.step()

    return step


def timed_block(step, k: int, device: torch.device) -> float:
    """Seconds per step over ``k`` steps, between barriers; the slower rank's time."""
    dist.barrier()
    t = torch.tensor([time_block(step, k, device)], dtype=torch.float64, device=device)  # NCCL: on the GPU
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # also the closing barrier
    return t.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1024, help="global batch size")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3, help="hidden tensorized layers (plus the output layer)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--rho", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: leave as is)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    world = int(os.environ.get("WORLD_SIZE", 1))
    device, backend = torch.device("cpu"), "gloo"
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl" if torch.cuda.device_count() >= world else "gloo"  # NCCL needs a GPU per rank
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} is not divisible by world size {world}")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, args.width, generator=gen)
    y = torch.randn(args.batch, 16, generator=gen)
    local = args.batch // world
    x, y = x[rank * local : (rank + 1) * local].to(device), y[rank * local : (rank + 1) * local].to(device)

    steps = {kind: make_step(kind, args, x, y) for kind in KINDS}
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for r in range(-args.warmup, args.rounds):
        order = KINDS[r % 3 :] + KINDS[: r % 3]  # rotate so no optimizer always runs first
        for kind in order:
            t = timed_block(steps[kind], args.steps_per_round, device)
            if r >= 0:
                times[kind].append(t)

    if rank == 0:
        model = make_model(args.width, args.depth, args.rank)
        n_params = sum(p.numel() for p in model.parameters())
        n_groups = len(td.find_core_groups(model))
        where = f"CPU, {torch.get_num_threads()} threads/rank"
        if device.type == "cuda":
            where = torch.cuda.get_device_name(device)
        print(f"tensordas DDP step benchmark — torch {torch.__version__}, {backend}, {world} ranks, {where}")
        print(
            f"model: {args.depth + 1} tensorized layers, {n_groups} core groups, {n_params:,} parameters; "
            f"global batch {args.batch}; {args.rounds} rounds x {args.steps_per_round} steps (+{args.warmup} warm-up)"
        )
        for kind in KINDS:
            q = quantiles(times[kind])
            print(f"  {kind:5s} {1e3 * q['median']:8.3f} ms/step  (q25 {1e3 * q['q25']:.3f}, q75 {1e3 * q['q75']:.3f})")
        for name, num, den in (("DAS/plain", "das", "plain"), ("DAS/SAM", "das", "sam"), ("SAM/plain", "sam", "plain")):
            q = quantiles([a / b for a, b in zip(times[num], times[den])])
            print(f"  {name:9s} median {q['median']:.3f}  (q25 {q['q25']:.3f}, q75 {q['q75']:.3f})  paired per round")
        ratio_of_medians = statistics.median(times["das"]) / statistics.median(times["plain"])
        print(f"  DAS/plain ratio of medians {ratio_of_medians:.3f}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
