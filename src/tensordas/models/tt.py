"""Tensor-train (TT) model: ``X[i_1..i_N] = G_1[:, i_1, :] G_2[:, i_2, :] ... G_N[:, i_N, :]`` (a 1x1 product)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensorly.decomposition import tensor_train
from tensorly.tt_tensor import tt_to_tensor
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


def tt_ranks(shape: tuple[int, ...], rank: RankLike) -> tuple[int, ...]:
    """The N+1 TT ranks ``(1, r_1, ..., r_{N-1}, 1)`` from an int, N-1 internal ranks, or N+1 ranks.

    An internal rank ``r_k`` (bond between modes k and k+1) cannot exceed the rank of the unfolding it
    factorises, ``min(prod(shape[:k]), prod(shape[k:]))``; a larger one is rejected.
    """
    n = len(shape)
    if isinstance(rank, Sequence) and not isinstance(rank, str) and len(rank) == n + 1:
        full = parse_ranks(rank, n + 1, "TT")
        if full[0] != 1 or full[-1] != 1:
            raise ValueError(f"Invalid TT rank {list(rank)}: the boundary ranks (first and last) must be 1")
    else:
        lengths = [n - 1, n + 1] if n > 2 else [1, 3]
        full = [1, *parse_ranks(rank, n - 1, "TT", allowed_lengths=lengths), 1]
    for k in range(1, n):
        bound = min(math.prod(shape[:k]), math.prod(shape[k:]))
        if full[k] > bound:
            raise ValueError(
                f"Invalid TT rank {rank!r} for shape {shape}: rank {full[k]} between modes {k - 1} and {k} "
                f"exceeds its maximum {bound}"
            )
    return tuple(full)


class TTModel(nn.Module):
    """A tensor of ``shape`` in tensor-train form; one core group of N cores ``G_k`` of shape ``(r_k, I_k, r_{k+1})``.

    Args:
        shape: tensor shape (at least two modes).
        rank: an int (every internal rank), N-1 internal ranks, or N+1 ranks with boundary 1s
            (TensorLy's convention). Internal ranks above the unfolding rank are rejected.
        std: a float gives i.i.d. ``N(0, std^2)`` entries; ``"balanced"`` gives every core the same squared
            norm ``c = (prod_k m_k / prod_k r_k)^(1/N)`` (``m_k`` entries in core k, product over the internal
            ranks), so that the reconstruction, a sum of ``prod_k r_k`` products of N entries, has
            unit-variance entries.
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
        self.shape = check_shape(shape, "a TT model")
        self.rank = tt_ranks(self.shape, rank)
        shapes = [(self.rank[k], s, self.rank[k + 1]) for k, s in enumerate(self.shape)]
        self.cores = make_cores(shapes, std, core_scales, generator, dtype, n_terms=math.prod(self.rank))

    def forward(self) -> torch.Tensor:
        """The full reconstructed tensor."""
        with pytorch_backend():
            return tt_to_tensor(list(self.cores))

    def entries(self, indices: torch.Tensor) -> torch.Tensor:
        """Values at a batch of index tuples ``indices`` (B, N) without forming the dense tensor: shape (B,)."""
        # TensorLy reconstructs only whole tensors; sampling B entries through it would cost prod(shape)
        # per step. Here each entry is a chain of gathered (r_k x r_{k+1}) slices: O(B * N * r^2).
        check_indices(indices, len(self.shape))
        out = gather_slices(self.cores[0], indices[:, 0])  # (B, 1, r_1)
        for k in range(1, len(self.shape)):
            out = torch.bmm(out, gather_slices(self.cores[k], indices[:, k]))  # (B, 1, r_{k+1})
        return out.reshape(indices.shape[0])

    def core_groups(self) -> list[CoreGroup]:
        return [CoreGroup("tt", list(self.cores))]

    def extra_repr(self) -> str:
        return f"shape={self.shape}, rank={self.rank}"

    @classmethod
    def from_tensor(
        cls,
        tensor: torch.Tensor | np.ndarray,
        rank: RankLike,
        mask: torch.Tensor | np.ndarray | None = None,
        method: str = "svd",
        balance: bool = False,
        random_state: int | None = 0,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> TTModel:
        """A TT model initialised by TensorLy's ``tensor_train`` (TT-SVD).

        Args:
            tensor: the data; non-finite entries are treated as missing.
            rank: TT rank (see the class).
            mask: optional boolean mask of entries to fit. TensorLy's TT-SVD takes no mask, so entries
                outside it (and non-finite ones) are filled with the mean of the fitted entries first:
                a warm start, not a masked fit.
            method: ``"svd"`` (``tensorly.decomposition.tensor_train``).
            balance: rescale the cores to equal norms afterwards (output unchanged). TT-SVD's cores are
                left-orthogonal, so by default the last core carries the norm.
            random_state: seed for TensorLy's (randomised) SVDs.
            dtype: parameter dtype (default: the input's floating dtype, else torch's default).
            **kwargs: passed to ``tensor_train`` (e.g. ``svd``).

        Raises:
            ValueError: if TT-SVD cannot reach the requested ranks (``r_{k+1} > r_k * shape[k]``).
        """
        fn = method_choice(method, {"svd": tensor_train}, "TT")
        x, _ = decomposition_input(tensor, mask)
        model = cls(x.shape, rank, generator=private_generator(), dtype=result_dtype(tensor, dtype))
        tt = run_decomposition(fn, x, list(model.rank), random_state=random_state, **kwargs)
        load_cores(list(model.cores), list(tt), "TTModel.from_tensor")
        if balance:
            rebalance_(list(model.cores))
        return model
