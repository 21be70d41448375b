"""The configuration every comparison family extends, declared and checked once.

:class:`ComparisonConfig` adds to :class:`~tensordas.training.ComparisonSettings` (the methods, their
options, the base optimizer's settings, the seeds, the device, ``tune``) the ``validation`` share that
tuning picks strengths on (:mod:`tensordas.tasks.tuning`), and checks them all on construction. A
family's configuration (``NoisyConfig``, ...) declares only its own fields and defaults, and its own
checks in :meth:`ComparisonConfig.check_settings`. :class:`ClassifierConfig` adds what the families that
train a classifier on labelled data share (noisy, compress): the data, its split and the label noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..data.noise import check_noise
from ..training import ComparisonSettings, LoopConfig, OptimizerConfig, Strength, check_device, compared_optimizers
from .tuning import check_tuning, validation_fraction

__all__ = ["MAX_SEED", "ClassifierConfig", "ComparisonConfig", "check_seeds"]

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


@dataclass(frozen=True)
class ClassifierConfig(ComparisonConfig):
    """The settings of a family that trains classifiers on labelled data (noisy, compress): the data set and
    its split (the commands' data options), label noise on the training (and validation) labels (the test
    labels stay clean), and the training loop with its defaults for SGD with momentum."""

    data: str = "digits"
    data_dir: str | None = None
    download: bool = False
    test_fraction: float = 0.25
    train_size: int | None = None
    test_size: int | None = None
    noise: float = 0.0
    noise_type: str = "symmetric"
    epochs: int = 30
    batch_size: int = 64
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    alpha: Strength = 0.1  # DAS strength: the analogue of SAM's rho, the same by default
    rho: Strength = 0.1

    def check_settings(self) -> None:
        check_noise(self.noise, self.noise_type)
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"Invalid test_fraction: {self.test_fraction} (expected 0 < test_fraction < 1)")
        _ = self.loop, self.optimizer_configs  # validates epochs, batch size, schedules, lr, alpha, rho

    @cached_property
    def loop(self) -> LoopConfig:
        """The training loop of every compared method."""
        return LoopConfig(epochs=self.epochs, batch_size=self.batch_size, lr_schedule=self.lr_schedule)

    @cached_property
    def optimizer_configs(self) -> list[OptimizerConfig]:
        """One :class:`~tensordas.training.OptimizerConfig` per compared method and candidate."""
        return compared_optimizers(self)  # the loop sets total_steps = epochs * batches
