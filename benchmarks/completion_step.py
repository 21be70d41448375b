"""Wall time per tensor-completion step: base vs DAS vs SAM, interleaved in one process.

Tucker and TR models on a 100x100x100 synthetic low-rank tensor with 30% of the entries observed
(full batch over the observed entries, the training step `tensordas complete` takes). Prints the
median ratios DAS/base and DAS/SAM per step for each model.

    python benchmarks/completion_step.py [--size 100] [--rounds 15] [--steps-per-round 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from step_overhead import quantiles, time_block

import tensordas as td
from tensordas.data import Entries, EntryPredictor, from_array, split_entries, synthetic_tensor
from tensordas.models import CPModel, TRModel, TTModel, TuckerModel
from tensordas.training import OptimizerConfig, build_optimizer, optimizer_step

KINDS = ("base", "das", "sam")
MODELS = {"cp": CPModel, "tucker": TuckerModel, "tt": TTModel, "tr": TRModel}


def make_steps(
    model_name: str,
    rank: int,
    shape: tuple[int, ...],
    train: Entries,
    seed: int = 0,
    kinds: tuple[str, ...] = KINDS,
    batch_size: int | None = None,
) -> dict:
    """One training-step function per optimizer, each on its own copy of the same initial model.

    A step takes every entry of ``train`` (full batch, the dense path for small tensors) or, with
    ``batch_size``, a random mini-batch of them (the same sequence of batches for every optimizer).
    """
    steps = {}
    for kind in kinds:
        gen = torch.Generator().manual_seed(seed)
        model = MODELS[model_name](shape, rank, std="balanced", generator=gen)
        predict = EntryPredictor(model, shape, dense=False if batch_size else None)
        opt = build_optimizer(
            OptimizerConfig(method=kind, base="adam", lr=1e-3, alpha=0.05, rho=0.05),
            model.parameters(),
            td.find_core_groups(model),
        )
        picks = torch.Generator().manual_seed(seed + 1)

        def step(opt=opt, predict=predict, picks=picks) -> None:
            batch = train.take(torch.randint(len(train), (batch_size,), generator=picks)) if batch_size else train
            idx, target = batch.indices, batch.values

            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                loss = torch.mean((predict(idx) - target) ** 2)
                loss.backward()
                return loss

            optimizer_step(opt, closure)

        steps[kind] = step
    return steps


def cpu_block(fn, k: int) -> float:
    """CPU seconds of this process per call of ``fn`` over ``k`` calls: with one thread, the time it computed,
    without the time it waited for cores that other processes held (a shared machine)."""
    t0 = time.process_time()
    for _ in range(k):
        fn()
    return (time.process_time() - t0) / k


def measure(steps: dict, rounds: int, k: int, warmup: int = 2, cpu_time: bool = False) -> dict[str, list[float]]:
    """Per optimizer, seconds per step of each round (blocks of ``k`` steps, order rotated every round);
    wall-clock seconds, or the process's CPU seconds with ``cpu_time``."""
    kinds = tuple(steps)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu = torch.device("cpu")
    for r in range(-warmup, rounds):
        order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # rotate so no optimizer always runs first
        for kind in order:
            t = cpu_block(steps[kind], k) if cpu_time else time_block(steps[kind], k, cpu)
            if r >= 0:
                times[kind].append(t)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--observed", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (args.size,) * 3
    data = from_array(synthetic_tensor(shape, rank=5, noise=0.1, seed=0), "synthetic")
    split = split_entries(data, missing=1 - args.observed, seed=0)
    print(f"tensor {shape}, {len(split.train):,} observed entries, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip
    for model_name, rank in (("tucker", 8), ("tr", 5)):
        start = time.perf_counter()
        times = measure(make_steps(model_name, rank, data.shape, split.train), args.rounds, args.steps_per_round)
        med = {kind: statistics.median(v) for kind, v in times.items()}
        das_base = quantiles([d / b for d, b in zip(times["das"], times["base"])])
        das_sam = quantiles([d / s for d, s in zip(times["das"], times["sam"])])
        print(
            f"{model_name:>6} rank {rank}: per step base {1e3 * med['base']:.2f} ms | das {1e3 * med['das']:.2f} ms | "
            f"sam {1e3 * med['sam']:.2f} ms   DAS/base {das_base['median']:.3f} "
            f"[{das_base['q25']:.3f}, {das_base['q75']:.3f}]   DAS/SAM {das_sam['median']:.3f} "
            f"[{das_sam['q25']:.3f}, {das_sam['q75']:.3f}]   ({time.perf_counter() - start:.0f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
