"""Matplotlib figures drawn on the Agg canvas: no display, no pyplot, no global backend change.

Figures are plain :class:`matplotlib.figure.Figure` objects; save them with
:func:`tensordas.reporting.io.save_figure` (atomic). Optimizers keep the same colours in every
figure of every task.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["OPTIMIZER_COLORS", "line_panels"]

# One colour per optimizer family, shared by all tasks (base optimizers are grey-blue).
OPTIMIZER_COLORS: dict[str, str] = {
    "GD": "#4c72b0",
    "SGD": "#4c72b0",
    "Adam": "#4c72b0",
    "AdamW": "#4c72b0",
    "base": "#4c72b0",
    "SAM": "#dd8452",
    "DAS": "#55a868",
    "BAR": "#8172b3",
}
_STYLES = {"GD": "-", "SAM": "--", "DAS": ":"}
# Colours for any other method (LookSAM, a newly registered one), picked by a stable hash of its name:
# a new method gets its own colour without an entry here.
_OTHER_COLORS = ("#c44e52", "#937860", "#da8bc3", "#ccb974", "#64b5cd", "#8c8c8c", "#2f4b7c", "#a05195")


def _family(name: str) -> str:
    """The colour key of a series: task labels such as ``sam(sgd)`` or ``das(adamw)`` map to SAM / DAS,
    a bare base optimizer (``sgd``, ``adamw``) to the base colour."""
    if name in OPTIMIZER_COLORS:
        return name
    head = name.split("(", 1)[0].strip().upper()
    return head if head in OPTIMIZER_COLORS else "base"


def _colour(name: str) -> str:
    """The series' colour: its family's; a method the table does not know (``looksam(sgd)``) gets one of
    :data:`_OTHER_COLORS`, the same in every figure."""
    family = _family(name)
    if family != "base" or "(" not in name:
        return OPTIMIZER_COLORS[family]
    head = name.split("(", 1)[0].strip().lower()
    return _OTHER_COLORS[zlib.crc32(head.encode()) % len(_OTHER_COLORS)]


def line_panels(
    series: Mapping[str, Mapping[str, Sequence[float]]],
    x: str,
    panels: Sequence[str],
    *,
    ylabels: Mapping[str, str] | None = None,
    yscales: Mapping[str, str] | None = None,
    xlabel: str | None = None,
    title: str | None = None,
    panel_width: float = 4.2,
    panel_height: float = 3.4,
) -> Figure:
    """One panel per key in ``panels``, one line per series, all against ``series[name][x]``.

    A series that lacks a panel's column (or ``x``) is left out of that panel; NaN and infinite
    values (a diverged run) leave gaps in its line.

    Args:
        series: ``{name: {column: values}}``, e.g. ``{"GD": {"step": [...], "Q": [...]}}``.
        x: the column on the horizontal axis.
        panels: the columns to plot, one panel each, left to right.
        ylabels: axis label per panel (default: the column name).
        yscales: matplotlib scale per panel, e.g. ``{"loss": "log", "C": "symlog"}``.
        xlabel: label of the horizontal axis (default: ``x``).
        title: figure title.
    """
    if not panels:
        raise ValueError("line_panels needs at least one panel")
    # Imported here: matplotlib costs ~0.4 s, which `tensordas --help` and error paths should not pay.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_width * len(panels), panel_height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, key in zip(axes, panels):
        for name, cols in series.items():
            if cols.get(x) is None or cols.get(key) is None:
                continue  # a run without this curve (e.g. diverged, or a metric it does not record)
            ax.plot(
                cols[x],
                cols[key],
                label=name,
                color=_colour(name),
                linestyle=_STYLES.get(_family(name), "-"),
                linewidth=1.6,
            )
        scale = (yscales or {}).get(key)
        if scale:
            ax.set_yscale(scale)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel((ylabels or {}).get(key, key))
        ax.grid(True, alpha=0.3)
    drawn = [ax for ax in axes if ax.get_lines()]
    if drawn:  # the legend goes on the first panel that has a line
        drawn[0].legend(frameon=False)
    if title:
        fig.suptitle(title)
    return fig
