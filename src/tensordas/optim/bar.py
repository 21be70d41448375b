r"""nBAR, the two-core ancestor of DAS (Li, Zhang, He, "Implicit Regularization of Sharpness-Aware
Minimization for Scale-Invariant Problems", NeurIPS 2024), for comparison runs.

For every two-core group ``(x, y)`` before the base step::

    if ||g_x|| >= ||g_y||:  x <- (1 + alpha eta) x,  y <- (1 - alpha eta) y
    else:                   x <- (1 - alpha eta) x,  y <- (1 + alpha eta) y
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._core_scaling import CoreScalingOptimizer, Eta, _Flat, _Plan, to_device

__all__ = ["BAR"]


class BAR(CoreScalingOptimizer):
    """nBAR balancing of two-core groups around any ``torch.optim.Optimizer``.

    Args match :class:`tensordas.DAS` (``alpha``, ``alpha_schedule``, ``total_steps``,
    ``nonfinite``, ``foreach``); every group must have exactly two cores. ``alpha * lr`` must stay
    below 1.
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
        nonfinite: str = "warn",
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
            nonfinite=nonfinite,
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

    _flat_pg_rows = 0

    def _prepare_flat(self, f: _Flat, plan: _Plan) -> None:
        # The other core of each core's group, whether it is the group's first core, and whether
        # both cores of its group have a gradient (only then is the pair scaled).
        index = plan.group_index_list
        first = [i == 0 or index[i] != index[i - 1] for i in range(len(index))]
        partner = [min(i + 1, len(index) - 1) if fst else i - 1 for i, fst in enumerate(first)]
        device = f.s.device
        f.extra["first"] = to_device(first, torch.bool, device)
        f.extra["partner"] = to_device(partner, torch.int64, device)
        f.extra["pair"] = to_device([index.count(g) == 2 for g in index], torch.bool, device)

    def _device_scales(self, f: _Flat, plan: _Plan, alpha: float, eta: Eta) -> torch.Tensor:
        gamma, idx = f.views().gamma, f.group_index
        torch.index_add(f.seg_zero, 0, idx, gamma, out=f.seg)
        finite = torch.lt(f.seg, math.inf)  # S >= 0: finite unless inf or NaN
        other = gamma.index_select(0, f.extra["partner"])
        grows = torch.where(f.extra["first"], gamma >= other, gamma > other)
        s = grows.to(gamma.dtype).mul_(2).sub_(1).mul_(eta.times(alpha)).add_(1)
        torch.where(f.extra["pair"] & finite[idx], s, f.ones, out=f.s)
        return finite

    def _single_tensor_rescale(self, alpha: float) -> None:
        lr_of = {id(p): pg["lr"] for pg in self.param_groups for p in pg["params"]}
        for gi, (x, y) in enumerate(g.cores for g in self.core_groups):
            if x.grad is None or y.grad is None:
                continue
            gx, gy = x.grad.pow(2).sum(), y.grad.pow(2).sum()
            n = torch.stack([x.detach().pow(2).sum(), y.detach().pow(2).sum()])
            finite = torch.isfinite(gx) & torch.isfinite(gy)
            self._skips.acc[gi] += (~finite).to(torch.int64)
            applied = []
            for core, grows in ((x, gx >= gy), (y, gy > gx)):
                s = 1 + alpha * float(lr_of[id(core)]) * (grows.to(core.dtype) * 2 - 1)
                s = torch.where(finite, s, torch.ones_like(s))
                core.mul_(s)
                applied.append(s)
            s_all = torch.stack(applied)
            torch.maximum(self._max_dev, (s_all - 1).abs().max().to(self._max_dev), out=self._max_dev)
            self._run.record.data.append((gi, n, torch.stack([gx, gy]), s_all, ~finite))
