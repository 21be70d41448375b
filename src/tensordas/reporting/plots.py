"""Matplotlib figures drawn on the Agg canvas: no display, no pyplot, no global backend change.

Figures are plain :class:`matplotlib.figure.Figure` objects; save them with
:func:`tensordas.reporting.io.save_figure` (atomic). Optimizers keep the same colours in every
figure of every task: their styles come from the method registry (:func:`set_method_style`).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["BASE_COLOR", "forget_method_style", "line_panels", "series_style", "set_method_style"]

# The base optimizer's colour: every series named by a base optimizer alone (``sgd``, ``GD``, ``Adam``).
BASE_COLOR = "#4c72b0"
# Colours for a method without one of its own, picked by a stable hash of its name: the same in every figure.
_OTHER_COLORS = ("#c44e52", "#937860", "#da8bc3", "#ccb974", "#64b5cd", "#8c8c8c", "#2f4b7c", "#a05195")
# Each registered method's (colour or None, line style), by method name. The method registry
# (tensordas.training.methods, a layer above this one) fills it as it registers a method.
_METHOD_STYLES: dict[str, tuple[str | None, str]] = {}


def set_method_style(method: str, color: str | None, linestyle: str = "-") -> None:
    """Draw the method ``method`` (series ``method`` or ``method(base)``) in ``color`` (``None``: one of a fixed
    palette picked by its name) with ``linestyle``, in every figure."""
    _METHOD_STYLES[method.lower()] = (color, linestyle)


def forget_method_style(method: str) -> None:
    """Undo :func:`set_method_style` (no-op for a method without a style)."""
    _METHOD_STYLES.pop(method.lower(), None)


def series_style(name: str) -> tuple[str, str]:
    """The ``(colour, line style)`` of a series: its method's (``sam(sgd)`` and ``SAM`` are ``sam``'s); a name
    without a method, a base optimizer alone (``sgd``, ``GD``), in the base's colour."""
    head = name.split("(", 1)[0].strip().lower()
    color, linestyle = _METHOD_STYLES.get(head, (None, "-"))
    if color is None:
        known = head in _METHOD_STYLES or "(" in name
        color = _OTHER_COLORS[zlib.crc32(head.encode()) % len(_OTHER_COLORS)] if known else BASE_COLOR
    return color, linestyle


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
    styles: Mapping[str, tuple[str, str]] | None = None,
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
        styles: ``(colour, line style)`` per series name, where it is not the method's (:func:`series_style`).
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
            color, linestyle = (styles or {}).get(name) or series_style(name)
            ax.plot(cols[x], cols[key], label=name, color=color, linestyle=linestyle, linewidth=1.6)
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
