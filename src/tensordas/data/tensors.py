"""Load a (partially known) data tensor: a TensorLy dataset, a synthetic low-rank tensor, or a user file.

``load_tensor(spec)`` accepts

- a dataset name bundled with TensorLy: ``covid19``, ``il2``, ``kinetic``, ``indian_pines``;
- ``synthetic:shape=30x30x30,rank=5,noise=0.1[,seed=0]``: a random CP tensor plus Gaussian noise;
- a file ``.npy``, ``.npz`` (one array, or ``path.npz:key``) or ``.mat`` (the single array, or
  ``path.mat:key``) in which NaN marks a missing entry.

Missing entries stay NaN in ``TensorData.tensor`` (so that a leak shows up as NaN instead of silently
training on a fill value) and are False in ``TensorData.known``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import tensorly as tl
import tensorly.datasets as tl_datasets
import torch

from ..models._tensorly import numpy_backend

__all__ = ["DATASETS", "TensorData", "from_array", "load_tensor", "synthetic_tensor"]

FILE_SUFFIXES = (".npy", ".npz", ".mat")
MAX_SYNTHETIC_ENTRIES = 10**8
T = TypeVar("T")


@dataclass(frozen=True)
class TensorData:
    """A data tensor with its known entries.

    Attributes:
        tensor: floating tensor; NaN at every unknown entry.
        known: boolean tensor of the same shape, True where the entry is finite (usable).
        name: where it came from (dataset name, normalised synthetic spec, or file name).
    """

    tensor: torch.Tensor
    known: torch.Tensor
    name: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def n_known(self) -> int:
        return int(self.known.sum())


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
_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "covid19": _bunch_tensor(tl_datasets.load_covid19_serology),  # 438 x 6 x 11, complete
    "il2": _bunch_tensor(tl_datasets.load_IL2data),  # 13 x 4 x 12 x 8, 192 NaN
    "kinetic": _kinetic,  # 64 x 12 x 10 x 60, 1754 missing
    "indian_pines": _bunch_tensor(tl_datasets.load_indian_pines),  # 145 x 145 x 200 hyperspectral cube
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)


def from_array(array: np.ndarray | torch.Tensor, name: str, dtype: torch.dtype | None = None) -> TensorData:
    """Wrap an in-memory array as ``TensorData``: NaN and +-inf (and masked entries of a NumPy masked
    array) mark unknown entries.

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
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    if masked is not None:  # a masked entry of a NumPy masked array is missing, whatever its fill value
        finite &= ~masked
    if not finite.any():
        raise ValueError(f"{name}: no finite entries (every entry is NaN or infinite)")
    x[~finite] = np.nan
    dtype = dtype or torch.get_default_dtype()
    tensor = torch.from_numpy(x).to(dtype)
    known = torch.from_numpy(finite)
    if not bool(torch.isfinite(tensor[known]).all()):
        raise ValueError(f"{name}: values overflow {dtype}; load with dtype=torch.float64")
    return TensorData(tensor=tensor, known=known, name=name)


