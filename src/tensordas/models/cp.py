"""CP (CANDECOMP/PARAFAC) model: ``X = sum_r a_r^(1) o ... o a_r^(N)``, cores are the factor matrices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensorly.cp_tensor import cp_to_tensor
from tensorly.decomposition import parafac
from torch import nn

from ..core_groups import CoreGroup
from ._init import (
    Std,
    _as_int,
    check_indices,
    check_shape,
    decomposition_input,
    load_cores,
    make_cores,
    method_choice,
    private_generator,
    rebalance_,
    result_dtype,
    run_decomposition,
)
from ._tensorly import pytorch_backend


class CPModel(nn.Module):
    """A tensor of ``shape`` in CP form with ``rank`` components; one core group of N factors.

    Factor k has shape ``(shape[k], rank)``; the model has no separate weight vector.

    Args:
        shape: tensor shape (at least two modes).
        rank: number of rank-one components (a positive int; any size, CP ranks are not bounded by the modes).
        std: a float gives i.i.d. ``N(0, std^2)`` factor entries; ``"balanced"`` gives every factor the same
            squared norm ``c = (rank^(N-1) * prod_k shape[k])^(1/N)`` so that the reconstruction has
            unit-variance entries (``rank * prod_k c/(shape[k]*rank) = 1``), see ``make_cores``.
        core_scales: optional per-factor multipliers (deliberately unbalanced initialisation).
        generator, dtype: for the random initialisation.
    """

    def __init__(
        self,
        shape: Sequence[int],
        rank: int,
        std: Std = 1.0,
        core_scales: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.shape = check_shape(shape, "a CP model")
        if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool):
            raise ValueError(f"Invalid CP rank {rank!r} (expected a single positive int)")
        self.rank = _as_int(rank, "CP rank")
        if self.rank < 1:
            raise ValueError(f"Invalid CP rank {rank!r} (expected a single positive int)")
        shapes = [(s, self.rank) for s in self.shape]
        self.factors = make_cores(shapes, std, core_scales, generator, dtype, n_terms=self.rank)

    def forward(self) -> torch.Tensor:
        """The full reconstructed tensor."""
        with pytorch_backend():
            return cp_to_tensor((None, list(self.factors)))

    def entries(self, indices: torch.Tensor) -> torch.Tensor:
        """Values at a batch of index tuples ``indices`` (B, N) without forming the dense tensor: shape (B,)."""
        # TensorLy reconstructs only whole tensors (or unfoldings); sampling B entries of a large tensor
        # through it would cost prod(shape) per step, so the gather is written here: O(B * N * rank).
        check_indices(indices, len(self.shape))
        out = self.factors[0].index_select(0, indices[:, 0])  # (B, rank); index_select: cheaper backward
        for k in range(1, len(self.shape)):
            out = out * self.factors[k].index_select(0, indices[:, k])
        return out.sum(dim=1)

    def core_groups(self) -> list[CoreGroup]:
        return [CoreGroup("cp", list(self.factors))]

    def extra_repr(self) -> str:
        return f"shape={self.shape}, rank={self.rank}"

    @classmethod
    def from_tensor(
        cls,
        tensor: torch.Tensor | np.ndarray,
        rank: int,
        mask: torch.Tensor | np.ndarray | None = None,
        method: str = "als",
        balance: bool = False,
        random_state: int | None = 0,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> CPModel:
        """A CP model initialised by TensorLy's ``parafac`` (CP-ALS) fitted to ``tensor``.

        Args:
            tensor: the data; non-finite entries are treated as missing.
            rank: CP rank.
            mask: optional boolean mask of entries to fit (True = observed); passed to ``parafac(mask=)``.
            method: ``"als"`` (``tensorly.decomposition.parafac``, the only one for now).
            balance: rescale the factors to equal norms afterwards (output unchanged). TensorLy's result
                is left as it is by default (its norms are generally unbalanced).
            random_state: seed for TensorLy's initialisation.
            dtype: parameter dtype (default: the input's floating dtype, else torch's default).
            **kwargs: passed to ``parafac`` (``n_iter_max``, ``init``, ``tol``, ...).
        """
        fn = method_choice(method, {"als": parafac}, "CP")
        x, fit = decomposition_input(tensor, mask)
        model = cls(x.shape, rank, generator=private_generator(), dtype=result_dtype(tensor, dtype))
        cp = run_decomposition(fn, x, model.rank, mask=fit, random_state=random_state, **kwargs)
        weights, factors = cp
        factors = [np.asarray(f) for f in factors]
        if weights is not None:
            factors[0] = factors[0] * np.asarray(weights)[None, :]
        load_cores(list(model.factors), factors, "CPModel.from_tensor")
        if balance:
            rebalance_(list(model.factors))
        return model
