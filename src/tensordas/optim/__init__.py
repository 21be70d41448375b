"""Optimizers: DAS and its relatives (BAR), and the SAM baseline."""

from ._nonfinite import NONFINITE_MODES
from ._wrapper import BaseOptimizerWrapper
from .amp import sam_amp_step
from .bar import BAR
from .das import DAS
from .sam import SAM
from .schedules import ALPHA_SCHEDULES, scheduled_alpha

__all__ = [
    "DAS",
    "SAM",
    "BAR",
    "BaseOptimizerWrapper",
    "ALPHA_SCHEDULES",
    "NONFINITE_MODES",
    "scheduled_alpha",
    "sam_amp_step",
]
