"""Classification data for the noisy-label and compression tasks: digits, CIFAR-10, or a user's ``.npz``.

Every loader returns a :class:`ClassificationData` with float32 inputs standardised by statistics of
the training part only, int64 labels ``0..K-1`` and a fixed train/test split:

- ``"digits"``: scikit-learn's bundled 8x8 digits (1797 images, 10 classes) as ``(N, 1, 8, 8)``; a
  stratified split drawn from ``seed`` (``test_fraction`` of each class held out); standardised per pixel.
- ``"cifar10"``: CIFAR-10 from a local folder in torchvision's layout (``DIR/cifar-10-batches-py`` with
  ``data_batch_1..5`` and ``test_batch``, or that folder itself), read with :mod:`pickle` and NumPy, so
  torchvision is not needed. Nothing is downloaded unless ``download=True``, which goes through
  ``torchvision.datasets.CIFAR10``. The official 50000/10000 split; standardised per channel.
- a path to an ``.npz`` file with arrays ``X`` (samples first) and ``y`` (integer labels), and optionally
  ``X_test``/``y_test`` (otherwise a stratified split drawn from ``seed``); standardised per feature.
  Labels are mapped to ``0..K-1`` in sorted order of their values (:attr:`ClassificationData.classes`).

``train_size``/``test_size`` keep a random subset (drawn from ``seed``) of either part, for quick runs.
Only the training labels ever get label noise (:mod:`tensordas.data.noise`); the test set stays clean.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .registry import Dataset, dataset_names, get_dataset, register_dataset

__all__ = [
    "ClassificationData",
    "check_validation_fraction",
    "load_classification",
    "stratified_split",
    "validation_split",
]

_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"


@dataclass(frozen=True)
class ClassificationData:
    """A labelled data set split into a training and a (clean) test part.

    Attributes:
        name: ``"digits"``, ``"cifar10"`` or the file's path.
        x_train, x_test: float32 inputs ``(N, *input_shape)``, standardised with training statistics.
        y_train, y_test: int64 labels in ``0..num_classes-1``.
        num_classes: K.
        classes: the original label value of each class index (``0..K-1`` for the bundled sets).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: tuple = ()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(1, 8, 8)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices (sorted) holding out ``round(test_fraction * n_c)`` of each class ``c``.

    Every class with at least two samples keeps at least one in each part.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"Invalid test_fraction: {test_fraction} (expected 0 < test_fraction < 1)")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def check_validation_fraction(fraction: float) -> float:
    """``fraction`` if it is a valid share of the training data to hold out (0 <= f < 1), else ``ValueError``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ValueError(f"Invalid validation fraction: {fraction!r} (expected 0 <= validation < 1)")
    return float(fraction)


def validation_split(y: np.ndarray | torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept and held-out indices of a training set: ``fraction`` of each class held out for validation
    (stratified, drawn from ``seed`` on a stream apart from the data split's); ``fraction == 0`` keeps all."""
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if check_validation_fraction(fraction) == 0:
        return np.arange(len(y)), np.arange(0)
    return stratified_split(y, fraction, int(seed) + 2**32)


