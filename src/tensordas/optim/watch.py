"""What DAS did, for people who train with it: a one-time warning when its scales never moved, and the
few numbers a trainer logs (read from :meth:`DAS.last_step_stats`, never inside ``step()``)."""

from __future__ import annotations

import math
import warnings
from typing import Any

from ._core_scaling import CoreScalingOptimizer

__all__ = ["CHECK_AFTER", "UNMOVED_TOL", "ScaleWatch", "UnmovedScalesWarning", "core_scaling_optimizer", "step_log"]

UNMOVED_TOL = 1e-6  # scales within 1 +- this never changed a core norm measurably
CHECK_AFTER = 100  # steps before the check (or the run's end, if it is shorter)


class UnmovedScalesWarning(UserWarning):
    """DAS (or BAR) ran for many steps without its scales ever leaving 1 +- :data:`UNMOVED_TOL`."""


def core_scaling_optimizer(optimizer: Any) -> CoreScalingOptimizer | None:
    """``optimizer`` itself, or the DAS/BAR inside wrappers that keep it as ``.optimizer`` (accelerate's
    ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``); None for any other optimizer."""
    for _ in range(8):  # a few wrapper levels at most
        if isinstance(optimizer, CoreScalingOptimizer) or optimizer is None:
            return optimizer
        optimizer = getattr(optimizer, "optimizer", getattr(optimizer, "_optimizer", None))
    return None


class ScaleWatch:
    """Warn once when DAS's scales have not moved after ``after`` steps (:meth:`step`), or at the run's
    end (:meth:`finish`) when it is shorter: one host read of ``max_scale_deviation`` per run."""

    def __init__(self, optimizer: Any, after: int = CHECK_AFTER) -> None:
        self.optimizer = core_scaling_optimizer(optimizer)
        self.after = max(1, int(after))
        self.done = self.optimizer is None

    def step(self, steps: int) -> None:
        """Call after each optimizer step with the number of steps so far."""
        if not self.done and steps >= self.after:
            self.finish(steps)

    def finish(self, steps: int) -> bool:
        """Check now (once); True when it warned."""
        if self.done or steps < 1:
            return False
        self.done = True
        opt = self.optimizer
        deviation = float(opt.max_scale_deviation)
        if not deviation <= UNMOVED_TOL:  # moved, or NaN (a diverged run says so itself)
            return False
        name = type(opt).__name__
        base = type(opt.base_optimizer).__name__
        lr = opt.param_groups[0].get("lr", math.nan)
        warnings.warn(
            f"{name} has not moved any core norm in {steps} steps (every scale within 1 +- {UNMOVED_TOL:g}, "
            f"max |s - 1| = {deviation:.2g}): alpha {opt.alpha:g} is too small for this base optimizer ({base}) "
            f"and learning rate ({lr:g}); try an alpha 10-100x larger (the drift scales with alpha * lr)",
            UnmovedScalesWarning,
            stacklevel=3,
        )
        return True


def step_log(optimizer: Any, prefix: str = "das/") -> dict[str, float]:
    """Q (mean over core groups) and the range of the scales the last step applied, for a trainer's log;
    empty for optimizers that scale no cores and before the first scaling step."""
    opt = core_scaling_optimizer(optimizer)
    stats = opt.last_step_stats() if opt is not None else {}
    if not stats:
        return {}
    groups = list(stats.values())
    return {
        f"{prefix}Q": math.fsum(g["Q"] for g in groups) / len(groups),
        f"{prefix}scale_min": min(g["scale_min"] for g in groups),
        f"{prefix}scale_max": max(g["scale_max"] for g in groups),
    }
