"""Kept for old imports of the models' helpers; the code lives in :mod:`tensordas.formats` (ranks, cores,
TensorLy) and :mod:`tensordas.models._model` (model arguments). Remove after the merge."""

from ..formats._base import gather_slices
from ..formats._cores import load_cores, rebalance_
from ..formats._ranks import RankLike, parse_ranks
from ..formats._ranks import as_int as _as_int
from ..formats._tensorly import run_decomposition
from ._model import (
    Std,
    check_indices,
    check_shape,
    decomposition_input,
    make_cores,
    private_generator,
    result_dtype,
)

__all__ = [
    "RankLike",
    "Std",
    "_as_int",
    "check_indices",
    "check_shape",
    "decomposition_input",
    "gather_slices",
    "load_cores",
    "make_cores",
    "parse_ranks",
    "private_generator",
    "rebalance_",
    "result_dtype",
    "run_decomposition",
]
