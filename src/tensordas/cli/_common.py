"""Helpers shared by the command modules: click exception classes, option parsing, consoles."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from ..reporting import ensure_dir, progress_bar
from ..tasks._experiment import check_seeds, diverged_runs

try:  # typer >= 0.2x vendors click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older typer depends on click
    from click.exceptions import ClickException, UsageError

__all__ = [
    "ClickException",
    "UsageError",
    "build_config",
    "console",
    "parse_ints",
    "parse_methods",
    "parse_pair",
    "parse_rank",
    "parse_seeds",
    "print_error",
    "print_warning",
    "run_comparison",
]

# Options that several comparison commands declare the same way (defaults stay per command).
BaseOpt = Annotated[str, typer.Option("--base", help="Base optimizer: sgd | adam | adamw.")]
Methods = Annotated[str, typer.Option("--optimizer", help="base | sam | das | bar (or several: das,sam).")]
Compare = Annotated[bool, typer.Option("--compare", help="Run base, SAM and DAS (overrides --optimizer).")]
Momentum = Annotated[float, typer.Option("--momentum", help="SGD momentum.")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", help="Weight decay of the base optimizer.")]
Alpha = Annotated[float, typer.Option("--alpha", help="DAS strength.")]
AlphaSchedule = Annotated[str, typer.Option("--alpha-schedule", help="constant | linear | cosine.")]
DasVariant = Annotated[
    str, typer.Option("--das-variant", help="DAS formula: sam-matched (drift equals SAM's) | reference (authors').")
]
GradNorm = Annotated[str, typer.Option("--grad-norm", help="DAS normaliser: group | global (SAM's norm).")]
Rho = Annotated[float, typer.Option("--rho", help="SAM radius.")]
Seeds = Annotated[str, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")]
Device = Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar (only on a terminal).")]

T = TypeVar("T")


def console() -> Console:
    """The console for results (standard output); progress and errors go to standard error.

    Piped or logged output gets a wide console so result tables are not wrapped at 80 columns.
    """
    con = Console()
    if not con.is_terminal:
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


COMPARED = ("base", "sam", "das")


def parse_methods(optimizer: str, compare: bool) -> tuple[str, ...]:
    """The optimizers to run: base, SAM and DAS with ``--compare``, else the comma-separated ``--optimizer``."""
    return COMPARED if compare else tuple(o.strip() for o in optimizer.split(","))


def parse_rank(value: str | None, option: str = "--rank") -> int | tuple[int, ...] | None:
    """``None`` -> None, ``"8"`` -> 8, ``"1,4,4,1"`` -> (1, 4, 4, 1)."""
    if value is None:
        return None
    ranks = parse_ints(value, option)
    return ranks[0] if len(ranks) == 1 else tuple(ranks)


def run_comparison(
    config: Any,
    out: Path,
    *,
    run: Callable[..., Any],
    write: Callable[..., dict[str, Path]],
    table: Callable[..., Any],
    resume: bool,
    progress: bool,
    threads: int | None = None,
) -> None:
    """What every comparison command does once its configuration is valid: run the (optimizer, seed)
    grid with a progress bar, write the results, print the mean ± std table."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    ensure_dir(out)  # fail before the runs, not after them
    start = time.perf_counter()
    with progress_bar(enabled=None if progress else False) as update:
        results = run(config, out_dir=out, resume=resume, progress=update)
    paths = write(results, config, out)
    con = console()
    con.print(table(results, config))
    diverged = diverged_runs(results)
    if diverged:
        print_warning(f"diverged (non-finite loss; metrics missing): {', '.join(diverged)}")
    elapsed = time.perf_counter() - start
    con.print(
        f"wrote {paths['results']}, {paths['curves'].name}, {paths['figure'].name} in {elapsed:.1f} s", highlight=False
    )


def build_config(factory: Callable[..., T], **settings: Any) -> T:
    """``factory(**settings)``, turning its ``ValueError`` (invalid setting) into a usage error (exit 2)."""
    try:
        return factory(**settings)
    except ValueError as e:
        raise UsageError(str(e)) from None
