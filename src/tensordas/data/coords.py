"""Observed entries as coordinates: validation, row-major order, flat indices, and coordinate files.

A tensor with 10^9-10^12 cells and 10^6-10^8 observations is only ever held as ``indices`` (nnz, N) int64
plus ``values`` (nnz,): every function here costs O(nnz) memory (O(nnz log nnz) time for an unsorted input),
never O(cells).

Coordinate files:

- ``.npz`` with arrays ``indices`` (nnz x N integers), ``values`` (nnz) and ``shape`` (N);
- ``.csv`` / ``.parquet`` with a header, one integer column per mode (0-based) and one value column (the
  last unless named); the shape is the largest index + 1 of each mode. Read with pandas / pyarrow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "COORDINATE_TABLES",
    "check_coordinates",
    "flat_index",
    "is_coordinate_npz",
    "read_coordinate_npz",
    "read_coordinate_table",
]

COORDINATE_TABLES = (".csv", ".parquet")
COORDINATE_KEYS = ("indices", "values", "shape")
_INT64_MAX = 2**63 - 1
A = TypeVar("A", np.ndarray, torch.Tensor)
T = TypeVar("T")


def flat_index(indices: A, shape: Sequence[int]) -> A:
    """Row-major flat positions of ``indices`` (B, N) in a tensor of ``shape``, as int64 (NumPy or torch).

    Horner's scheme with elementwise multiply-adds, so it runs on any device: an integer matrix product
    (``indices @ strides``) has no CUDA kernel. Needs ``prod(shape) <= 2**63 - 1``.
    """
    if math.prod(shape) > _INT64_MAX:
        raise ValueError(f"shape {tuple(shape)} has more than 2**63 - 1 cells: no int64 flat index")
    flat = indices[:, 0]
    for k in range(1, len(shape)):
        flat = flat * shape[k] + indices[:, k]
    return flat


def _check_shape(shape: object, where: str) -> tuple[int, ...]:
    arr = np.asarray(shape)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.size < 2 or (arr < 1).any():
        raise ValueError(f"{where}: shape must be at least 2 positive integers, got {_show(shape)}")
    return tuple(int(s) for s in arr)


def _show(x: object) -> str:
    text = repr(x.tolist() if isinstance(x, np.ndarray) and x.size <= 8 else x)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_numpy(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds it exactly
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _row_major_order(indices: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray | None:
    """None when ``indices`` are already in strictly increasing row-major order, else the sorting permutation.

    Also raises on the first duplicate coordinate (found after sorting, so O(nnz log nnz)).
    """
    if math.prod(shape) <= _INT64_MAX:
        flat = flat_index(indices, shape)
        if flat.size < 2 or bool((flat[1:] > flat[:-1]).all()):
            return None  # already sorted and unique (dense inputs, files written in order)
        order = np.argsort(flat, kind="stable")
        same = flat[order[1:]] == flat[order[:-1]]
    else:  # no int64 flat index: sort the columns lexicographically (slower)
        order = np.lexsort(indices.T[::-1])
        ordered = indices[order]
        same = (ordered[1:] == ordered[:-1]).all(axis=1)
    if same.any():
        at = int(np.argmax(same))
        rows = sorted((int(order[at]), int(order[at + 1])))
        coord = tuple(int(i) for i in indices[rows[0]])
        raise ValueError(
            f"{where}: duplicate coordinates {coord} at rows {rows[0]} and {rows[1]} (list each entry once)"
        )
    return order


def check_coordinates(
    indices: object, values: object, shape: object, where: str
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Validate observed entries and return them in row-major order: (indices int64 (nnz, N), values, shape).

    Every problem is one ``ValueError`` line that starts with ``where`` (a file name, or what was passed):
    wrong shapes or dtypes, no entry, negative or out-of-range indices, duplicate coordinates, values that
    are NaN or infinite. ``values`` keep their floating dtype (integers and bools become float64).
    """
    dims = _check_shape(shape, where)
    n = len(dims)
    idx = _as_numpy(indices)
    if idx.ndim != 2 or idx.shape[1] != n:
        hint = " (torch's (N, nnz) layout? transpose it)" if idx.ndim == 2 and idx.shape[0] == n else ""
        raise ValueError(f"{where}: indices have shape {idx.shape}, expected (nnz, {n}) for shape {dims}{hint}")
    if idx.dtype.kind not in "iu":
        raise ValueError(f"{where}: indices must be integers, got dtype {idx.dtype}")
    if idx.shape[0] == 0:
        raise ValueError(f"{where}: no entries (nnz = 0)")
    val = _as_numpy(values)
    if val.ndim != 1 or val.shape[0] != idx.shape[0]:
        raise ValueError(f"{where}: values have shape {val.shape}, expected ({idx.shape[0]},) like the indices")
    if val.dtype.kind not in "biuf":
        raise ValueError(f"{where}: values must be real numbers, got dtype {val.dtype}")
    if val.dtype.kind != "f":
        val = val.astype(np.float64)
    bad = ~np.isfinite(val)
    if bad.any():
        row = int(np.argmax(bad))
        what = "NaN" if np.isnan(val[row]) else "infinite"
        n_bad = int(bad.sum())
        raise ValueError(f"{where}: {what} value at row {row} ({n_bad} non-finite; list observed entries only)")
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    for k, size in enumerate(dims):
        if int(lo[k]) < 0:
            row = int(np.argmax(idx[:, k] < 0))
            raise ValueError(f"{where}: negative index {int(lo[k])} in mode {k} (row {row}); indices are 0-based")
        if int(hi[k]) >= size:
            row = int(np.argmax(idx[:, k] >= size))
            raise ValueError(f"{where}: index {int(hi[k])} in mode {k} (row {row}) is out of range for size {size}")
    idx = idx.astype(np.int64, copy=False)
    order = _row_major_order(idx, dims, where)
    if order is not None:
        idx, val = idx[order], val[order]
    return idx, val, dims


