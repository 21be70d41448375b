"""Picking each method's strength on validation data, and extending a grid past its edge.

Tuning: a strength given as a list (``alpha = [0.1, 1, 10]``; the base's is its learning rate,
``lr = [0.025, 0.05, 0.1]``) makes one candidate run per (method, value, seed), each stored under its
own key (``das-sgd-alpha10-seed0``, ``base-sgd-lr0.05-seed0``) and recording a validation metric
(``val_acc``) measured on a split carved from the training data. :func:`select_candidate` picks, per
method and seed, the value with the best validation metric in the family's direction (ties: the lower
``val_loss``, then the first value); :func:`select_run` makes the picked run's record the method's record
for that seed, with ``selected`` (``{"alpha": 10.0, "edge": false}``) and ``candidates`` (every value
tried with its validation metric and loss), so the selection can be redone from the records alone. Test
metrics are never read by the selection.

Grid edges: a value picked at the smallest or largest value of its grid is marked ``"edge": true`` in
``selected``. With ``extend`` (``--tune``), :func:`grid_extension` gives one more value past that edge, in
the same geometric progression (the edge value times its ratio to its neighbour); that candidate is run,
and the choice is made again over all candidates (``"extended": true``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..training import OptimizerConfig
from .protocol import Metric
from .runstore import RunResult

__all__ = ["VAL_LOSS", "grid_extension", "select_candidate", "select_run", "validation_key"]

VAL_LOSS = "val_loss"


def validation_key(metric: Metric) -> str:
    """The record key of ``metric`` on the validation split: ``test_acc`` (also ``best_``/``final_test_acc``)
    -> ``val_acc``."""
    return "val_" + metric.key.removeprefix("test_").removeprefix("best_test_").removeprefix("final_test_")


def select_candidate(candidates: Sequence[Mapping[str, Any]], key: str, higher_is_better: bool) -> int:
    """The index of the candidate with the best ``key`` in the metric's direction.

    Ties go to the lower ``val_loss``, then to the first candidate; a missing or non-finite value
    (a diverged run) ranks last. Works on records and on a record's ``candidates`` alike.
    """

    def finite(value: Any) -> float | None:
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def rank(i: int) -> tuple[int, float, float, int]:
        value, loss = finite(candidates[i].get(key)), finite(candidates[i].get(VAL_LOSS))
        score = math.inf if value is None else (-value if higher_is_better else value)
        return (value is None, score, math.inf if loss is None else loss, i)

    if not candidates:
        raise ValueError("no candidate to select from")
    return min(range(len(candidates)), key=rank)


def _grid_values(runs: Sequence[tuple[OptimizerConfig, RunResult]]) -> dict[str, list[float]]:
    """The sorted values each tuned setting of one method's candidates took: its strength always, a
    second tuned option (LookSAM's alpha) where the candidates vary it."""
    spec = runs[0][0].spec
    out = {}
    for name in spec.tuned_options:
        values = sorted({getattr(opt, name) for opt, _ in runs})
        if name == spec.strength or len(values) > 1:
            out[name] = values
    return out


def select_run(task: str, runs: Sequence[tuple[OptimizerConfig, RunResult]], metric: Metric) -> RunResult:
    """The picked run of one method and seed, its record naming the choice (with ``edge`` where a
    grid was tried) and every candidate."""
    key = validation_key(metric)
    grids = _grid_values(runs)
    strength = runs[0][0].spec.strength
    candidates = []
    for opt, run in runs:
        if key not in run.record:
            raise ValueError(f"{task} run {opt.label}: the record has no {key!r} (no validation split?)")
        loss = {VAL_LOSS: run.record[VAL_LOSS]} if VAL_LOSS in run.record else {}  # completion has none
        others = {n: getattr(opt, n) for n in grids if n != strength}
        candidates.append({"value": getattr(opt, strength), **others, key: run.record[key], **loss})
    best_opt, best = runs[select_candidate(candidates, key, metric.higher_is_better)]
    selected: dict[str, Any] = {n: getattr(best_opt, n) for n in grids}
    if any(len(v) > 1 for v in grids.values()):
        selected["edge"] = bool(_edges(selected, grids))
    record = {**best.record, "selected": selected, "candidates": candidates}
    return RunResult(record=record, curve=best.curve)


def _edges(selected: Mapping[str, Any], grids: Mapping[str, Sequence[float]]) -> list[str]:
    """The tuned settings whose selected value is the smallest or largest of a grid of several values."""
    return [n for n, v in grids.items() if len(v) > 1 and selected[n] in (v[0], v[-1])]


def grid_extension(
    runs: Sequence[tuple[OptimizerConfig, RunResult]], chosen: Mapping[str, Any]
) -> OptimizerConfig | None:
    """The one candidate past the grid's edge that ``chosen`` sits on (its strength's edge first): the
    edge value times its ratio to its neighbour, the other settings as chosen. None when no value is
    at an edge, or the progression has no ratio (a value of 0) or leaves the option's valid range."""
    grids = _grid_values(runs)
    for name in _edges(chosen, grids):
        values = grids[name]
        edge = chosen[name]
        near = values[-2] if edge == values[-1] else values[1]
        if not (edge > 0 and near > 0):
            continue
        best = next(opt for opt, _ in runs if all(getattr(opt, n) == chosen[n] for n in grids))
        try:
            return dataclasses.replace(best, **{name: edge * (edge / near)})
        except ValueError:  # past the option's range (e.g. LookSAM's alpha above 1)
            continue
    return None
