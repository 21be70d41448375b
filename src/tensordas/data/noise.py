"""Label noise for the training labels: symmetric and asymmetric (class-pair flips).

Each training label is corrupted independently with probability ``rate`` (so the realised rate is
binomial around the requested one; :attr:`NoisyLabels.realized_rate` reports it):

- ``symmetric``: a corrupted label is replaced by a class drawn uniformly from the *other* K-1
  classes, so every corrupted label is wrong.
- ``asymmetric``: a corrupted label ``c`` becomes ``mapping[c]``; classes mapped to themselves are
  never corrupted, so the realised rate over all samples is ``rate`` times the share of samples
  whose class is flipped (not mapped to itself).
  The default mapping (:func:`asymmetric_mapping`) is ``c -> (c + 1) mod K`` (every class flips,
  the digits included), and for CIFAR-10 the classic one of Patrini et al. (2017): truck -> automobile,
  bird -> airplane, deer -> horse, cat <-> dog. At ``rate >= 0.5`` the flipped class outnumbers the
  true one and the true labels cannot be recovered from the data.

Only the labels passed in are touched; the test set is never given to these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "CIFAR10_ASYMMETRIC",
    "NOISE_TYPES",
    "NoisyLabels",
    "add_label_noise",
    "asymmetric_mapping",
    "check_noise",
    "check_noise_rate",
    "corrupt_labels",
]

NOISE_TYPES = ("symmetric", "asymmetric")
# CIFAR-10 classes: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck.
CIFAR10_ASYMMETRIC: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


@dataclass(frozen=True)
class NoisyLabels:
    """Training labels after corruption, with the true ones kept for evaluation."""

    labels: torch.Tensor  # int64, what the model is trained on
    true_labels: torch.Tensor  # int64, the clean labels
    noise_type: str
    rate: float  # the requested probability of corruption

    @property
    def corrupted(self) -> torch.Tensor:
        """Bool mask of the samples whose training label differs from the true one."""
        return self.labels != self.true_labels

    @property
    def n_corrupted(self) -> int:
        return int(self.corrupted.sum())

    @property
    def realized_rate(self) -> float:
        """Fraction of training labels that were changed."""
        n = self.labels.numel()
        return self.n_corrupted / n if n else 0.0


def check_noise_rate(rate: float) -> float:
    """``rate`` as a float; ``ValueError`` naming it unless ``0 <= rate < 1``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or not 0 <= rate < 1:
        raise ValueError(f"Invalid noise rate: {rate!r} (expected 0 <= rate < 1)")
    return float(rate)


def check_noise(rate: float, noise_type: str = "symmetric") -> None:
    """``ValueError`` naming the value unless ``rate`` and ``noise_type`` are valid label-noise settings."""
    check_noise_rate(rate)
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"Invalid noise type {noise_type!r} (expected one of {', '.join(NOISE_TYPES)})")


def asymmetric_mapping(num_classes: int, dataset: str | None = None) -> list[int]:
    """The class each class is flipped to under asymmetric noise (``mapping[c] == c``: never flipped).

    ``dataset="cifar10"`` (with 10 classes) gives :data:`CIFAR10_ASYMMETRIC`; anything else
    ``c -> (c + 1) mod K``.
    """
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {num_classes}")
    if dataset is not None and dataset.lower() == "cifar10" and num_classes == 10:
        return [CIFAR10_ASYMMETRIC.get(c, c) for c in range(10)]
    return [(c + 1) % num_classes for c in range(num_classes)]


def add_label_noise(
    labels: torch.Tensor,
    num_classes: int,
    rate: float,
    noise_type: str = "symmetric",
    *,
    seed: int = 0,
    mapping: Sequence[int] | None = None,
) -> NoisyLabels:
    """Corrupt each label independently with probability ``rate`` (see the module docstring).

    Args:
        labels: int labels in ``0..num_classes-1`` (the training labels only).
        num_classes: K (>= 2).
        rate: probability of corruption, ``0 <= rate < 1``.
        noise_type: ``"symmetric"`` or ``"asymmetric"``.
        seed: seeds the draws (same seed, same noise).
        mapping: asymmetric target class per class (default :func:`asymmetric_mapping` of K).

    Raises:
        ValueError: for a rate outside ``[0, 1)``, an unknown noise type, labels out of range or a bad mapping.
    """
    rate = check_noise_rate(rate)
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"Invalid noise type {noise_type!r} (expected one of {', '.join(NOISE_TYPES)})")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {num_classes}")
    true = torch.as_tensor(labels)
    if true.dim() != 1:
        raise ValueError(f"labels must be one class index per sample (1-D), got shape {tuple(true.shape)}")
    true = true.to(torch.int64).cpu()
    if true.numel() and (int(true.min()) < 0 or int(true.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {int(true.min())}..{int(true.max())}")
    gen = torch.Generator().manual_seed(int(seed))
    flip = torch.rand(true.shape, generator=gen, dtype=torch.float64) < rate
    if noise_type == "symmetric":
        shift = torch.randint(1, num_classes, true.shape, generator=gen)  # uniform over the other classes
        noisy = torch.where(flip, (true + shift) % num_classes, true)
    else:
        target = torch.as_tensor(
            list(mapping) if mapping is not None else asymmetric_mapping(num_classes), dtype=torch.int64
        )
        if target.shape != (num_classes,) or int(target.min()) < 0 or int(target.max()) >= num_classes:
            raise ValueError(f"Invalid asymmetric mapping {mapping!r} (expected {num_classes} classes in 0..K-1)")
        noisy = torch.where(flip, target[true], true)
    return NoisyLabels(labels=noisy, true_labels=true, noise_type=noise_type, rate=rate)


def corrupt_labels(
    labels: torch.Tensor,
    num_classes: int,
    rate: float,
    noise_type: str = "symmetric",
    *,
    seed: int = 0,
    dataset: str | None = None,
) -> NoisyLabels:
    """:func:`add_label_noise` with the data set's asymmetric mapping (:func:`asymmetric_mapping`): what
    every family that trains on noisy labels applies to its training (and validation) labels."""
    mapping = asymmetric_mapping(num_classes, dataset) if noise_type == "asymmetric" else None
    return add_label_noise(labels, num_classes, rate, noise_type, seed=seed, mapping=mapping)
