"""The configuration every comparison family extends, declared and checked once.

:class:`ComparisonConfig` adds to :class:`~tensordas.training.ComparisonSettings` (the methods, their
options, the base optimizer's settings, the seeds, the device, ``tune``) the ``validation`` share that
tuning picks strengths on (:mod:`tensordas.tasks.tuning`), and checks them all on construction. A
family's configuration (``NoisyConfig``, ...) declares only its own fields and defaults, and its own
checks in :meth:`ComparisonConfig.check_settings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..training import ComparisonSettings, check_device
from .tuning import check_tuning, validation_fraction

__all__ = ["MAX_SEED", "ComparisonConfig", "check_seeds"]

MAX_SEED = 2**32 - 1  # numpy's seed range; torch accepts it too


def check_seeds(seeds: Sequence[int]) -> None:
    """``ValueError`` unless ``seeds`` are distinct ints in [0, 2**32 - 1] (and there is at least one)."""
    if not seeds:
        raise ValueError("no seeds given")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED:
            raise ValueError(f"Invalid seed {s!r} (expected an int from 0 to {MAX_SEED})")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds are listed twice: {list(seeds)} (a repeated seed repeats the same run)")


@dataclass(frozen=True)
class ComparisonConfig(ComparisonSettings):
    """The settings of a comparison family (validated on construction): those every comparison shares,
    and the share of the training data held out to tune the strengths."""

    validation: float | None = None  # share of the training data held out for tuning (None: 0.2 if tuned, else 0)

    def __post_init__(self) -> None:
        check_tuning(self)  # a strength list becomes a tuple before anything reads it
        self.check_settings()
        check_seeds(self.seeds)
        check_device(self.device)

    def check_settings(self) -> None:
        """The family's own checks (``ValueError`` naming the value); the shared settings are checked
        around it: the method options and ``validation`` before, the seeds and the device after."""

    def settings(self) -> dict[str, Any]:
        """What determines a run besides its optimizer and seed (its resume fingerprint): the family's
        settings (:meth:`~tensordas.training.ComparisonSettings.run_settings`) and digests of its data."""
        raise NotImplementedError(f"{type(self).__name__} does not say what determines its runs")

    @property
    def validation_fraction(self) -> float:
        """The share of the training data a run holds out (:func:`~tensordas.tasks.tuning.validation_fraction`)."""
        return validation_fraction(self)

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name (``config.json``, a reproduction's report)."""
        return dataclasses.asdict(self)
