"""The files a comparison writes, the same for every family.

:func:`write_experiment` writes, into the experiment's folder:

- ``OUT/curves.csv`` — one row per (optimizer, seed, step);
- ``OUT/<task>.png`` — the task's figure;
- ``OUT/config.json`` — the resolved configuration;
- ``OUT/results.json`` — ``{"records": [...], "summary": [...]}``: the records, one per (optimizer,
  seed), and the comparison's summary (:meth:`~tensordas.tasks.protocol.Task.summary`: intervals and
  verdict); written last, so a folder with a ``results.json`` holds a finished experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..reporting import ensure_dir, save_figure, write_csv, write_json
from .runstore import RunResult

__all__ = ["CONFIG_JSON", "CURVES_CSV", "RESULTS_JSON", "curve_rows", "write_experiment"]

RESULTS_JSON = "results.json"
CURVES_CSV = "curves.csv"
CONFIG_JSON = "config.json"


def curve_rows(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """All curve rows, each tagged with its run's optimizer and seed."""
    return [{"optimizer": r.record["optimizer"], "seed": r.record["seed"], **row} for r in results for row in r.curve]


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