def is_coordinate_npz(keys: Sequence[str]) -> bool:
    """Whether an ``.npz`` holds observed entries (``indices`` and ``values``) rather than a dense array."""
    return "indices" in keys and "values" in keys


def read_coordinate_npz(npz: np.lib.npyio.NpzFile, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indices, values, shape)`` of an open coordinate ``.npz`` (unvalidated)."""
    missing = [k for k in COORDINATE_KEYS if k not in npz.files]
    if missing:
        raise ValueError(
            f"{path}: a coordinate .npz needs arrays {', '.join(COORDINATE_KEYS)}; missing {', '.join(missing)}"
        )
    return npz["indices"], npz["values"], npz["shape"]


def read_error(path: Path, error: BaseException) -> ValueError:
    """A parser's failure as a one-line ``ValueError`` naming the file."""
    msg = " ".join(str(error).split()) or type(error).__name__
    return ValueError(f"could not read {path}: {msg}")


def guarded(path: Path, read: Callable[[], T]) -> T:
    """Run ``read``; any failure to parse the file becomes a one-line ValueError naming it."""
    try:
        return read()
    except ValueError as e:
        if str(e).startswith(str(path)):  # already one of ours
            raise
        raise read_error(path, e) from None
    except Exception as e:  # file parsers raise many types; report them uniformly
        raise read_error(path, e) from None


def read_coordinate_table(path: Path, value_column: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indices, values, shape)`` of a ``.csv``/``.parquet`` table (unvalidated beyond its columns).

    One integer column per mode, in file order, and the value column (``value_column``, else the last);
    the shape is each mode's largest index + 1.
    """
    try:
        import pandas as pd
    except ImportError:
        msg = "reading .csv/.parquet needs pandas and pyarrow (pip install 'tensordas[completion]')"
        raise ValueError(msg) from None
    read = pd.read_parquet if path.suffix.lower() == ".parquet" else pd.read_csv
    frame = guarded(path, lambda: read(path))
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if len(frame) == 0:
        raise ValueError(f"{path}: no entries (the table has no rows)")
    if all(_is_number(c) for c in columns):
        raise ValueError(f"{path}: the first row looks like data ({', '.join(columns[:4])}); add a header row")
    if value_column is None:
        value_column = columns[-1] if columns else ""
    elif value_column not in columns:
        raise ValueError(f"{path}: no column {value_column!r} (columns: {', '.join(columns)})")
    modes = [c for c in columns if c != value_column]
    if len(modes) < 2:
        raise ValueError(
            f"{path}: need at least 2 index columns and a value column, got columns {', '.join(columns) or 'none'}"
        )
    for c in modes:
        kind = frame[c].dtype.kind
        if kind not in "iu" or bool(frame[c].isna().any()):
            what = "missing or non-integer values" if kind == "f" else f"dtype {frame[c].dtype}"
            raise ValueError(f"{path}: index column {c!r} has {what} (expected integers)")
    if frame[value_column].dtype.kind not in "biuf":
        raise ValueError(f"{path}: value column {value_column!r} is not numeric (dtype {frame[value_column].dtype})")
    indices = frame[modes].to_numpy(dtype=np.int64)
    values = frame[value_column].to_numpy(dtype=np.float64, na_value=np.nan)
    shape = indices.max(axis=0) + 1
    return indices, values, np.maximum(shape, 1)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
