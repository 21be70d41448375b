"""The options every comparison command shares, written out as typed parameters (typer reads them).

:func:`optimizer_options` (base optimizer, methods, tuning) and :func:`run_options` (seeds, device, how to
run) are declared here once; between them each command gets one flag per method option, read from the
fields of :class:`~tensordas.training.MethodOptions` (:func:`method_option_parameters`). The defaults below
are the generic ones: :func:`~tensordas.cli._common.comparison_command` replaces them with the family's
(its configuration's defaults, its output folder) and fills the help texts that name the family's methods
or its resume rule (the ``{...}`` fields).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from ..training import BASE_OPTIMIZERS, METHODS, OPTIONS, STRENGTHS

__all__ = [
    "JOBS_HELP",
    "THREADS_HELP",
    "method_option_parameters",
    "methods_help",
    "option_parameter",
    "optimizer_options",
    "parameters_of",
    "run_options",
    "shown",
]

THREADS_HELP = "CPU threads for torch (1 is often fastest for small models on a busy machine)."
JOBS_HELP = (
    "Worker processes for the independent (method, seed, candidate) runs, one torch thread each (1: serial). "
    "Records are the same as with --jobs 1 --threads 1, except measured times and memory."
)
_GRID_HELP = " A comma list (e.g. 0.01,0.1,1) is a grid: each method picks its value on --validation data."


def optimizer_options(
    base: Annotated[str, typer.Option("--base", help=f"Base optimizer: {' | '.join(BASE_OPTIMIZERS)}.")] = "sgd",
    lr: Annotated[
        str,
        typer.Option(
            "--lr",
            help="Learning rate of the base optimizer. A comma list (e.g. 0.025,0.05,0.1) tunes the base method "
            "over it on --validation data; the other methods then train at its middle value.",
        ),
    ] = "0.01",
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.")] = 0.0,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="Base optimizer weight decay.")] = 0.0,
    optimizer: Annotated[str, typer.Option("--optimizer", help="{methods}")] = "das",
    compare: Annotated[bool, typer.Option("--compare", help="Run {compared} (overrides --optimizer).")] = False,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Tune every method, the base included, over its default grid of 3 values (base: --lr x 0.5, 1, "
            "2; the others: docs/experiments.md) on --validation data; a value picked at a grid's edge gets one "
            "more candidate past it. A strength given as a list keeps that list.",
        ),
    ] = False,
) -> None:
    """The base optimizer, its settings, the methods to compare and ``--tune`` (the method options follow)."""


def run_options(
    seeds: Annotated[str, typer.Option("--seeds", help="{seeds}")] = "0",
    device: Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N.")] = "cpu",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help=THREADS_HELP)] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help=JOBS_HELP)] = 1,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs"),
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="{resume}")] = True,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar (only on a terminal).")
    ] = True,
    match_tolerance: Annotated[
        float | None,
        typer.Option(
            "--match-tolerance",
            min=0.0,
            help="Verdict: a method matches SAM when it gains over the base and its interval to SAM lies within "
            "±this (default: the metric's, 0.01 for accuracy/R²/F1).",
        ),
    ] = None,
) -> None:
    """The seeds, the device and how to run and report (``--threads`` to ``--match-tolerance``)."""


def shown(default: float | tuple[float, ...]) -> str:
    """A strength's default as its flag takes it: ``0.1`` or ``0.1,0.2``."""
    return ",".join(f"{v:g}" for v in default) if isinstance(default, tuple) else f"{default:g}"


def option_parameter(name: str, kind: Any, default: Any, *flags: str, help: str, **kw: Any) -> inspect.Parameter:
    """A keyword-only parameter typer reads as ``--flag`` with ``help``."""
    annotation = Annotated[kind, typer.Option(*flags, help=help, **kw)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def method_option_parameters(defaults: dict[str, Any]) -> tuple[inspect.Parameter, ...]:
    """One parameter per method option (a field of :class:`~tensordas.training.MethodOptions`): its flag, type and
    help from the field, its default from ``defaults`` (the family's configuration). A strength is text: one
    number, or a comma list of the values a tuning grid tries."""
    out = []
    for option in OPTIONS.values():
        flag = f"{option.flag}/--no-{option.flag[2:]}" if option.type is bool else option.flag
        default = defaults[option.name]
        if option.name in STRENGTHS:
            out.append(option_parameter(option.name, str, shown(default), flag, help=option.help + _GRID_HELP))
        else:
            out.append(option_parameter(option.name, option.type, default, flag, help=option.help))
    return tuple(out)


def methods_help() -> str:
    """``--optimizer``'s help: every registered method with its one-line title."""
    titles = "; ".join(f"{m.name}: {m.title}" for m in METHODS.values())
    return f"Method: {' | '.join(METHODS)} (or several: das,sam). {titles}."


def parameters_of(
    options: Callable[..., None], defaults: dict[str, Any], helps: dict[str, str]
) -> tuple[inspect.Parameter, ...]:
    """The keyword-only parameters of ``options`` (:func:`optimizer_options`, :func:`run_options`) with the
    ``defaults`` given for some and the ``{field}`` of each help text filled from ``helps``."""
    out = []
    for p in inspect.signature(options, eval_str=True).parameters.values():
        kind, info = get_args(p.annotation)
        if "{" in (info.help or ""):
            info = copy.copy(info)
            info.help = info.help.format(**helps)
        annotation = Annotated[kind, info]
        default = defaults.get(p.name, p.default)
        out.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default))
    return tuple(out)
