"""Finished runs kept on disk: one atomically written JSON file per (optimizer, seed) run, with a fingerprint.

A run is stored under ``OUT/runs/<key>.json`` (:func:`run_key`: ``das-adam-seed0``, a tuning candidate's
key names its value) together with a fingerprint (:func:`fingerprint`) of everything that determines it:
the task, its settings, the optimizer and the seed. An interrupted experiment so resumes without
recomputing finished runs, and a changed setting recomputes exactly the runs it affects. User data
enters the fingerprint beyond its name through :func:`data_digest` (a file's bytes, a folder's listing),
so a file overwritten with other data re-runs instead of being reused.

A run in progress keeps a training checkpoint (``OUT/checkpoints/``) that an interrupted experiment
continues; the classifier families write it at most every :data:`RUN_CHECKPOINT_EVERY_S` seconds and
after the last epoch, not after every epoch: a quick run's epoch takes 0.07 s, and a synced file after
each cost 5-7% of the run (``benchmarks/run_overhead.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..reporting import ensure_dir, json_ready, write_json
from ..training import OPTIONS, OptimizerConfig

__all__ = [
    "RUNS_DIR",
    "RUN_CHECKPOINT_EVERY_S",
    "RunResult",
    "RunStore",
    "data_digest",
    "file_digest",
    "fingerprint",
    "run_key",
    "run_store",
]

RUNS_DIR = "runs"
RUN_CHECKPOINT_EVERY_S = 30.0  # an interrupted run redoes at most about this much training


@dataclass
class RunResult:
    """One finished (optimizer, seed) run: a flat record of final metrics and its curve rows."""

    record: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able settings: equal settings, equal runs."""
    text = json.dumps(json_ready(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """A digest of a file's size and bytes (streamed in 1 MiB blocks): equal contents, equal digests."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(str(os.fstat(f.fileno()).st_size).encode())
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _folder_digest(folder: Path) -> str:
    """A digest of a folder's file listing: relative names, sizes and modification times (no bytes read)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        h.update(f"{path.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def data_digest(source: str | os.PathLike | None) -> str | None:
    """What a run's fingerprint needs to know about user data beyond its name.

    An existing file (also ``FILE:KEY``, an array inside an ``.npz``/``.mat``) gives a digest of its
    contents, a folder one of its listing (names, sizes, times); a data set name, a ``synthetic:``
    spec or a hub id gives None. So a file overwritten with other data re-runs instead of being reused.
    """
    if source is None:
        return None
    text = os.fspath(source)
    candidates = [text]
    head, sep, _ = text.rpartition(":")
    if sep and head:
        candidates.append(head)
    for candidate in candidates:
        path = Path(candidate).expanduser()
        try:
            if path.is_file():
                return "file:" + file_digest(path)
            if path.is_dir():
                return "dir:" + _folder_digest(path)
        except OSError:
            return None  # unreadable: the loader reports it
    return None


class RunStore:
    """Finished runs of one experiment folder, one atomically written JSON file per run."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir) / RUNS_DIR

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def load(self, key: str, print_: str) -> RunResult | None:
        """The stored run ``key`` if it exists, is readable and has fingerprint ``print_``."""
        path = self._path(key)
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # missing, or unreadable: redo it
        if not isinstance(stored, dict) or stored.get("fingerprint") != print_:
            return None
        return RunResult(record=stored["record"], curve=stored["curve"])

    def save(self, key: str, print_: str, result: RunResult) -> None:
        ensure_dir(self.dir)
        write_json(self._path(key), {"fingerprint": print_, "record": result.record, "curve": result.curve})

    def fetch(
        self,
        key: str,
        print_: str,
        compute: Callable[[], RunResult],
        *,
        resume: bool = True,
        reused: Callable[[], None] | None = None,
        keep: Callable[[RunResult], bool] | None = None,
    ) -> RunResult:
        """The stored run ``key`` with fingerprint ``print_`` (with ``resume``; then ``reused()`` is
        called), else ``compute()``, stored unless ``keep(result)`` is false."""
        done = self.load(key, print_) if resume else None
        if done is None:
            done = compute()
            if keep is None or keep(done):
                self.save(key, print_, done)
        elif reused is not None:
            reused()
        return done


class _NoStore(RunStore):
    """Runs without an output folder: always computed, never stored."""

    def __init__(self) -> None:
        pass

    def load(self, key: str, print_: str) -> RunResult | None:
        return None

    def save(self, key: str, print_: str, result: RunResult) -> None:
        pass


def run_store(out_dir: str | Path | None) -> RunStore:
    """The store of ``out_dir``'s finished runs; with no folder, one that keeps nothing."""
    return RunStore(out_dir) if out_dir is not None else _NoStore()


def run_key(optimizer: OptimizerConfig, seed: int) -> str:
    """File-name-safe key of one run, e.g. ``das-adam-seed0``; a grid candidate's names its strength
    value, e.g. ``das-adam-alpha10-seed0`` (``base-adam-lr0.01-seed0``), and a second tuned option's
    value where it is not the option's default (``looksam-sgd-rho0.1-looksam_alpha0.5-seed0``)."""
    if optimizer.grid and optimizer.strength is not None:
        strength = optimizer.spec.strength
        parts = [
            f"{name}{value:.12g}"
            for name, value in optimizer.tuned_values().items()
            if name == strength or value != OPTIONS[name].default
        ]
        return f"{optimizer.method}-{optimizer.base}-{'-'.join(parts)}-seed{seed}"
    return f"{optimizer.method}-{optimizer.base}-seed{seed}"
