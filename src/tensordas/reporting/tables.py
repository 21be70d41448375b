"""Rich tables of results, including mean ± std over seeds.

Tasks build a list of row dicts (one per optimizer, or per optimizer and seed), optionally
aggregate them over seeds with :func:`summarize`, and render them with :func:`results_table`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table

__all__ = ["FitTable", "MeanStd", "format_value", "mean_std", "results_table", "summarize"]

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
    """Mean ± sample standard deviation of ``values``; any non-finite value makes both NaN.

    Raises:
        ValueError: if ``values`` is empty.
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_std needs at least one value")
    n = len(xs)
    if not all(math.isfinite(x) for x in xs):  # a diverged seed (inf, NaN): no meaningful mean
        return MeanStd(math.nan, math.nan, n)
    if min(xs) == max(xs):  # exactly 0, not a rounding residue
        return MeanStd(xs[0], 0.0, n)
    try:
        mean = math.fsum(xs) / n
        var = math.fsum((x - mean) * (x - mean) for x in xs) / (n - 1)
    except OverflowError:
        mean, var = math.inf, math.inf
    if not (math.isfinite(mean) and math.isfinite(var)):  # values near the float range: rescale
        scale = max(abs(x) for x in xs)
        ys = [x / scale for x in xs]
        m = math.fsum(ys) / n
        return MeanStd(m * scale, math.sqrt(math.fsum((y - m) * (y - m) for y in ys) / (n - 1)) * scale, n)
    return MeanStd(mean, math.sqrt(var), n)


def format_value(value: Any, digits: int = 4) -> str:
    """A table cell: floats with ``digits`` significant digits, ``None``/NaN as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, MeanStd):
        return value.format(digits)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, numbers.Integral):  # bool included
        return str(value)
    if isinstance(value, numbers.Real):
        value = float(value)
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
    table = FitTable(title=title, caption=caption)
    for i, header in enumerate(headers.values()):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(format_value(row.get(key), digits) for key in headers))
    return table


def _narrowest(text: str) -> int:
    """The narrowest width that shows ``text`` without cutting a word, "mean ±" kept on one line."""
    mean, sep, std = text.partition(" ± ")
    if sep:
        return max(cell_len(mean) + 2, cell_len(std))
    return max((cell_len(w) for w in text.split()), default=0)


class FitTable(Table):
    """A table of plain-text cells that never cuts a word or a number to fit the console.

    Rich shrinks a too-wide table by cutting cells ("0.32…"). Here every column keeps at least its
    longest word (cells wrap only at spaces, e.g. at "±"); when the columns do not fit side by side,
    they are split over several tables that each repeat the first (label) column. Rich has no such
    layout of its own, hence this subclass.
    """

    def _cells(self, index: int) -> list[str]:
        return [str(c) for c in self.columns[index]._cells]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        n = len(self.columns)
        headers = [str(c.header) for c in self.columns]
        longest = [max([cell_len(headers[i]), *(cell_len(c) for c in self._cells(i))]) for i in range(n)]
        words = [max([_narrowest(headers[i]), *(_narrowest(c) for c in self._cells(i))]) for i in range(n)]
        words[0] = longest[0]  # labels stay on one line

        def chrome(k: int) -> int:  # borders and padding of a table of k columns
            return (k + 1) + 2 * k

        width = options.max_width
        if n <= 1 or sum(longest) + chrome(n) <= width:
            yield from super().__rich_console__(console, options)
            return
        chunks: list[list[int]] = [[]]
        for i in range(1, n):
            trial = [0, *chunks[-1], i]
            if chunks[-1] and sum(words[j] for j in trial) + chrome(len(trial)) > width:
                chunks.append([])
            chunks[-1].append(i)
        for k, chunk in enumerate(chunks):
            part = [0, *chunk]
            sizes = [words[j] for j in part]
            spare = width - chrome(len(part)) - sum(sizes)
            for pos, j in enumerate(part):  # widen columns towards their full width while space lasts
                extra = max(0, min(spare, longest[j] - sizes[pos]))
                sizes[pos] += extra
                spare -= extra
            table = Table(
                title=self.title if k == 0 else None,
                caption=self.caption if k == len(chunks) - 1 else None,
            )
            for pos, j in enumerate(part):
                column = self.columns[j]
                table.add_column(
                    column.header,
                    justify=column.justify,
                    width=sizes[pos],
                    no_wrap=column.no_wrap,
                    overflow="fold",  # only a word wider than the console itself is folded
                )
            for r in range(len(self.columns[0]._cells)):
                table.add_row(*(self.columns[j]._cells[r] for j in part))
            yield table
