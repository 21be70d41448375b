"""The task protocol: each experiment family is one :class:`Task` object.

A family's module (``tasks/noisy.py``, ...) defines its configuration dataclass (a comparison family's
extends :class:`~tensordas.tasks.config.ComparisonConfig`), its run, table and plot functions, and at its
end the ``TASK`` object that bundles them with the family's metrics (each with its direction) and the
columns of its curves: ``Task(NAME, TITLE, NoisyConfig, run_noisy, noisy_table, plot_noisy, METRICS,
CURVE_COLUMNS, command="train")``. :data:`tensordas.tasks.TASKS` registers every family by name;
the CLI, ``tensordas reproduce`` and ``tensordas.tasks`` all read that registry, so a new family is its
module plus one line there (and its tests).

The functions follow one shape (``outcome`` is what ``run`` returns: a list of
:class:`~tensordas.tasks.runstore.RunResult` for a comparison grid, the study's result for dynamics)::

    outcome = task.run(config, out_dir=None, resume=True, progress=None)
    records = task.records(outcome)                    # flat dicts of the record schema
    summary = task.summary(records)                    # docs/design.md section 7's "summary" entries
    paths = task.write_outcome(outcome, config, out_dir, summary=summary)  # results.json last
    table = task.table(outcome, config)                # a rich table (mean ± std over seeds)
    figure = task.plot(outcome, config)

A comparison family's files are the common format (:func:`~tensordas.tasks.writers.write_experiment`),
built from its ``curve_columns`` and ``plot``; the summary is computed once by the caller and written as
given (:meth:`Task.write_outcome` computes it with the family's defaults where none is given).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..reporting.stats import summary_entry
from ..training import METHODS
from .writers import write_experiment

__all__ = ["Q", "TRAIN_LOSS", "Metric", "Task", "grid_records"]


@dataclass(frozen=True)
class Metric:
    """A record field a comparison can be decided on, with its direction.

    Attributes:
        key: the record key (``test_acc``).
        label: a column header (``test accuracy``).
        higher_is_better: its direction (verdicts orient differences so that positive is better).
        match_tolerance: the default ``match_tolerance`` of a verdict decided on it, in the metric's
            units: a method m "matches SAM" when it gains over the base and its m-SAM interval lies
            within ±this. 0.01 suits the fractions most metrics are (accuracy, R², F1); a metric in
            other units sets its own.
    """

    key: str
    label: str
    higher_is_better: bool = True
    match_tolerance: float = 0.01


# Metrics every trained family records under the same key (tensordas.tasks.records).
# Their scales depend on the data and model: no tolerance is natural, so only an exact match matches.
TRAIN_LOSS = Metric("train_loss", "training loss", higher_is_better=False, match_tolerance=0.0)
Q = Metric("Q", "norm deviation Q (lower: the direction SAM moves it)", higher_is_better=False, match_tolerance=0.0)


def grid_records(outcome: Sequence[Any]) -> list[dict[str, Any]]:
    """The records of a comparison grid's runs."""
    return [r.record for r in outcome]


def _count_grid(config: Any) -> int:
    """Runs of a comparison grid: each method once per value of its strength list (else once), per seed."""
    runs = 0
    for name in config.optimizers:
        strength = getattr(METHODS.get(name), "strength", None)
        values = getattr(config, strength, None) if strength else None
        runs += len(values) if isinstance(values, tuple) else 1
    return runs * len(config.seeds)


