"""Run TensorLy's tensor algebra on a chosen backend without changing the user's global backend."""

from __future__ import annotations

import tensorly as tl


def pytorch_backend():
    """Context manager: TensorLy's PyTorch backend for this thread only."""
    return tl.backend_context("pytorch", local_threadsafe=True)


def numpy_backend():
    """Context manager: TensorLy's NumPy backend for this thread only (for decompositions in float64)."""
    return tl.backend_context("numpy", local_threadsafe=True)
