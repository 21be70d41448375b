"""Run a function on N gloo ranks spawned on this machine and collect what each rank returns.

Shared by the DDP and FSDP2 tests: ``run_on_ranks(run, kinds, world, outdir)`` calls
``run(kind, rank, world)`` for every kind on every rank and returns one ``{kind: result}`` per rank.
``run`` must be a module-level function (the spawned processes import it).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, run: Callable, kinds: Sequence[str], world: int, port: int, outdir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save({kind: run(kind, rank, world) for kind in kinds}, os.path.join(outdir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_on_ranks(run: Callable, kinds: Sequence[str], world: int, outdir: Path) -> list[dict[str, Any]]:
    """Spawn ``world`` gloo ranks, run every kind on each, return each rank's results."""
    mp.spawn(_worker, args=(run, list(kinds), world, _free_port(), str(outdir)), nprocs=world, join=True)
    return [torch.load(outdir / f"rank{r}.pt") for r in range(world)]
