"""Data for the task families: tensors for completion (loaders of dense and coordinate inputs, splits,
standardisation, bounded-batch evaluation, the dense-memory budget), classification (digits, CIFAR-10, .npz;
label noise), text classification."""

from .classification import (
    ClassificationData,
    check_validation_fraction,
    load_classification,
    stratified_split,
    validation_split,
)
from .coords import check_coordinates, flat_index
from .dense import DEFAULT_DENSE_BUDGET_GB, dense_budget_note, dense_observed, dense_peak_bytes
from .noise import NOISE_TYPES, NoisyLabels, add_label_noise, asymmetric_mapping, check_noise_rate, corrupt_labels
from .predict import DENSE_LIMIT, DENSE_MIN_FILL, EVAL_BATCH, EntryPredictor, evaluate_entries
from .registry import DATASET_KINDS, DATASETS, Dataset, dataset_names, get_dataset, register_dataset, unregister_dataset
from .split import (
    STANDARDIZATIONS,
    CompletionSplit,
    Entries,
    Standardizer,
    split_entries,
    unobserved_slices,
)
from .tensors import (
    TensorData,
    from_array,
    from_coordinates,
    from_sparse,
    load_tensor,
    save_coordinates,
    synthetic_entries,
    synthetic_tensor,
)
from .text import TextData, TextSplit, load_text_data, split_text

__all__ = [
    "ClassificationData",
    "CompletionSplit",
    "DATASETS",
    "DATASET_KINDS",
    "Dataset",
    "DEFAULT_DENSE_BUDGET_GB",
    "DENSE_LIMIT",
    "DENSE_MIN_FILL",
    "EVAL_BATCH",
    "Entries",
    "EntryPredictor",
    "NOISE_TYPES",
    "NoisyLabels",
    "STANDARDIZATIONS",
    "Standardizer",
    "TensorData",
    "TextData",
    "TextSplit",
    "add_label_noise",
    "asymmetric_mapping",
    "check_coordinates",
    "check_noise_rate",
    "check_validation_fraction",
    "corrupt_labels",
    "dataset_names",
    "dense_budget_note",
    "dense_observed",
    "dense_peak_bytes",
    "evaluate_entries",
    "flat_index",
    "from_array",
    "from_coordinates",
    "from_sparse",
    "get_dataset",
    "load_classification",
    "load_tensor",
    "load_text_data",
    "register_dataset",
    "save_coordinates",
    "split_entries",
    "split_text",
    "stratified_split",
    "validation_split",
    "synthetic_entries",
    "synthetic_tensor",
    "unobserved_slices",
    "unregister_dataset",
]
