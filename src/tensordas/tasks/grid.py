"""What every comparison task shares: a grid of (method, seed) runs, resumable, with one results format.

A task supplies ``run_one(optimizer_config, seed, progress) -> RunResult``; :func:`run_grid` runs the
grid, keeping each finished run as its own JSON file under ``OUT/runs/`` (:class:`RunStore`: written
atomically, with a fingerprint of everything that determines it), so an interrupted experiment resumes
without recomputing finished runs, and a changed setting recomputes exactly the runs it affects. Each
record gets the schema's shared keys (:mod:`tensordas.tasks.records`) and is checked against it.

Tuning: a strength given as a list (``alpha = [0.1, 1, 10]``; the base's is its learning rate,
``lr = [0.025, 0.05, 0.1]``) makes one candidate run per (method, value, seed), each stored under its
own key (``das-sgd-alpha10-seed0``, ``base-sgd-lr0.05-seed0``) and recording a validation metric
(``val_acc``) measured on a split carved from the training data. :func:`select_candidate` picks, per
method and seed, the value with the best validation metric in the family's direction (ties: the lower
``val_loss``, then the first value); the picked run's record becomes the method's record for that
seed, with ``selected`` (``{"alpha": 10.0, "edge": false}``) and ``candidates`` (every value tried with
its validation metric and loss), so the selection can be redone from the records alone. Test metrics
are never read by the selection.

Grid edges: a value picked at the smallest or largest value of its grid is marked ``"edge": true`` in
``selected``. With ``extend`` (``--tune``), the grid is then extended once past that edge, by one more
value in the same geometric progression (the edge value times its ratio to its neighbour), that
candidate is run, and the choice is made again over all candidates (``"extended": true``).

Parallel runs: inside ``with parallel_runs(jobs):`` (``reproduce --jobs N``, ``--jobs`` on every
comparison command), :func:`run_grid` first sends every run its store does not hold to ``jobs`` worker
processes (the ``spawn`` start method: torch and ``fork`` can deadlock; one torch thread each), then
assembles and selects exactly as a serial run does, in the same order. Each run depends only on its
optimizer, seed and settings (every run seeds its own initialisation, split and data order), so the
records are the same bit for bit as a serial run with one thread (``--jobs 1 --threads 1``), except
the measured wall and step times and peak memory. The parent stores each finished run (atomically) as it collects it;
an interrupt stops the workers, so a rerun resumes from the stored runs.

:func:`write_experiment` then writes the common format:

- ``OUT/curves.csv`` — one row per (optimizer, seed, step);
- ``OUT/<task>.png`` — the task's figure;
- ``OUT/config.json`` — the resolved configuration;
- ``OUT/results.json`` — ``{"records": [...], "summary": [...]}``: the records, one per (optimizer,
  seed), and the comparison's summary (:meth:`Task.summary`: intervals and verdict); written last, so
  a folder with a ``results.json`` holds a finished experiment.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import pickle
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from ..reporting import ProgressFn, ensure_dir, json_ready, results_table, save_figure, summarize, write_csv, write_json
from ..training import OPTIONS, OptimizerConfig
from .protocol import Metric
from .records import check_record

__all__ = [
    "CONFIG_JSON",
    "CURVES_CSV",
    "RESULTS_JSON",
    "RunResult",
    "RunStore",
    "check_seeds",
    "curve_rows",
    "data_digest",
    "diverged_runs",
    "edge_picks",
    "file_digest",
    "fingerprint",
    "mean_curves",
    "parallel_runs",
    "run_grid",
    "run_key",
    "select_candidate",
    "validation_key",
    "run_store",
    "summary_table",
    "write_experiment",
    "experiment_writer",
]

RESULTS_JSON = "results.json"
CURVES_CSV = "curves.csv"
CONFIG_JSON = "config.json"
RUNS_DIR = "runs"


@dataclass
class RunResult:
    """One finished (optimizer, seed) run: a flat record of final metrics and its curve rows."""

    record: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able settings: equal settings, equal runs."""
    text = json.dumps(json_ready(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """A digest of a file's size and bytes (streamed in 1 MiB blocks): equal contents, equal digests."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(str(os.fstat(f.fileno()).st_size).encode())
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _folder_digest(folder: Path) -> str:
    """A digest of a folder's file listing: relative names, sizes and modification times (no bytes read)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        h.update(f"{path.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def data_digest(source: str | os.PathLike | None) -> str | None:
    """What a run's fingerprint needs to know about user data beyond its name.

    An existing file (also ``FILE:KEY``, an array inside an ``.npz``/``.mat``) gives a digest of its
    contents, a folder one of its listing (names, sizes, times); a data set name, a ``synthetic:``
    spec or a hub id gives None. So a file overwritten with other data re-runs instead of being reused.
    """
    if source is None:
        return None
    text = os.fspath(source)
    candidates = [text]
    head, sep, _ = text.rpartition(":")
    if sep and head:
        candidates.append(head)
    for candidate in candidates:
        path = Path(candidate).expanduser()
        try:
            if path.is_file():
                return "file:" + file_digest(path)
            if path.is_dir():
                return "dir:" + _folder_digest(path)
        except OSError:
            return None  # unreadable: the loader reports it
    return None


MAX_SEED = 2**32 - 1  # numpy's seed range; torch accepts it too


def check_seeds(seeds: Sequence[int]) -> None:
    """``ValueError`` unless ``seeds`` are distinct ints in [0, 2**32 - 1] (and there is at least one)."""
    if not seeds:
        raise ValueError("no seeds given")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
            raise ValueError(f"Invalid seed {s!r} (expected an int from 0 to {MAX_SEED})")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds are listed twice: {list(seeds)} (a repeated seed repeats the same run)")


class RunStore:
    """Finished runs of one experiment folder, one atomically written JSON file per run."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir) / RUNS_DIR

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def load(self, key: str, print_: str) -> RunResult | None:
        """The stored run ``key`` if it exists, is readable and has fingerprint ``print_``."""
        path = self._path(key)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # missing, or unreadable: redo it
        if not isinstance(stored, dict) or stored.get("fingerprint") != print_:
            return None
        return RunResult(record=stored["record"], curve=stored["curve"])

    def save(self, key: str, print_: str, result: RunResult) -> None:
        ensure_dir(self.dir)
        write_json(self._path(key), {"fingerprint": print_, "record": result.record, "curve": result.curve})

    def fetch(
        self,
        key: str,
        print_: str,
        compute: Callable[[], RunResult],
        *,
        resume: bool = True,
        reused: Callable[[], None] | None = None,
        keep: Callable[[RunResult], bool] | None = None,
    ) -> RunResult:
        """The stored run ``key`` with fingerprint ``print_`` (with ``resume``; then ``reused()`` is
        called), else ``compute()``, stored unless ``keep(result)`` is false."""
        done = self.load(key, print_) if resume else None
        if done is None:
            done = compute()
            if keep is None or keep(done):
                self.save(key, print_, done)
        elif reused is not None:
            reused()
        return done


class _NoStore(RunStore):
    """Runs without an output folder: always computed, never stored."""

    def __init__(self) -> None:
        pass

    def load(self, key: str, print_: str) -> RunResult | None:
        return None

    def save(self, key: str, print_: str, result: RunResult) -> None:
        pass


def run_store(out_dir: str | Path | None) -> RunStore:
    """The store of ``out_dir``'s finished runs; with no folder, one that keeps nothing."""
    return RunStore(out_dir) if out_dir is not None else _NoStore()


def run_key(optimizer: OptimizerConfig, seed: int) -> str:
    """File-name-safe key of one run, e.g. ``das-adam-seed0``; a grid candidate's names its strength
    value, e.g. ``das-adam-alpha10-seed0`` (``base-adam-lr0.01-seed0``), and a second tuned option's
    value where it is not the option's default (``looksam-sgd-rho0.1-looksam_alpha0.5-seed0``)."""
    if optimizer.grid and optimizer.strength is not None:
        strength = optimizer.spec.strength
        parts = [
            f"{name}{value:.12g}"
            for name, value in optimizer.tuned_values().items()
            if name == strength or value != OPTIONS[name].default
        ]
        return f"{optimizer.method}-{optimizer.base}-{'-'.join(parts)}-seed{seed}"
    return f"{optimizer.method}-{optimizer.base}-seed{seed}"


def validation_key(metric: Metric) -> str:
    """The record key of ``metric`` on the validation split: ``test_acc`` (also ``best_``/``final_test_acc``)
    -> ``val_acc``."""
    return "val_" + metric.key.removeprefix("test_").removeprefix("best_test_").removeprefix("final_test_")


VAL_LOSS = "val_loss"


def select_candidate(candidates: Sequence[Mapping[str, Any]], key: str, higher_is_better: bool) -> int:
    """The index of the candidate with the best ``key`` in the metric's direction.

    Ties go to the lower ``val_loss``, then to the first candidate; a missing or non-finite value
    (a diverged run) ranks last. Works on records and on a record's ``candidates`` alike.
    """

    def finite(value: Any) -> float | None:
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def rank(i: int) -> tuple[int, float, float, int]:
        value, loss = finite(candidates[i].get(key)), finite(candidates[i].get(VAL_LOSS))
        score = math.inf if value is None else (-value if higher_is_better else value)
        return (value is None, score, math.inf if loss is None else loss, i)

    if not candidates:
        raise ValueError("no candidate to select from")
    return min(range(len(candidates)), key=rank)


def _grid_values(runs: Sequence[tuple[OptimizerConfig, RunResult]]) -> dict[str, list[float]]:
    """The sorted values each tuned setting of one method's candidates took: its strength always, a
    second tuned option (LookSAM's alpha) where the candidates vary it."""
    spec = runs[0][0].spec
    out = {}
    for name in spec.tuned_options:
        values = sorted({getattr(opt, name) for opt, _ in runs})
        if name == spec.strength or len(values) > 1:
            out[name] = values
    return out


def _select(task: str, runs: Sequence[tuple[OptimizerConfig, RunResult]], metric: Metric) -> RunResult:
    """The picked run of one method and seed, its record naming the choice (with ``edge`` where a
    grid was tried) and every candidate."""
    key = validation_key(metric)
    grids = _grid_values(runs)
    strength = runs[0][0].spec.strength
    candidates = []
    for opt, run in runs:
        if key not in run.record:
            raise ValueError(f"{task} run {opt.label}: the record has no {key!r} (no validation split?)")
        loss = {VAL_LOSS: run.record[VAL_LOSS]} if VAL_LOSS in run.record else {}  # completion has none
        others = {n: getattr(opt, n) for n in grids if n != strength}
        candidates.append({"value": getattr(opt, strength), **others, key: run.record[key], **loss})
    best_opt, best = runs[select_candidate(candidates, key, metric.higher_is_better)]
    selected: dict[str, Any] = {n: getattr(best_opt, n) for n in grids}
    if any(len(v) > 1 for v in grids.values()):
        selected["edge"] = bool(_edges(selected, grids))
    record = {**best.record, "selected": selected, "candidates": candidates}
    return RunResult(record=record, curve=best.curve)


def _edges(selected: Mapping[str, Any], grids: Mapping[str, Sequence[float]]) -> list[str]:
    """The tuned settings whose selected value is the smallest or largest of a grid of several values."""
    return [n for n, v in grids.items() if len(v) > 1 and selected[n] in (v[0], v[-1])]


def _extension(runs: Sequence[tuple[OptimizerConfig, RunResult]], chosen: Mapping[str, Any]) -> OptimizerConfig | None:
    """The one candidate past the grid's edge that ``chosen`` sits on (its strength's edge first): the
    edge value times its ratio to its neighbour, the other settings as chosen. None when no value is
    at an edge, or the progression has no ratio (a value of 0) or leaves the option's valid range."""
    grids = _grid_values(runs)
    for name in _edges(chosen, grids):
        values = grids[name]
        edge = chosen[name]
        near = values[-2] if edge == values[-1] else values[1]
        if not (edge > 0 and near > 0):
            continue
        best = next(opt for opt, _ in runs if all(getattr(opt, n) == chosen[n] for n in grids))
        try:
            return dataclasses.replace(best, **{name: edge * (edge / near)})
        except ValueError:  # past the option's range (e.g. LookSAM's alpha above 1)
            continue
    return None


# ------------------------------------------------------------------ parallel runs
_POOL: contextvars.ContextVar[ProcessPoolExecutor | None] = contextvars.ContextVar("tensordas_pool", default=None)


def default_jobs() -> int:
    """The number of worker processes ``--jobs`` defaults to: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_jobs(jobs: int) -> int:
    """``jobs`` if it is an int >= 1, else a ``ValueError`` naming it."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"Invalid jobs {jobs!r} (expected an integer >= 1)")
    return jobs


def _init_worker() -> None:
    """A worker: one torch thread (the workers share the cores), and Ctrl-C left to the parent, which
    stops the workers itself (module docstring)."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


_WORKER_RUN: dict[str, Callable[..., RunResult]] = {}  # the latest unpickled run function, by file


def _run_in_worker(path: str, opt: OptimizerConfig, seed: int) -> RunResult:
    """Run one (optimizer, seed) in a worker with the run function pickled in ``path`` (read once per worker)."""
    if path not in _WORKER_RUN:
        _WORKER_RUN.clear()  # one experiment at a time: do not keep the previous one's data
        with open(path, "rb") as f:
            _WORKER_RUN[path] = pickle.load(f)
    return _WORKER_RUN[path](opt, seed, None)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool`` now: cancel what has not started and end the workers' current runs (their results
    are not stored, so a rerun redoes them)."""
    # ProcessPoolExecutor has no public way to end running calls; its worker processes are in _processes
    # (taken before shutdown, which forgets them).
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():  # e.g. blocked in disk I/O while importing torch on a loaded machine
            process.kill()
            process.join(timeout=60)


@contextlib.contextmanager
def parallel_runs(jobs: int | None = None) -> Iterator[int]:
    """Inside the block, :func:`run_grid` runs its pending runs in ``jobs`` worker processes (default:
    :func:`default_jobs`; 1: serially, in this process). Yields the number of jobs. One pool serves
    every grid of the block, so workers start once (the ``spawn`` start method: torch and ``fork`` can
    deadlock). On an exception or interrupt the workers are stopped."""
    jobs = default_jobs() if jobs is None else check_jobs(jobs)
    if jobs == 1:
        yield 1
        return
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)  # fmt: skip
    token = _POOL.set(pool)
    try:
        yield jobs
    except BaseException:
        _stop(pool)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        _POOL.reset(token)


@contextlib.contextmanager
def _submitted(
    pending: Sequence[tuple[str, OptimizerConfig, int]], run_one: Callable[..., RunResult]
) -> Iterator[dict[str, Future]]:
    """Futures of the ``pending`` runs (``(key, optimizer, seed)``) in the block's pool, by key; none
    without a pool, or when ``run_one`` cannot be sent to a worker (then the runs go serially, with a
    warning)."""
    pool = _POOL.get()
    if pool is None or not pending:
        yield {}
        return
    with tempfile.NamedTemporaryFile(prefix="tensordas-run-", suffix=".pkl", delete=False) as f:
        path = f.name
        try:
            pickle.dump(run_one, f, protocol=pickle.HIGHEST_PROTOCOL)
            ok = True
        except Exception as e:  # pickle raises PicklingError, TypeError or AttributeError, a __reduce__ anything
            warnings.warn(f"runs go serially: the run function cannot be sent to a worker ({e})", stacklevel=3)
            ok = False
    try:
        yield {key: pool.submit(_run_in_worker, path, opt, seed) for key, opt, seed in pending} if ok else {}
    finally:
        Path(path).unlink(missing_ok=True)


def run_grid(
    task: str,
    settings: Mapping[str, Any],
    optimizers: Sequence[OptimizerConfig],
    seeds: Sequence[int],
    run_one: Callable[[OptimizerConfig, int, ProgressFn | None], RunResult],
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
    pending = _pending(task, settings, order, store, resume) if _POOL.get() is not None else []
    results = []
    with _submitted(pending, run_one) as futures:
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
                results.append(runs[0][1])  # an untuned base keeps its plain record
                continue
            result = _select(task, runs, select)
            if extend and "edge" in result.record["selected"]:
                extra = _extension(runs, result.record["selected"])
                if extra is not None:  # one more candidate past the edge, in this process (it depends on the choice)
                    runs.append((extra, _fetch(task, settings, extra, seed, run_one, store, resume, progress)))
                    result = _select(task, runs, select)
                result.record["selected"]["extended"] = extra is not None
            results.append(result)
    return results


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
    run_one: Callable[[OptimizerConfig, int, ProgressFn | None], RunResult],
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


def curve_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """All curve rows, each tagged with its run's optimizer and seed."""
    return [{"optimizer": r.record["optimizer"], "seed": r.record["seed"], **row} for r in results for row in r.curve]


def mean_curves(results: Sequence[RunResult], x: str, keys: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """Per optimizer, the mean over seeds of each ``key`` at each ``x`` (for plots)."""
    acc: dict[str, dict[float, dict[str, list[float]]]] = {}
    for r in results:
        per_x = acc.setdefault(r.record["optimizer"], {})
        for row in r.curve:
            cell = per_x.setdefault(row[x], {k: [] for k in keys})
            for k in keys:
                v = row.get(k)
                if v is not None and math.isfinite(v):
                    cell[k].append(v)
    out = {}
    for name, per_x in acc.items():
        xs = sorted(per_x)
        out[name] = {x: xs}
        for k in keys:
            out[name][k] = [sum(per_x[v][k]) / len(per_x[v][k]) if per_x[v][k] else math.nan for v in xs]
    return out


# The columns every family's table ends with: quantities of the record schema.
SHARED_COLUMNS = {"Q": "Q", "step_time_ms": "ms/step", "wall_time_s": "wall s"}


def summary_table(
    results: Sequence[RunResult], metrics: Mapping[str, str], *, title: str, caption: str | None = None
) -> Table:
    """Mean ± std over seeds of each of the family's ``metrics`` and of :data:`SHARED_COLUMNS`, one row
    per optimizer (a column no record holds is left out).

    When a run diverged, a ``diverged`` column counts the optimizer's diverged seeds (its metrics
    cover the other seeds, or are missing); without divergence there is no such column.
    """
    records = [r.record for r in results]
    shared = {k: v for k, v in SHARED_COLUMNS.items() if k not in metrics and any(k in r for r in records)}
    metrics = {**metrics, **shared}
    rows = summarize(records, by=["optimizer"], metrics=list(metrics))
    columns = {"optimizer": "optimizer", **metrics}
    if diverged_runs(records):
        for row in rows:
            mine = [r for r in records if r["optimizer"] == row["optimizer"]]
            row["diverged"] = f"{sum(bool(r.get('diverged')) for r in mine)}/{len(mine)}"
        columns["diverged"] = "diverged"
    return results_table(rows, columns, title=title, caption=caption)


def edge_picks(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """``"OPTIMIZER seed N: NAME VALUE"`` for each record whose tuned value is at the edge of its grid
    (``"edge": true`` in ``selected``; ``(after extending the grid)`` where ``--tune`` extended it)."""
    out = []
    for r in records:
        chosen = r.get("selected") or {}
        if chosen.get("edge"):
            values = ", ".join(f"{k} {v:g}" for k, v in chosen.items() if k not in ("edge", "extended"))
            extended = " (after extending the grid)" if chosen.get("extended") else ""
            out.append(f"{r.get('optimizer')} seed {r.get('seed')}: {values}{extended}")
    return out


def diverged_runs(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """``"OPTIMIZER seed N"`` for each record that says its run diverged."""
    return [f"{r['optimizer']} seed {r['seed']}" for r in records if r.get("diverged")]


def write_experiment(
    out_dir: str | Path,
    task: str,
    config: Mapping[str, Any],
    results: Sequence[RunResult],
    curve_columns: Sequence[str],
    figure: Any | None = None,
    summary: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Path]:
    """Write curves, figure, configuration and, last, ``results.json`` (see the module docstring)."""
    out = ensure_dir(out_dir)
    results_path = out / RESULTS_JSON
    results_path.unlink(missing_ok=True)  # never leave an old results.json beside new files
    paths = {"curves": write_csv(out / CURVES_CSV, curve_rows(results), ["optimizer", "seed", *curve_columns])}
    if figure is not None:
        paths["figure"] = save_figure(figure, out / f"{task}.png")
    paths["config"] = write_json(out / CONFIG_JSON, {"task": task, **config})
    paths["results"] = write_json(results_path, {"records": [r.record for r in results], "summary": list(summary)})
    return paths


def experiment_writer(
    task: str, curve_columns: Sequence[str], plot: Callable[[Sequence[RunResult], Any], Any]
) -> Callable[[Sequence[RunResult], Any, str | Path], dict[str, Path]]:
    """The ``write(results, config, out_dir)`` of a comparison family: :func:`write_experiment` with its
    curve columns and figure."""

    def write(
        results: Sequence[RunResult],
        config: Any,
        out_dir: str | Path,
        *,
        experiment: str | None = None,
        metric: str | None = None,
        match_tolerance: float | None = None,
    ) -> dict[str, Path]:
        from . import get_task  # the registry imports this module: looked up when writing

        summary = get_task(task).summary(
            [r.record for r in results], experiment=experiment, metric=metric, match_tolerance=match_tolerance
        )
        figure = plot(results, config)
        return write_experiment(out_dir, task, config.to_dict(), results, curve_columns, figure, summary)

    write.__doc__ = (
        f"``curves.csv``, ``{task}.png``, ``config.json`` and, last, ``results.json`` with the summary "
        "(on ``metric`` with ``match_tolerance``, defaults: the family's)."
    )
    write.__name__ = write.__qualname__ = f"write_{task}"
    return write
