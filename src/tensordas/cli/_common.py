"""What the command modules share: the comparison options (declared once, from the method registry),
running a task and printing its table, option parsing, one-line errors."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from ..data import DATASETS
from ..reporting import ensure_dir, progress_bar
from ..reporting.verdicts import verdict_table
from ..tasks import Task, check_seeds, diverged_runs
from ..tasks.display import edge_picks
from ..tasks.parallel import parallel_runs
from ..tasks.tuning import VALIDATION_HELP
from ..training import METHODS, OPTIONS, STRENGTHS, compared_methods
from ._options import (
    method_option_parameters,
    methods_help,
    optimizer_options,
    option_parameter,
    parameters_of,
    run_options,
    shown,
)

try:  # typer >= 0.2x vendors click
    from typer._click.exceptions import ClickException, UsageError
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer depends on click
    from click import get_current_context
    from click.exceptions import ClickException, UsageError

__all__ = [
    "ClickException",
    "UsageError",
    "OptionGroup",
    "build_config",
    "classification_data_options",
    "label_noise_options",
    "comparison_command",
    "console",
    "parse_ints",
    "parse_methods",
    "parse_pair",
    "parse_rank",
    "parse_seeds",
    "parse_strength",
    "print_error",
    "print_warning",
    "run_task",
]

T = TypeVar("T")


def console() -> Console:
    """The console for results (standard output); progress and errors go to standard error.

    Piped or logged output gets a wide console so result tables are not wrapped at 80 columns,
    unless ``COLUMNS`` says how wide it is.
    """
    con = Console()
    if not con.is_terminal and not os.environ.get("COLUMNS"):
        con.width = max(con.width, 160)
    return con


def print_error(message: str) -> None:
    """Print ``tensordas: error: message`` on one line of standard error."""
    text = " ".join(str(message).split()) or "unknown error"
    print(f"tensordas: error: {text}", file=sys.stderr, flush=True)


def print_warning(message: str) -> None:
    """Print ``tensordas: warning: message`` on one line of standard error."""
    text = " ".join(str(message).split())
    print(f"tensordas: warning: {text}", file=sys.stderr, flush=True)


def parse_pair(value: str, option: str) -> int | tuple[int, int]:
    """``"30"`` -> 30, ``"30x20"`` -> (30, 20); anything else is a usage error naming ``option``."""
    parts = value.lower().replace("*", "x").split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2):
        raise typer.BadParameter(f"{value!r} is not N or MxN (e.g. 30 or 30x20)", param_hint=f"'{option}'")
    return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])


def parse_ints(value: str, option: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; anything else is a usage error naming ``option``."""
    try:
        numbers = [int(p) for p in value.replace(" ", "").split(",")]
    except ValueError:
        numbers = []
    if not numbers:
        raise typer.BadParameter(f"{value!r} is not a comma-separated list of integers", param_hint=f"'{option}'")
    return numbers


def parse_seeds(value: str, option: str = "--seeds") -> tuple[int, ...]:
    """``"0,1,2"`` -> (0, 1, 2): distinct ints in [0, 2**32 - 1]; anything else is a usage error naming ``option``."""
    seeds = parse_ints(value, option)
    try:
        check_seeds(seeds)  # the library's own check: range and repeats
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=f"'{option}'") from None
    return tuple(seeds)


def parse_strength(value: str, option: str) -> float | tuple[float, ...]:
    """``"0.1"`` -> 0.1, ``"10,100"`` -> (10.0, 100.0) (a tuning grid); else a usage error naming ``option``."""
    try:
        numbers = [float(p) for p in value.replace(" ", "").split(",")]
    except ValueError:
        numbers = []
    if not numbers:
        raise typer.BadParameter(
            f"{value!r} is not a number or a comma-separated list of numbers", param_hint=f"'{option}'"
        )
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


