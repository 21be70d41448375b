"""What every comparison task shares: a grid of (optimizer, seed) runs, resumable, with one results format.

A task supplies ``run_one(optimizer_config, seed) -> RunResult``; :func:`run_grid` runs the grid,
keeping each finished run as its own JSON file under ``OUT/runs/`` (written atomically, with a
fingerprint of everything that determines it), so an interrupted experiment resumes without
recomputing finished runs, and a changed setting recomputes exactly the runs it affects.
:func:`write_experiment` then writes the common format:

- ``OUT/curves.csv`` — one row per (optimizer, seed, step);
- ``OUT/<task>.png`` — the task's figure;
- ``OUT/config.json`` — the resolved configuration;
- ``OUT/results.json`` — a list of records, one per (optimizer, seed); written last, so a folder
  with a ``results.json`` holds a finished experiment.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from ..reporting import ProgressFn, ensure_dir, json_ready, results_table, save_figure, summarize, write_csv, write_json
from ..training import OptimizerConfig

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


def run_key(optimizer: OptimizerConfig, seed: int) -> str:
    """File-name-safe key of one run, e.g. ``das-adam-seed0``."""
    return f"{optimizer.method}-{optimizer.base}-seed{seed}"


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
) -> list[RunResult]:
    """Run every optimizer on every seed (seed-major, so partial results already compare methods).

    ``settings`` are the task settings that determine a run besides its optimizer and seed.
    With ``out_dir``, each finished run is stored and, with ``resume``, reused when its
    fingerprint matches.
    """
    if not optimizers:
        raise ValueError("no optimizer to run")
    if not seeds:
        raise ValueError("no seed to run")
    labels = [o.label for o in optimizers]
    if len(set(labels)) != len(labels):
        raise ValueError(f"optimizers are listed twice: {labels}")
    check_seeds(list(seeds))
    store = RunStore(out_dir) if out_dir is not None else None
    results = []
    for seed in seeds:
        for opt in optimizers:
            key, print_ = run_key(opt, seed), fingerprint(task, settings, opt.as_dict(), seed)
            done = store.load(key, print_) if (store is not None and resume) else None
            if done is None:
                done = run_one(opt, seed, progress)
                done.record.update(optimizer=opt.label, method=opt.method, base=opt.base, seed=seed)
                done.record.update(opt.record_fields())
                if store is not None:
                    store.save(key, print_, done)
            elif progress is not None:
                progress(f"{opt.label} s{seed}", 1, 1)
            results.append(done)
    return results


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


def summary_table(
    results: Sequence[RunResult], metrics: Mapping[str, str], *, title: str, caption: str | None = None
) -> Table:
    """Mean ± std over seeds of each metric, one row per optimizer.

    When a run diverged, a ``diverged`` column counts the optimizer's diverged seeds (its metrics
    cover the other seeds, or are missing); without divergence there is no such column.
    """
    records = [r.record for r in results]
    rows = summarize(records, by=["optimizer"], metrics=list(metrics))
    columns = {"optimizer": "optimizer", **metrics}
    if diverged_runs(results):
        for row in rows:
            mine = [r for r in records if r["optimizer"] == row["optimizer"]]
            row["diverged"] = f"{sum(bool(r.get('diverged')) for r in mine)}/{len(mine)}"
        columns["diverged"] = "diverged"
    return results_table(rows, columns, title=title, caption=caption)


def diverged_runs(results: Sequence[RunResult]) -> list[str]:
    """``"OPTIMIZER seed N"`` for each run whose record says it diverged."""
    return [f"{r.record['optimizer']} seed {r.record['seed']}" for r in results if r.record.get("diverged")]


def write_experiment(
    out_dir: str | Path,
    task: str,
    config: Mapping[str, Any],
    results: Sequence[RunResult],
    curve_columns: Sequence[str],
    figure: Any | None = None,
) -> dict[str, Path]:
    """Write curves, figure, configuration and, last, ``results.json`` (see the module docstring)."""
    out = ensure_dir(out_dir)
    results_path = out / RESULTS_JSON
    results_path.unlink(missing_ok=True)  # never leave an old results.json beside new files
    paths = {"curves": write_csv(out / CURVES_CSV, curve_rows(results), ["optimizer", "seed", *curve_columns])}
    if figure is not None:
        paths["figure"] = save_figure(figure, out / f"{task}.png")
    paths["config"] = write_json(out / CONFIG_JSON, {"task": task, **config})
    paths["results"] = write_json(results_path, [r.record for r in results])
    return paths
