"""Data for the task families: tensors for completion (loaders, splits, standardisation, metrics)."""

from .split import (
    STANDARDIZATIONS,
    CompletionSplit,
    Entries,
    Standardizer,
    r2_score,
    rmse,
    split_entries,
    unobserved_slices,
)
from .tensors import DATASETS, TensorData, from_array, load_tensor, synthetic_tensor

__all__ = [
    "DATASETS",
    "STANDARDIZATIONS",
    "CompletionSplit",
    "Entries",
    "Standardizer",
    "TensorData",
    "from_array",
    "load_tensor",
    "r2_score",
    "rmse",
    "split_entries",
    "synthetic_tensor",
    "unobserved_slices",
]
