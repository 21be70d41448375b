"""Tensor completion against its peers: time to accuracy, final held-out R², peak memory and failures per seed.

Synthetic CP rank-5 tensors with 10% noise (``synthetic:shape=...,rank=5,noise=0.1,nnz=M``), 20% of the
observed entries held out by tensordas's own split (``split_entries``, the same split for every method on a
seed), fitted by

- tensordas: ``CompletionExperiment.run`` with base Adam and DAS(Adam) at the defaults (lr 0.01, the
  spectral start ``init="auto"``, convergence stopping ``tol`` 1e-3, ``--steps`` the upper bound), CP rank 5
  and Tucker rank (5, 5, 5) (which holds a CP rank-5 tensor exactly); ``--init balanced`` runs the random
  start scaled to the data instead (``init_scale`` 0.1, the default before the spectral start);
- pyttb's ``gcp_opt`` (Gaussian objective, L-BFGS-B, pyttb's defaults): a dense ``tensor`` with a ``mask``.
  pyttb's stochastic solvers on an ``sptensor`` are not a completion method: they treat every entry the
  ``sptensor`` does not store as an observed zero (GCP's sparse count-data model), and pyttb takes a
  ``mask`` only with a dense tensor and L-BFGS-B, so the dense route is the only one that completes;
- TensorLy's masked ALS: ``parafac(..., mask=)`` (CP, its defaults: SVD init, 100 iterations) and
  ``tucker(..., mask=)`` (Tucker/HOOI, its defaults), both on a dense array.

The dense peers need the tensor's cells in memory (float64 data, mask and reconstruction, several copies):
they run only up to ``--dense-cells`` cells (default 10^7; the 300^3 case took pyttb 415 s per seed in
issue 22) and the table says where they were skipped and why; 3000x3000x1000 (9e9 cells, 72 GB per dense
float64 copy) is tensordas only.

Every (method, seed) runs in a fresh child process with one thread, so its peak RSS above its baseline
(data loaded and split, before fitting) is its own; methods are interleaved per seed. Time to accuracy is
the first time (seconds of fitting, from the start of the method's solver) at which the held-out R² was
within ``--within`` (0.005) of the best held-out R² that ANY method reached on ANY seed of that problem (the
same tensor: seeds differ in the split and the start), and at least ``--floor`` (0.95; the noise allows about
0.990); a method that never got there failed that seed.
tensordas's clock starts before its start is built (the spectral start's cost counts, like pyttb's and
TensorLy's initialisations) and reads the progress callback after every step, so its times include its
evaluations every 50 steps; pyttb's iterates are recorded by L-BFGS-B's callback and TensorLy's CP iterates by parafac's
callback, and evaluated afterwards (untimed); TensorLy's Tucker has no callback, so only its final time
counts.

    pip install 'tensordas[peers]'   # pyttb; TensorLy comes with tensordas
    python benchmarks/completion_peers.py [--sizes 100,200,300,large] [--seeds 0,1,2] [--models cp,tucker]
        [--methods tensordas-base,...] [--large-nnz 1e6] [--steps 3000] [--init auto] [--dense-cells 1e7]
        [--json runs/bench/peers.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROBLEMS = {  # name: (shape, observed entries)
    "100": ((100, 100, 100), 50_000),
    "200": ((200, 200, 200), 200_000),
    "300": ((300, 300, 300), 200_000),
    "large": ((3000, 3000, 1000), 1_000_000),  # --large-nnz sets its observed entries
}
RANK = 5
MISSING = 0.2
METHODS = {"cp": ("tensordas-base", "tensordas-das", "pyttb-gcp", "tensorly-als"),
           "tucker": ("tensordas-base", "tensordas-das", "tensorly-als")}  # fmt: skip


def rss_bytes(field: str = "VmRSS") -> int:
    """Resident memory of this process (``VmHWM``: its peak so far), from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def spec(shape: tuple[int, ...], nnz: int) -> str:
    return f"synthetic:shape={'x'.join(map(str, shape))},rank={RANK},noise=0.1,seed=0,nnz={nnz}"


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    return float(1 - np.sum((pred - target) ** 2) / np.sum((target - target.mean()) ** 2))


