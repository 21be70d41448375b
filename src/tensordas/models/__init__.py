"""Decomposition models (each exposes ``core_groups()``, ``forward()`` for the full tensor and
``entries(indices)`` for sampled entries)."""

from .cp import CPModel
from .tr import TRModel
from .tt import TTModel
from .tucker import TuckerModel

__all__ = ["CPModel", "TRModel", "TTModel", "TuckerModel"]