def _subset(x: np.ndarray, y: np.ndarray, size: int | None, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    if size is None or size >= len(y):
        return x, y
    if size < 1:
        raise ValueError(f"Invalid {what}: {size} (expected a positive number of samples)")
    keep = np.sort(np.random.default_rng(seed).permutation(len(y))[:size])
    return x[keep], y[keep]


def _standardize(x_train: np.ndarray, x_test: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """z-scores with the training part's mean and std over ``axes`` (a constant feature keeps std 1)."""
    mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = x_train.std(axis=axes, keepdims=True, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def _finish(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    classes: tuple,
    axes: tuple[int, ...],
    *,
    seed: int,
    train_size: int | None,
    test_size: int | None,
) -> ClassificationData:
    x_train, y_train = _subset(x_train, y_train, train_size, seed, "train_size")
    x_test, y_test = _subset(x_test, y_test, test_size, seed + 1, "test_size")
    x_train, x_test = _standardize(x_train.astype(np.float64), x_test.astype(np.float64), axes)
    return ClassificationData(
        name=name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        num_classes=len(classes),
        classes=classes,
    )


# --- digits -----------------------------------------------------------------------------------------


def _load_digits(seed: int, test_fraction: float) -> tuple[np.ndarray, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is the 'vision' extra
        raise ValueError("the digits data set needs scikit-learn: pip install 'tensordas[vision]'") from None
    bunch = load_digits()
    x = bunch.data.reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    tr, te = stratified_split(y, test_fraction, seed)
    return x[tr], y[tr], x[te], y[te]


# --- CIFAR-10 -----------------------------------------------------------------------------------------


def _cifar_folder(data_dir: str | os.PathLike) -> Path | None:
    """``DIR/cifar-10-batches-py`` or ``DIR`` itself, whichever holds the batches."""
    root = Path(data_dir)
    for folder in (root / _CIFAR_FOLDER, root):
        if all((folder / f).is_file() for f in (*_CIFAR_TRAIN, _CIFAR_TEST)):
            return folder
    return None


def _download_cifar(data_dir: str | os.PathLike) -> None:
    try:
        from torchvision.datasets import CIFAR10
    except ImportError:
        raise ValueError(
            f"--download needs torchvision (pip install torchvision); or put torchvision's "
            f"{_CIFAR_FOLDER} folder into {str(data_dir)!r} yourself"
        ) from None
    for train in (True, False):
        CIFAR10(str(data_dir), train=train, download=True)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch of torchvision's layout: ``data`` (n, 3072) uint8 and ``labels``."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"cannot read CIFAR-10 batch {str(path)!r}: {type(e).__name__}: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise ValueError(
            f"CIFAR-10 batch {str(path)!r} has data of shape {data.shape} and {labels.size} labels "
            "(expected (n, 3072) and n labels)"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"CIFAR-10 batch {str(path)!r} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(data_dir: str | os.PathLike | None, download: bool) -> tuple[np.ndarray, ...]:
    if data_dir is None:
        raise ValueError("cifar10 needs --data-dir: a folder holding torchvision's cifar-10-batches-py")
    folder = _cifar_folder(data_dir)
    if folder is None and download:
        _download_cifar(data_dir)
        folder = _cifar_folder(data_dir)
    if folder is None:
        raise ValueError(
            f"CIFAR-10 not found in {str(data_dir)!r} (expected {_CIFAR_FOLDER}/data_batch_1..5 and test_batch, "
            "torchvision's layout); pass --download to fetch it with torchvision"
        )
    parts = [_read_cifar_batch(folder / f) for f in _CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(folder / _CIFAR_TEST)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test


# --- .npz ---------------------------------------------------------------------------------------------


def _labels(y: np.ndarray, path: str, key: str) -> np.ndarray:
    """``y`` as a 1-D int64 array; floats are accepted only when every value is a whole number."""
    if y.ndim != 1:
        raise ValueError(f"{path}: array {key!r} must be 1-D (one label per sample), got shape {y.shape}")
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating):
        whole = np.isfinite(y) & (y == np.round(y))
        if whole.all():
            return y.astype(np.int64)
        bad = y[~whole][0]
        raise ValueError(f"{path}: labels {key!r} are not integers (found {bad!r})")
    raise ValueError(f"{path}: labels {key!r} are not integers (dtype {y.dtype})")


def _features(x: np.ndarray, path: str, key: str) -> np.ndarray:
    if x.ndim < 2:
        raise ValueError(f"{path}: array {key!r} must have samples first and features after, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise ValueError(f"{path}: array {key!r} is not real-valued (dtype {x.dtype})")
    x = x.astype(np.float64)
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(f"{path}: array {key!r} has {bad} NaN or infinite value(s); remove or impute them first")
    return x


def _load_npz(path: str, seed: int, test_fraction: float) -> tuple[np.ndarray, ...]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"data file not found: {path!r} (expected digits, cifar10 or an .npz file)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile, pickle and format errors all mean "not a readable .npz"
        raise ValueError(f"cannot read {path!r} as an .npz file with arrays X and y: {e}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy file: one array, no labels
        raise ValueError(f"{path!r} is a single array, not an .npz file with arrays X and y")
    with loaded as f:
        arrays = {k: f[k] for k in f.files}
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "none"
        raise ValueError(f"{path}: no array {' or '.join(map(repr, missing))} (found: {found}); expected X and y")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"{path}: X_test and y_test must come together")
    x, y = _features(arrays["X"], path, "X"), _labels(arrays["y"], path, "y")
    if len(x) != len(y):
        raise ValueError(f"{path}: X has {len(x)} samples but y has {len(y)} labels")
    if "X_test" in arrays:
        x_test, y_test = _features(arrays["X_test"], path, "X_test"), _labels(arrays["y_test"], path, "y_test")
        if len(x_test) != len(y_test):
            raise ValueError(f"{path}: X_test has {len(x_test)} samples but y_test has {len(y_test)} labels")
        if x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"{path}: X_test samples have shape {x_test.shape[1:]}, X samples {x.shape[1:]}")
        return x, y, x_test, y_test
    tr, te = stratified_split(y, test_fraction, seed)
    return x[tr], y[tr], x[te], y[te]


def _encode(y_train: np.ndarray, y_test: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    values = np.unique(y_train)
    if len(values) < 2:
        raise ValueError(f"{name}: the training labels hold {len(values)} class(es); classification needs >= 2")
    unseen = np.setdiff1d(np.unique(y_test), values)
    if unseen.size:
        raise ValueError(f"{name}: test labels {unseen.tolist()} never occur in the training labels")
    return np.searchsorted(values, y_train), np.searchsorted(values, y_test), tuple(values.tolist())


def load_classification(
    source: str = "digits",
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    test_fraction: float = 0.25,
    train_size: int | None = None,
    test_size: int | None = None,
) -> ClassificationData:
    """Load a classification data set (see the module docstring) with a train/test split.

    Args:
        source: ``"digits"``, ``"cifar10"`` or the path of an ``.npz`` file with ``X`` and ``y``.
        data_dir: the CIFAR-10 folder (torchvision's layout).
        download: fetch CIFAR-10 with torchvision when ``data_dir`` lacks it (never otherwise).
        seed: draws the split (digits, ``.npz`` without a test part) and the subsets.
        test_fraction: share of each class held out for testing when the source has no test part.
        train_size, test_size: keep only this many random samples of either part (None: all).

    Raises:
        ValueError: for an unknown source, unreadable or inconsistent files (missing arrays, labels
            that are not integers, length mismatch, NaN features), or a missing CIFAR-10 folder.
        FileNotFoundError: for an ``.npz`` path that does not exist.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"Invalid test_fraction: {test_fraction} (expected 0 < test_fraction < 1)")
    key = str(source).strip()
    registered = get_dataset(key, "classification")
    if registered is not None:
        loaded = registered.load(seed=seed, test_fraction=test_fraction, data_dir=data_dir, download=download)
        parts, axes, name = loaded, registered.standardize_axes, registered.name
    elif key.lower().endswith(".npz") or os.sep in key or Path(key).exists():
        parts, axes, name = _load_npz(key, seed, test_fraction), (0,), key
    else:
        known = ", ".join(dataset_names("classification"))
        raise ValueError(f"Unknown data set {source!r} (expected one of {known} or a .npz)")
    x_train, y_train, x_test, y_test = parts
    y_train, y_test, classes = _encode(y_train, y_test, name)
    return _finish(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        classes,
        axes,
        seed=seed,
        train_size=train_size,
        test_size=test_size,
    )


def _digits(*, seed: int, test_fraction: float, data_dir: object = None, download: bool = False) -> tuple:
    return _load_digits(seed, test_fraction)


def _cifar10(*, seed: int, test_fraction: float, data_dir: str | os.PathLike | None, download: bool) -> tuple:
    return _load_cifar10(data_dir, download)


register_dataset(Dataset("digits", "classification", _digits, "scikit-learn's 8x8 digits, bundled"))
register_dataset(Dataset("cifar10", "classification", _cifar10, "needs --data-dir", standardize_axes=(0, 2, 3)))
