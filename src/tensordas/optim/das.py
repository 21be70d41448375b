r"""Deviation-Aware Scaling (DAS).

For every core group, before the base optimizer's update (DESIGN.md section 1)::

    s_k = sqrt(clamp(1 + 2 alpha_t eta_t (gamma_k - gamma_bar) / (||g|| n_k), s_min^2, s_max^2))
    G_k <- s_k G_k

so each squared norm ``n_k`` moves by ``2 alpha eta (gamma_k - gamma_bar) / ||g||``: SAM's
first-order norm drift with ``rho`` replaced by ``alpha``, at no extra forward/backward pass.
``sum_k n_k`` is unchanged while no clamp bites and no core has ``n_k = 0``.

``variant="reference"`` follows the authors' public code instead:
``s_k = clamp(1 + alpha eta (gamma_k - gamma_bar) / (||g|| ||G_k||), s_min, s_max)``
(``||G_k||`` rather than ``||G_k||^2`` and no square root; the clamp is ours).

A core with ``n_k = 0`` keeps ``s_k = 1``; a core without a gradient keeps ``s_k = 1`` and is
left out of ``gamma_bar``; a group with a non-finite ``gamma_k`` is not scaled at that step and
the event is counted (:attr:`DAS.skipped_steps`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._core_scaling import CoreScalingOptimizer, FlatStats

__all__ = ["DAS", "das_scales", "das_scales_host", "das_scales_single_group"]

VARIANTS = ("sam-matched", "reference")
GRAD_NORMS = ("group", "global")


def _raw_scales(
    n: torch.Tensor,
    deviation: torch.Tensor,
    grad_norm: torch.Tensor,
    coef: torch.Tensor | float,
    variant: str,
    s_min: float,
    s_max: float,
    skipped: torch.Tensor,
) -> torch.Tensor:
    """Per-core scales from ``gamma_k - gamma_bar``; 1 where skipped or the formula is undefined."""
    if variant == "sam-matched":
        s = (1 + 2 * coef * deviation / (grad_norm * n)).clamp_(s_min**2, s_max**2).sqrt_()
    else:
        s = (1 + coef * deviation / (grad_norm * n.sqrt())).clamp_(s_min, s_max)
    # n = 0 gives +-inf before the clamp (so check it), ||g|| = 0 gives 0/0 = NaN.
    defined = (n > 0) & torch.isfinite(s) & ~skipped
    return torch.where(defined, s, 1.0)


def das_scales(
    stats: FlatStats,
    alpha: float,
    *,
    variant: str = "sam-matched",
    s_min: float = 0.5,
    s_max: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales for all cores of all groups at once, from flat statistics (multi-tensor path).

    Segment sums over ``stats.group_index`` give each group's ``gamma_bar`` and ``||g||``; the
    number of operations is independent of the number of groups.

    Returns:
        ``(scales, skipped)``: one scale per core, and per group whether it was skipped
        because a gradient norm was not finite.
    """
    gamma, idx = stats.gamma, stats.group_index
    gamma_sum = gamma.new_zeros(stats.num_groups).index_add_(0, idx, gamma)
    skipped = ~torch.isfinite(gamma_sum)  # gamma_k >= 0: the sum is finite iff every gamma_k is
    if stats.global_sq_norm is not None:  # a NaN/Inf anywhere makes SAM's global norm undefined
        skipped |= ~torch.isfinite(stats.global_sq_norm)
    deviation = gamma - (gamma_sum / stats.group_count)[idx]
    if stats.global_sq_norm is None:
        grad_norm = gamma_sum.sqrt()[idx]
    else:
        grad_norm = stats.global_sq_norm.sqrt()
    s = _raw_scales(stats.n, deviation, grad_norm, alpha * stats.eta, variant, s_min, s_max, skipped[idx])
    return s, skipped


def das_scales_host(
    n: list[float],
    gamma: list[float],
    group_index: list[int],
    num_groups: int,
    eta: list[float],
    alpha: float,
    *,
    global_sq_norm: float | None = None,
    variant: str = "sam-matched",
    s_min: float = 0.5,
    s_max: float = 2.0,
) -> tuple[list[float], list[bool]]:
    """The scales of :func:`das_scales` on Python floats (the CPU path: a few dozen tensor
    operations on a handful of numbers cost more than the numbers themselves)."""
    gamma_sum, count = [0.0] * num_groups, [0] * num_groups
    for g, value in zip(group_index, gamma):
        gamma_sum[g] += value
        count[g] += 1
    skipped = [not math.isfinite(s) for s in gamma_sum]
    if global_sq_norm is not None and not math.isfinite(global_sq_norm):
        skipped = [True] * num_groups
    scales = []
    for g, n_k, gamma_k, eta_k in zip(group_index, n, gamma, eta):
        norm = math.sqrt(gamma_sum[g] if global_sq_norm is None else global_sq_norm)
        s = 1.0
        if not skipped[g] and n_k > 0 and norm > 0:
            deviation = gamma_k - gamma_sum[g] / count[g]
            if variant == "sam-matched":
                x = 1 + 2 * alpha * eta_k * deviation / (norm * n_k)
                s = 1.0 if math.isnan(x) else math.sqrt(min(max(x, s_min**2), s_max**2))
            else:
                x = 1 + alpha * eta_k * deviation / (norm * math.sqrt(n_k))
                s = 1.0 if math.isnan(x) else min(max(x, s_min), s_max)
        scales.append(s)
    return scales, skipped