@dataclass(frozen=True)
class Task:
    """One experiment family.

    Attributes:
        name: the registry key, a reproduction file's ``family`` and ``--only`` value.
        title: what the family does, in a few words.
        config: the configuration dataclass (validated on construction; ``to_dict()`` gives its settings).
        run: ``run(config, *, out_dir=None, resume=True, progress=None) -> outcome``.
        table: ``table(outcome, config)``: the rich table a command prints.
        plot: ``plot(outcome, config)``: the family's figure.
        metrics: the record fields a comparison may be decided on, the default first (empty: the family
            compares no metric, e.g. dynamics).
        curve_columns: the columns of a comparison grid's ``curves.csv`` (each run's curve rows).
        write: ``write(outcome, config, out_dir) -> paths`` for a family whose outcome is not a comparison
            grid (dynamics); None: :meth:`write_outcome` writes the common format.
        records: ``records(outcome)``: the outcome's records (default: a grid's).
        count: ``count(config)``: how many runs ``run`` performs, for progress (default: methods x seeds).
        record_columns: for a family without metrics, the record fields a report table shows.
        note: a line a report prints under the family's table.
        command: the CLI command that runs the family (``train`` runs ``noisy``).
        loss_context: the fields a method's loss term may read that the family supplies
            (:data:`~tensordas.training.lossterms.CONTEXT_FIELDS`; ``None``: all of them); ``--compare``
            leaves out the methods whose loss term needs more.
    """

    name: str
    title: str
    config: type
    run: Callable[..., Any]
    table: Callable[[Any, Any], Any]
    plot: Callable[[Any, Any], Any]
    metrics: tuple[Metric, ...] = ()
    curve_columns: Sequence[str] = ()
    write: Callable[[Any, Any, Path], dict[str, Path]] | None = None
    records: Callable[[Any], list[dict[str, Any]]] = grid_records
    count: Callable[[Any], int] = _count_grid
    record_columns: Mapping[str, str] = field(default_factory=dict)
    note: str | None = None
    command: str | None = None
    loss_context: tuple[str, ...] | None = None

    @property
    def metric(self) -> Metric | None:
        """The default metric (the first), or None."""
        return self.metrics[0] if self.metrics else None

    def get_metric(self, key: str | None) -> Metric | None:
        """The metric ``key`` (None: the default); ``ValueError`` naming it when the family has no such metric."""
        if key is None:
            return self.metric
        for metric in self.metrics:
            if metric.key == key:
                return metric
        expected = ", ".join(m.key for m in self.metrics) or "none: its table has fixed columns"
        raise ValueError(f"invalid metric {key!r} for family {self.name!r} (expected one of {expected})")

    def summary(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        experiment: str | None = None,
        metric: str | None = None,
        match_tolerance: float | None = None,
    ) -> list[dict[str, Any]]:
        """The ``summary`` of one comparison's records: one entry (docs/design.md section 7) on ``metric``
        (default: the family's first) with ``match_tolerance`` (default: the metric's); ``[]`` for a family
        that compares no metric (dynamics)."""
        chosen = self.get_metric(metric)
        if chosen is None:
            return []
        tolerance = chosen.match_tolerance if match_tolerance is None else match_tolerance
        entry = summary_entry(
            records,
            experiment=experiment or self.name,
            metric=chosen.key,
            higher_is_better=chosen.higher_is_better,
            match_tolerance=tolerance,
        )
        return [entry]

    def write_outcome(
        self, outcome: Any, config: Any, out_dir: str | Path, *, summary: Sequence[Mapping[str, Any]] | None = None
    ) -> dict[str, Path]:
        """Write the outcome's files, ``results.json`` last (``paths["figure"]`` is the family's figure).

        A comparison grid's are :func:`~tensordas.tasks.writers.write_experiment`'s, from the family's
        ``curve_columns`` and ``plot``, with ``summary`` in ``results.json`` (None: :meth:`summary` of the
        records with the family's defaults); a family with its own ``write`` (dynamics) writes its own.
        """
        if self.write is not None:
            return self.write(outcome, config, out_dir)
        if summary is None:
            summary = self.summary(self.records(outcome))
        figure = self.plot(outcome, config)
        return write_experiment(out_dir, self.name, config.to_dict(), outcome, self.curve_columns, figure, summary)

    def settings_fields(self) -> list[str]:
        """The names of the configuration's settings."""
        return [f.name for f in dataclasses.fields(self.config) if f.init]