def entries_text(nnz: int) -> str:
    """``10^7``, ``3·10^6``: an observed-entry count as the tables write it."""
    exponent = int(math.floor(math.log10(nnz)))
    mantissa = nnz / 10**exponent
    return f"10^{exponent}" if mantissa == 1 else f"{mantissa:g}·10^{exponent}"


def problem_label(run: dict) -> str:
    """A run's problem as the table names it: the size, and for ``large`` its observed entries (runs recorded
    before ``--large-nnz`` have no ``nnz``: the default)."""
    if run["problem"] != "large":
        return run["problem"]
    return f"large, {entries_text(run.get('nnz', PROBLEMS['large'][1]))}"


def cp_predict(weights: np.ndarray | None, factors: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    rows = np.ones((idx.shape[0], factors[0].shape[1]))
    for k, f in enumerate(factors):
        rows *= f[idx[:, k]]
    return rows @ (np.ones(rows.shape[1]) if weights is None else np.asarray(weights))


def dense_problem(split) -> tuple[np.ndarray, np.ndarray]:
    """The observed (training) entries as a dense float64 array (0 elsewhere) and its 0/1 mask."""
    x = np.zeros(split.shape, order="F")  # pyttb's layout (it copies a C-ordered array)
    mask = np.zeros(split.shape, dtype=bool, order="F")
    idx = tuple(split.train.indices.numpy().T)
    x[idx] = split.train.values.double().numpy()
    mask[idx] = True
    return x, mask


# ------------------------------------------------------------------------------------------ one run
def run_tensordas(exp, kind: str, seed: int) -> tuple[list[tuple[float, float]], dict]:
    """Train with ``kind`` (base or das); (seconds, held-out R²) at every evaluation."""
    stamps: dict[int, float] = {}

    def progress(_label: str, done: int, _total: int) -> None:
        stamps[done] = time.perf_counter()

    optimizer = next(o for o in exp.config.optimizer_configs if o.method == kind)
    # one step from a random start first, untimed: the engine's lazy imports and first-call set-up (8 s of wall
    # time on a loaded machine) are a process's, not the method's (the peers import theirs before their clocks)
    warm = type(exp)(dataclasses.replace(exp.config, steps=1, init="balanced"), exp.data)
    warm.run(optimizer, seed)
    begin = time.perf_counter()  # before the start is built: the spectral start's cost counts like the peers' inits
    result = exp.run(optimizer, seed, progress=progress)
    trace = [(stamps[row["step"]] - begin, row["test_r2"]) for row in result.curve]
    info = {"steps": result.record["steps"], "stop_reason": result.record["stop_reason"], "start_s": stamps[0] - begin}
    return trace, info


def run_pyttb(split, seed: int) -> tuple[list[tuple[float, float]], dict]:
    import pyttb as ttb
    from pyttb.gcp.fg_setup import Objectives
    from pyttb.gcp.optimizers import LBFGSB

    x, mask = dense_problem(split)
    data = ttb.tensor(x, copy=False)
    np.random.seed(seed)  # pyttb's "random" init (uniform factors scaled to the data's norm) draws from NumPy's
    iterates: list[tuple[float, np.ndarray]] = []
    solver = LBFGSB(callback=lambda v: iterates.append((time.perf_counter(), v.copy())))
    start = time.perf_counter()
    model, init, _ = ttb.gcp_opt(data, RANK, Objectives.GAUSSIAN, solver, init="random", mask=mask, printitn=0)
    end = time.perf_counter()
    idx, target = split.test.indices.numpy(), split.test.values.double().numpy()
    trace = [(0.0, r2(cp_predict(init.weights, init.factor_matrices, idx), target))]
    step = max(1, len(iterates) // 100)
    for t, v in iterates[::step]:
        m = init.copy()
        m.update(np.arange(len(split.shape)), v)
        trace.append((t - start, r2(cp_predict(m.weights, m.factor_matrices, idx), target)))
    trace.append((end - start, r2(cp_predict(model.weights, model.factor_matrices, idx), target)))
    return trace, {"iterations": len(iterates)}


def run_tensorly(split, model: str, seed: int) -> tuple[list[tuple[float, float]], dict]:
    import tensorly as tl
    from tensorly.decomposition import parafac, tucker

    tl.set_backend("numpy")
    x, mask = dense_problem(split)
    idx, target = split.test.indices.numpy(), split.test.values.double().numpy()
    iterates: list[tuple[float, list[np.ndarray], np.ndarray]] = []
    start = time.perf_counter()
    if model == "cp":
        cb = lambda cp, _err: iterates.append((time.perf_counter(), [f.copy() for f in cp[1]], cp[0].copy()))  # noqa: E731
        weights, factors = parafac(x, RANK, mask=mask, random_state=seed, callback=cb)
        end = time.perf_counter()
        trace = [(t - start, r2(cp_predict(w, f, idx), target)) for t, f, w in iterates]
        trace.append((end - start, r2(cp_predict(weights, factors, idx), target)))
    else:
        core, factors = tucker(x, (RANK,) * x.ndim, mask=mask, random_state=seed)
        end = time.perf_counter()
        full = tl.tucker_to_tensor((core, factors))
        trace = [(end - start, r2(full[tuple(idx.T)], target))]
    return trace, {"iterations": len(iterates) or None}


def child(args: argparse.Namespace) -> None:
    import logging

    import torch

    logging.getLogger().setLevel(logging.ERROR)  # pyttb logs a warning per copied factor matrix
    from tensordas.tasks.completion import CompletionConfig, CompletionExperiment

    torch.set_num_threads(1)
    shape, nnz = PROBLEMS[args.problem][0], args.nnz
    rank = RANK if args.model == "cp" else (RANK,) * len(shape)
    config = CompletionConfig(data=spec(shape, nnz), model=args.model, rank=rank, missing=MISSING,
                              optimizers=("base", "das"), base="adam", steps=args.steps, seeds=(args.seed,),
                              als=False, init=args.init)  # fmt: skip
    exp = CompletionExperiment.load(config)
    split = exp.split(args.seed)
    baseline = rss_bytes()
    if args.method.startswith("tensordas-"):
        trace, info = run_tensordas(exp, args.method.removeprefix("tensordas-"), args.seed)
    elif args.method == "pyttb-gcp":
        trace, info = run_pyttb(split, args.seed)
    else:
        trace, info = run_tensorly(split, args.model, args.seed)
    peak = (rss_bytes("VmHWM") - baseline) / 2**20
    print(json.dumps({"trace": trace, "peak_mb": peak, **info}))


# ------------------------------------------------------------------------------------------ parent
def skip_note(method: str, problem: str, dense_cells: float) -> str | None:
    shape, _ = PROBLEMS[problem]
    cells = math.prod(shape)
    if method.startswith("tensordas-") or cells <= dense_cells:
        return None
    gib = 8 * cells / 2**30
    why = "more than this machine's memory" if gib > 4 else "pyttb took 415 s per seed at 300^3 (issue 22)"
    return f"not run: dense, {cells:.2g} cells, {gib:.3g} GiB per float64 copy ({why}); --dense-cells {dense_cells:.2g}"


def measure(problem: str, nnz: int, model: str, method: str, seed: int, steps: int, init: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--problem", problem, "--nnz", str(nnz), "--model", model,
           "--method", method, "--seed", str(seed), "--steps", str(steps), "--init", init]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_to(trace: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, value in trace if value is not None and value >= target), None)


def summarise(runs: list[dict], within: float, floor: float = 0.95) -> list[dict]:
    """Per (problem, model, method): time to accuracy (median over seeds that got there), final R², peak, fails."""
    best: dict[tuple, float] = {}  # per (problem, model): the same tensor on every seed (seeds differ in split, start)
    for r in runs:
        if "trace" in r:
            key = (problem_label(r), r["model"])
            peak_r2 = max(v for _, v in r["trace"] if v is not None and math.isfinite(v))
            best[key] = max(best.get(key, -math.inf), peak_r2)
    rows: dict[tuple, dict] = {}
    for r in runs:
        row = rows.setdefault(
            (problem_label(r), r["model"], r["method"]),
            {
                "problem": problem_label(r),
                "model": r["model"],
                "method": r["method"],
                "seeds": [],
                "times": [],
                "final_r2": [],
                "peak_mb": [],
                "failed": [],
                "note": r.get("skipped"),
            },
        )
        if "trace" not in r:
            row["note"] = r.get("skipped") or r.get("error")
            continue
        target = max(best[(problem_label(r), r["model"])] - within, floor)  # nothing below the floor is "accuracy"
        t = time_to(r["trace"], target)
        row["seeds"].append(r["seed"])
        row["final_r2"].append(r["trace"][-1][1])
        row["peak_mb"].append(r["peak_mb"])
        if t is None:
            row["failed"].append(r["seed"])
        else:
            row["times"].append(t)
    return list(rows.values())


def table(rows: list[dict]) -> str:
    lines = ["| problem | model | method | time to target (s), median [per seed] | final held-out R² per seed "
             "| peak MB above baseline | seeds failed | note |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if not r["seeds"]:
            lines.append(f"| {r['problem']} | {r['model']} | {r['method']} | – | – | – | – | {r['note']} |")
            continue
        times = (
            f"{statistics.median(r['times']):.2f} [{', '.join(f'{t:.2f}' for t in r['times'])}]"
            if r["times"]
            else "never"
        )
        finals = ", ".join(f"{v:.4f}" for v in r["final_r2"])
        failed = f"{len(r['failed'])}/{len(r['seeds'])}" + (
            f" (seed {', '.join(map(str, r['failed']))})" if r["failed"] else ""
        )
        lines.append(f"| {r['problem']} | {r['model']} | {r['method']} | {times} | {finals} | "
                     f"{max(r['peak_mb']):.0f} | {failed} | {r['note'] or ''} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,200,300", help=f"problems among {', '.join(PROBLEMS)}")
    parser.add_argument("--models", default="cp,tucker")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=None, help="only these (comma-separated), e.g. tensordas-base")
    parser.add_argument("--large-nnz", type=float, default=PROBLEMS["large"][1],
                        help="observed entries of the large problem (3000x3000x1000), e.g. 1e7")  # fmt: skip
    parser.add_argument("--steps", type=int, default=3000, help="tensordas's upper bound on steps")
    parser.add_argument("--init", default="auto", help="tensordas's start (auto: spectral; balanced: random)")
    parser.add_argument("--within", type=float, default=0.005)
    parser.add_argument("--floor", type=float, default=0.95, help="no target below this held-out R²")
    parser.add_argument("--dense-cells", type=float, default=1e7)
    parser.add_argument("--json", default=None, help="also write every run's trace here")
    parser.add_argument("--from-json", default=None, help="print the table of runs written earlier (comma-separated)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--problem", help=argparse.SUPPRESS)
    parser.add_argument("--nnz", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.from_json:
        runs = [r for path in args.from_json.split(",") for r in json.loads(Path(path).read_text())]
        for r in runs:  # the notes as this version words them
            if "skipped" in r:
                r["skipped"] = skip_note(r["method"], r["problem"], args.dense_cells)
        print(table(summarise(runs, args.within, args.floor)))
        return None
    sizes = args.sizes.split(",")
    bad = [s for s in sizes if s not in PROBLEMS]
    if bad:
        parser.error(f"unknown size(s) {bad} (expected some of {', '.join(PROBLEMS)})")
    large_nnz = int(args.large_nnz)
    if large_nnz != args.large_nnz or large_nnz < 1:  # the synthetic spec checks the upper bound (10^8)
        parser.error(f"--large-nnz {args.large_nnz:g} is not a positive whole number")
    runs = []
    for problem in sizes:
        nnz = large_nnz if problem == "large" else PROBLEMS[problem][1]
        for model in args.models.split(","):
            for seed in map(int, args.seeds.split(",")):
                chosen = [m for m in METHODS[model] if args.methods is None or m in args.methods.split(",")]
                for method in chosen:  # interleaved per seed: load drifts hit every method alike
                    note = skip_note(method, problem, args.dense_cells)
                    tick = time.perf_counter()
                    out = (
                        {"skipped": note} if note else measure(problem, nnz, model, method, seed, args.steps, args.init)
                    )
                    runs.append({"problem": problem, "nnz": nnz, "model": model, "method": method, "seed": seed, **out})
                    final = out["trace"][-1][1] if "trace" in out else None
                    print(f"{problem_label(runs[-1])} {model} seed {seed} {method}: final R² {final} "
                          f"({time.perf_counter() - tick:.1f} s) {out.get('skipped') or out.get('error') or ''}",
                          file=sys.stderr, flush=True)  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(runs))
    print(table(summarise(runs, args.within, args.floor)))


if __name__ == "__main__":
    main()
