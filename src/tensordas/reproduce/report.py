"""The reproduction report: ``report.md`` opening with the summary of every comparison (a row per compared
method: intervals, share of SAM's gain, step-time ratio, verdict) and the paper's tables beside ours, then a
section per experiment (its table, figures, Q curves, the exact configuration), package versions and
hardware."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..reporting import format_value, save_figure, summarize
from ..reporting.verdicts import summary_rows
from ..tasks import TASKS, RunResult
from ..tasks.display import curve_figure, edge_picks
from ..tasks.writers import CURVES_CSV
from ..training import METHODS
from .families import FamilyOutcome, family_metric
from .paper import PAPER, PAPER_ITERATIONS, PAPER_TABLES
from .specs import ExperimentSpec

Q_FIGURE = "q_curves.png"

PACKAGES = ("tensordas", "torch", "tensorly", "numpy", "scipy", "scikit-learn", "transformers", "peft")
# Time per step where a task records it, else per run: the cost DAS is meant to save.
TIME_KEYS = ("step_time_ms", "wall_time_s")


def environment(device: str) -> dict[str, Any]:
    """Package versions and hardware, for the report and ``results.json``."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "packages": versions,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (cells formatted like the console tables)."""
    header = "| " + " | ".join(columns.values()) + " |"
    rule = "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"
    body = ["| " + " | ".join(format_value(row.get(k)) for k in columns) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def time_over_sam(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], str] | None:
    """Each registered method's mean time over the SAM runs' mean time, in registry order (the base and SAM left
    out), and which time was used: the step's where the records hold it, else the run's."""
    for key in TIME_KEYS:
        means = _method_means(records, key)
        if means.get("sam") and len(means) > 1:
            ratios = {m: means[m] / means["sam"] for m in METHODS if m in means and m not in ("base", "sam")}
            return (ratios, key) if ratios else None
    return None


def summary_section(summary: Sequence[Mapping[str, Any]]) -> str:
    """The report's opening table: one row per (experiment, method other than base and SAM), the experiment's
    metric, seeds and SAM - base in its first row, with the notes below."""
    if not summary:
        return ""
    columns = {"experiment": "experiment", "metric": "metric", "n_seeds": "seeds", "sam-base": "SAM − base"}
    columns |= {"method": "method", "m-base": "m − base", "m-sam": "m − SAM"}
    columns |= {"share": "m's share of SAM's gain [95% CI]", "time": "step time / SAM's", "verdict": "verdict"}
    rows = []
    for entry in summary:
        arrow = "↑" if entry["higher_is_better"] else "↓"
        first, *rest = summary_rows(entry)
        rows.append({**first, "metric": f"{entry['metric']} {arrow}", "n_seeds": entry["n_seeds"]})
        rows += [{**row, "metric": "", "n_seeds": ""} for row in rest]
    lines = [
        "## Summary: does each method deliver SAM's gain?",
        "",
        "One row per compared method m. Differences are means over paired seeds ± the half-width of their 95%",
        "t-interval, in the metric's own direction (↑ higher is better, ↓ lower). m's share of SAM's gain is",
        "(m − base) / (SAM − base) of the paired means with Fieller's 95% interval, `unbounded` where SAM's gain",
        "is not significant. The verdict is computed from the intervals oriented so that positive is better",
        "(docs/design.md section 7): SAM − base not above 0 → undecided; if m − base is above 0: m − SAM within",
        "±match tolerance → matches SAM, m − SAM above 0 → better than SAM, m − SAM containing 0 → not",
        "distinguishable from SAM, else between base and SAM; if m − base is not above 0: m − SAM below 0 → no",
        "better than base, else inconclusive. Where a strength is a list, each method picked its value per seed",
        "on a validation split of the training data (`selected` in the records; a value at the edge of its grid",
        "is named in the notes). How the bundled experiments were chosen, and what was tried where a verdict",
        "reads `undecided`: docs/experiments.md.",
        "",
        markdown_table(rows, columns),
        "",
    ]
    lines += [f"- {e['experiment']}: match tolerance {e['match_tolerance']:g}" + (f"; {e['note']}" if e.get("note")
              else "") for e in summary]  # fmt: skip
    return "\n".join([*lines, ""])


