"""What a family needs to tune its methods' strengths: the validation setting, resolved and checked.

Every tuned family has a ``validation`` setting: the share of the training data held out (per seed)
so that :func:`tensordas.tasks.grid.run_grid` can pick each method's strength on it. ``None`` means
0.2 when some strength is a list of values and 0 otherwise (no split: the training data and the
results are those of an untuned run).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..data import check_validation_fraction
from ..training import STRENGTHS

__all__ = ["DEFAULT_VALIDATION", "VALIDATION_HELP", "check_tuning", "validation_fields", "validation_fraction"]

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


def validation_fields(final: Mapping[str, Any], fraction: float, n_val: int) -> dict[str, Any]:
    """The record keys of a run with a validation split: its share, size and the final ``val_*`` metrics."""
    return {"validation": fraction, "n_val": n_val, **{k: v for k, v in final.items() if k.startswith("val_")}}
