"""Text classification data: the VADER sentiment lexicon (offline), local CSV/JSONL files, Hugging Face datasets.

:func:`load_text_data` reads a dataset spec:

- ``"vader"`` — the lexicon shipped with the ``vaderSentiment`` package: 7,520 English words,
  phrases, emoticons and slang, each with the mean of ten human ratings on a -4..4 scale and the ten
  ratings themselves. An entry is labelled by the sign of its mean rating (``negative`` = 0,
  ``positive`` = 1). Entries with ``|mean| < VADER_THRESHOLD`` (0.5, i.e. rated neutral on
  average) are dropped, and so are texts listed more than once (14 texts, some with opposite
  signs, e.g. ``d:``): 6,789 entries remain, 44% positive.
- ``"vader-noisy"`` — the same entries and clean test labels, but every *training* label is the
  sign of one rater's rating, the rater drawn uniformly (per entry and seed) among the raters who
  did not rate the entry 0: real annotator disagreement as label noise (about 3.7% of the
  training labels differ from the clean ones).
- a local ``.csv``, ``.tsv``, ``.jsonl`` (one JSON object per line) or ``.json`` (a list of
  objects) file with a text and a label column;
- any other name is a Hugging Face dataset, loaded with ``datasets.load_dataset`` when the
  ``datasets`` package is installed: ``NAME`` or ``NAME:CONFIG`` (``glue/sst2`` is also tried as
  ``load_dataset("glue", "sst2")``), split ``train`` unless ``split=`` says otherwise.

Labels of files and Hugging Face datasets may be any values (ints or strings); they are mapped to
``0..K-1`` in sorted order (a ``ClassLabel`` feature keeps its names). Rows with a missing or empty
text or label, and negative integer labels (GLUE's unlabelled test rows), are dropped.

:func:`split_text` draws a seeded train/test split (and, for ``vader-noisy``, the seed's noisy
training labels); the same seed gives the same split.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .registry import Dataset, dataset_names, get_dataset, register_dataset

__all__ = [
    "VADER_THRESHOLD",
    "TextData",
    "TextSet",
    "TextSplit",
    "load_text_data",
    "load_vader",
    "noisy_training_labels",
    "split_text",
    "vader_lexicon_path",
]

VADER_THRESHOLD = 0.5
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
VADER_LABELS = ("negative", "positive")


@dataclass(frozen=True)
class TextData:
    """A labelled text collection.

    Attributes:
        name: where it came from (``vader``, a file path, a Hugging Face name).
        texts: the inputs.
        labels: int64 class indices in ``0..K-1`` (the clean labels).
        label_names: ``K`` names, ``label_names[k]`` for class ``k``.
        ratings: the ten VADER ratings per entry (``vader``/``vader-noisy`` only), int64 (n, 10).
        noisy: train on labels drawn from single raters (see the module docstring).
    """

    name: str
    texts: tuple[str, ...]
    labels: np.ndarray
    label_names: tuple[str, ...]
    ratings: np.ndarray | None = None
    noisy: bool = False

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")
        if self.noisy and self.ratings is None:
            raise ValueError(f"{self.name}: the noisy variant needs the individual ratings")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


@dataclass(frozen=True)
class TextSet:
    """Texts and their labels, as trained on or evaluated."""

    texts: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class TextSplit:
    """A seed's split: ``train`` (noisy labels for ``vader-noisy``) and ``test`` (always clean labels).

    ``train_clean_labels`` are the training entries' clean labels; ``noise_rate`` the fraction of
    training labels that differ from them (0 for clean data).
    """

    train: TextSet
    test: TextSet
    train_clean_labels: np.ndarray
    seed: int

    @property
    def noise_rate(self) -> float:
        if len(self.train) == 0:
            return 0.0
        return float(np.mean(self.train.labels != self.train_clean_labels))


# ---------------------------------------------------------------------------------------------- VADER


def vader_lexicon_path() -> Path:
    """``vader_lexicon.txt`` inside the installed ``vaderSentiment`` package (not imported)."""
    spec = importlib.util.find_spec("vaderSentiment")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the VADER task needs the 'vaderSentiment' package (pip install vaderSentiment)")
    path = Path(next(iter(spec.submodule_search_locations))) / "vader_lexicon.txt"
    if not path.is_file():
        raise ValueError(f"the vaderSentiment package has no lexicon file at {path}")
    return path


def _read_vader(path: Path) -> list[tuple[str, float, list[int]]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            text, mean, ratings = parts[0], float(parts[1]), json.loads(parts[3])
        except (IndexError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: not a VADER lexicon line ({exc})") from None
        rows.append((text, mean, [int(r) for r in ratings]))
    return rows


def load_vader(*, noisy: bool = False, threshold: float = VADER_THRESHOLD, path: str | Path | None = None) -> TextData:
    """The VADER lexicon as a binary sentiment task (see the module docstring).

    Args:
        noisy: train on single-rater labels (drawn per seed by :func:`split_text`).
        threshold: entries with ``|mean rating| < threshold`` are dropped (> 0).
        path: a lexicon file in VADER's format (default: the installed package's).
    """
    if not threshold > 0:
        raise ValueError(f"Invalid VADER threshold: {threshold} (expected > 0)")
    rows = _read_vader(Path(path) if path is not None else vader_lexicon_path())
    counts: dict[str, int] = {}
    for text, _, _ in rows:
        counts[text] = counts.get(text, 0) + 1
    kept = [r for r in rows if counts[r[0]] == 1 and abs(r[1]) >= threshold]
    if not kept:
        raise ValueError(f"no VADER entry has |mean rating| >= {threshold}")
    width = len(kept[0][2])
    if any(len(r[2]) != width for r in kept):
        raise ValueError("VADER lexicon entries have different numbers of ratings")
    return TextData(
        name="vader-noisy" if noisy else "vader",
        texts=tuple(r[0] for r in kept),
        labels=np.array([int(r[1] > 0) for r in kept], dtype=np.int64),
        label_names=VADER_LABELS,
        ratings=np.array([r[2] for r in kept], dtype=np.int64),
        noisy=noisy,
    )


def _rater_labels(ratings: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per row, the sign (0/1) of one rating drawn uniformly among the row's non-zero ratings."""
    nonzero = ratings != 0
    if not nonzero.any(axis=1).all():
        raise ValueError("an entry has no non-zero rating, so no rater label can be drawn")
    # Uniform among the non-zero entries: the argmax of random keys restricted to them.
    keys = np.where(nonzero, rng.random(ratings.shape), -1.0)
    pick = ratings[np.arange(len(ratings)), keys.argmax(axis=1)]
    return (pick > 0).astype(np.int64)


