"""DAS or SAM under FSDP2 (``torch.distributed.fsdp.fully_shard``), launched with torchrun.

    torchrun --standalone --nproc_per_node 2 examples/fsdp2_train.py                 # DAS, CPU/gloo or GPU/nccl
    torchrun --standalone --nproc_per_node 2 examples/fsdp2_train.py --optimizer sam
    torchrun --standalone --nproc_per_node 2 examples/fsdp2_train.py --optimizer sgd  # plain FSDP2, for timing
    torchrun --standalone --nproc_per_node 2 examples/fsdp2_train.py --mixed-precision # bf16 compute
    torchrun --standalone --nproc_per_node 2 examples/fsdp2_train.py --offload         # GPU only

The same tiny tensorized MLP as ``examples/ddp_train.py`` (a TT layer and a CP layer) learns a
random linear map. Each tensorized layer is sharded with ``fully_shard``, then the root; only
then are the core groups found and the optimizer built, because ``fully_shard`` replaces the
parameters with ``DTensor`` shards. Every rank takes its slice of the same global batch; FSDP2
reduce-scatters (averages) the gradients in ``backward()``, and DAS sums its squared norms over
the shards with one all-reduce per step, so every rank computes the same scales. SAM runs two
ordinary backward passes. Rank 0 prints the loss and the mean time per step.

``--mixed-precision`` computes in bf16 (``MixedPrecisionPolicy``) while the sharded parameters,
their gradients and so DAS stay in float32. ``--offload`` keeps the shards and their gradients
on the host (``CPUOffloadPolicy``, which needs a GPU): DAS then scales on the host and sums its
norms through the GPU's process group.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

import tensordas as td


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=["das", "sam", "sgd"], default="das")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256, help="global batch size")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--rho", type=float, default=0.05)
    parser.add_argument("--mixed-precision", action="store_true", help="bf16 compute, float32 parameters")
    parser.add_argument("--offload", action="store_true", help="shards and gradients on the host (GPU only)")
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} is not divisible by world size {world}")
    if args.offload and not use_cuda:
        raise SystemExit("--offload needs a GPU: FSDP2's CPUOffloadPolicy pins host memory")

    torch.manual_seed(0)  # the same initial weights on every rank before sharding
    w = args.width
    model = nn.Sequential(
        td.TensorizedLinear(w, w, "tt", rank=8), nn.ReLU(), td.TensorizedLinear(w, 16, "cp", rank=8)
    ).to(device)
    target = torch.randn(w, 16, device=device) / w**0.5

    mesh = init_device_mesh(device.type, (world,))
    policies = {}
    if args.mixed_precision:
        policies["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if args.offload:
        policies["offload_policy"] = CPUOffloadPolicy()
    for layer in model:
        if isinstance(layer, td.TensorizedLinear):
            fully_shard(layer, mesh=mesh, **policies)
    fully_shard(model, mesh=mesh, **policies)
    # After sharding: the parameters are now DTensors; build the groups and the optimizer from them.
    params = model.parameters()
    if args.optimizer == "das":
        groups = td.find_core_groups(model)
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
        loss = nn.functional.mse_loss(model(x).float(), y)
        loss.backward()  # FSDP2 reduce-scatters (averages) the gradients here
        if args.optimizer == "sam":
            opt.first_step(zero_grad=True)  # e = rho * g / ||g||, ||g|| summed over the shards
            nn.functional.mse_loss(model(x).float(), y).backward()
            opt.second_step(zero_grad=True)
        else:
            opt.step()  # DAS: one all-reduce of the squared shard norms, then the same scales on every rank
        if use_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if step % 10 == 0 or step == args.steps - 1:
            dist.all_reduce(loss := loss.detach().clone())  # the global-batch loss (mean over ranks)
            if rank == 0:
                print(f"step {step:4d}  loss {loss.item() / world:.5f}", flush=True)

    if rank == 0:
        tail = times[len(times) // 5 :]  # skip warm-up
        setup = "FSDP2" + " bf16" * args.mixed_precision + " offload" * args.offload
        print(f"{args.optimizer}: {setup}, {world} ranks, {1e3 * sum(tail) / len(tail):.3f} ms/step", flush=True)
    dist.barrier()  # let every rank finish its collectives before the process group goes away
    dist.destroy_process_group()
    # FSDP2 keeps its process group alive past destroy_process_group(), so gloo's worker threads
    # outlive it and may free a finished collective's tensor while Python shuts down, which
    # aborts the process ("terminate called without an active exception"; the gloo thread
    # needs the GIL mid-finalisation, cf. pytorch/pytorch#179291). All work is done and flushed:
    # leave without interpreter shutdown.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
