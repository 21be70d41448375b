"""Load the known entries of a data tensor: a TensorLy dataset, a synthetic low-rank tensor, a user file,
or observed entries given in memory.

``load_tensor(spec)`` accepts

- a dataset name bundled with TensorLy: ``covid19``, ``il2``, ``kinetic``, ``indian_pines``;
- ``synthetic:shape=30x30x30,rank=5,noise=0.1[,seed=0][,nnz=N]``: a random CP tensor plus Gaussian noise;
  with ``nnz`` only N random entries of it are generated (as coordinates, so the shape may be huge);
- a dense file ``.npy``, ``.npz`` (one array, or ``path.npz:key``) or ``.mat`` (the single array, or
  ``path.mat:key``) in which NaN marks a missing entry;
- a coordinate file: ``.npz`` with ``indices`` (nnz x N), ``values`` (nnz) and ``shape`` (N), or a ``.csv`` /
  ``.parquet`` table with one integer column per mode and a value column (see ``coords``);
- in memory: a dense array or tensor (NaN = missing), a ``torch.sparse_coo_tensor`` (its stored entries
  are the observed ones), or an ``(indices, values, shape)`` triple.

Whatever the input, ``TensorData`` holds the known entries only, as coordinates in row-major order, so a
tensor of 10^10 cells with 10^6 observations costs memory for 10^6 entries. A dense input gives its finite
entries in the order of ``torch.nonzero``, as it always did (same split for the same seed).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorly as tl
import tensorly.datasets as tl_datasets
import torch

from ..formats import numpy_backend
from .coords import (
    COORDINATE_TABLES,
    check_coordinates,
    flat_index,
    guarded,
    is_coordinate_npz,
    read_coordinate_npz,
    read_coordinate_table,
    read_error,
)
from .registry import Dataset, dataset_names, get_dataset, register_dataset

__all__ = [
    "TensorData",
    "from_array",
    "from_coordinates",
    "from_sparse",
    "load_tensor",
    "save_coordinates",
    "synthetic_entries",
    "synthetic_tensor",
]

FILE_SUFFIXES = (".npy", ".npz", ".mat", *COORDINATE_TABLES)
MAX_SYNTHETIC_ENTRIES = 10**8
MAX_DENSE_CELLS = 10**8  # TensorData.to_dense refuses larger tensors (a dense float32 copy of 400 MB and up)


@dataclass(frozen=True)
class TensorData:
    """The known entries of a data tensor, as coordinates.

    Attributes:
        indices: (nnz, N) int64, each known entry once, in row-major order.
        values: (nnz,) floating, all finite.
        shape: the tensor's shape (its cells never need to fit in memory).
        name: where it came from (dataset name, normalised synthetic spec, or file name).
    """

    indices: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, ...]
    name: str

    @property
    def n_known(self) -> int:
        return int(self.indices.shape[0])

    @property
    def n_cells(self) -> int:
        """Number of cells of the full tensor, known or not (may exceed any memory)."""
        return math.prod(self.shape)

    def to_dense(self, max_cells: int = MAX_DENSE_CELLS) -> tuple[torch.Tensor, torch.Tensor]:
        """A dense copy: the tensor with NaN at unknown entries, and the boolean mask of known ones.

        O(cells) memory, for small tensors only: raises ``ValueError`` beyond ``max_cells`` cells.
        """
        if self.n_cells > max_cells:
            raise ValueError(
                f"{self.name}: a dense copy of shape {'x'.join(map(str, self.shape))} ({self.n_cells:.3g} cells) "
                f"exceeds max_cells={max_cells:.3g}; work on the coordinates (indices, values)"
            )
        flat = flat_index(self.indices, self.shape)
        tensor = torch.full(self.shape, math.nan, dtype=self.values.dtype)
        tensor.view(-1)[flat] = self.values
        known = torch.zeros(self.shape, dtype=torch.bool)
        known.view(-1)[flat] = True
        return tensor, known

    @property
    def tensor(self) -> torch.Tensor:
        """Dense copy with NaN at unknown entries (see ``to_dense``)."""
        return self.to_dense()[0]

    @property
    def known(self) -> torch.Tensor:
        """Dense boolean mask of the known entries (see ``to_dense``)."""
        return self.to_dense()[1]


def _bunch_tensor(loader: Callable) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        with numpy_backend():
            return np.asarray(loader().tensor, dtype=np.float64)

    return load


def _kinetic() -> np.ndarray:
    # TensorLy stores the missing entries of this dataset as 0 with a separate mask (True = missing).
    with numpy_backend():
        bunch = tl_datasets.load_kinetic()
        tensor = np.array(bunch.tensor, dtype=np.float64)
        tensor[np.asarray(bunch.missing_values_position, dtype=bool)] = np.nan
    return tensor


# Tensors bundled with TensorLy (available offline).
for _dataset in (
    Dataset("covid19", "tensor", _bunch_tensor(tl_datasets.load_covid19_serology), "COVID-19 serology, 438x6x11"),
    Dataset("il2", "tensor", _bunch_tensor(tl_datasets.load_IL2data), "IL-2 response, 13x4x12x8, 192 missing"),
    Dataset("kinetic", "tensor", _kinetic, "kinetic, 64x12x10x60, 1754 missing"),
    Dataset("indian_pines", "tensor", _bunch_tensor(tl_datasets.load_indian_pines), "hyperspectral, 145x145x200"),
):
    register_dataset(_dataset)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` that copies read-only arrays (pandas, memory maps) instead of sharing them."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _values(values: np.ndarray, name: str, dtype: torch.dtype | None) -> torch.Tensor:
    """Finite values as a torch tensor of ``dtype`` (default: torch's default dtype), refusing overflow."""
    dtype = dtype or torch.get_default_dtype()
    out = _tensor(values).to(dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name}: values overflow {dtype}; load with dtype=torch.float64")
    return out


def from_array(array: np.ndarray | torch.Tensor, name: str, dtype: torch.dtype | None = None) -> TensorData:
    """The finite entries of a dense array as ``TensorData``: NaN and +-inf (and masked entries of a NumPy
    masked array) mark unknown entries.

    Raises:
        ValueError: non-numeric or complex data, fewer than 2 modes, no entry, or no finite entry.
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if array.dtype == torch.bfloat16:  # NumPy has no bfloat16; float32 holds it exactly
            array = array.float()
        array = array.numpy()
    masked = np.ma.getmaskarray(array) if isinstance(array, np.ma.MaskedArray) else None
    x = np.asarray(np.ma.getdata(array) if masked is not None else array)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a real numeric array, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{name}: expected a tensor with at least 2 modes, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name}: the array is empty (shape {x.shape})")
    x = x.astype(np.float64, copy=False)
    finite = np.isfinite(x)
    if masked is not None:  # a masked entry of a NumPy masked array is missing, whatever its fill value
        finite &= ~masked
    if not finite.any():
        raise ValueError(f"{name}: no finite entries (every entry is NaN or infinite)")
    values = _values(x[finite], name, dtype)
    indices = torch.from_numpy(np.argwhere(finite).astype(np.int64, copy=False))  # row-major, as torch.nonzero
    return TensorData(indices=indices, values=values, shape=tuple(x.shape), name=name)


def from_coordinates(
    indices: np.ndarray | torch.Tensor,
    values: np.ndarray | torch.Tensor,
    shape: tuple[int, ...] | np.ndarray | torch.Size,
    name: str = "coordinates",
    dtype: torch.dtype | None = None,
) -> TensorData:
    """Observed entries ``indices`` (nnz, N) with ``values`` (nnz,) in a tensor of ``shape`` as ``TensorData``.

    The entries are validated (see ``coords.check_coordinates``: one-line errors starting with ``name``)
    and put in row-major order, so the same entries in another order give the same data (and splits).
    """
    idx, val, dims = check_coordinates(indices, values, shape, name)
    return TensorData(indices=_tensor(idx), values=_values(val, name, dtype), shape=dims, name=name)


def from_sparse(tensor: torch.Tensor, name: str = "sparse tensor", dtype: torch.dtype | None = None) -> TensorData:
    """The stored entries of a sparse torch tensor (COO, or CSR/CSC/BSR converted to COO) as ``TensorData``.

    Stored entries are the observed ones (an explicit 0 is an observed 0); unstored entries are missing.
    An uncoalesced tensor with repeated coordinates is refused rather than summed.
    """
    if tensor.layout != torch.sparse_coo:
        tensor = tensor.to_sparse_coo()
    if tensor.dense_dim() > 0:
        raise ValueError(f"{name}: hybrid sparse tensors ({tensor.dense_dim()} dense dimension(s)) are not supported")
    indices = (tensor.indices() if tensor.is_coalesced() else tensor._indices()).T
    values = tensor.values() if tensor.is_coalesced() else tensor._values()
    return from_coordinates(indices, values, tuple(tensor.shape), name, dtype)


def save_coordinates(data: TensorData, path: str | os.PathLike) -> Path:
    """Write ``data`` as a coordinate ``.npz`` (``indices``, ``values``, ``shape``) that ``load_tensor`` reads."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: coordinate files are written as .npz")
    np.savez(path, indices=data.indices.numpy(), values=data.values.numpy(), shape=np.asarray(data.shape))
    return path


