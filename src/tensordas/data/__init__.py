"""Data for the task families: tensors for completion (loaders, splits, standardisation, metrics), classification
(digits, CIFAR-10, .npz; label noise), text classification."""

from .classification import CLASSIFICATION_DATASETS, ClassificationData, load_classification, stratified_split
from .noise import NOISE_TYPES, NoisyLabels, add_label_noise, asymmetric_mapping, check_noise_rate
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
from .text import TextData, TextSplit, load_text_data, split_text

__all__ = [
    "CLASSIFICATION_DATASETS",
    "ClassificationData",
    "CompletionSplit",
    "DATASETS",
    "Entries",
    "NOISE_TYPES",
    "NoisyLabels",
    "STANDARDIZATIONS",
    "Standardizer",
    "TensorData",
    "TextData",
    "TextSplit",
    "add_label_noise",
    "asymmetric_mapping",
    "check_noise_rate",
    "from_array",
    "load_classification",
    "load_tensor",
    "load_text_data",
    "r2_score",
    "rmse",
    "split_entries",
    "split_text",
    "stratified_split",
    "synthetic_tensor",
    "unobserved_slices",
]
