"""Parallel runs: the (method, seed, candidate) runs of a grid in worker processes (``--jobs``).

Inside ``with parallel_runs(jobs):`` (``reproduce --jobs N``, ``--jobs`` on every comparison command),
:func:`~tensordas.tasks.grid.run_grid` first sends every run its store does not hold to ``jobs`` worker
processes (the ``spawn`` start method: torch and ``fork`` can deadlock; one torch thread each), then
assembles and selects exactly as a serial run does, in the same order. Each run depends only on its
optimizer, seed and settings (every run seeds its own initialisation, split and data order), so the
records are the same bit for bit as a serial run with one thread (``--jobs 1 --threads 1``), except
the measured wall and step times and peak memory. The parent stores each finished run (atomically) as
it collects it; an interrupt stops the workers, so a rerun resumes from the stored runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import multiprocessing
import os
import pickle
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from ..training import OptimizerConfig
from ..training.methods import register_method, registered_methods
from .runstore import RunResult

__all__ = ["check_jobs", "default_jobs", "in_parallel", "parallel_runs", "submitted"]

_POOL: contextvars.ContextVar[ProcessPoolExecutor | None] = contextvars.ContextVar("tensordas_pool", default=None)


def default_jobs() -> int:
    """The number of worker processes ``--jobs`` defaults to: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_jobs(jobs: int) -> int:
    """``jobs`` if it is an int >= 1, else a ``ValueError`` naming it."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"Invalid jobs {jobs!r} (expected an integer >= 1)")
    return jobs


def _init_worker() -> None:
    """A worker: one torch thread (the workers share the cores), and Ctrl-C left to the parent, which
    stops the workers itself (module docstring)."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


_WORKER_RUN: dict[str, Callable[..., RunResult]] = {}  # the latest unpickled run function, by file


def _run_in_worker(path: str, opt: OptimizerConfig, seed: int) -> RunResult:
    """Run one (optimizer, seed) in a worker with the run function pickled in ``path`` (read once per worker),
    after registering the methods the parent had registered from outside the package (a spawned worker starts
    with the built-in registry only)."""
    if path not in _WORKER_RUN:
        _WORKER_RUN.clear()  # one experiment at a time: do not keep the previous one's data
        with open(path, "rb") as f:
            run_one, methods = pickle.load(f)
        for method in methods:
            register_method(method, replace=True)
        _WORKER_RUN[path] = run_one
    return _WORKER_RUN[path](opt, seed, None)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop ``pool`` now: cancel what has not started and end the workers' current runs (their results
    are not stored, so a rerun redoes them)."""
    # ProcessPoolExecutor has no public way to end running calls; its worker processes are in _processes
    # (taken before shutdown, which forgets them).
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)
        if process.is_alive():  # e.g. blocked in disk I/O while importing torch on a loaded machine
            process.kill()
            process.join(timeout=60)


@contextlib.contextmanager
def parallel_runs(jobs: int | None = None) -> Iterator[int]:
    """Inside the block, :func:`~tensordas.tasks.grid.run_grid` runs its pending runs in ``jobs`` worker
    processes (default: :func:`default_jobs`; 1: serially, in this process). Yields the number of jobs.
    One pool serves every grid of the block, so workers start once (the ``spawn`` start method: torch
    and ``fork`` can deadlock). On an exception or interrupt the workers are stopped."""
    jobs = default_jobs() if jobs is None else check_jobs(jobs)
    if jobs == 1:
        yield 1
        return
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)  # fmt: skip
    token = _POOL.set(pool)
    try:
        yield jobs
    except BaseException:
        _stop(pool)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        _POOL.reset(token)


def in_parallel() -> bool:
    """Whether this code runs inside a :func:`parallel_runs` block with worker processes."""
    return _POOL.get() is not None


@contextlib.contextmanager
def submitted(
    pending: Sequence[tuple[str, OptimizerConfig, int]], run_one: Callable[..., RunResult]
) -> Iterator[dict[str, Future]]:
    """Futures of the ``pending`` runs (``(key, optimizer, seed)``) in the block's pool, by key; none
    without a pool, or when ``run_one`` or a method registered from outside the package cannot be sent to a
    worker (then the runs go serially, with a warning)."""
    pool = _POOL.get()
    if pool is None or not pending:
        yield {}
        return
    with tempfile.NamedTemporaryFile(prefix="tensordas-run-", suffix=".pkl", delete=False) as f:
        path = f.name
        try:
            pickle.dump((run_one, registered_methods()), f, protocol=pickle.HIGHEST_PROTOCOL)
            ok = True
        except Exception as e:  # pickle raises PicklingError, TypeError or AttributeError, a __reduce__ anything
            warnings.warn(f"runs go serially: the run function cannot be sent to a worker ({e})", stacklevel=3)
            ok = False
    try:
        yield {key: pool.submit(_run_in_worker, path, opt, seed) for key, opt, seed in pending} if ok else {}
    finally:
        Path(path).unlink(missing_ok=True)
