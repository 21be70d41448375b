"""The dense computations of tensor completion (TensorLy's masked ALS reference, ``init="tensorly"`` warm
starts) and the memory budget that guards them.

TensorLy decomposes dense arrays: a masked ALS on a tensor of C cells holds the data, its mask, the
imputed tensor, its reconstruction and the unfoldings' SVD buffers, all O(C) float64. On a tensor of
9e9 cells that is hundreds of GB, so these computations run only when ``dense_peak_bytes`` fits the budget;
otherwise callers skip them with a one-line note (``dense_budget_note``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..formats import get_format
from .coords import flat_index

__all__ = ["DEFAULT_DENSE_BUDGET_GB", "dense_budget_note", "dense_observed", "dense_peak_bytes"]

DEFAULT_DENSE_BUDGET_GB = 2.0


def dense_peak_bytes(shape: Sequence[int], model: str) -> int:
    """Estimated peak memory (bytes) of a TensorLy warm start / masked ALS of the format ``model`` on a ``shape``
    tensor: the format's ``dense_copies`` float64 copies of the tensor.

    Each built-in format's number is the peak RSS of ``dense_observed`` + ``<Model>.from_tensor`` (TensorLy's
    default settings) above what was allocated before (``benchmarks/completion_scale.py --dense-memory``, rank 4,
    70% of the cells missing; 120x60x50 / 200x100x40 / 400x200x100: cp 10.6 / 6.0 / 8.9, tucker 11.9 / 7.2 / 10.6,
    tt 7.6 / 3.0 / 7.3, tr 6.4 / 3.0 / 7.3), the largest plus about 30%.
    """
    return get_format(model).dense_copies * 8 * math.prod(shape)


def dense_budget_note(shape: Sequence[int], model: str, budget_gb: float, what: str) -> str | None:
    """None if ``what`` (e.g. "masked ALS") fits ``budget_gb`` GB, else a one-line note saying why it does not."""
    need = dense_peak_bytes(shape, model)
    if need <= budget_gb * 1e9:
        return None
    cells = math.prod(shape)
    return (
        f"{what} skipped: TensorLy needs a dense copy of the {'x'.join(map(str, shape))} tensor ({cells:.3g} cells), "
        f"about {need / 1e9:.3g} GB, over the dense budget of {budget_gb:g} GB"
    )


def dense_observed(shape: Sequence[int], indices: torch.Tensor, values: torch.Tensor) -> np.ndarray:
    """A float64 NumPy tensor of ``shape`` holding ``values`` at ``indices`` and NaN elsewhere (TensorLy's input).

    O(cells): call only after ``dense_budget_note`` said it fits.
    """
    out = np.full(math.prod(shape), np.nan)
    out[flat_index(indices.cpu(), shape).numpy()] = values.detach().cpu().double().numpy()
    return out.reshape(tuple(shape))
