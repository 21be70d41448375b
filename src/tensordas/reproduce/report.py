"""The reproduction report: ``report.md`` with a table per experiment, its figures, the exact
configuration, package versions and hardware."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..reporting import format_value, summarize
from ..tasks import TASKS
from .families import FamilyOutcome, family_metric
from .specs import ExperimentSpec

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


def das_sam_time_ratio(records: Sequence[Mapping[str, Any]]) -> tuple[float, str] | None:
    """Mean time of the DAS runs over the mean time of the SAM runs, and which time was used."""
    for key in TIME_KEYS:
        das = [r[key] for r in records if r.get("method") == "das" and r.get(key) is not None]
        sam = [r[key] for r in records if r.get("method") == "sam" and r.get(key) is not None]
        if das and sam:
            return (sum(das) / len(das)) / (sum(sam) / len(sam)), key
    return None


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
        ratio = das_sam_time_ratio(records)
        if ratio is not None:
            lines.append(f"DAS/SAM time ratio ({ratio[1]}): **{ratio[0]:.3f}**")
    if task.note:
        lines.append(task.note)
    for fig in outcome.figures:
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


def render_report(
    sections: Sequence[str], env: Mapping[str, Any], profile: str, elapsed_s: float, command: str | None = None
) -> str:
    """The whole ``report.md``."""
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
        f"- packages: {packages}",
        "",
        "Every experiment compares the base optimizer, SAM on that base and DAS on that base on the same seeds;",
        "all records are in `results.json`, per-run files under each experiment's `runs/`. DAS uses the",
        "`sam-matched` formula and group gradient norms unless an experiment sets `das_variant`/`grad_norm`;",
        "each DAS record names its `das_variant` and `grad_norm`.",
        "",
    ]
    return "\n".join([line for line in head if line is not None]) + "\n" + "\n".join(sections)
