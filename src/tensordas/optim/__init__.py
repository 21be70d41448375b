"""Optimizers: DAS and its relatives (BAR), the SAM baseline, Momentum-SAM (MSAM, one pass) and
pytorch-optimizer's LookSAM driven at its intended cost (:mod:`.looksam`)."""

from ._nonfinite import NONFINITE_MODES
from ._wrapper import BaseOptimizerWrapper
from .amp import sam_amp_step
from .bar import BAR
from .das import DAS
from .looksam import looksam_class, looksam_step
from .msam import MSAM, MSAMDAS
from .sam import SAM
from .schedules import ALPHA_SCHEDULES, scheduled_alpha

__all__ = [
    "DAS",
    "SAM",
    "MSAM",
    "MSAMDAS",
    "BAR",
    "BaseOptimizerWrapper",
    "ALPHA_SCHEDULES",
    "NONFINITE_MODES",
    "scheduled_alpha",
    "looksam_class",
    "looksam_step",
    "sam_amp_step",
]