def das_scales_single_group(
    cores: list[torch.Tensor],
    alpha: float,
    eta: list[float],
    *,
    global_sq_norm: torch.Tensor | None = None,
    variant: str = "sam-matched",
    s_min: float = 0.5,
    s_max: float = 2.0,
) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """Reference single-tensor path for one group: scales (None for gradient-less cores), skipped flag."""
    active = [c for c in cores if c.grad is not None]
    if not active:
        skipped = torch.tensor(False) if global_sq_norm is None else ~torch.isfinite(global_sq_norm)
        return [None] * len(cores), skipped
    dtype = torch.float64 if any(c.dtype == torch.float64 for c in active) else torch.float32
    gamma = torch.stack([c.grad.to(dtype).pow(2).sum() for c in active])
    n = torch.stack([c.to(dtype).pow(2).sum() for c in active])
    skipped = ~torch.isfinite(gamma).all()
    if global_sq_norm is not None:
        skipped = skipped | ~torch.isfinite(global_sq_norm)
    deviation = gamma - gamma.mean()
    norm = (gamma.sum() if global_sq_norm is None else global_sq_norm.to(dtype)).sqrt()
    coef = alpha * torch.tensor([e for c, e in zip(cores, eta) if c.grad is not None], dtype=dtype, device=n.device)
    s = _raw_scales(n, deviation, norm, coef, variant, s_min, s_max, skipped)
    it = iter(s.unbind())
    return [next(it) if c.grad is not None else None for c in cores], skipped


class DAS(CoreScalingOptimizer):
    """Deviation-Aware Scaling around any ``torch.optim.Optimizer``.

    Args:
        params: parameters (or param-group dicts) to optimize; those in no core group get
            the base update only.
        base_optimizer: optimizer class, e.g. ``torch.optim.SGD``.
        core_groups: ``td.find_core_groups(model)`` or a list of lists of tensors.
        alpha: scaling strength (the analogue of SAM's ``rho``), >= 0.
        alpha_schedule: ``"constant"``, ``"linear"`` or ``"cosine"`` decay to 0 over ``total_steps``.
        total_steps: required by the decaying schedules.
        grad_norm: ``"group"`` normalises by the group's gradient norm, ``"global"`` by the
            norm of all gradients the optimizer holds (the norm SAM uses).
        variant: ``"sam-matched"`` (default, drift equals SAM's) or ``"reference"`` (authors' code).
        s_min, s_max: clamp of the per-step scale, ``0 < s_min <= 1 <= s_max``; they bite
            only on pathological steps.
        foreach: ``False`` selects the readable per-group reference path; also passed to the
            base optimizer when it takes a ``foreach`` argument.
        **kwargs: hyper-parameters of the base optimizer (``lr``, ``momentum``, ...).
    """

    def __init__(
        self,
        params,
        base_optimizer,
        core_groups=None,
        alpha: float = 0.05,
        alpha_schedule: str = "constant",
        total_steps: int | None = None,
        grad_norm: str = "group",
        variant: str = "sam-matched",
        s_min: float = 0.5,
        s_max: float = 2.0,
        foreach: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if grad_norm not in GRAD_NORMS:
            raise ValueError(f"Invalid grad_norm: {grad_norm!r} (expected 'group' or 'global')")
        if variant not in VARIANTS:
            raise ValueError(f"Invalid variant: {variant!r} (expected 'sam-matched' or 'reference')")
        if not (0 < s_min <= 1 <= s_max) or s_max == float("inf"):
            raise ValueError(f"Invalid clamp s_min={s_min}, s_max={s_max} (need 0 < s_min <= 1 <= s_max < inf)")
        self.grad_norm = grad_norm
        self.variant = variant
        self.s_min, self.s_max = float(s_min), float(s_max)
        super().__init__(
            params,
            base_optimizer,
            core_groups,
            alpha=alpha,
            alpha_schedule=alpha_schedule,
            total_steps=total_steps,
            need_global_norm=grad_norm == "global",
            foreach=foreach,
            **kwargs,
        )

    def _flat_scales(self, stats: FlatStats, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        return das_scales(stats, alpha, variant=self.variant, s_min=self.s_min, s_max=self.s_max)

    _host_path = True

    def _host_scales(self, n, gamma, plan, eta, alpha, global_sq):
        return das_scales_host(
            n,
            gamma,
            plan.group_index_list,
            len(self.core_groups),
            eta,
            alpha,
            global_sq_norm=global_sq,
            variant=self.variant,
            s_min=self.s_min,
            s_max=self.s_max,
        )

    def _single_tensor_rescale(self, alpha: float) -> None:
        global_sq = None
        if self.grad_norm == "global":
            grads = [p.grad for pg in self.param_groups for p in pg["params"] if p.grad is not None]
            dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
            global_sq = sum(g.to(dtype).pow(2).sum() for g in grads) if grads else torch.tensor(0.0)
        lr_of = {id(p): pg["lr"] for pg in self.param_groups for p in pg["params"]}
        for gi, group in enumerate(self.core_groups):
            scales, skipped = das_scales_single_group(
                group.cores,
                alpha,
                [float(lr_of[id(c)]) for c in group.cores],
                global_sq_norm=global_sq,
                variant=self.variant,
                s_min=self.s_min,
                s_max=self.s_max,
            )
            self._nonfinite_skips[gi] += skipped.to(self._nonfinite_skips.device, torch.int64)
            for core, s in zip(group.cores, scales):
                if s is not None:
                    core.mul_(s)
