"""Rich tables of results, including mean ± std over seeds.

Tasks build a list of row dicts (one per optimizer, or per optimizer and seed), optionally
aggregate them over seeds with :func:`summarize`, and render them with :func:`results_table`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["MeanStd", "format_value", "mean_std", "print_table", "results_table", "summarize"]

MISSING = "—"


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of ``n`` values."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 4) -> str:
        """``"mean ± std"``, or just the mean when there is one value."""
        if self.n <= 1:
            return format_value(self.mean, digits)
        return f"{format_value(self.mean, digits)} ± {format_value(self.std, 2)}"

    def __str__(self) -> str:
        return self.format()


def mean_std(values: Iterable[float]) -> MeanStd:
    """Mean ± sample standard deviation of ``values``; non-finite values make both NaN.

    Raises:
        ValueError: if ``values`` is empty.
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_std needs at least one value")
    mean = math.fsum(xs) / len(xs)
    if len(xs) == 1:
        return MeanStd(mean, 0.0, 1)
    if all(math.isfinite(x) for x in xs) and min(xs) == max(xs):  # exactly 0, not a rounding residue
        return MeanStd(xs[0], 0.0, len(xs))
    var = math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return MeanStd(mean, math.sqrt(var) if math.isfinite(var) else math.nan, len(xs))


def format_value(value: Any, digits: int = 4) -> str:
    """A table cell: floats with ``digits`` significant digits, ``None``/NaN as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, MeanStd):
        return value.format(digits)
    if isinstance(value, int):  # bool included
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        return f"{value:.{digits}g}"
    return str(value)


def summarize(records: Iterable[Mapping[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Aggregate ``records`` (e.g. one per optimizer and seed) into one row per distinct ``by`` key.

    Each row holds the ``by`` values and a :class:`MeanStd` per metric (records lacking a metric
    are skipped for it; a metric with no value at all gives ``None``). Rows keep first-seen order.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for rec in records:
        groups.setdefault(tuple(rec[k] for k in by), []).append(rec)
    rows = []
    for key, recs in groups.items():
        row: dict[str, Any] = dict(zip(by, key))
        for m in metrics:
            vals = [r[m] for r in recs if r.get(m) is not None]
            row[m] = mean_std(vals) if vals else None
        rows.append(row)
    return rows


def results_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | Mapping[str, str],
    *,
    title: str | None = None,
    caption: str | None = None,
    digits: int = 4,
) -> Table:
    """A rich table of ``rows``; ``columns`` lists the keys, or maps keys to column headers.

    The first column is left-aligned (labels), the others right-aligned (numbers).
    """
    headers = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    table = Table(title=title, caption=caption)
    for i, header in enumerate(headers.values()):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(format_value(row.get(key), digits) for key in headers))
    return table


def print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` to ``console`` (standard output by default)."""
    (console or Console()).print(table)