def _method_means(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """Mean of ``key`` over seeds for each method that records it (reference rows left out)."""
    values: dict[str, list[float]] = {}
    for r in records:
        v = r.get(key)
        if r.get("method") is not None and isinstance(v, (int, float)):
            values.setdefault(r["method"], []).append(float(v))
    return {m: math.fsum(v) / len(v) for m, v in values.items()}


def paper_section(
    specs: Sequence[ExperimentSpec],
    outcomes: Mapping[str, FamilyOutcome],
    summary: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The paper's Tables 1-3 and 6, each followed by our experiments of the matching family. Our share of
    SAM's gain is the ``summary``'s ``recovered`` where its interval is bounded (SAM's gain is significant),
    never a ratio of two differences that may both be noise."""
    recovered = {e["experiment"]: r for e in summary if (r := e.get("recovered")) and not r.get("unbounded")}
    columns = {"row": "", "setting": "setting", "base": "base", "sam": "SAM", "das": "DAS", "share": "DAS's share"}
    rows: list[dict[str, Any]] = []
    for paper in PAPER_TABLES:
        if paper.ours is None:  # Table 6: time per step relative to the base optimizer
            rows.append({"row": f"paper {paper.table}", "setting": paper.setting, **paper.values})
            for spec in specs:
                times = _method_means(outcomes[spec.name].records, "step_time_ms")
                if {"base", "sam", "das"} <= set(times):
                    rel = {m: times[m] / times["base"] for m in ("base", "sam", "das")}
                    rows.append({"row": f"ours: {spec.name}", "setting": "median ms per step / base's", **rel})
            continue
        extra = "; ".join(f"{k} {v:g}" for k, v in (paper.references or {}).items())
        setting = f"{paper.setting}; {paper.quantity}, base {paper.base_label}" + (f"; {extra}" if extra else "")
        rows.append({"row": f"paper {paper.table}", "setting": setting, **paper.values, "share": paper.share})
        for spec in (s for s in specs if s.family == paper.family):
            records = outcomes[spec.name].records
            metric = family_metric(spec)
            # the paper's quantity where we record it, and the experiment's own metric (what it decides on)
            keys = dict.fromkeys(k for k in (paper.ours, metric and metric.key) if k and any(k in r for r in records))
            for key in keys:
                means = _method_means(records, key)
                decided = metric is not None and key == metric.key and spec.name in recovered
                share = recovered[spec.name]["mean"] if decided else None
                row = {"row": f"ours: {spec.name}", "setting": f"{spec.title}; `{key}`", **means, "share": share}
                rows.append(row)
    return "\n".join(
        [
            "## The paper's tables beside ours",
            "",
            f"Quoted from {PAPER}. DAS's share of SAM's gain is (DAS − base) / (SAM − base) of the means; our rows",
            "are means over seeds of the matching quantity of each experiment of the same family, with the",
            "summary's share where SAM's gain is significant (— elsewhere: a ratio of noise). The verdicts above",
            "decide; the paper gives no intervals.",
            "",
            markdown_table(rows, columns),
            "",
        ]
    )


def q_curve_figure(folder: Path, title: str) -> Path | None:
    """``folder/q_curves.png``: Q over training steps, mean over seeds, one line per optimizer, from the
    experiment's ``curves.csv`` (None when it has no Q curves)."""
    try:
        with (folder / CURVES_CSV).open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    runs: dict[tuple[str, str], RunResult] = {}
    for row in rows:
        try:
            point = {"step": float(row["step"]), "Q": float(row["Q"])}
        except (KeyError, TypeError, ValueError):  # no Q column, or an empty cell
            continue
        key = (row["optimizer"], row["seed"])
        runs.setdefault(key, RunResult(record={"optimizer": key[0]})).curve.append(point)
    if not runs:
        return None
    figure = curve_figure(list(runs.values()), "step", {"Q": "norm deviation Q (mean over seeds)"}, title=title)
    return save_figure(figure, folder / Q_FIGURE)


def _protocol_note(spec: ExperimentSpec, outcome: FamilyOutcome) -> str | None:
    """Completion's paper protocol run with fewer iterations than the paper's says so."""
    config = outcome.config
    if spec.family != "completion" or config.get("protocol") != "paper":
        return None
    steps = config.get("steps")
    if steps == PAPER_ITERATIONS:
        return f"The paper's Table 1 protocol, {steps:,} iterations as in the paper."
    return f"The paper's Table 1 protocol with **{steps:,} iterations** (the paper ran {PAPER_ITERATIONS:,})."


def methods_note(records: Sequence[Mapping[str, Any]]) -> str | None:
    """What each trained method is (its registry title, e.g. LookSAM's per-tensor variant), and the
    runs whose tuned value sits at the edge of its grid (``"edge": true`` in ``selected``)."""
    seen = dict.fromkeys(r.get("method") for r in records if r.get("method") in METHODS)
    if not seen:
        return None
    lines = ["Methods: " + "; ".join(f"`{m}`: {METHODS[m].title}" for m in seen) + "."]
    edges = edge_picks(records)
    if edges:
        lines.append("Picked at the edge of its grid (the optimum may lie outside it): " + "; ".join(edges) + ".")
    return "\n\n".join(lines)


def experiment_section(spec: ExperimentSpec, outcome: FamilyOutcome, out_dir: Path, report_dir: Path) -> str:
    """The report section of one experiment."""
    records = outcome.records
    about = f"Family `{spec.family}`, configuration `{spec.source}`, profile `{spec.profile}`."
    lines = [f"## {spec.title}", "", about]
    task = TASKS[spec.family]
    metric = family_metric(spec)
    if metric is None:  # a family without a compared metric: one row per record
        lines += ["", markdown_table(records, task.record_columns), ""]
    else:
        times = [k for k in TIME_KEYS if any(r.get(k) is not None for r in records)]
        rows = summarize(records, by=["optimizer"], metrics=[metric.key, *times])
        columns = {"optimizer": "optimizer", metric.key: spec.metric_label or metric.key}
        columns.update({k: {"step_time_ms": "ms / step", "wall_time_s": "wall time (s)"}[k] for k in times})
        seeds = sorted({r.get("seed") for r in records if r.get("seed") is not None})
        lines += ["", f"Mean ± std over seeds {seeds}.", "", markdown_table(rows, columns), ""]
        ratios = time_over_sam(records)
        if ratios is not None:
            cells = ", ".join(f"{m} **{r:.3f}**" for m, r in ratios[0].items())
            lines.append(f"Time over SAM's ({ratios[1]}): {cells}")
    if task.note:
        lines.append(task.note)
    methods = methods_note(records)
    if methods:
        lines += ["", methods]
    note = _protocol_note(spec, outcome)
    if note:
        lines += ["", note]
    figures = list(outcome.figures)
    if metric is not None:
        q_figure = q_curve_figure(out_dir, f"{spec.title}: Q over training")
        if q_figure is not None:
            figures.append(q_figure)
    for fig in figures:
        rel = os.path.relpath(fig, report_dir)
        lines += ["", f"![{spec.title}]({rel})"]
    lines += [
        "",
        "<details><summary>configuration</summary>",
        "",
        "```json",
        json.dumps(outcome.config, indent=2, default=str),
        "```",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def _runs_line(jobs: int | None) -> str | None:
    """How the runs were executed (``--jobs``), for the report's header."""
    if jobs is None:
        return None
    return "- runs: serial, in one process" if jobs == 1 else f"- runs: {jobs} worker processes, one torch thread each"


def left_out_line(profile: str, left_out: Mapping[str, Any] | None) -> str | None:
    """The report's header line naming what a bundled profile runs less than ``full`` (None: nothing)."""
    if not left_out or not (left_out.get("experiments") or left_out.get("methods")):
        return None
    parts = []
    if left_out.get("experiments"):
        parts.append("experiments " + ", ".join(left_out["experiments"]))
    by_method: dict[str, list[str]] = {}
    for experiment, methods in left_out.get("methods", {}).items():
        for method in methods:
            by_method.setdefault(method, []).append(experiment)
    if by_method:
        parts.append("methods " + "; ".join(f"{m} in {', '.join(e)}" for m, e in by_method.items()))
    return (
        f"- left out of the `{profile}` profile (the `full` profile runs them): {'; '.join(parts)}; why: "
        'docs/experiments.md (for the quick profile, its section "The quick profile\'s budget")'
    )


SEED_SET_LINES = {
    "confirmation": "each experiment's confirmation `seeds`, disjoint from the `exploration_seeds` its settings "
    "were chosen on (docs/experiments.md)",
    "exploration": "each experiment's `exploration_seeds` (`--explore`): the seeds its settings are chosen on, "
    "not a confirmation",
}


def render_report(
    sections: Sequence[str],
    env: Mapping[str, Any],
    profile: str,
    elapsed_s: float,
    command: str | None = None,
    opening: Sequence[str] = (),
    left_out: Mapping[str, Any] | None = None,
) -> str:
    """The whole ``report.md``: the header, the ``opening`` sections (summary, paper), the experiments.

    ``left_out``: what a bundled profile runs less than the full one (:func:`~.specs.left_out_of`)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items())
    hardware = f"{env['cpu']} ({env['cpu_count']} cores, {env['torch_threads']} torch threads), device {env['device']}"
    if "gpu" in env:
        hardware += f" ({env['gpu']})"
    head = [
        "# tensordas reproduction report",
        "",
        f"Profile `{profile}`, written {now}, {elapsed_s:.0f} s of computation in this invocation.",
        "",
        f"- command: `{command}`" if command else "",
        f"- hardware: {hardware}",
        f"- Python {env['python']} on {env['platform']}",
        _runs_line(env.get("jobs")),
        f"- seeds: {SEED_SET_LINES[env['seed_set']]}" if env.get("seed_set") in SEED_SET_LINES else None,
        left_out_line(profile, left_out),
        f"- packages: {packages}",
        "",
        "Every experiment compares the base optimizer, SAM on that base and each method its configuration lists",
        "(DAS and the one-pass candidates of the method registry) on the same seeds; all records are in",
        "`results.json`, per-run files under each experiment's `runs/`. DAS uses the `sam-matched` formula and",
        "group gradient norms unless an experiment sets `das_variant`/`grad_norm`; each DAS record names its",
        "`das_variant` and `grad_norm`.",
        "",
    ]
    return "\n".join([line for line in head if line is not None]) + "\n" + "\n".join([*opening, *sections])
