"""Decomposition models for tensor completion (each exposes ``core_groups()``, ``forward()`` for the full tensor
and ``entries(indices)`` for sampled entries), built on the formats of :mod:`tensordas.formats`."""

from ._model import TensorModel, model_class
from .cp import CPModel
from .spectral import SPECTRAL_FORMATS, spectral_start
from .tr import TRModel
from .tt import TTModel
from .tucker import TuckerModel

__all__ = [
    "SPECTRAL_FORMATS",
    "CPModel",
    "TRModel",
    "TTModel",
    "TensorModel",
    "TuckerModel",
    "model_class",
    "spectral_start",
]
