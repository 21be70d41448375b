"""Optimizers: DAS and its relatives (BAR), and the SAM baseline."""

from .bar import BAR
from .das import DAS
from .sam import SAM
from .schedules import ALPHA_SCHEDULES, scheduled_alpha

__all__ = ["DAS", "SAM", "BAR", "ALPHA_SCHEDULES", "scheduled_alpha"]
