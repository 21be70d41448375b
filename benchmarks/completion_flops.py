"""The full-batch CP completion step per observed entry, against a hand count of its flops and memory traffic.

The step ``tensordas complete`` takes on a large tensor (sampled path, ``CPModel.entries``): gather one
factor row per mode, multiply them elementwise, sum over the rank, mean squared error, backward, Adam.
Per observed entry, with N modes and rank R, counted from the code (``formats/cp.py``: index_select, N-1
elementwise products, a sum), not from the timings:

- forward: (N-1)·R multiplies + (R-1) adds ≈ N·R flops, plus 3 for the squared error;
- backward: each of the N-1 products sends R multiplies to each factor (2(N-1)·R), and each index_select's
  backward adds the entry's R-vector into its factor's gradient (N·R adds): (3N-2)·R flops;
- in all about (4N-2)·R flops (50 for N=3, R=5); the issue's rough count was 3·R·N forward and the same
  again backward (90 for N=3, R=5), which counts every op as a multiply-add.

Every op of the eager step streams a (B, R) array through memory, so the step is bound by memory traffic,
not by flops; the script therefore also times one streaming elementwise product of (B, R) float32 arrays
(12 bytes per element: two reads, one write) and reports the step's cost in those units. Times are CPU
seconds of this process (one thread), medians over rounds.

    python benchmarks/completion_flops.py [--entries 200000] [--ranks 5,10,20] [--shape 3000x3000x1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tensordas.models import CPModel
from tensordas.training import OptimizerConfig, build_optimizer, optimizer_step


def cpu_median(fn, rounds: int, k: int) -> float:
    """Median over ``rounds`` of CPU seconds per call of ``fn`` (blocks of ``k`` calls, after one warm-up)."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(k):
            fn()
        times.append((time.process_time() - t0) / k)
    return statistics.median(times)


def hand_flops(n: int, r: int) -> tuple[int, int]:
    """(forward, backward) flops per entry of the CP step, counted from formats/cp.py (module docstring)."""
    return n * r + 3, (3 * n - 2) * r


def measure_rank(shape: tuple[int, ...], idx: torch.Tensor, target: torch.Tensor, r: int, rounds: int, k: int):
    """CPU seconds of (one streaming (B, R) product, the forward, the whole step) at rank ``r``."""
    gen = torch.Generator().manual_seed(r)
    b = len(target)
    model = CPModel(shape, r, std="balanced", generator=gen)
    opt = build_optimizer(OptimizerConfig(method="base", base="adam", lr=1e-3), model.parameters(), None)

    def forward() -> None:
        with torch.no_grad():
            torch.mean((model.entries(idx) - target) ** 2)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model.entries(idx) - target) ** 2)
        loss.backward()
        return loss

    x, y = torch.randn(b, r, generator=gen), torch.randn(b, r, generator=gen)
    out = torch.empty(b, r)
    stream = cpu_median(lambda: torch.mul(x, y, out=out), rounds, 10 * k)
    return stream, cpu_median(forward, rounds, k), cpu_median(lambda: optimizer_step(opt, closure), rounds, k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--ranks", default="5,10,20")
    parser.add_argument("--shape", default="3000x3000x1000")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps-per-round", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = tuple(int(s) for s in args.shape.split("x"))
    n, b = len(shape), args.entries
    gen = torch.Generator().manual_seed(0)
    idx = torch.stack([torch.randint(s, (b,), generator=gen) for s in shape], dim=1)
    target = torch.randn(b, generator=gen)
    print(f"CP, shape {args.shape}, {b:,} observed entries (full batch, sampled path), one thread, "
          f"torch {torch.__version__}")  # fmt: skip
    print("| rank | forward ns/entry | step ns/entry (fwd+bwd+Adam) | hand flops/entry (fwd+bwd) | GFLOP/s "
          "| streaming product ns/entry-rank | step in streaming products |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in map(int, args.ranks.split(",")):
        stream, fwd, full = measure_rank(shape, idx, target, r, args.rounds, args.steps_per_round)
        f, bw = hand_flops(n, r)
        print(f"| {r} | {1e9 * fwd / b:.1f} | {1e9 * full / b:.1f} | {f} + {bw} = {f + bw} | "
              f"{(f + bw) * b / full / 1e9:.2f} | {1e9 * stream / (b * r):.2f} | {full / stream:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
