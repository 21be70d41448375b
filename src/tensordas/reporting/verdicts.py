"""The summary of comparisons as a table: paired differences with their 95% intervals, DAS's share of
SAM's gain, the DAS/SAM step-time ratio and the verdict (docs/design.md section 7).

One function formats an entry's cells (:func:`summary_cells`); the console table (:func:`verdict_table`,
narrow enough for 80 columns: each interval on its own line) and the report's markdown table use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table

from .tables import MISSING

__all__ = ["SUMMARY_COLUMNS", "summary_cells", "verdict_table"]

# Cell key -> column header; the three differences in the metric's own direction.
SUMMARY_COLUMNS = {
    "experiment": "experiment",
    "sam-base": "SAM-base",
    "das-base": "DAS-base",
    "das-sam": "DAS-SAM",
    "recovered": "recovered",
    "time": "DAS/SAM\ntime",
    "verdict": "verdict",
}


DIFFS = ("sam-base", "das-base", "das-sam")


def _number(x: Any, sign: str = "", digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return MISSING
    return f"{x:{sign}.{digits}g}"


def _interval(diff: Mapping[str, Any] | None, sep: str) -> str:
    """``+0.031 ± 0.012`` (t-intervals are symmetric about the mean), the mean alone when undefined."""
    if not diff:
        return MISSING
    mean, (low, high) = diff["mean"], diff["ci95"]
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return _number(mean, "+")
    return f"{_number(mean, '+')}{sep}±{_number((high - low) / 2, digits=2)}"


def summary_cells(entry: Mapping[str, Any], sep: str = " ") -> dict[str, str]:
    """The cells of one summary entry (keys of :data:`SUMMARY_COLUMNS`); ``sep`` joins a mean and its
    interval (``"\\n"``: two lines in a narrow console table)."""
    recovered = entry.get("recovered")
    if recovered:
        low, high = recovered["ci95"]
        share = f"{_number(recovered['mean'])}{sep}[{_number(low, digits=2)}, {_number(high, digits=2)}]"
    else:
        share = MISSING
    cells = {
        "experiment": str(entry["experiment"]),
        **{k: _interval(entry["diff"].get(k), sep) for k in DIFFS},
        "recovered": share,
        "time": _number(entry.get("step_time_das_over_sam")),
        "verdict": str(entry["verdict"]),
    }
    return cells


def verdict_table(entries: Sequence[Mapping[str, Any]], *, title: str = "Does DAS deliver SAM's gain?") -> Table:
    """A rich table of summary entries (one row each) that fits 80 columns; the metric, the DAS/SAM step-time
    ratio and any note in the caption."""
    table = Table(title=title, title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    columns = {k: v for k, v in SUMMARY_COLUMNS.items() if k != "time"}  # the time goes to the caption
    for key, header in columns.items():
        text = key in ("experiment", "verdict")  # words wrap; a mean and its interval stay whole lines
        table.add_column(header, justify="left" if text else "right", overflow="fold", no_wrap=key in DIFFS)
    captions = []
    for entry in entries:
        cells = summary_cells(entry, sep="\n")
        table.add_row(*(cells[k] for k in columns))
        direction = "higher" if entry["higher_is_better"] else "lower"
        line = (
            f"{entry['experiment']}: {entry['metric']} ({direction} is better), {entry['n_seeds']} paired seeds, "
            f"mean ± 95% CI of the per-seed differences, match tolerance {entry['match_tolerance']:g}, "
            f"DAS/SAM step time {cells['time']}"
        )
        captions.append(line + (f"; {entry['note']}" if entry.get("note") else ""))
    table.caption = "\n".join(captions)
    return table
