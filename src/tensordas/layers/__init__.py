"""Tensorized layers: linear and convolution layers whose weight is a CP, Tucker, TT or TR tensor.

Each layer exposes ``core_groups()`` (one group of its cores), so ``find_core_groups`` and DAS see it.
:func:`from_dense` fits one to a trained dense layer; :func:`tensorize` swaps layers in any model.
"""

from ._base import TensorizedLayer, reused_weights
from ._formats import FORMATS, WeightFormat, weight_format
from .conv import TensorizedConv2d
from .factorization import WeightLayout, auto_factorization, factorize, resolve_layout
from .from_dense import from_dense, rank_for_ratio
from .linear import TensorizedLinear
from .tensorize import LayerReport, TensorizeReport, tensorize

__all__ = [
    "FORMATS",
    "LayerReport",
    "TensorizeReport",
    "TensorizedConv2d",
    "TensorizedLayer",
    "TensorizedLinear",
    "WeightFormat",
    "WeightLayout",
    "auto_factorization",
    "factorize",
    "from_dense",
    "rank_for_ratio",
    "resolve_layout",
    "reused_weights",
    "tensorize",
    "weight_format",
]
