"""Kept for old imports (``tensordas.data.tensors`` imports ``numpy_backend`` from here); the code lives in
:mod:`tensordas.formats._tensorly`. Remove after the merge."""

from ..formats._tensorly import numpy_backend, pytorch_backend

__all__ = ["numpy_backend", "pytorch_backend"]
