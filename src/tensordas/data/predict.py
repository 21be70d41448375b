"""A model's values at lists of coordinates, and held-out metrics computed from them.

Two ways to get a decomposition model's values at B entries of a tensor of C cells:

- dense: reconstruct the whole tensor (``model()``, TensorLy) and gather: O(C) per call, fast when the
  entries are a sizeable share of a small tensor (a full-batch step on a dense data set);
- sampled: ``model.entries(indices)``: O(B) per call, whatever C.

``EntryPredictor`` takes the dense way only for tensors of at most ``DENSE_LIMIT`` cells when the entries
asked for are at least ``DENSE_MIN_FILL`` of the cells (measured on a 100^3 tensor, one thread: the dense way
wins from about 6% of the cells for CP rank 5, 1% for Tucker rank 8 and TT rank 5, 0.5% for TR rank 5;
``benchmarks/README.md``), and evaluates
(under ``torch.no_grad``) in batches of at most ``batch_size`` entries, so the memory of an evaluation is
O(batch_size) for the model's intermediates (plus O(B) for a returned vector; ``evaluate_entries``
accumulates the metrics batch by batch instead). Flat positions are computed with
elementwise multiply-adds (``coords.flat_index``): integer matrix products do not exist on CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ..metrics import r2_from_sums, r2_score, rmse
from .coords import flat_index
from .split import Entries, Standardizer

__all__ = ["DENSE_LIMIT", "DENSE_MIN_FILL", "EVAL_BATCH", "EntryPredictor", "evaluate_entries"]

# At most this many cells, the whole tensor may be reconstructed and gathered from (a few MB of floats)...
DENSE_LIMIT = 2_000_000
# ... when the entries asked for are at least this share of its cells.
DENSE_MIN_FILL = 1 / 64
# Entries per evaluation batch: bounds the model's intermediates (B x rank^2 floats for TT/TR) under no_grad.
EVAL_BATCH = 65_536


class EntryPredictor:
    """Values of ``model`` (a CP/Tucker/TT/TR model with ``forward()`` and ``entries(indices)``) at coordinates.

    Args:
        model: the decomposition model.
        shape: the tensor's shape.
        dense: reconstruct and gather (True) or evaluate entries (False); None (default) chooses per call:
            dense iff the tensor has at most ``DENSE_LIMIT`` cells and the call asks for at least
            ``DENSE_MIN_FILL`` of them. May be changed afterwards (e.g. False for mini-batches).
        batch_size: entries per batch when evaluating without gradients.

    Calling it with gradients enabled evaluates all ``indices`` at once (a training batch, which the caller
    bounds); without gradients (``torch.no_grad()``) it evaluates in batches of ``batch_size``.
    """

    def __init__(self, model: nn.Module, shape: Sequence[int], dense: bool | None = None, batch_size: int = EVAL_BATCH):
        if batch_size < 1:
            raise ValueError(f"Invalid batch_size {batch_size} (expected >= 1)")
        self.model = model
        self.shape = tuple(int(s) for s in shape)
        self.cells = math.prod(self.shape)
        self.dense = dense
        self.batch_size = int(batch_size)

    def uses_dense(self, n_entries: int) -> bool:
        """Whether a call for ``n_entries`` entries reconstructs the dense tensor."""
        if self.dense is not None:
            return bool(self.dense)
        return self.cells <= DENSE_LIMIT and n_entries >= DENSE_MIN_FILL * self.cells

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.predict(indices)
        if self.uses_dense(indices.shape[0]):
            return self.model().reshape(-1)[flat_index(indices, self.shape)]
        return self.model.entries(indices)

    @torch.no_grad()
    def batches(self, indices: torch.Tensor) -> Iterator[torch.Tensor]:
        """Values at ``indices`` (B, N) without gradients, batch after batch of at most ``batch_size`` entries.

        The dense way reconstructs the tensor once for all the batches.
        """
        chunks = indices.split(self.batch_size) if indices.shape[0] > self.batch_size else (indices,)
        if self.uses_dense(indices.shape[0]):
            full = self.model().reshape(-1)
            for c in chunks:
                yield full[flat_index(c, self.shape)]
        else:
            for c in chunks:
                yield self.model.entries(c)

    def predict(self, indices: torch.Tensor) -> torch.Tensor:
        """Values at ``indices`` (B, N) without gradients, computed in batches of at most ``batch_size``."""
        parts = list(self.batches(indices))
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def evaluate_entries(predict: EntryPredictor, entries: Entries | None, std: Standardizer) -> tuple[float, float]:
    """Held-out ``(R^2, RMSE)`` of ``predict`` at ``entries``, on the data's original scale (NaN, NaN for None).

    Up to one batch of entries: ``r2_score``/``rmse`` of the whole vectors. More: the sums of squares are
    accumulated batch by batch in float64 on the device (two passes over the targets: their mean, then the
    sums), so no full-length float64 copy is made. Read back once.
    """
    if entries is None:
        return math.nan, math.nan
    n = len(entries)
    if n <= predict.batch_size:
        with torch.no_grad():
            pred = std.inverse(predict(entries.indices)).double()
        target = entries.values.double()
        return float(r2_score(pred, target)), float(rmse(pred, target))
    targets = entries.values.split(predict.batch_size)
    mean = sum(t.double().sum() for t in targets) / n
    ss_res = ss_tot = torch.zeros((), dtype=torch.float64, device=entries.values.device)
    for pred, t in zip(predict.batches(entries.indices), targets):
        t = t.double()
        ss_res = ss_res + (t - std.inverse(pred).double()).pow(2).sum()
        ss_tot = ss_tot + (t - mean).pow(2).sum()
    return float(r2_from_sums(ss_res, ss_tot)), float((ss_res / n).sqrt())