def parse_methods(optimizer: str, compare: bool, supplies: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The methods to run: the registry's compared ones with ``--compare`` (those whose loss term the family
    can supply, ``supplies``), else the comma-separated ``--optimizer``."""
    return compared_methods(supplies) if compare else tuple(o.strip() for o in optimizer.split(","))


def parse_rank(value: str | None, option: str = "--rank") -> int | tuple[int, ...] | None:
    """``None`` -> None, ``"8"`` -> 8, ``"1,4,4,1"`` -> (1, 4, 4, 1)."""
    if value is None:
        return None
    ranks = parse_ints(value, option)
    return ranks[0] if len(ranks) == 1 else tuple(ranks)


def build_config(factory: Callable[..., T], **settings: Any) -> T:
    """``factory(**settings)``, turning its ``ValueError`` (invalid setting) into a usage error (exit 2)."""
    try:
        return factory(**settings)
    except ValueError as e:
        raise UsageError(str(e)) from None


def run_task(
    task: Task,
    config: Any,
    out: Path,
    *,
    resume: bool,
    progress: bool,
    threads: int | None = None,
    match_tolerance: float | None = None,
    jobs: int = 1,
) -> None:
    """What every command does once its configuration is valid: run the task with a progress bar,
    write its files, print its table, the comparison's summary (intervals and verdict, where the
    family compares a metric) and a warning naming diverged runs."""
    import torch
    import torch._dynamo  # noqa: F401

    # torch imports its compiler (torch._dynamo, 1.5-2 s) when the first optimizer is built. Imported here,
    # before the output folder exists, it is not under way when a run is interrupted: a Ctrl-C that lands in
    # one of importlib's module-lock callbacks is dropped ("Exception ignored in ...") and the run goes on.
    if threads is not None:
        torch.set_num_threads(threads)
    ensure_dir(out)  # fail before the runs, not after them
    start = time.perf_counter()
    with progress_bar(enabled=None if progress else False) as update, parallel_runs(jobs):
        outcome = task.run(config, out_dir=out, resume=resume, progress=update)
    records = task.records(outcome)
    summary = task.summary(records, match_tolerance=match_tolerance)  # written and printed alike
    paths = task.write_outcome(outcome, config, out, summary=summary)
    con = console()
    con.print(task.table(outcome, config))
    if summary:
        con.print(verdict_table(summary), width=min(con.width, 80))
    diverged = diverged_runs(records)
    if diverged:
        print_warning(f"diverged (non-finite loss; metrics missing): {', '.join(diverged)}")
    edges = edge_picks(records)
    if edges:
        print_warning(f"picked at the edge of its grid (the optimum may lie outside it): {'; '.join(edges)}")
    elapsed = time.perf_counter() - start
    con.print(
        f"wrote {paths['results']}, {paths['curves'].name}, {paths['figure'].name} in {elapsed:.1f} s", highlight=False
    )


@dataclass(frozen=True)
class OptionGroup:
    """Options that several commands share: their typer parameters, and how their values become the
    task configuration's settings."""

    parameters: tuple[inspect.Parameter, ...]
    settings: Callable[[dict[str, Any]], dict[str, Any]]


# How to run and report, not what: not settings of the configuration.
_RUN = ("threads", "jobs", "out", "resume", "progress", "match_tolerance")


def _comparison_options(
    defaults: dict[str, Any], out: str, resume_help: str, seeds_help: str, supplies: tuple[str, ...] | None = None
) -> OptionGroup:
    """The base optimizer, the methods and one flag per method option, seeds, device, and how to run
    (:mod:`~tensordas.cli._options`), with the family's defaults."""
    compared = ", ".join(m.upper() if m != "base" else m for m in compared_methods(supplies))
    helps = {"methods": methods_help(), "compared": compared, "seeds": seeds_help, "resume": resume_help}
    given = {k: defaults[k] for k in ("base", "momentum", "weight_decay", "device")}
    parameters = (
        *parameters_of(optimizer_options, {**given, "lr": shown(defaults["lr"])}, helps),
        *method_option_parameters(defaults),
        *parameters_of(run_options, {**given, "out": Path(out)}, helps),
    )

    def settings(values: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in values.items() if k not in ("optimizer", "compare", *_RUN)}
        methods = parse_methods(values["optimizer"], values["compare"], supplies)
        for name in methods:  # fail before any run: a loss term this family cannot supply
            missing = METHODS[name].needs_missing(supplies) if name in METHODS and supplies is not None else []
            if missing:
                raise typer.BadParameter(
                    f"{name!r} adds a loss term that needs the model's {', '.join(missing)}, which this family "
                    "cannot supply (loss-term methods run in the classifier families: train, compress, finetune)",
                    param_hint="'--optimizer'",
                )
        out.update(optimizers=methods, seeds=parse_seeds(values["seeds"]))
        out.update({k: parse_strength(values[k], OPTIONS[k].flag if k in OPTIONS else "--lr") for k in STRENGTHS})
        return out

    return OptionGroup(parameters, settings)


def _datasets_help(kind: str) -> str:
    """The registered data sets of ``kind`` for a ``--data`` help text: ``digits (8x8 digits, bundled) | ...``."""
    return " | ".join(f"{d.name} ({d.description})" for d in DATASETS.values() if d.kind == kind)


