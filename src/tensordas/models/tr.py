"""Tensor-ring (TR) model: ``X[i_1..i_N] = trace(G_1[:, i_1, :] G_2[:, i_2, :] ... G_N[:, i_N, :])``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensorly.decomposition import tensor_ring, tensor_ring_als
from tensorly.tr_tensor import tr_to_tensor
from torch import nn

from ..core_groups import CoreGroup
from ._init import (
    RankLike,
    Std,
    check_indices,
    check_shape,
    decomposition_input,
    gather_slices,
    load_cores,
    make_cores,
    method_choice,
    parse_ranks,
    private_generator,
    rebalance_,
    result_dtype,
    run_decomposition,
)
from ._tensorly import pytorch_backend


def tr_ranks(n: int, rank: RankLike) -> tuple[int, ...]:
    """The N TR ranks ``(r_0, ..., r_{N-1})`` from an int, N ranks, or N+1 ranks with ``r_N == r_0`` (TensorLy)."""
    if isinstance(rank, Sequence) and not isinstance(rank, str) and len(rank) == n + 1:
        full = parse_ranks(rank, n + 1, "TR")
        if full[0] != full[-1]:
            raise ValueError(f"Invalid TR rank {list(rank)}: with N+1 ranks the first and last must be equal")
        return tuple(full[:-1])
    return tuple(parse_ranks(rank, n, "TR", allowed_lengths=[n, n + 1]))


class TRModel(nn.Module):
    """A tensor of ``shape`` in tensor-ring form; one core group of N cores ``G_k`` of shape
    ``(r_k, I_k, r_{k+1})`` with ``r_N = r_0``.

    Args:
        shape: tensor shape (at least two modes).
        rank: an int (every rank), N ranks ``r_0..r_{N-1}``, or N+1 ranks with equal ends (TensorLy's
            convention). ``self.rank`` holds the N ranks.
        std: a float gives i.i.d. ``N(0, std^2)`` entries; ``"balanced"`` gives every core the same squared
            norm ``c = (prod_k m_k / prod_k r_k)^(1/N)`` (``m_k`` entries in core k), so that the
            reconstruction, a sum of ``prod_k r_k`` products of N entries, has unit-variance entries.
        core_scales: N per-core multipliers (deliberately unbalanced initialisation).
        generator, dtype: for the random initialisation.
    """

    def __init__(
        self,
        shape: Sequence[int],
        rank: RankLike,
        std: Std = 1.0,
        core_scales: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.shape = check_shape(shape, "a TR model")
        n = len(self.shape)
        self.rank = tr_ranks(n, rank)
        shapes = [(self.rank[k], s, self.rank[(k + 1) % n]) for k, s in enumerate(self.shape)]
        self.cores = make_cores(shapes, std, core_scales, generator, dtype, n_terms=math.prod(self.rank))

    def forward(self) -> torch.Tensor:
        """The full reconstructed tensor."""
        with pytorch_backend():
            return tr_to_tensor(list(self.cores))

    def entries(self, indices: torch.Tensor) -> torch.Tensor:
        """Values at a batch of index tuples ``indices`` (B, N) without forming the dense tensor: shape (B,)."""
        # TensorLy reconstructs only whole tensors; sampling B entries through it would cost prod(shape)
        # per step. Here each entry is the trace of a chain of gathered slices: O(B * N * r^3).
        check_indices(indices, len(self.shape))
        out = gather_slices(self.cores[0], indices[:, 0])  # (B, r_0, r_1)
        for k in range(1, len(self.shape)):
            out = torch.bmm(out, gather_slices(self.cores[k], indices[:, k]))  # (B, r_0, r_{k+1})
        return out.diagonal(dim1=1, dim2=2).sum(dim=1)

    def core_groups(self) -> list[CoreGroup]:
        return [CoreGroup("tr", list(self.cores))]

    def extra_repr(self) -> str:
        return f"shape={self.shape}, rank={self.rank}"

    @classmethod
    def from_tensor(
        cls,
        tensor: torch.Tensor | np.ndarray,
        rank: RankLike,
        mask: torch.Tensor | np.ndarray | None = None,
        method: str = "als",
        balance: bool = False,
        random_state: int | None = 0,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> TRModel:
        """A TR model initialised by TensorLy's TR-ALS (``tensor_ring_als``) or TR-SVD (``tensor_ring``).

        Args:
            tensor: the data; non-finite entries are treated as missing.
            rank: TR rank (see the class).
            mask: optional boolean mask of entries to fit. TensorLy's TR algorithms take no mask, so entries
                outside it (and non-finite ones) are filled with the mean of the fitted entries first:
                a warm start, not a masked fit.
            method: ``"als"`` (``tensor_ring_als``, any ranks) or ``"svd"`` (``tensor_ring``, needs
                ``r_0 * r_1 <= shape[0]``; fast, but with ``r_0 > 1`` it does not recover even an exact
                TR tensor, since it splits ``r_0 * r_1`` arbitrarily).
            balance: rescale the cores to equal norms afterwards (output unchanged).
            random_state: seed for TensorLy's initialisation / randomised SVDs.
            dtype: parameter dtype (default: the input's floating dtype, else torch's default).
            **kwargs: passed to the TensorLy function (``n_iter_max``, ``tol``, ``svd``, ...).
        """
        fn = method_choice(method, {"als": tensor_ring_als, "svd": tensor_ring}, "TR")
        x, _ = decomposition_input(tensor, mask)
        model = cls(x.shape, rank, generator=private_generator(), dtype=result_dtype(tensor, dtype))
        ranks = [*model.rank, model.rank[0]]
        tr = run_decomposition(fn, x, ranks, random_state=random_state, **kwargs)
        load_cores(list(model.cores), list(tr), "TRModel.from_tensor")
        if balance:
            rebalance_(list(model.cores))
        return model
