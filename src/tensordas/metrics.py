"""The metrics, in one place: the norm-deviation metrics of a core group (docs/design.md, section 1) and the
evaluation metrics of the families (R² and RMSE for completion, macro-F1 for fine-tuning).

``n_k = ||G_k||_F^2``, ``gamma_k = ||dL/dG_k||_F^2``;
``Q = mean_k (n_k - n_bar)^2`` (norm deviation) and
``C = mean_k (n_k - n_bar)(gamma_k - gamma_bar)`` (norm-gradient covariance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .core_groups import CoreGroup

__all__ = [
    "GroupStats",
    "group_stats",
    "macro_f1",
    "norm_deviation",
    "norm_grad_covariance",
    "r2_from_sums",
    "r2_score",
    "rmse",
]

GroupLike = CoreGroup | Sequence[torch.Tensor]


def _cores(group: GroupLike) -> list[torch.Tensor]:
    cores = list(group.cores if isinstance(group, CoreGroup) else group)
    if not cores:
        raise ValueError("a core group needs at least one core")
    for c in cores:
        if not c.is_floating_point():  # a complex core's float cast would drop its imaginary part
            raise ValueError(f"cores must be real floating-point tensors, got {c.dtype}")
    return cores


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    # Accumulate in at least float32 so bf16/fp16 cores do not lose the statistics.
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _sq_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach().to(_acc_dtype(t)).pow(2).sum() for t in tensors])


def _grads(cores: list[torch.Tensor]) -> list[torch.Tensor]:
    missing = [i for i, c in enumerate(cores) if c.grad is None]
    if missing:
        raise ValueError(f"cores {missing} have no gradient; call backward() before computing gradient statistics")
    return [c.grad for c in cores]


def _covariance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - a.mean()) * (b - b.mean())).mean()


def norm_deviation(group: GroupLike) -> torch.Tensor:
    """Q: population variance of the squared core norms (0-dim tensor)."""
    n = _sq_norms(_cores(group))
    return _covariance(n, n)


def norm_grad_covariance(group: GroupLike) -> torch.Tensor:
    """C: covariance of squared core norms and squared gradient norms (0-dim tensor).

    Raises:
        ValueError: if a core has no gradient.
    """
    cores = _cores(group)
    return _covariance(_sq_norms(cores), _sq_norms(_grads(cores)))


@dataclass
class GroupStats:
    """Per-core and per-group statistics for logging; ``gamma``/``C`` are None without gradients."""

    n: torch.Tensor
    gamma: torch.Tensor | None
    Q: torch.Tensor
    C: torch.Tensor | None
    grad_norm: torch.Tensor | None

    def as_dict(self) -> dict[str, float | list[float] | None]:
        def val(t: torch.Tensor | None):
            if t is None:
                return None
            return t.tolist() if t.dim() else float(t)

        return {k: val(getattr(self, k)) for k in ("n", "gamma", "Q", "C", "grad_norm")}


def group_stats(group: GroupLike) -> GroupStats:
    """n_k, gamma_k, Q, C and the group's gradient norm ``||g||`` in one pass."""
    cores = _cores(group)
    n = _sq_norms(cores)
    if any(c.grad is None for c in cores):
        return GroupStats(n=n, gamma=None, Q=_covariance(n, n), C=None, grad_norm=None)
    gamma = _sq_norms(_grads(cores))
    return GroupStats(n=n, gamma=gamma, Q=_covariance(n, n), C=_covariance(n, gamma), grad_norm=gamma.sum().sqrt())


# --- evaluation metrics of the families -------------------------------------------------------------------


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
    if target.numel() == 0:
        raise ValueError("cannot compute a metric on an empty set of entries")


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root mean squared error (0-dim float64 tensor, no host sync)."""
    _check_pair(pred, target)
    return (pred.double() - target.double()).pow(2).mean().sqrt()


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (0-dim float64 tensor, no host sync).

    As in scikit-learn, a constant target gives 1.0 for a perfect prediction and 0.0 otherwise.
    """
    _check_pair(pred, target)
    p, t = pred.double(), target.double()
    return r2_from_sums((t - p).pow(2).sum(), (t - t.mean()).pow(2).sum())


def r2_from_sums(ss_res: torch.Tensor, ss_tot: torch.Tensor) -> torch.Tensor:
    """``1 - ss_res / ss_tot`` with scikit-learn's rule for a constant target (``ss_tot == 0``): 1.0 if
    ``ss_res == 0``, else 0.0. For sums accumulated over batches as well as over one vector."""
    const = torch.where(ss_res == 0, torch.ones_like(ss_res), torch.zeros_like(ss_res))
    return torch.where(ss_tot > 0, 1 - ss_res / torch.where(ss_tot > 0, ss_tot, torch.ones_like(ss_tot)), const)


def macro_f1(pred: np.ndarray, target: np.ndarray, num_labels: int) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class absent from both scores 0."""
    scores = []
    for k in range(num_labels):
        tp = int(np.sum((pred == k) & (target == k)))
        fp = int(np.sum((pred == k) & (target != k)))
        fn = int(np.sum((pred != k) & (target == k)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))