def _cp_factors(rng: np.random.Generator, shape: tuple[int, ...], rank: int) -> list[np.ndarray]:
    # Entries N(0, rank^(-1/N)): the low-rank signal has unit variance on average.
    scale = rank ** (-0.5 / len(shape))
    return [rng.standard_normal((s, rank)) * scale for s in shape]


def synthetic_tensor(shape: tuple[int, ...], rank: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A random CP tensor of ``rank`` plus Gaussian noise, deterministic in ``seed`` (float64 NumPy).

    Factor entries are ``N(0, rank^(-1/N))`` so the low-rank signal has unit variance on average; the
    noise has standard deviation ``noise`` times the RMS of the signal (``noise=0.1`` is 10% noise, the
    best reachable held-out R^2 is then about ``1 / (1 + noise^2)``).
    """
    rng = np.random.default_rng(seed)
    factors = _cp_factors(rng, shape, rank)
    with numpy_backend():
        signal = np.asarray(tl.cp_to_tensor((None, factors)), dtype=np.float64)
    if noise > 0:
        signal = signal + noise * np.sqrt(np.mean(signal**2)) * rng.standard_normal(shape)
    return signal


def synthetic_entries(
    shape: tuple[int, ...], rank: int, nnz: int, noise: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``nnz`` distinct random entries of a random CP tensor plus noise, without forming the tensor.

    Returns ``(indices, values)``: (nnz, N) int64 in row-major order and float64. The factors are those of
    ``synthetic_tensor`` with the same seed (the same signal at the same cell); the noise has standard
    deviation ``noise`` times the RMS of the signal at the drawn entries. O(nnz * N + sum(shape) * rank).
    """
    cells = math.prod(shape)
    if not 1 <= nnz <= cells:
        raise ValueError(f"Invalid synthetic nnz {nnz} (expected 1 to {cells}, the number of cells)")
    rng = np.random.default_rng(seed)
    factors = _cp_factors(rng, shape, rank)
    flat = np.sort(rng.choice(cells, size=nnz, replace=False, shuffle=False))
    indices = np.stack(np.unravel_index(flat, shape), axis=1).astype(np.int64, copy=False)
    del flat
    signal = np.zeros(nnz)
    for r in range(rank):  # one component at a time: O(nnz) memory whatever the rank
        term = factors[0][indices[:, 0], r]
        for k in range(1, len(shape)):
            term = term * factors[k][indices[:, k], r]
        signal += term
    if noise > 0:
        signal += noise * np.sqrt(np.mean(signal**2)) * rng.standard_normal(nnz)
    return indices, signal


def _parse_synthetic(spec: str) -> tuple[tuple[int, ...], int, float, int, int | None]:
    body = spec.split(":", 1)[1] if ":" in spec else ""
    usage = "expected synthetic:shape=AxBxC,rank=R[,noise=S][,seed=N][,nnz=M]"
    keys = ("shape", "rank", "noise", "seed", "nnz")
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        if "=" not in part:
            raise ValueError(f"Invalid synthetic spec {spec!r}: {part!r} is not key=value ({usage})")
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in keys:
            raise ValueError(f"Invalid synthetic spec {spec!r}: unknown key {key!r} (keys: {', '.join(keys)})")
        if key in fields:
            raise ValueError(f"Invalid synthetic spec {spec!r}: {key!r} given twice")
        fields[key] = value
    for key in ("shape", "rank"):
        if key not in fields:
            raise ValueError(f"Invalid synthetic spec {spec!r}: missing {key}= ({usage})")
    try:
        shape = tuple(int(s) for s in fields["shape"].lower().split("x"))
    except ValueError:
        raise ValueError(f"Invalid synthetic shape {fields['shape']!r} (expected e.g. 30x30x30)") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"Invalid synthetic shape {fields['shape']!r} (need >= 2 modes of positive size)")
    try:
        rank = int(fields["rank"])
        noise = float(fields.get("noise", "0"))
        seed = int(fields.get("seed", "0"))
        nnz = int(float(fields["nnz"])) if "nnz" in fields else None  # 1e6 is accepted
    except ValueError as e:
        raise ValueError(f"Invalid synthetic spec {spec!r}: {e}") from None
    cells = math.prod(shape)
    if nnz is None and cells > MAX_SYNTHETIC_ENTRIES:
        raise ValueError(
            f"Synthetic shape {fields['shape']} has {cells} entries (max {MAX_SYNTHETIC_ENTRIES}; "
            "add nnz=N for N random entries of a larger tensor)"
        )
    if nnz is not None and not 1 <= nnz <= min(cells, MAX_SYNTHETIC_ENTRIES):
        raise ValueError(f"Invalid synthetic nnz {nnz} (expected 1 to {min(cells, MAX_SYNTHETIC_ENTRIES)})")
    if rank < 1:
        raise ValueError(f"Invalid synthetic rank {rank} (expected a positive int)")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"Invalid synthetic noise {noise} (expected a finite number >= 0)")
    if seed < 0:
        raise ValueError(f"Invalid synthetic seed {seed} (expected an int >= 0)")
    return shape, rank, noise, seed, nnz


