"""TensorLy on a chosen backend without changing the user's global backend, and its decompositions' errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorly as tl

__all__ = ["numpy_backend", "pytorch_backend", "run_decomposition"]


def pytorch_backend():
    """Context manager: TensorLy's PyTorch backend for this thread only (reconstructions keep autograd)."""
    return tl.backend_context("pytorch", local_threadsafe=True)


def numpy_backend():
    """Context manager: TensorLy's NumPy backend for this thread only (for decompositions in float64)."""
    return tl.backend_context("numpy", local_threadsafe=True)


def run_decomposition(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call a TensorLy decomposition on the NumPy backend (float64, deterministic), whatever the global backend."""
    with numpy_backend():
        try:
            return fn(*args, **kwargs)
        except ValueError as e:  # TensorLy's messages span lines; keep errors one line
            msg = " ".join(str(e).split())
            raise ValueError(f"tensorly.{getattr(fn, '__name__', 'decomposition')}: {msg}") from e
