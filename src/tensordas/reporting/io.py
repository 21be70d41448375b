"""Atomic result files: JSON, CSV and figures.

Each writer writes to a hidden temporary file in the target's own folder, flushes it to disk and
then renames it over the target with :func:`os.replace` (atomic on POSIX and Windows). A run that
is interrupted or fails while writing therefore leaves either the previous file or none, never a
half-written file that looks complete; the temporary file is removed on any exception, including
``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import numbers
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "ensure_dir", "json_ready", "save_figure", "write_csv", "write_json"]

PathLike = str | os.PathLike


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_dir(path: PathLike) -> Path:
    """Create folder ``path`` (with parents) if needed and return it.

    Raises:
        NotADirectoryError: if ``path`` or one of its parents exists and is not a folder.
        PermissionError: if the folder cannot be written to.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"cannot use {str(path)!r} as an output folder: it is not a folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to output folder {str(path)!r}: permission denied")
    return path


@contextlib.contextmanager
def atomic_open(
    path: PathLike, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None
) -> Iterator[IO]:
    """Open ``path`` for writing so that it appears only once the ``with`` block completes.

    Args:
        path: target file; its folder must exist.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding, newline: as for :func:`open` (text mode only).

    Raises:
        FileNotFoundError: if the target's folder does not exist.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"Invalid mode {mode!r} for atomic_open (expected 'w' or 'wb')")
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        kwargs = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_ready(obj: Any) -> Any:
    """``obj`` as plain JSON types: dataclasses, mappings, sequences, numpy/torch values, paths.

    Non-finite floats become ``None`` (``null``), since NaN and Infinity are not valid JSON.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_ready({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays/scalars, torch tensors
        return json_ready(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "item"):
        return json_ready(obj.item())
    raise TypeError(f"cannot write a {type(obj).__name__} to JSON")


def _dumps(obj: Any, level: int = 0, indent: int = 2) -> str:
    # Like json.dumps(indent=2), but lists of scalars stay on one line (long curves stay readable).
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, level + 1, indent)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [f"{inner}{_dumps(v, level + 1, indent)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False, separators=(", ", ": "))


def write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` (made :func:`json_ready`) as JSON to ``path`` atomically; floats round-trip exactly."""
    text = _dumps(json_ready(obj)) + "\n"
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def _csv_cell(value: Any) -> Any:
    """A CSV cell: ``None`` and non-finite numbers (Python, NumPy or 0-d torch) empty, scalars unwrapped."""
    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return value if math.isfinite(float(value)) else ""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # 0-d torch tensors, numpy 0-d arrays
        return _csv_cell(value.item())
    return value


def write_csv(path: PathLike, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str]) -> Path:
    """Write ``rows`` (dicts keyed by ``fieldnames``) as CSV with a header to ``path`` atomically.

    ``None`` and non-finite floats are written as empty cells; floats round-trip exactly.

    Raises:
        ValueError: if a row has a key that is not in ``fieldnames``.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    with atomic_open(path, "w", newline="") as f:
        f.write(buf.getvalue())
    return Path(path)


def save_figure(fig: Any, path: PathLike, *, dpi: int = 150) -> Path:
    """Save a matplotlib figure to ``path`` atomically; the format follows the suffix (.png, .pdf, .svg)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight")
    return path
