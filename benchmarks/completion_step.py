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
from tensordas.data import from_array, split_entries, synthetic_tensor
from tensordas.tasks.completion import MODELS, _Predictor
from tensordas.training import OptimizerConfig, build_optimizer, optimizer_step

KINDS = ("base", "das", "sam")


def make_steps(model_name: str, rank: int, data, train, seed: int = 0) -> dict:
    """One training-step function per optimizer, each on its own copy of the same initial model."""
    steps = {}
    for kind in KINDS:
        gen = torch.Generator().manual_seed(seed)
        model = MODELS[model_name](data.shape, rank, std="balanced", generator=gen)
        predict = _Predictor(model, data.shape)
        opt = build_optimizer(
            OptimizerConfig(method=kind, base="adam", lr=1e-3, alpha=0.05, rho=0.05),
            model.parameters(),
            td.find_core_groups(model),
        )

        def closure(opt=opt, predict=predict) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = torch.mean((predict(train.indices) - train.values) ** 2)
            loss.backward()
            return loss

        steps[kind] = lambda opt=opt, closure=closure: optimizer_step(opt, closure)
    return steps


def measure(steps: dict, rounds: int, k: int, warmup: int = 2) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    cpu = torch.device("cpu")
    for r in range(-warmup, rounds):
        order = KINDS[r % 3 :] + KINDS[: r % 3]  # rotate so no optimizer always runs first
        for kind in order:
            t = time_block(steps[kind], k, cpu)
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
        times = measure(make_steps(model_name, rank, data, split.train), args.rounds, args.steps_per_round)
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
