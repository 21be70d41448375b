"""The record schema: one flat dict per (method, seed) run, the same key for the same quantity in every family.

Every family's record holds the keys of :data:`RECORD_KEYS`; the trained families also hold
``method_title`` (the method registry's description of what ran, e.g. pytorch-optimizer's per-tensor
LookSAM), ``lr`` and the method's options (``alpha``, ``rho``, ``das_variant``, ... as named in the
method registry), and each family adds its own test metrics (its :class:`~tensordas.tasks.protocol.Task`
lists them with their direction) and extras (data sizes, ranks, memorisation, ...). The classifier
families read their test metrics at a validation-chosen checkpoint and add the keys of
:data:`tensordas.tasks.tuning.CHECKPOINT_KEYS` (``checkpoint``, ``checkpoint_epoch``, ``final_test_acc``).
:func:`check_record` is called on every record a run produces, so a family cannot drift from the schema silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RECORD_KEYS", "check_record"]

RECORD_KEYS: dict[str, str] = {
    "method": "the optimizer method, a name of the method registry (base, sam, das, bar); None for a "
    "reference row not trained by an optimizer (completion's ALS)",
    "base": "the base optimizer (sgd, adam, adamw); None for a reference row",
    "optimizer": "the row's label in tables and plots: sgd, sam(sgd), das(adam), als (tensorly)",
    "seed": "the seed: initialisation, split and data order are shared by every method on it",
    "selected": "the strength (the base: its lr) chosen on validation data, e.g. {'alpha': 0.1, 'edge': False}; "
    "'edge': true when it is the smallest or largest value of its grid, 'extended' under --tune (the grid was "
    "extended once past that edge); {} when none was tuned (a tuned record adds 'candidates': each value tried "
    "with its validation metric and loss)",
    "train_loss": "the training loss at the end",
    "Q": "the norm deviation at the end, mean over core groups (None: no core group)",
    "diverged": "a non-finite training loss stopped the run",
    "steps": "optimizer steps taken (None: not trained by steps)",
    "step_time_ms": "the median time of one optimizer step, waiting for the device (None: no steps)",
    "wall_time_s": "the run's training and evaluation time",
}


def check_record(record: Mapping[str, Any], where: str = "record") -> None:
    """``ValueError`` naming the missing keys unless ``record`` holds every key of :data:`RECORD_KEYS`."""
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"{where} lacks the record key(s) {', '.join(missing)} (see tensordas.tasks.records)")
