"""How long the reproduction's quick profile takes: single runs timed, the profile's run count, minutes at --jobs N.

For each bundled quick experiment (or ``--experiments``) and each of its methods, one run with the
experiment's quick settings on one confirmation seed, at the middle value of each strength grid, through
the task functions ``reproduce`` calls, with one torch thread (what a ``--jobs`` worker uses). Then the
profile's run count per experiment (every method x grid value x seed) and its expected minutes at
``--jobs N``: the sum of the run times over all runs, divided by N. Prints the run times (the record's
``wall_time_s``) and the estimate; on a machine loaded by other work the times are upper-end.

    python benchmarks/quick_budget.py                                   # every quick experiment, about 2 minutes
    python benchmarks/quick_budget.py --experiments noisy,compress --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

from tensordas.reproduce.families import family_config
from tensordas.reproduce.specs import bundled_specs
from tensordas.tasks import TASKS
from tensordas.training import METHODS


def _middle(values):
    return values[len(values) // 2] if isinstance(values, list) else values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", help="comma-separated bundled experiment names (default: every quick one)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes the estimate assumes (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    specs = [s for s in bundled_specs("quick") if TASKS[s.family].metrics]
    if args.experiments:
        wanted = args.experiments.split(",")
        specs = [s for s in specs if s.name in wanted]
    total = 0.0
    print(f"{'experiment':<16}{'method':<10}{'run s':>8}{'runs':>6}{'total s':>9}")
    for spec in specs:
        seed = spec.settings["seeds"][0]
        for method in spec.settings.get("optimizers", ["base", "sam", "das"]):
            settings = {**spec.settings, "seeds": [seed], "optimizers": [method]}
            strength = getattr(METHODS.get(method), "strength", None)
            grid = spec.settings.get(strength) if strength else None
            settings.update({k: _middle(v) for k, v in settings.items() if k in ("alpha", "rho")})
            if spec.family == "completion":
                settings["als"] = False
            config = family_config(dataclasses.replace(spec, settings=settings), "cpu")
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                record = TASKS[spec.family].run(config, out_dir=out, resume=False)[0].record
                wall = record.get("wall_time_s") or time.perf_counter() - start
            runs = (len(grid) if isinstance(grid, list) else 1) * len(spec.settings["seeds"])
            total += wall * runs
            print(f"{spec.name:<16}{method:<10}{wall:>8.1f}{runs:>6}{wall * runs:>9.0f}", flush=True)
    print(f"single-thread total {total / 60:.1f} min; at --jobs {args.jobs}: {total / 60 / args.jobs:.1f} min")


if __name__ == "__main__":
    main()
