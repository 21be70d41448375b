"""Schedules for the scaling strength ``alpha_t`` of DAS and BAR."""

from __future__ import annotations

import math

ALPHA_SCHEDULES = ("constant", "linear", "cosine")


def check_alpha_schedule(schedule: str, total_steps: int | None) -> None:
    """Raise ``ValueError`` for an unknown schedule or a decaying one without ``total_steps``."""
    if schedule not in ALPHA_SCHEDULES:
        raise ValueError(f"Invalid alpha_schedule: {schedule!r} (expected one of {', '.join(ALPHA_SCHEDULES)})")
    if total_steps is not None and (
        isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0
    ):
        raise ValueError(f"Invalid total_steps value: {total_steps!r} (expected a positive integer)")
    if schedule != "constant" and total_steps is None:
        raise ValueError(f"alpha_schedule={schedule!r} needs total_steps (got None)")


def scheduled_alpha(alpha: float, schedule: str, step: int, total_steps: int | None) -> float:
    """``alpha_t`` at 0-based ``step``: constant, ``alpha*(1-t/T)`` or ``alpha*(1+cos(pi*t/T))/2``.

    Past ``total_steps`` the decaying schedules stay at 0.
    """
    if schedule == "constant":
        return alpha
    frac = min(step, total_steps) / total_steps
    if schedule == "linear":
        return alpha * (1.0 - frac)
    return alpha * 0.5 * (1.0 + math.cos(math.pi * frac))