def synthetic_tensor(shape: tuple[int, ...], rank: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A random CP tensor of ``rank`` plus Gaussian noise, deterministic in ``seed`` (float64 NumPy).

    Factor entries are ``N(0, rank^(-1/N))`` so the low-rank signal has unit variance on average; the
    noise has standard deviation ``noise`` times the RMS of the signal (``noise=0.1`` is 10% noise, the
    best reachable held-out R^2 is then about ``1 / (1 + noise^2)``).
    """
    rng = np.random.default_rng(seed)
    scale = rank ** (-0.5 / len(shape))
    factors = [rng.standard_normal((s, rank)) * scale for s in shape]
    with numpy_backend():
        signal = np.asarray(tl.cp_to_tensor((None, factors)), dtype=np.float64)
    if noise > 0:
        signal = signal + noise * np.sqrt(np.mean(signal**2)) * rng.standard_normal(shape)
    return signal


def _parse_synthetic(spec: str) -> tuple[tuple[int, ...], int, float, int]:
    body = spec.split(":", 1)[1] if ":" in spec else ""
    usage = "expected synthetic:shape=AxBxC,rank=R[,noise=S][,seed=N]"
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        if "=" not in part:
            raise ValueError(f"Invalid synthetic spec {spec!r}: {part!r} is not key=value ({usage})")
        key, value = (s.strip() for s in part.split("=", 1))
        if key not in ("shape", "rank", "noise", "seed"):
            raise ValueError(f"Invalid synthetic spec {spec!r}: unknown key {key!r} (keys: shape, rank, noise, seed)")
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
    if math.prod(shape) > MAX_SYNTHETIC_ENTRIES:
        raise ValueError(
            f"Synthetic shape {fields['shape']} has {math.prod(shape)} entries (max {MAX_SYNTHETIC_ENTRIES})"
        )
    try:
        rank = int(fields["rank"])
        noise = float(fields.get("noise", "0"))
        seed = int(fields.get("seed", "0"))
    except ValueError as e:
        raise ValueError(f"Invalid synthetic spec {spec!r}: {e}") from None
    if rank < 1:
        raise ValueError(f"Invalid synthetic rank {rank} (expected a positive int)")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"Invalid synthetic noise {noise} (expected a finite number >= 0)")
    if seed < 0:
        raise ValueError(f"Invalid synthetic seed {seed} (expected an int >= 0)")
    return shape, rank, noise, seed


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


def _guarded(path: Path, read: Callable[[], T]) -> T:
    """Run ``read``; any failure to parse the file becomes a one-line ValueError naming it."""
    try:
        return read()
    except Exception as e:  # file parsers raise many types; report them uniformly
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"could not read {path}: {msg}") from None


def _read_file(path: Path, key: str | None) -> tuple[np.ndarray, str]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _guarded(path, lambda: np.load(path, allow_pickle=False)), path.name
    if suffix == ".npz":
        with _guarded(path, lambda: np.load(path, allow_pickle=False)) as z:
            name, _ = _pick(dict.fromkeys(z.files), key, path)
            return _guarded(path, lambda: z[name]), f"{path.name}:{name}"
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ValueError("reading .mat files needs scipy (pip install 'tensordas[completion]')") from None
    try:
        contents = loadmat(str(path))
    except NotImplementedError:
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7 or as .npy") from None
    except Exception as e:  # any parse failure of a user file
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ValueError(f"could not read {path}: {msg}") from None
    arrays = {k: v for k, v in contents.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    if key is None:  # MATLAB files often carry strings or cells beside the data: pick among numeric arrays
        arrays = {k: v for k, v in arrays.items() if v.dtype.kind in "biuf"}
    name, array = _pick(arrays, key, path)
    return np.asarray(array), f"{path.name}:{name}"


def load_tensor(spec: str | os.PathLike, dtype: torch.dtype | None = None) -> TensorData:
    """Load a data tensor from a dataset name, a ``synthetic:...`` spec or a file path (see the module doc).

    Args:
        spec: what to load.
        dtype: floating dtype of the result (default: torch's default dtype).

    Raises:
        ValueError: unknown dataset name (the message lists the known ones), bad synthetic spec,
            unsupported extension, unreadable file, no finite entry.
        FileNotFoundError: a ``.npy``/``.npz``/``.mat`` path that does not exist.
    """
    text = os.fspath(spec)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    if text.strip().lower() in DATASETS:
        name = text.strip().lower()
        return from_array(_LOADERS[name](), name, dtype)
    if text.strip().lower() == "synthetic" or text.strip().lower().startswith("synthetic:"):
        shape, rank, noise, seed = _parse_synthetic(text.strip())
        name = f"synthetic:shape={'x'.join(map(str, shape))},rank={rank},noise={noise:g},seed={seed}"
        return from_array(synthetic_tensor(shape, rank, noise, seed), name, dtype)
    head, key = _split_key(text)
    path = Path(head).expanduser()
    suffix = path.suffix.lower()
    if suffix in FILE_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"tensor file not found: {path}")
        array, name = _read_file(path, key)
        return from_array(array, name, dtype)
    if suffix or path.exists() or os.sep in head or "/" in head:
        raise ValueError(
            f"unsupported tensor file {str(path)!r} "
            f"(extension {suffix or 'none'}; supported: {', '.join(FILE_SUFFIXES)})"
        )
    raise ValueError(
        f"unknown dataset {text!r} (known: {', '.join(DATASETS)}; or synthetic:shape=AxBxC,rank=R[,noise=S][,seed=N]; "
        f"or a {'/'.join(FILE_SUFFIXES)} file)"
    )
