"""What every comparison task shares: a grid of (method, seed) runs, resumable, with one results format.

A task supplies ``run_one(optimizer_config, seed, progress) -> RunResult``; :func:`run_grid` runs the
grid, keeping each finished run in the experiment's :class:`~tensordas.tasks.runstore.RunStore` (one file
per run under ``OUT/runs/``, with a fingerprint of everything that determines it), so an interrupted
experiment resumes without recomputing finished runs, and a changed setting recomputes exactly the runs
it affects. Each record gets the schema's shared keys (:mod:`tensordas.tasks.records`) and is checked
against it.

A method's strength given as a list is tuned: its candidates run on every seed, and one per method and
seed is picked on validation data (:mod:`tensordas.tasks.selection`, also the grid's extension past its
edge under ``--tune``). Inside ``with parallel_runs(jobs):`` the runs not yet stored go to worker
processes (:mod:`tensordas.tasks.parallel`), the extensions past an edge as a second wave once every
choice is known; the records are those of a serial run.
:func:`run_comparison` is the grid as every comparison family runs it (tuned on its validation split,
extended with ``tune``); :meth:`~tensordas.tasks.protocol.Task.write_outcome` writes the common format
(:mod:`tensordas.tasks.writers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..reporting import ProgressFn
from ..training import OptimizerConfig
from .config import ComparisonConfig, check_seeds
from .parallel import in_parallel, submitted
from .protocol import Metric
from .records import check_record
from .runstore import RunResult, RunStore, fingerprint, run_key, run_store
from .selection import grid_extension, select_run

__all__ = ["run_comparison", "run_grid"]

RunOne = Callable[[OptimizerConfig, int, ProgressFn | None], RunResult]


def run_grid(
    task: str,
    settings: Mapping[str, Any],
    optimizers: Sequence[OptimizerConfig],
    seeds: Sequence[int],
    run_one: RunOne,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: ProgressFn | None = None,
    select: Metric | None = None,
    extend: bool = False,
) -> list[RunResult]:
    """Run every optimizer on every seed (seed-major, so partial results already compare methods).

    ``settings`` are the task settings that determine a run besides its optimizer and seed.
    With ``out_dir``, each finished run is stored and, with ``resume``, reused when its
    fingerprint matches. Candidates of one method (several strength values, ``grid=True``) need
    ``select``: the metric whose validation value (:func:`validation_key`) picks one per seed
    (module docstring); with ``select``, every method with a strength records ``selected`` and
    ``candidates``; the base does where its ``lr`` is a list. With ``extend`` (``--tune``), a value picked at
    a grid's edge gets one more candidate past it before the choice is final (module docstring).
    Returns one result per (method, seed).
    """
    if not optimizers:
        raise ValueError("no optimizer to run")
    if not seeds:
        raise ValueError("no seed to run")
    keys = [run_key(o, 0) for o in optimizers]
    if len(set(keys)) != len(keys):
        raise ValueError(f"optimizers are listed twice: {[o.label for o in optimizers]}")
    groups: dict[str, list[OptimizerConfig]] = {}
    for opt in optimizers:
        groups.setdefault(opt.label, []).append(opt)
    if select is None and any(len(g) > 1 for g in groups.values()):
        raise ValueError(f"{task}: a strength grid needs a validation metric to select by")
    check_seeds(list(seeds))
    store = run_store(out_dir)
    order = [(seed, group) for seed in seeds for group in groups.values()]
    pending = _pending(task, settings, order, store, resume) if in_parallel() else []
    picked: list[tuple[list[tuple[OptimizerConfig, RunResult]], RunResult, bool]] = []  # runs, choice, tuned
    with submitted(pending, run_one) as futures:
        for seed, group in order:
            runs = [
                (
                    opt,
                    _fetch(
                        task, settings, opt, seed, run_one, store, resume, progress, futures.get(run_key(opt, seed))
                    ),
                )
                for opt in group
            ]
            if select is None or group[0].strength is None or (len(group) == 1 and group[0].spec.is_base):
                picked.append((runs, runs[0][1], False))  # an untuned base keeps its plain record
            else:
                picked.append((runs, select_run(task, runs, select), True))
    if extend:  # one more candidate past each edge; it depends on the choice, so the extensions are a second wave
        extensions = {
            i: grid_extension(runs, result.record["selected"])
            for i, (runs, result, tuned) in enumerate(picked)
            if tuned and "edge" in result.record["selected"]
        }
        wave = [(order[i][0], [extra]) for i, extra in extensions.items() if extra is not None]
        pending = _pending(task, settings, wave, store, resume) if in_parallel() else []
        with submitted(pending, run_one) as futures:
            for i, extra in extensions.items():
                runs, result, _ = picked[i]
                if extra is not None:
                    seed = order[i][0]
                    future = futures.get(run_key(extra, seed))
                    runs.append((extra, _fetch(task, settings, extra, seed, run_one, store, resume, progress, future)))
                    result = select_run(task, runs, select)
                result.record["selected"]["extended"] = extra is not None
                picked[i] = (runs, result, True)
    return [result for _, result, _ in picked]


def _pending(
    task: str,
    settings: Mapping[str, Any],
    order: Sequence[tuple[int, Sequence[OptimizerConfig]]],
    store: RunStore,
    resume: bool,
) -> list[tuple[str, OptimizerConfig, int]]:
    """``(key, optimizer, seed)`` of each run in ``order`` that the store does not hold (all without
    ``resume``): what the workers of a :func:`parallel_runs` block compute."""
    return [
        (run_key(opt, seed), opt, seed)
        for seed, group in order
        for opt in group
        if not (resume and store.load(run_key(opt, seed), fingerprint(task, settings, opt.as_dict(), seed)))
    ]


def _fetch(
    task: str,
    settings: Mapping[str, Any],
    opt: OptimizerConfig,
    seed: int,
    run_one: RunOne,
    store: RunStore,
    resume: bool,
    progress: ProgressFn | None,
    future: Future | None = None,
) -> RunResult:
    """One run of the grid: stored and reused by its key and fingerprint; with ``future``, computed by a worker."""

    def compute() -> RunResult:
        if future is None:
            done = run_one(opt, seed, progress)
        else:
            done = future.result()
            if progress is not None:
                progress(f"{opt.label} s{seed}", 1, 1)
        done.record.update(optimizer=opt.label, method=opt.method, base=opt.base, seed=seed, selected={})
        done.record["method_title"] = opt.spec.title  # what ran, e.g. LookSAM's per-tensor variant
        done.record.update(opt.record_fields())
        check_record(done.record, f"{task} run {opt.label} seed {seed}")
        return done

    def reused() -> None:
        if progress is not None:
            progress(f"{opt.label} s{seed}", 1, 1)

    print_ = fingerprint(task, settings, opt.as_dict(), seed)
    return store.fetch(run_key(opt, seed), print_, compute, resume=resume, reused=reused)


def run_comparison(
    task: str,
    config: ComparisonConfig,
    optimizers: Sequence[OptimizerConfig],
    run_one: RunOne,
    metric: Metric,
    *,
    settings: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: ProgressFn | None = None,
) -> list[RunResult]:
    """:func:`run_grid` as a comparison family runs it: ``config``'s seeds and ``settings`` (default:
    ``config.settings()``), each strength list picked on ``metric``'s validation value where ``config``
    holds out a validation split, and a grid extended past its edge with ``config.tune``."""
    return run_grid(
        task,
        config.settings() if settings is None else settings,
        optimizers,
        config.seeds,
        run_one,
        out_dir=out_dir,
        resume=resume,
        progress=progress,
        select=metric if config.validation_fraction > 0 else None,
        extend=config.tune,
    )
