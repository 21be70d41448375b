r"""nBAR, the two-core ancestor of DAS (Li, Zhang, He, "Implicit Regularization of Sharpness-Aware
Minimization for Scale-Invariant Problems", NeurIPS 2024), for comparison runs.

For every two-core group ``(x, y)`` before the base step::

    if ||g_x|| >= ||g_y||:  x <- (1 + alpha eta) x,  y <- (1 - alpha eta) y
    else:                   x <- (1 - alpha eta) x,  y <- (1 + alpha eta) y
"""

from __future__ import annotations

from typing import Any

import torch

from ._core_scaling import CoreScalingOptimizer, FlatStats

__all__ = ["BAR"]


class BAR(CoreScalingOptimizer):
    """nBAR balancing of two-core groups around any ``torch.optim.Optimizer``.

    Args match :class:`tensordas.DAS` (``alpha``, ``alpha_schedule``, ``total_steps``); every
    group must have exactly two cores. ``alpha * lr`` must stay below 1.
    """

    def __init__(
        self,
        params,
        base_optimizer,
        core_groups=None,
        alpha: float = 0.05,
        alpha_schedule: str = "constant",
        total_steps: int | None = None,
        foreach: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            params,
            base_optimizer,
            core_groups,
            alpha=alpha,
            alpha_schedule=alpha_schedule,
            total_steps=total_steps,
            need_global_norm=False,
            foreach=foreach,
            **kwargs,
        )
        bad = [f"{g.name} ({len(g)} cores)" for g in self.core_groups if len(g) != 2]
        if bad:
            raise ValueError(f"BAR needs two-core groups; got {', '.join(bad)}")
        self._check_step_size(self.alpha)

    def _check_step_size(self, alpha: float) -> None:
        # 1 - alpha*lr must stay positive or the shrinking core flips sign (tensor lrs are not read back).
        for pg in self.param_groups:
            if not isinstance(pg["lr"], torch.Tensor) and alpha * pg["lr"] >= 1:
                raise ValueError(f"BAR needs alpha * lr < 1, got alpha={alpha}, lr={pg['lr']}")

    @torch.no_grad()
    def rescale_cores(self) -> None:
        self._check_step_size(self.alpha_t)
        super().rescale_cores()

    def _flat_scales(self, stats: FlatStats, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        gamma, idx = stats.gamma, stats.group_index
        num = stats.num_groups
        count = stats.group_count
        finite = torch.isfinite(gamma)
        skipped = gamma.new_zeros(num).index_add(0, idx, (~finite).to(gamma.dtype)) > 0
        # The other core of the same group: groups are contiguous pairs when both have gradients.
        first = torch.ones_like(idx, dtype=torch.bool)
        first[1:] = idx[1:] != idx[:-1]
        partner = torch.where(
            first, torch.arange(len(idx), device=idx.device) + 1, torch.arange(len(idx), device=idx.device) - 1
        ).clamp(0, len(idx) - 1)
        other = gamma[partner]
        grows = torch.where(first, gamma >= other, gamma > other)
        s = 1 + alpha * stats.eta * (grows.to(gamma.dtype) * 2 - 1)
        keep = (count[idx] == 2) & ~skipped[idx]
        return torch.where(keep, s, torch.ones_like(s)), skipped

    def _single_tensor_rescale(self, alpha: float) -> None:
        lr_of = {id(p): pg["lr"] for pg in self.param_groups for p in pg["params"]}
        for gi, (x, y) in enumerate(g.cores for g in self.core_groups):
            if x.grad is None or y.grad is None:
                continue
            gx, gy = x.grad.pow(2).sum(), y.grad.pow(2).sum()
            finite = torch.isfinite(gx) & torch.isfinite(gy)
            self._nonfinite_skips[gi] += (~finite).to(torch.int64)
            for core, grows in ((x, gx >= gy), (y, gy > gx)):
                s = 1 + alpha * float(lr_of[id(core)]) * (grows.to(core.dtype) * 2 - 1)
                core.mul_(torch.where(finite, s, torch.ones_like(s)))