def classification_data_options(defaults: dict[str, Any]) -> OptionGroup:
    """The classification data options of the families that train classifiers (noisy, compress)."""
    parameters = (
        option_parameter("data", str, defaults["data"], "--data",
                         help=_datasets_help("classification") + " | an .npz file with arrays X and y."),
        option_parameter("data_dir", Path | None, None, "--data-dir",
                         help="Folder with torchvision's cifar-10-batches-py (for --data cifar10)."),
        option_parameter("download", bool, False, "--download",
                         help="Fetch CIFAR-10 into --data-dir with torchvision if it is missing."),
        option_parameter("test_fraction", float, defaults["test_fraction"], "--test-fraction",
                         help="Share of each class held out for testing (digits, .npz without X_test)."),
        option_parameter("train_size", int | None, None, "--train-size",
                         help="Keep this many random training samples."),
        option_parameter("test_size", int | None, None, "--test-size", help="Keep this many random test samples."),
    )  # fmt: skip

    def settings(values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "data_dir": None if values["data_dir"] is None else str(values["data_dir"])}

    return OptionGroup(parameters, settings)


def label_noise_options(defaults: dict[str, Any]) -> OptionGroup:
    """``--noise`` and ``--noise-type``: label noise on the training labels (noisy, compress)."""
    parameters = (
        option_parameter("noise", float, defaults["noise"], "--noise",
                         help="Label-noise rate in [0, 1) (training and validation labels; test labels stay clean)."),
        option_parameter("noise_type", str, defaults["noise_type"], "--noise-type",
                         help="symmetric (uniform over the other classes) | asymmetric (class-pair flips)."),
    )  # fmt: skip
    return OptionGroup(parameters, lambda values: values)


def validation_option(defaults: dict[str, Any]) -> OptionGroup:
    """``--validation``: the share of the training data held out to tune the strengths (families that have it)."""
    parameters = (option_parameter("validation", float | None, None, "--validation", help=VALIDATION_HELP),)
    return OptionGroup(parameters, lambda values: values)


def _defaulted(preset: dict[str, Any], context: Any) -> dict[str, Any]:
    """The ``preset`` settings whose option the user did not give (a setting without an option is kept)."""
    if context is None:
        return preset
    given = {"COMMANDLINE", "ENVIRONMENT"}
    return {k: v for k, v in preset.items() if getattr(context.get_parameter_source(k), "name", None) not in given}


def comparison_command(
    task: Task,
    *,
    out: str,
    resume_help: str = "Reuse finished runs found in OUT/runs.",
    seeds_help: str = "Comma-separated seeds, e.g. 0,1,2.",
    groups: tuple[Callable[[dict[str, Any]], OptionGroup], ...] = (),
    presets: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., None]]:
    """Decorator: a command of ``task`` from a function of its own options that returns its settings.

    The command gets the options every comparison shares — the base optimizer and its settings,
    ``--optimizer``/``--compare``, one flag per method registry option (defaults from ``task.config``),
    ``--seeds``, ``--device``, ``--threads``, ``--out``, ``--resume``, ``--progress`` — and those of
    ``groups`` (e.g. :func:`classification_data_options`), builds ``task.config`` from all of them (an
    invalid setting is a usage error), runs the task and prints its table. typer reads the command's
    ``inspect.signature``: the function's own parameters, then the groups', then the shared ones.
    ``presets(settings)`` may give settings (e.g. a protocol's) for the options the user left at
    their defaults; an option given on the command line wins.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(task.config) if f.default is not dataclasses.MISSING}
    shared = _comparison_options(defaults, out, resume_help, seeds_help, task.loss_context)

    def wrap(settings_of: Callable[..., dict[str, Any]]) -> Callable[..., None]:
        own = list(inspect.signature(settings_of, eval_str=True).parameters.values())
        tuned = "validation" in defaults and "validation" not in {p.name for p in own}  # completion has its own
        option_groups = [group(defaults) for group in (*groups, *([validation_option] if tuned else []))] + [shared]

        @functools.wraps(settings_of)
        def command(**kwargs: Any) -> None:
            given = {p.name: kwargs.pop(p.name) for group in option_groups for p in group.parameters}
            settings: dict[str, Any] = {}
            for group in option_groups:
                settings.update(group.settings({p.name: given[p.name] for p in group.parameters}))
            settings = {**settings_of(**kwargs), **settings}
            if presets is not None:
                settings.update(_defaulted(presets(settings), get_current_context(silent=True)))
            config = build_config(task.config, **settings)
            run_task(task, config, given["out"], resume=given["resume"], progress=given["progress"],
                     threads=given["threads"], match_tolerance=given["match_tolerance"],
                     jobs=given["jobs"])  # fmt: skip

        parameters = own + [p for group in option_groups for p in group.parameters]
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        del command.__wrapped__  # typer must read the signature above, not the function's own
        return command

    return wrap
