"""``tensordas reproduce``: every experiment family, base vs SAM vs DAS on several seeds, one report.

Each experiment runs in ``OUT/<experiment>/`` through its task, which keeps every finished
(optimizer, seed) run as its own atomically written file; a finished experiment also leaves
``OUT/<experiment>/experiment.json`` with a fingerprint of its spec. Re-running an interrupted
reproduction therefore continues where it stopped, and ``OUT/results.json`` and ``OUT/report.md``
are written last.

``jobs`` worker processes run the independent (method, seed, candidate) runs of each experiment
(:func:`tensordas.tasks.parallel.parallel_runs`); ``seed_set`` picks the confirmation seeds (``seeds``, what
is reported) or the exploration seeds (``exploration_seeds``, what settings are chosen on), and every
record says which (``seed_set``).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..reporting import ProgressFn, atomic_open, ensure_dir, write_json
from ..tasks import TASKS, fingerprint
from ..tasks.parallel import check_jobs, default_jobs, parallel_runs
from ..training import check_device
from .families import FamilyOutcome, family_config, family_metric, family_summary, run_family
from .report import environment, experiment_section, paper_section, render_report, summary_section
from .specs import ExperimentSpec, bundled_specs, left_out_of, load_spec

DONE_FILE = "experiment.json"


@dataclass
class ReproduceResult:
    """What a reproduction produced."""

    out_dir: Path
    outcomes: dict[str, FamilyOutcome]
    report: Path
    results: Path


def select_specs(
    profile: str,
    only: Sequence[str] | None = None,
    config_files: Sequence[str | Path] | None = None,
    seed_set: str = "confirmation",
) -> list[ExperimentSpec]:
    """The bundled experiments (or the user's files), restricted to the families in ``only``, on
    ``seed_set``'s seeds (``confirmation`` or ``exploration``).

    Each experiment writes into ``OUT/<file name>/``, so two files of the same name are refused."""
    if config_files:
        specs = [load_spec(f, profile, seed_set) for f in config_files]
    else:
        specs = bundled_specs(profile, seed_set)
    seen: dict[str, ExperimentSpec] = {}
    for spec in specs:
        if spec.family not in TASKS:
            raise ValueError(f"{spec.source}: unknown family {spec.family!r} (expected one of {', '.join(TASKS)})")
        other = seen.setdefault(spec.name.casefold(), spec)
        if other is not spec:
            if Path(other.source).resolve() == Path(spec.source).resolve():
                raise ValueError(f"experiment file {spec.source} is given twice")
            raise ValueError(
                f"experiment files {other.source} and {spec.source} have the same name {spec.name!r} "
                f"(each experiment writes to OUT/<name>/): rename one"
            )
    if only:
        unknown = sorted(set(only) - set(TASKS))
        if unknown:
            raise ValueError(f"Invalid --only {','.join(unknown)} (expected some of {', '.join(TASKS)})")
        specs = [s for s in specs if s.family in only]
        if not specs:
            raise ValueError(f"no experiment of the families {', '.join(only)} in this configuration")
    return specs


def _load_done(folder: Path, print_: str) -> FamilyOutcome | None:
    """The finished experiment in ``folder`` if its ``experiment.json`` is intact and matches ``print_``."""
    try:
        stored = json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("fingerprint") != print_:
        return None  # stale, or not written by this tool: redo it
    records, figures, config = stored.get("records"), stored.get("figures"), stored.get("config")
    if not (
        isinstance(records, list)
        and all(isinstance(r, dict) for r in records)
        and isinstance(figures, list)
        and all(isinstance(f, str) for f in figures)
        and isinstance(config, dict)
    ):
        return None
    return FamilyOutcome(records=records, figures=[Path(f) for f in figures], config=config)


def _check_records(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> None:
    """The records must hold the table's metric (else the report would show blank columns)."""
    metric = family_metric(spec)
    metric = None if metric is None else metric.key
    if metric is not None and records and not any(metric in r for r in records):
        fields = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float))})
        raise ValueError(
            f"{spec.source}: the records of family {spec.family!r} have no {metric!r} "
            f"(numeric fields: {', '.join(fields)})"
        )