# ---------------------------------------------------------------------------------- files and the hub


def _class_indices(values: Sequence[Any], names: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels as ``0..K-1`` (sorted distinct values), and the class names."""
    if names is not None and all(isinstance(v, (int, np.integer)) and 0 <= v < len(names) for v in values):
        return np.asarray(values, dtype=np.int64), tuple(str(n) for n in names)
    try:
        distinct = sorted(set(values))
    except TypeError:
        distinct = sorted(set(values), key=str)
    index = {v: k for k, v in enumerate(distinct)}
    return np.array([index[v] for v in values], dtype=np.int64), tuple(str(v) for v in distinct)


def _as_label(value: Any) -> Any:
    """A label from a file: ints stay ints, ``"1"`` becomes 1, other strings stay strings."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return text
    return value


def _from_columns(
    name: str,
    columns: Sequence[str],
    get,
    text_column: str,
    label_column: str,
    label_names: Sequence[str] | None = None,
) -> TextData:
    for column, option in ((text_column, "--text-column"), (label_column, "--label-column")):
        if column not in columns:
            raise ValueError(
                f"{name} has no column {column!r} (set {option}; columns: {', '.join(map(str, columns)) or 'none'})"
            )
    texts, labels = [], []
    for text, label in zip(get(text_column), get(label_column)):
        label = _as_label(label)
        if text is None or label is None or label == "" or (isinstance(label, int) and label < 0):
            continue
        if not isinstance(text, str):
            raise ValueError(f"{name}: column {text_column!r} holds {type(text).__name__} values, not text")
        if not text.strip():
            continue
        texts.append(text)
        labels.append(label)
    if not texts:
        raise ValueError(f"{name} has no rows with both a text and a label")
    y, names = _class_indices(labels, label_names)
    if len(names) < 2:
        raise ValueError(f"{name}: column {label_column!r} has a single class ({names[0]!r}); need at least 2")
    return TextData(name=name, texts=tuple(texts), labels=y, label_names=names)


def _read_records(path: Path) -> tuple[list[str], list[Mapping[str, Any]]]:
    """Column names and rows of a CSV/TSV/JSONL/JSON file (UTF-8, with or without a byte-order mark)."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8-sig") as fh:  # Excel's "CSV UTF-8" starts with a BOM
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                rows = list(reader)
                return list(reader.fieldnames or []), rows
        text = path.read_text(encoding="utf-8-sig")
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except (UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected JSON objects (one per line for .jsonl, a list of them for .json)")
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    return columns, rows


def _load_file(path: Path, text_column: str, label_column: str) -> TextData:
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    columns, rows = _read_records(path)
    return _from_columns(str(path), columns, lambda c: [r.get(c) for r in rows], text_column, label_column)


def _load_hub(spec: str, text_column: str, label_column: str, split: str) -> TextData:
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"dataset {spec!r} is neither registered ({', '.join(dataset_names('text'))}) nor a local "
            f"{'/'.join(FILE_SUFFIXES)} file, and loading it from the Hugging Face hub needs the 'datasets' "
            "package (pip install datasets)"
        ) from None
    name, _, config = spec.partition(":")
    attempts = [(name, config or None)]
    if not config and name.count("/") == 1:  # "glue/sst2": the dataset "glue" with config "sst2"
        attempts.append(tuple(name.split("/")))  # type: ignore[arg-type]
    errors = []
    for path, cfg in attempts:
        try:
            loaded = datasets.load_dataset(path, cfg, split=split)
            break
        except Exception as exc:  # the hub raises many types: report them all on one line
            errors.append(f"{path}{':' + cfg if cfg else ''}: {type(exc).__name__}: {exc}")
    else:
        raise ValueError(f"cannot load Hugging Face dataset {spec!r} ({'; '.join(errors)})")
    columns = list(loaded.column_names)
    names = None
    feature = getattr(loaded, "features", {}).get(label_column) if label_column in columns else None
    if feature is not None and getattr(feature, "names", None):
        names = list(feature.names)
    return _from_columns(f"{spec} ({split})", columns, lambda c: list(loaded[c]), text_column, label_column, names)


def load_text_data(
    spec: str = "vader", *, text_column: str = "text", label_column: str = "label", split: str = "train"
) -> TextData:
    """Load the dataset ``spec`` names (see the module docstring).

    Raises:
        ValueError: an unknown or unreadable dataset, a missing text/label column, fewer than two
            classes, or a hub dataset without the ``datasets`` package.
    """
    registered = get_dataset(spec, "text")
    if registered is not None:
        return registered.load()
    path = Path(spec).expanduser()
    if path.suffix.lower() in FILE_SUFFIXES or path.exists():
        if path.is_dir():
            raise ValueError(f"data {spec!r} is a folder; give a {'/'.join(FILE_SUFFIXES)} file")
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise ValueError(f"data file {spec!r} is not one of {', '.join(FILE_SUFFIXES)}")
        return _load_file(path, text_column, label_column)
    return _load_hub(spec, text_column, label_column, split)


# --------------------------------------------------------------------------------------------- splits


def _take(data: TextData, index: np.ndarray, labels: np.ndarray) -> TextSet:
    return TextSet(texts=tuple(data.texts[i] for i in index), labels=labels[index])


def split_text(
    data: TextData,
    seed: int,
    *,
    test_fraction: float = 0.2,
    train_size: int | None = None,
    test_size: int | None = None,
) -> TextSplit:
    """A seeded random train/test split; ``train_size``/``test_size`` subsample each part (for speed).

    The test part is drawn first (``test_fraction`` of the data), then both parts are subsampled;
    the same seed gives the same split. For a noisy dataset the training labels are the seed's
    single-rater labels and the test labels stay clean.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"Invalid test fraction: {test_fraction} (expected 0 < fraction < 1)")
    for what, size in (("train_size", train_size), ("test_size", test_size)):
        if size is not None and size < 1:
            raise ValueError(f"Invalid {what} value: {size} (expected >= 1)")
    n = len(data)
    n_test = int(round(test_fraction * n))
    if n_test < 1 or n - n_test < 1:
        raise ValueError(f"{data.name}: {n} examples are too few for a test fraction of {test_fraction}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    test_idx, train_idx = order[:n_test], order[n_test:]
    if test_size is not None:
        test_idx = test_idx[:test_size]
    if train_size is not None:
        train_idx = train_idx[:train_size]
    train_labels = data.labels
    if data.noisy:
        assert data.ratings is not None
        train_labels = _rater_labels(data.ratings, np.random.default_rng([seed, 1]))
    return TextSplit(
        train=_take(data, train_idx, train_labels),
        test=_take(data, test_idx, data.labels),
        train_clean_labels=data.labels[train_idx],
        seed=seed,
    )


def noisy_training_labels(
    split: TextSplit, num_labels: int, rate: float, fraction: float
) -> tuple[TextSplit, TextSet | None]:
    """The split with symmetric label noise of probability ``rate`` on its training labels (drawn from
    the split's seed, by :func:`tensordas.data.noise.corrupt_labels`), and ``fraction`` of the training
    entries held out for validation (stratified by their noisy labels; None when ``fraction`` is 0).

    The test labels are untouched; ``rate == 0`` and ``fraction == 0`` return the split itself.
    """
    from .classification import validation_split
    from .noise import corrupt_labels

    if rate > 0:
        noisy = corrupt_labels(torch.as_tensor(split.train.labels), num_labels, rate, seed=split.seed).labels
        split = replace(split, train=TextSet(split.train.texts, noisy.numpy().astype(split.train.labels.dtype)))
    if fraction == 0:
        return split, None
    keep, held = validation_split(split.train.labels, fraction, split.seed)

    def take(index: np.ndarray) -> TextSet:
        return TextSet(tuple(split.train.texts[i] for i in index), split.train.labels[index])

    kept = replace(split, train=take(keep), train_clean_labels=split.train_clean_labels[keep])
    return kept, take(held)


register_dataset(Dataset("vader", "text", load_vader, "the VADER lexicon, bundled"))
register_dataset(
    Dataset("vader-noisy", "text", lambda: load_vader(noisy=True), "VADER, training labels from one rater each")
)