def _split_key(spec: str) -> tuple[str, str | None]:
    """``path.npz:key`` / ``path.mat:key`` -> (path, key); anything else -> (spec, None)."""
    head, sep, key = spec.rpartition(":")
    if sep and Path(head).suffix.lower() in (".npz", ".mat", ".npy") and key and not key.startswith(("/", "\\")):
        if Path(head).suffix.lower() == ".npy":
            raise ValueError(f"{spec!r}: a .npy file holds one array, drop ':{key}'")
        return head, key
    return spec, None


def _pick(arrays: dict[str, object], key: str | None, path: Path) -> tuple[str, object]:
    if key is not None:
        if key not in arrays:
            raise ValueError(f"{path}: no array named {key!r} (arrays: {', '.join(arrays) or 'none'})")
        return key, arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.items()))
    if not arrays:
        raise ValueError(f"{path}: the file holds no array")
    raise ValueError(f"{path}: holds several arrays ({', '.join(arrays)}); pick one with {path}:KEY")


def _load_file(path: Path, key: str | None, dtype: torch.dtype | None, value_column: str | None) -> TensorData:
    suffix = path.suffix.lower()
    if suffix in COORDINATE_TABLES:
        indices, values, shape = read_coordinate_table(path, value_column)
        return replace(from_coordinates(indices, values, shape, str(path), dtype), name=path.name)
    if suffix == ".npy":
        return from_array(guarded(path, lambda: np.load(path, allow_pickle=False)), path.name, dtype)
    if suffix == ".npz":
        with guarded(path, lambda: np.load(path, allow_pickle=False)) as z:
            if key is None and is_coordinate_npz(z.files):
                indices, values, shape = guarded(path, lambda: read_coordinate_npz(z, path))
                return replace(from_coordinates(indices, values, shape, str(path), dtype), name=path.name)
            name, _ = _pick(dict.fromkeys(z.files), key, path)
            return from_array(guarded(path, lambda: z[name]), f"{path.name}:{name}", dtype)
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ValueError("reading .mat files needs scipy (pip install 'tensordas[completion]')") from None
    try:
        contents = loadmat(str(path))
    except NotImplementedError:
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7 or as .npy") from None
    except Exception as e:  # any parse failure of a user file
        raise read_error(path, e) from None
    arrays = {k: v for k, v in contents.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    if key is None:  # MATLAB files often carry strings or cells beside the data: pick among numeric arrays
        arrays = {k: v for k, v in arrays.items() if v.dtype.kind in "biuf"}
    name, array = _pick(arrays, key, path)
    return from_array(np.asarray(array), f"{path.name}:{name}", dtype)


# What load_tensor accepts: a name or path, a dense array, a dense or sparse tensor, (indices, values, shape).
TensorSource = str | os.PathLike | np.ndarray | torch.Tensor | tuple


def load_tensor(spec: TensorSource, dtype: torch.dtype | None = None, *, value_column: str | None = None) -> TensorData:
    """Load the known entries of a data tensor (see the module doc for what ``spec`` may be).

    Args:
        spec: a dataset name, a ``synthetic:...`` spec, a file path, a dense array/tensor, a sparse torch
            tensor, or an ``(indices, values, shape)`` triple.
        dtype: floating dtype of the values (default: torch's default dtype).
        value_column: the value column of a ``.csv``/``.parquet`` file (default: its last column).

    Raises:
        ValueError: unknown dataset name (the message lists the known ones), bad synthetic spec,
            unsupported extension, unreadable or invalid file (one line naming the file and the problem),
            no finite entry.
        FileNotFoundError: a file path that does not exist.
    """
    if isinstance(spec, TensorData):
        return spec
    if isinstance(spec, tuple) and len(spec) == 3:
        return from_coordinates(*spec, name="coordinates", dtype=dtype)
    if isinstance(spec, torch.Tensor):
        if spec.layout != torch.strided:
            return from_sparse(spec, dtype=dtype)
        return from_array(spec, "tensor", dtype)
    if isinstance(spec, np.ndarray):
        return from_array(spec, "array", dtype)
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(
            f"cannot load a tensor from {type(spec).__name__} (expected a name, a path, an array, a sparse tensor "
            "or an (indices, values, shape) triple)"
        )
    text = os.fspath(spec)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    lowered = text.strip().lower()
    if value_column is not None and Path(text).suffix.lower() not in COORDINATE_TABLES:
        raise ValueError(f"{text}: a value column applies to {'/'.join(COORDINATE_TABLES)} tables only")
    registered = get_dataset(lowered, "tensor")
    if registered is not None:
        return from_array(registered.load(), registered.name, dtype)
    if lowered == "synthetic" or lowered.startswith("synthetic:"):
        shape, rank, noise, seed, nnz = _parse_synthetic(text.strip())
        name = f"synthetic:shape={'x'.join(map(str, shape))},rank={rank},noise={noise:g},seed={seed}"
        if nnz is None:
            return from_array(synthetic_tensor(shape, rank, noise, seed), name, dtype)
        indices, values = synthetic_entries(shape, rank, nnz, noise, seed)
        return TensorData(torch.from_numpy(indices), _values(values, name, dtype), shape, f"{name},nnz={nnz}")
    head, key = _split_key(text)
    path = Path(head).expanduser()
    suffix = path.suffix.lower()
    if suffix in FILE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"tensor file not found: {path}")
        return _load_file(path, key, dtype, value_column)
    if suffix or path.exists() or os.sep in head or "/" in head:
        raise ValueError(
            f"unsupported tensor file {str(path)!r} "
            f"(extension {suffix or 'none'}; supported: {', '.join(FILE_SUFFIXES)})"
        )
    raise ValueError(
        f"unknown dataset {text!r} (known: {', '.join(dataset_names('tensor'))}; "
        f"or synthetic:shape=AxBxC,rank=R[,noise=S][,seed=N]; or a {'/'.join(FILE_SUFFIXES)} file)"
    )
