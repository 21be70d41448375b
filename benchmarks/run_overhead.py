"""What a reproduction run spends outside its optimizer steps: evaluations, checkpoint writes, the rest.

One base-SGD run of a classifier family's quick shape (``--model``, rank 8, 30 epochs of batches of 64 on
1077 training samples; 360 test, 270 validation and 430 corrupted samples evaluated every epoch) through
:func:`tensordas.training.train_classifier`, with one torch thread. The engine's checkpoint writes and the
loop's evaluations are timed in-process; the steps are the run's own ``train_time_s``. Two A/B pairs, each
repeated ``--reps`` times in alternation (the minimum reported): a checkpoint after every epoch against
``checkpoint_every_s=30`` (the classifier families' setting), and evaluations with and without
:func:`tensordas.layers.reused_weights`. The data are synthetic (their values do not change the cost).

    python benchmarks/run_overhead.py
    python benchmarks/run_overhead.py --model tr-mlp
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import torch

from tensordas.networks import build_network
from tensordas.training import OptimizerConfig, engine, train_classifier
from tensordas.training import loop as loop_module
from tensordas.training.loop import LoopConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tt-mlp", help="a tensorized MLP of tensordas.networks (default tt-mlp)")
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions of each variant (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1077, 64, generator=g), torch.randint(0, 10, (1077,), generator=g)
    noisy = y.clone()
    noisy[:430] = (noisy[:430] + 1) % 10
    test = (torch.randn(360, 64, generator=g), torch.randint(0, 10, (360,), generator=g))
    validation = (torch.randn(270, 64, generator=g), torch.randint(0, 10, (270,), generator=g))
    optimizer = OptimizerConfig(method="base", base="sgd", lr=0.05, momentum=0.9)
    timers = {"checkpoint writes": 0.0, "evaluations": 0.0}

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timers[name] += time.perf_counter() - start

        return wrapper

    engine._save = timed("checkpoint writes", engine._save)
    loop_module.evaluate = timed("evaluations", loop_module.evaluate)
    real_reuse = engine.reused_weights

    def run(folder: Path, every_s: float, reuse: bool) -> dict[str, float]:
        engine.reused_weights = real_reuse if reuse else (lambda model: contextlib.nullcontext())
        for name in timers:
            timers[name] = 0.0
        torch.manual_seed(0)
        model = build_network(args.model, 64, 10, rank=8)
        start = time.perf_counter()
        result = train_classifier(
            model, optimizer, (x, noisy), test, loop=LoopConfig(epochs=30, batch_size=64), seed=0,
            validation=validation, true_labels=y, checkpoint=folder / "c.pt", checkpoint_every_s=every_s,
            resume=False,
        )  # fmt: skip
        wall = time.perf_counter() - start
        out = {"wall": wall, "steps": result.train_time_s, **timers}
        out["rest"] = wall - sum(v for k, v in out.items() if k != "wall")
        return out

    variants = {
        "checkpoint every epoch, no reuse": (0.0, False),
        "checkpoint every 30 s, no reuse": (30.0, False),
        "checkpoint every 30 s, reused weights": (30.0, True),
    }
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), 0.0, True)  # warm-up: lazy imports, allocator
        for _ in range(args.reps):
            for name, (every_s, reuse) in variants.items():
                r = run(Path(tmp), every_s, reuse)
                if name not in best or r["wall"] < best[name]["wall"]:
                    best[name] = r
    print(f"{args.model}: one 30-epoch base run, seconds (the fastest of {args.reps} per variant)")
    keys = ["wall", "steps", "evaluations", "checkpoint writes", "rest"]
    print(f"{'variant':40s}" + "".join(f"{k:>19s}" for k in keys))
    for name, r in best.items():
        print(f"{name:40s}" + "".join(f"{r[k]:19.3f}" for k in keys))


if __name__ == "__main__":
    main()
