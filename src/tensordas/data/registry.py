"""The data sets every family loads by name, declared once: tensors (completion), classification sets (noisy
labels, compression) and text sets (fine-tuning).

A data set is one :class:`Dataset` passed to :func:`register_dataset` (the built-in ones are registered at the
end of ``tensors.py``, ``classification.py`` and ``text.py``); the loaders (``load_tensor``,
``load_classification``, ``load_text_data``), the CLI's help and the error messages read the names from here.
Files and generated data (``.npz``, ``synthetic:...``, a Hugging Face dataset name) are not registered: they
are paths or specs, parsed by the loaders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DATASETS",
    "DATASET_KINDS",
    "Dataset",
    "dataset_names",
    "get_dataset",
    "register_dataset",
    "unregister_dataset",
]

# What a kind's ``load`` is called with and returns:
#   tensor:          load() -> a float64 NumPy array, NaN at the missing entries
#   classification:  load(seed=, test_fraction=, data_dir=, download=) -> (x_train, y_train, x_test, y_test)
#                    NumPy arrays, samples first; the split drawn from ``seed`` where the set has no test part
#   text:            load() -> a tensordas.data.TextData
DATASET_KINDS = ("tensor", "classification", "text")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class Dataset:
    """One named data set.

    Attributes:
        name: the name users give (``--data digits``): lower case, unique across kinds.
        kind: one of :data:`DATASET_KINDS`; says how ``load`` is called (above).
        load: reads the data (offline unless the user asked for a download).
        description: one line for help texts (``"scikit-learn's 8x8 digits, bundled"``).
        standardize_axes: classification only: the axes of ``x`` over which features are standardised with
            training statistics (``(0,)``: per feature; images: ``(0, 2, 3)``, per channel).
    """

    name: str
    kind: str
    load: Callable[..., Any]
    description: str
    standardize_axes: tuple[int, ...] = (0,)


DATASETS: dict[str, Dataset] = {}


def register_dataset(dataset: Dataset, *, replace: bool = False) -> Dataset:
    """Add ``dataset`` to :data:`DATASETS` (checked); ``replace=True`` overwrites one of the same name."""
    if not isinstance(dataset, Dataset):
        raise ValueError(f"register_dataset expects a Dataset, got {type(dataset).__name__}")
    if not _NAME.match(dataset.name):
        raise ValueError(f"Invalid dataset name {dataset.name!r} (lower-case letters, digits, '_' and '-')")
    if dataset.kind not in DATASET_KINDS:
        raise ValueError(f"Invalid dataset kind {dataset.kind!r} (expected one of {', '.join(DATASET_KINDS)})")
    if not callable(dataset.load):
        raise ValueError(f"dataset {dataset.name!r}: load must be callable")
    if dataset.name in DATASETS and not replace:
        raise ValueError(f"dataset {dataset.name!r} is already registered (pass replace=True to overwrite it)")
    DATASETS[dataset.name] = dataset
    return dataset


def unregister_dataset(name: str) -> None:
    """Remove the data set ``name`` (a ValueError when none is registered)."""
    if DATASETS.pop(name, None) is None:
        raise ValueError(f"no dataset {name!r} is registered")


def dataset_names(kind: str) -> tuple[str, ...]:
    """The registered names of one kind, in registration order."""
    if kind not in DATASET_KINDS:
        raise ValueError(f"Invalid dataset kind {kind!r} (expected one of {', '.join(DATASET_KINDS)})")
    return tuple(name for name, d in DATASETS.items() if d.kind == kind)


def get_dataset(name: str, kind: str) -> Dataset | None:
    """The registered data set ``name`` (case-insensitive) of ``kind``; None when there is none of that name.

    A name registered for another kind is a ValueError saying which kind it is.
    """
    found = DATASETS.get(str(name).strip().lower())
    if found is None:
        return None
    if found.kind != kind:
        raise ValueError(f"dataset {found.name!r} is a {found.kind} data set, not a {kind} one")
    return found
