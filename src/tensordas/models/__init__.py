"""Decomposition models (each exposes ``core_groups()``)."""

from .cp import CPModel
from .tucker import TuckerModel

__all__ = ["CPModel", "TuckerModel"]