@contextlib.contextmanager
def overall_progress(total_runs: int, enabled: bool | None) -> Iterator[tuple[ProgressFn, Any]]:
    """One overall bar (experiment, run, elapsed, ETA) over all runs; yields (task callback, set_experiment)."""
    console = Console(stderr=True)
    if enabled is None:
        enabled = console.is_terminal
    state = {"finished": 0, "experiment": ""}
    if not enabled:
        yield (lambda task, done, total: None), (lambda name: None)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[runs]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task_id = bar.add_task("", total=total_runs, runs="")

        def update(run: str, done: int, total: int) -> None:
            if done >= total:
                state["finished"] += 1
                completed = state["finished"]
            else:
                completed = state["finished"] + done / max(total, 1)
            bar.update(
                task_id,
                completed=min(completed, total_runs),
                description=f"{state['experiment']}: {run}",
                runs=f"{min(state['finished'], total_runs)}/{total_runs} runs",
            )

        def set_experiment(name: str) -> None:
            state["experiment"] = name
            bar.update(task_id, description=name)

        yield update, set_experiment


def run_reproduce(
    out_dir: str | Path,
    *,
    profile: str = "quick",
    only: Sequence[str] | None = None,
    device: str = "cpu",
    config_files: Sequence[str | Path] | None = None,
    resume: bool = True,
    progress: bool | None = None,
    command: str | None = None,
    jobs: int | None = 1,
    seed_set: str = "confirmation",
) -> ReproduceResult:
    """Run the selected experiments into ``out_dir`` and write ``results.json`` and ``report.md``.

    ``jobs``: worker processes for the runs (None: one per CPU core on the CPU, 1 on an accelerator, where
    each worker would hold its own copy of the device context; 1: serially in this process).
    ``seed_set``: ``confirmation`` (each file's ``seeds``) or ``exploration`` (its ``exploration_seeds``)."""
    check_device(device)
    if jobs is None:
        jobs = default_jobs() if device == "cpu" else 1
    check_jobs(jobs)
    specs = select_specs(profile, only, config_files, seed_set)
    configs = {s.name: family_config(s, device) for s in specs}  # every experiment's settings checked first
    out = ensure_dir(out_dir)
    for name in ("report.md", "results.json"):  # never leave an old report beside new results
        (out / name).unlink(missing_ok=True)
    start = time.perf_counter()
    outcomes: dict[str, FamilyOutcome] = {}
    counts = {s.name: TASKS[s.family].count(configs[s.name]) for s in specs}
    total = sum(counts.values())
    with overall_progress(total, progress) as (update, set_experiment), parallel_runs(jobs) as jobs_used:
        for spec in specs:
            folder = ensure_dir(out / spec.name)
            print_ = fingerprint("reproduce", asdict(spec) | {"source": None})
            set_experiment(spec.name)
            outcome = _load_done(folder, print_) if resume else None
            if outcome is None:
                outcome = run_family(spec, configs[spec.name], folder, resume, update)
                _check_records(spec, outcome.records)
                write_json(
                    folder / DONE_FILE,
                    {
                        "fingerprint": print_,
                        "records": outcome.records,
                        "figures": [str(f) for f in outcome.figures],
                        "config": outcome.config,
                    },
                )
            else:
                outcome.summary = family_summary(spec, outcome.records)  # finished earlier: from its records
                for _ in range(counts[spec.name]):
                    update("finished earlier", 1, 1)
            outcomes[spec.name] = outcome
    elapsed = time.perf_counter() - start
    env = {**environment(device), "jobs": jobs_used, "seed_set": seed_set}
    records = [
        {"experiment": s.name, "family": s.family, "seed_set": s.seed_set, **r}
        for s in specs
        for r in outcomes[s.name].records
    ]
    summary = [entry for s in specs for entry in outcomes[s.name].summary]
    # what the bundled profile leaves out of the full one (a user's own files: whatever they name)
    left_out = left_out_of(profile, ran=[s.name for s in specs]) if not config_files else None
    results = write_json(
        out / "results.json",
        {
            "profile": profile,
            "seed_set": seed_set,
            "environment": env,
            "left_out": left_out,
            "records": records,
            "summary": summary,
        },
    )
    sections = [experiment_section(s, outcomes[s.name], out / s.name, out) for s in specs]
    report = out / "report.md"
    with atomic_open(report) as f:
        opening = [summary_section(summary), paper_section(specs, outcomes, summary)]
        f.write(render_report(sections, env, profile, elapsed, command, opening, left_out))
    return ReproduceResult(out_dir=out, outcomes=outcomes, report=report, results=results)
