"""Shared reporting layer of every task: atomic result files, rich tables, matplotlib figures, progress.

Every task writes its results the same way: tables (CSV) and figures first, then one JSON file
last, each through an atomic writer, so a folder whose JSON exists holds a complete run.
"""

from .io import atomic_open, ensure_dir, json_ready, save_figure, write_csv, write_json
from .plots import line_panels, series_style
from .progress import ProgressFn, progress_bar
from .tables import MeanStd, format_value, mean_std, results_table, summarize

__all__ = [
    "MeanStd",
    "ProgressFn",
    "atomic_open",
    "ensure_dir",
    "format_value",
    "json_ready",
    "line_panels",
    "mean_std",
    "progress_bar",
    "results_table",
    "save_figure",
    "series_style",
    "summarize",
    "write_csv",
    "write_json",
]
