"""The summary of comparisons as a table: one row per (experiment, method other than base and SAM) with
the method's paired differences to the base and to SAM (95% intervals), its share of SAM's gain
(Fieller's interval), its step time relative to SAM's (and, in the report, to the base's) and its verdict
(docs/design.md section 7).
SAM - base, which every verdict of an experiment rests on, is shown once, in the experiment's first row.

One function formats an entry's rows (:func:`summary_rows`); the console table (:func:`verdict_table`,
narrow enough for 80 columns: a mean and its interval on two lines) and the report's markdown table use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table

from .tables import MISSING

__all__ = ["SUMMARY_COLUMNS", "TABLE_TITLE", "summary_rows", "verdict_table"]

# Cell key -> column header. Differences are in the metric's own direction; "m" is the row's method.
SUMMARY_COLUMNS = {
    "experiment": "experiment",
    "sam-base": "SAM-base",
    "method": "method",
    "m-base": "m-base",
    "m-sam": "m-SAM",
    "share": "share of SAM's gain",
    "time": "step time / SAM's",
    "time-base": "step time / base's",
    "verdict": "verdict",
}
CONSOLE_HEADERS = {"share": "share", "time": "time\n/SAM"}
TABLE_TITLE = "Verdicts: does each method deliver SAM's gain?"
UNBOUNDED = "unbounded"
# Cells filled on an experiment's first row only (they are the experiment's, not the method's).
EXPERIMENT_CELLS = ("experiment", "sam-base")
DIFF_CELLS = ("sam-base", "m-base", "m-sam")


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


def _share(share: Mapping[str, Any] | None, sep: str) -> str:
    """``0.32 [0.12, 0.51]``, ``0.32 unbounded`` (SAM's gain not significant), or — (no share); with
    ``sep="\n"`` the mean and each bound on a line of their own."""
    if not share:
        return MISSING
    if share.get("unbounded"):
        return f"{_number(share['mean'])}{sep}{UNBOUNDED}"
    low, high = share["ci95"]
    bounds = f"[{_number(low, digits=2)},{' ' if sep == ' ' else sep}{_number(high, digits=2)}]"
    return f"{_number(share['mean'])}{sep}{bounds}"


def summary_rows(entry: Mapping[str, Any], sep: str = " ") -> list[dict[str, str]]:
    """The rows of one summary entry (cells keyed as :data:`SUMMARY_COLUMNS`), one per method with a verdict
    (one row of dashes when there is none); the experiment and SAM - base fill the first row only. ``sep``
    joins a mean and its interval (``"\\n"``: two lines in a narrow console table)."""
    verdicts = entry.get("verdicts") or {}
    shares = entry.get("shares") or {}
    times = entry.get("step_time_over_sam") or {}
    base_times = entry.get("step_time_over_base") or {}
    diff = entry["diff"]
    rows = []
    for method in verdicts or [None]:
        rows.append(
            {
                "experiment": "",
                "sam-base": "",
                "method": method or MISSING,
                "m-base": _interval(diff.get(f"{method}-base"), sep),
                "m-sam": _interval(diff.get(f"{method}-sam"), sep),
                "share": _share(shares.get(method), sep),
                "time": _number(times.get(method)),
                "time-base": _number(base_times.get(method)),
                "verdict": verdicts.get(method, MISSING),
            }
        )
    rows[0]["experiment"] = str(entry["experiment"])
    rows[0]["sam-base"] = _interval(diff.get("sam-base"), sep)
    return rows


def verdict_table(entries: Sequence[Mapping[str, Any]], *, title: str = TABLE_TITLE) -> Table:
    """A rich table of summary entries (a row per compared method, SAM - base under the experiment's name)
    that fits 80 columns; the metric, the seeds, the tolerance and any note in the caption."""
    table = Table(
        title=title,
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=0,  # the box's space between columns is the only gap: seven columns fit 80 characters
        show_edge=False,
    )
    # SAM-base joins the experiment's cell; short headers, spelled out in the caption
    # (the step time over the base's is in report.md and results.json: the console keeps 80 columns)
    columns = {k: v for k, v in SUMMARY_COLUMNS.items() if k not in ("sam-base", "time-base")} | CONSOLE_HEADERS
    # whole words where they fit: the verdicts' longest word, the experiments' names up to 16 characters
    min_widths = {"verdict": len("distinguishable"), "experiment": min(16, max(len(e["experiment"]) for e in entries))}
    for key, header in columns.items():
        text = key in ("experiment", "method", "verdict")  # words wrap; a mean and its interval stay whole lines
        table.add_column(
            header,
            justify="left" if text else "right",
            overflow="fold",
            no_wrap=key in DIFF_CELLS,
            min_width=min_widths.get(key),
        )
    captions = [
        "m-base, m-SAM, SAM-base: mean ± half-width of the 95% t-interval of the per-seed differences, in "
        "the metric's own direction; share of SAM's gain: (m-base)/(SAM-base), Fieller's 95% interval; "
        "time: m's step time / SAM's."
    ]
    for entry in entries:
        rows = summary_rows(entry, sep="\n")
        rows[0]["experiment"] += f"\nSAM-base\n{rows[0]['sam-base']}"
        for i, cells in enumerate(rows):
            table.add_row(*(cells[k] for k in columns), end_section=i == len(rows) - 1)
        direction = "higher" if entry["higher_is_better"] else "lower"
        line = (
            f"{entry['experiment']}: {entry['metric']} ({direction} is better), {entry['n_seeds']} paired seeds, "
            f"match tolerance {entry['match_tolerance']:g}"
        )
        captions.append(line + (f"; {entry['note']}" if entry.get("note") else ""))
    table.caption = "\n".join(captions)
    return table
