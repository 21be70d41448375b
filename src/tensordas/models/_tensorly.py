"""Run TensorLy's tensor algebra on the PyTorch backend without changing the user's global backend."""

from __future__ import annotations

import tensorly as tl


def pytorch_backend():
    """Context manager: TensorLy's PyTorch backend for this thread only."""
    return tl.backend_context("pytorch", local_threadsafe=True)
