"""One-pass candidates through the engine: wall time per training step of base vs DAS, DAS in gradient form with
balance, MSAM, jreg, SAF, MESA, DAS+jreg and SAM (issue 21).

Each method trains its own copy of one classifier (``--model``: a network of :mod:`tensordas.networks`, rank 8,
or ``compress``, the compress family's quick experiment model: the dense MLP 64-256-256-10 with its two hidden
layers decomposed by TT-SVD at compression ratio 8, as ``reproduce/configs/compress.toml`` sets) on a fixed
synthetic data set through the library's engine (:func:`tensordas.training.engine.train`,
the path every classifier family takes: the closure, the loss term, the optimizer step, the step
timer). The methods run in rounds, each a block of steps per method in a rotating order, so load on the
machine hits them alike; the loss terms are active in every timed step (SAF's and MESA's start epoch 0,
E = 1; the first epoch, which only fills SAF's memory, is not timed). Reported: the median over rounds
of each method's median step time, and of the per-round ratios method/base and method/SAM.

    python benchmarks/lossterm_step.py --threads 1
    python benchmarks/lossterm_step.py --model compress --threads 1
    python benchmarks/lossterm_step.py --model tr-resnet20 --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

from tensordas.layers import tensorize
from tensordas.networks import build_network
from tensordas.tasks.compress import select_layers
from tensordas.training import OptimizerConfig, engine

METHODS = {
    "base": {},
    "das": {},
    "das-gradient-balance": {},
    "msam": {},
    "jreg": {},
    "saf": {"saf_start": 0, "saf_epochs": 1},
    "mesa": {"mesa_start": 0},
    "das+jreg": {},
    "sam": {},
}


COMPRESS = "compress"


def build_model(name: str, shape: tuple[int, ...], classes: int) -> torch.nn.Module:
    """The network ``name`` at rank 8, or for ``compress`` the compress family's decomposed MLP (compress.toml:
    model "mlp", format "tt", ratio 8; a random dense model: the decomposition's ranks depend on shapes only)."""
    if name != COMPRESS:
        return build_network(name, shape, classes, rank=8)
    dense = build_network("mlp", shape, classes)
    model, _ = tensorize(dense, "tt", ratio=8, include=select_layers(dense), init="decompose")
    return model


def run_block(model, method: str, data, batch: int, steps: int) -> list[float]:
    """``steps`` timed steps of ``method`` (after an untimed first epoch of ``steps`` steps)."""
    x, y = data
    n = batch * steps
    plan = engine.Epochs(
        epochs=2,
        sizes=[batch] * steps,
        order=lambda epoch: torch.arange(n),
        take=lambda idx: (x[idx], y[idx], idx),
    )

    def loss(b):
        xb, yb, idx = b
        logits = model(xb)
        exposed = {"logits": logits, "targets": yb, "indices": idx, "n_samples": n, "inputs": xb,
                   "forward": lambda m, v: m(v)}  # fmt: skip
        return F.cross_entropy(logits, yb), None, exposed

    config = OptimizerConfig(method=method, lr=0.01, momentum=0.9, **METHODS[method])
    result = engine.train(model, config, plan, loss, lambda row: {}, supplies=engine.CONTEXT_FIELDS, family="benchmark")
    return result.step_times[steps:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tt-mlp", help=f"a network name, or {COMPRESS!r} (module docstring)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (1, 8, 8)
    torch.manual_seed(0)
    n = args.batch * args.steps
    data = (torch.randn(n, *shape), torch.randint(0, 10, (n,)))
    torch.manual_seed(0)
    proto = build_model(args.model, shape, 10)
    models = {m: build_model(args.model, shape, 10) for m in METHODS}
    for m in models.values():
        m.load_state_dict(proto.state_dict())
    names = list(METHODS)
    per_round: dict[str, list[float]] = {m: [] for m in names}
    for r in range(args.rounds + 1):
        order = names[r % len(names) :] + names[: r % len(names)]
        for m in order:
            times = run_block(models[m], m, data, args.batch, args.steps)
            if r > 0:  # round 0 warms up
                per_round[m].append(statistics.median(times))
    med = {m: statistics.median(v) * 1e3 for m, v in per_round.items()}
    ratio = {
        m: {
            "over_base": statistics.median(a / b for a, b in zip(per_round[m], per_round["base"])),
            "over_sam": statistics.median(a / b for a, b in zip(per_round[m], per_round["sam"])),
        }
        for m in names
    }
    print(f"model {args.model}, batch {args.batch}, {args.rounds} rounds x {args.steps} steps, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(f"{'method':10s} {'ms/step':>8s} {'/base':>7s} {'/SAM':>7s}")
    for m in names:
        print(f"{m:10s} {med[m]:8.3f} {ratio[m]['over_base']:7.3f} {ratio[m]['over_sam']:7.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "ms_per_step": med, "ratios": ratio}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
