"""The dynamics study under each base optimizer, past convergence, with DAS's balance option.

For each base (plain GD, heavy-ball momentum 0.9, Adam) and seed: the base alone, SAM, DAS and DAS with
``balance=beta`` for each beta, all from the study's shared initialisation (``tensordas dynamics``'s
Tucker-2 problem, float64). Records per curve the final loss and Q, the step at which the loss
converged (excess over the Eckart-Young optimum <= 1e-4 of the initial excess) and Q there, Q at
checkpoints, and Q every ``--every`` steps; writes them as JSON and prints a table. docs/dynamics.md
reports and discusses the numbers.

    OMP_NUM_THREADS=1 python benchmarks/dynamics_bases.py --json benchmarks/results/dynamics_bases.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tensordas.tasks import dynamics as dyn


def run_base(
    config: dyn.DynamicsConfig, betas: list[float], every: int, checkpoints: list[int], only: set[str] | None = None
) -> dict[str, Any]:
    """Every curve for one base and seed: the base alone, SAM, DAS, then DAS+balance per beta (only
    the labels in ``only`` when given)."""
    problem = dyn.make_problem(config)
    loss_min = problem.loss_min()
    runs: list[tuple[str, dyn.DynamicsConfig, str]] = [(name, config, name) for name in config.curves]
    runs += [(f"DAS+balance={b:g}", dataclasses.replace(config, balance=b), dyn.BALANCED) for b in betas]
    runs = [r for r in runs if only is None or r[0] in only or (r[0] == r[2] == config.curves[0] and "base" in only)]
    out: dict[str, Any] = {"loss_min": loss_min, "curves": {}}
    for label, cfg, name in runs:
        start = time.perf_counter()
        curve = dyn.train_curve(name, problem, cfg)
        t = dyn.converged_step(curve.loss, loss_min)
        out["curves"][label] = {
            "final_Q": curve.Q[-1],
            "final_loss": curve.loss[-1],
            "final_excess_loss": curve.loss[-1] - loss_min,
            "steps": config.steps,
            "converged_step": t,
            "Q_converged": None if t is None else curve.Q[t],
            "Q_at": {str(c): curve.Q[c] for c in checkpoints if c <= config.steps},
            "loss_at": {str(c): curve.loss[c] for c in checkpoints if c <= config.steps},
            "Q_every": curve.Q[::every],
            "n_final": curve.n_final,
            "seconds": round(time.perf_counter() - start, 1),
        }
        row = out["curves"][label]
        print(
            f"{config.base:8s} seed {config.seed} {label:18s} final Q {row['final_Q']:10.4f}  "
            f"loss {row['final_loss']:.6f}  converged at {t}  Q there "
            f"{row['Q_converged'] if t is None else round(row['Q_converged'], 4)}",
            flush=True,
        )
    return out


def markdown(data: dict[str, Any]) -> str:
    """The results as a Markdown table: base, seed, curve, steps, converged step, Q there, final Q, final loss."""
    lines = [
        "| base | seed | method | steps | converged at | Q at convergence | final Q | final loss | final excess loss |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for base, seeds in data["results"].items():
        for seed, res in seeds.items():
            for label, c in res["curves"].items():
                q_conv = "—" if c["Q_converged"] is None else f"{c['Q_converged']:.2f}"
                lines.append(
                    f"| {base} | {seed} | {label} | {c['steps']} | {c['converged_step']} | {q_conv} | "
                    f"{c['final_Q']:.2f} | {c['final_loss']:.6f} | {c['final_excess_loss']:.1e} |"
                )
    return "\n".join(lines)


def checkpoint_markdown(data: dict[str, Any]) -> str:
    """``Q`` of every curve at the checkpoints, as a Markdown table (one row per base, seed and curve)."""
    points = data["checkpoints"]
    lines = ["| base | seed | method | " + " | ".join(f"Q at {c}" for c in points) + " |"]
    lines.append("|---|---:|---|" + "---:|" * len(points))
    for base, seeds in data["results"].items():
        for seed, res in seeds.items():
            for label, c in res["curves"].items():
                cells = " | ".join(f"{c['Q_at'][str(p)]:.2f}" for p in points)
                lines.append(f"| {base} | {seed} | {label} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run every base and seed, print and write the numbers."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bases", default="sgd,momentum,adam")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--betas", default="0.001,0.01,0.1,1")
    p.add_argument("--seeds", default="0")
    p.add_argument("--eta", type=float, default=dyn.DynamicsConfig.eta)
    p.add_argument("--rho", type=float, default=dyn.DynamicsConfig.rho)
    p.add_argument("--curves", default=None, help="run only these labels (e.g. SAM,DAS+balance=0.1; base: the base)")
    p.add_argument("--every", type=int, default=100, help="keep Q every this many steps in the JSON")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--table-from", type=Path, default=None, help="print the Markdown table of a written JSON, run nothing"
    )
    args = p.parse_args(argv)
    if args.table_from is not None:
        data = json.loads(args.table_from.read_text(encoding="utf-8"))
        print(markdown(data), checkpoint_markdown(data), sep="\n\n")
        return 0
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead, and the numbers stay independent of them
    betas = [float(b) for b in args.betas.split(",") if b]
    only = None if args.curves is None else set(args.curves.split(","))
    checkpoints = [0, 500, 1000, 2000, 5000, 10000, 20000, 40000, args.steps]
    results: dict[str, Any] = {}
    start = time.perf_counter()
    for base in args.bases.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg = dyn.DynamicsConfig(steps=args.steps, base=base, seed=seed, eta=args.eta, rho=args.rho)
            results.setdefault(base, {})[str(seed)] = run_base(cfg, betas, args.every, checkpoints, only)
    data = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "config": dyn.DynamicsConfig(steps=args.steps, eta=args.eta, rho=args.rho).to_dict(),
        "betas": betas,
        "momentum": dyn.MOMENTUM,
        "converged_tol": dyn.CONVERGED_TOL,
        "checkpoints": sorted(set(c for c in checkpoints if c <= args.steps)),
        "q_every": args.every,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_end": os.getloadavg(),
        },
        "seconds": round(time.perf_counter() - start, 1),
        "results": results,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
