"""What a family needs to tune its methods' strengths: the validation setting, resolved and checked.

Every tuned family has a ``validation`` setting: the share of the training data held out (per seed)
so that :func:`tensordas.tasks.grid.run_grid` can pick each method's strength on it. ``None`` means
0.2 when some strength is a list of values and 0 otherwise (no split: the training data and the
results are those of an untuned run).

Checkpoints. The classifier families (noisy, compress, finetune) report every method's test metrics at
the epoch of best validation accuracy (:func:`checkpoint_fields`: ties go to the lower validation
loss, then the earlier epoch; the same rule for every method), and the last epoch's as
``final_<metric>``. Without a validation split, or for a diverged run, the checkpoint is the last
epoch and the record's ``checkpoint`` says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..data import check_validation_fraction
from ..training import STRENGTHS
from .selection import select_candidate

__all__ = [
    "CHECKPOINT_KEYS",
    "DEFAULT_VALIDATION",
    "VALIDATION_HELP",
    "check_tuning",
    "checkpoint_fields",
    "validation_fields",
    "validation_fraction",
]

DEFAULT_VALIDATION = 0.2
VALIDATION_HELP = (
    "Share of the training data held out (per seed, stratified for classifiers) to pick each method's "
    f"strength when --alpha/--rho list several values (default {DEFAULT_VALIDATION} then, else 0)."
)


def check_tuning(config: Any) -> None:
    """Check the method options (a strength list becomes a tuple) and the ``validation`` setting:
    ``ValueError`` for a strength list with ``validation = 0``."""
    config.check_options()
    if config.validation is not None:
        check_validation_fraction(config.validation)
    if config.tuned and config.validation == 0:
        listed = ", ".join(s for s in STRENGTHS if isinstance(getattr(config, s), tuple))
        raise ValueError(f"{listed} list several values, picked on validation data: validation must be above 0")


def validation_fraction(config: Any) -> float:
    """The share of the training data a run holds out: ``validation``, or its default (module docstring)."""
    if config.validation is not None:
        return float(config.validation)
    return DEFAULT_VALIDATION if config.tuned else 0.0


# The record keys of the classifier families' checkpoint choice (beside ``final_<metric>`` per test metric).
CHECKPOINT_KEYS = {
    "checkpoint": "which epoch the test metrics are read at: 'best val_acc' (the epoch of best validation "
    "accuracy), or 'final epoch (no validation split)' / 'final epoch (diverged)'",
    "checkpoint_epoch": "that epoch",
    "final_test_acc": "test accuracy at the last epoch (test_acc is the checkpoint's)",
}


def checkpoint_fields(
    history: Sequence[Mapping[str, Any]], metrics: Sequence[str], *, by: str = "val_acc", diverged: bool = False
) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """``(row, fields)``: the history row of the checkpoint (module docstring) and the record keys it gives:
    each of ``metrics`` at the checkpoint and as ``final_<metric>`` at the last row, ``checkpoint`` (the
    rule that chose it) and ``checkpoint_epoch``. Row 0 (before training) is never chosen when a trained
    row exists."""
    final = history[-1]
    trained = [r for r in history if r.get("epoch", r.get("step", 0)) >= 1] or list(history)

    def finite(value: Any) -> bool:
        return isinstance(value, int | float) and math.isfinite(value)

    if diverged:
        row, rule = final, "final epoch (diverged)"
    elif not any(finite(r.get(by)) for r in trained):
        row, rule = final, "final epoch (no validation split)"
    else:  # the tuning's selection rule: the same direction and tie-breaks
        row, rule = trained[select_candidate(trained, by, higher_is_better=True)], f"best {by}"
    fields: dict[str, Any] = {m: row[m] for m in metrics}
    fields.update({f"final_{m}": final[m] for m in metrics})
    fields.update(checkpoint=rule, checkpoint_epoch=row.get("epoch", row.get("step")))
    return row, fields


def validation_fields(final: Mapping[str, Any], fraction: float, n_val: int) -> dict[str, Any]:
    """The record keys of a run with a validation split: its share, size and the final ``val_*`` metrics."""
    return {"validation": fraction, "n_val": n_val, **{k: v for k, v in final.items() if k.startswith("val_")}}
