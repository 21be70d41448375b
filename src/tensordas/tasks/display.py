"""What a comparison displays of its runs: the table over seeds, the figure of its mean curves, and the
runs a command warns about (diverged, or tuned to the edge of a grid)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

from ..reporting import line_panels, results_table, summarize
from .runstore import RunResult

__all__ = ["SHARED_COLUMNS", "curve_figure", "diverged_runs", "edge_picks", "mean_curves", "summary_table"]

# The columns every family's table ends with: quantities of the record schema.
SHARED_COLUMNS = {"Q": "Q", "step_time_ms": "ms/step", "wall_time_s": "wall s"}


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


def curve_figure(
    results: Sequence[RunResult],
    x: str,
    panels: Mapping[str, str],
    *,
    yscales: Mapping[str, str] | None = None,
    xlabel: str | None = None,
    title: str | None = None,
) -> Any:
    """One panel per curve column of ``panels`` (its value the axis label), left to right: its mean over seeds
    (:func:`mean_curves`) against ``x``, one line per optimizer (:func:`~tensordas.reporting.line_panels`)."""
    columns = list(panels)
    series = mean_curves(results, x, columns)
    return line_panels(series, x, columns, ylabels=dict(panels), yscales=yscales, xlabel=xlabel, title=title)


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
