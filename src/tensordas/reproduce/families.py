"""How a reproduction runs one experiment: its spec's settings into the family's :class:`~tensordas.tasks.Task`.

Every family runs the same way (the task protocol): the configuration is built from the spec's
settings (plus the reproduction's device), ``task.run`` runs it into the experiment's folder
(resuming finished runs), ``task.records`` gives its records, :func:`family_summary` their summary once,
and ``task.write_outcome`` writes its files with that summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..reporting import ProgressFn
from ..tasks import TASKS, Metric
from .specs import ExperimentSpec, supplied_settings

__all__ = ["FamilyOutcome", "family_config", "family_metric", "family_summary", "run_family"]


@dataclass
class FamilyOutcome:
    """Records of one experiment (one per optimizer and seed), the figures it wrote, its settings and
    its summary entries (none for a family that compares no metric)."""

    records: list[dict[str, Any]]
    figures: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: list[dict[str, Any]] = field(default_factory=list)


def family_config(spec: ExperimentSpec, device: str) -> Any:
    """The task configuration of ``spec`` (TOML arrays become tuples; the reproduction sets the device)."""
    task = TASKS[spec.family]
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.settings.items()}
    if "device" in supplied_settings(task):
        settings["device"] = device
    return task.config(**settings)


def run_family(spec: ExperimentSpec, config: Any, out_dir: Path, resume: bool, progress: ProgressFn | None):
    """Run ``spec``'s experiment with ``config`` into ``out_dir``; its records, figure, settings and summary."""
    task = TASKS[spec.family]
    outcome = task.run(config, out_dir=out_dir, resume=resume, progress=progress)
    records = task.records(outcome)
    summary = family_summary(spec, records)
    paths = task.write_outcome(outcome, config, out_dir, summary=summary)
    return FamilyOutcome(records=records, figures=[paths["figure"]], config=config.to_dict(), summary=summary)


def family_metric(spec: ExperimentSpec) -> Metric | None:
    """The metric of the spec's table: its ``metric``, or its family's default (None: fixed columns)."""
    return TASKS[spec.family].get_metric(spec.metric)


def family_summary(spec: ExperimentSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary entries of ``spec``'s experiment (none for a family that compares no metric)."""
    task = TASKS[spec.family]
    return task.summary(records, experiment=spec.name, metric=spec.metric, match_tolerance=spec.match_tolerance)
