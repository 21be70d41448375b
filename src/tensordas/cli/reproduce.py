"""``tensordas reproduce``: the paper's comparison on bundled data, written as one report."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer

from ..reporting.verdicts import verdict_table
from ..reproduce import run_reproduce
from ..tasks import TASKS
from ._common import UsageError, console
from ._options import THREADS_HELP


def reproduce_command(
    quick: Annotated[bool, typer.Option("--quick", help="Quick profile: about 20 min on a 2-core CPU.")] = False,
    profile: Annotated[
        str | None, typer.Option(help="smoke | quick | full (default: full, or quick with --quick).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/reproduce"),
    only: Annotated[str | None, typer.Option(help=f"Comma-separated families: {','.join(TASKS)}.")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(help=THREADS_HELP + " With --jobs > 1 each worker uses 1.", min=1)
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            help="Worker processes for the independent runs (default: the CPU cores; 1 with --device cuda; 1: "
            "serial). Records are the same as a serial run with --threads 1, except measured times and memory.",
            min=1,
        ),
    ] = None,
    explore: Annotated[
        bool,
        typer.Option(
            "--explore",
            help="Run each experiment's exploration_seeds (where its settings are chosen) instead of its "
            "confirmation seeds (what is reported).",
        ),
    ] = False,
    config: Annotated[
        list[Path] | None, typer.Option(help="Your own experiment file(s) (TOML, as in reproduce/configs).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted reproduction in OUT.")] = True,
    progress: Annotated[bool, typer.Option(help="Show the overall progress (only on a terminal).")] = True,
) -> None:
    """Run every experiment family with base, SAM, DAS (and LookSAM) on several seeds; write OUT/report.md.

    The reported seeds are each experiment's confirmation seeds, disjoint from the exploration seeds its
    settings were chosen on (--explore runs those). --jobs N runs the independent runs in N processes.

    Prints the summary of every comparison (a verdict per method). Also writes OUT/results.json (every
    record and the summary) and one folder per experiment with its curves,
    plots and per-run files. Re-running continues where an interrupted run stopped.
    """
    if quick and profile not in (None, "quick"):
        raise UsageError(f"--quick contradicts --profile {profile}")
    chosen = "quick" if quick else (profile or "full")
    if threads is not None:
        torch.set_num_threads(threads)
    families = [f.strip() for f in only.split(",") if f.strip()] if only else None
    try:
        result = run_reproduce(
            out,
            profile=chosen,
            only=families,
            device=device,
            config_files=config,
            resume=resume,
            progress=None if progress else False,
            command="tensordas " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None,
            jobs=jobs,
            seed_set="exploration" if explore else "confirmation",
        )
    except ValueError as e:
        if "Invalid profile" in str(e) or "Invalid --only" in str(e):
            raise UsageError(str(e)) from None
        raise
    con = console()
    summary = json.loads(result.results.read_text(encoding="utf-8"))["summary"]
    if summary:
        con.print(verdict_table(summary), width=min(con.width, 80))
    con.print(f"wrote {result.report} and {result.results.name}", highlight=False)
