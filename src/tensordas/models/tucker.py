"""Tucker model: ``X = G x_1 U_1 ... x_N U_N``; cores are the core tensor and the factors.

With two modes this is the Tucker-2 matrix model ``A G B^T`` of the dynamics study.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensorly.decomposition import tucker
from tensorly.tucker_tensor import tucker_to_tensor
from torch import nn

from ..core_groups import CoreGroup
from ._init import (
    RankLike,
    Std,
    check_indices,
    check_shape_rank,
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


class TuckerModel(nn.Module):
    """A tensor of ``shape`` in Tucker form with multilinear ``rank`` (int or per mode).

    One core group: ``[core, U_1, ..., U_N]`` with ``core`` of shape ``rank`` and ``U_k`` of shape
    ``(shape[k], rank[k])``. A multilinear rank cannot exceed its mode (``rank[k] <= shape[k]``); a larger
    one is rejected.

    Args:
        shape: tensor shape (at least two modes).
        rank: an int for every mode, or one per mode.
        std: a float gives i.i.d. ``N(0, std^2)`` entries; ``"balanced"`` gives the N+1 cores the same squared
            norm ``c = (prod_k m_k / prod_k rank[k])^(1/(N+1))`` (``m_k`` entries in core k), so that the
            reconstruction, a sum of ``prod_k rank[k]`` products of N+1 entries, has unit-variance entries.
        core_scales: N+1 multipliers, core tensor first (deliberately unbalanced initialisation).
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
        self.shape, self.rank = check_shape_rank(shape, rank, "Tucker")
        for k, (s, r) in enumerate(zip(self.shape, self.rank)):
            if r > s:
                raise ValueError(
                    f"Invalid Tucker rank {rank!r} for shape {self.shape}: rank {r} of mode {k} exceeds its size {s}"
                )
        shapes = [tuple(self.rank)] + [(s, r) for s, r in zip(self.shape, self.rank)]
        params = make_cores(shapes, std, core_scales, generator, dtype, n_terms=math.prod(self.rank))
        self.core = params[0]
        self.factors = nn.ParameterList(list(params[1:]))

    def forward(self) -> torch.Tensor:
        """The full reconstructed tensor."""
        with pytorch_backend():
            return tucker_to_tensor((self.core, list(self.factors)))

    def entries(self, indices: torch.Tensor) -> torch.Tensor:
        """Values at a batch of index tuples ``indices`` (B, N) without forming the dense tensor: shape (B,)."""
        # TensorLy reconstructs only whole tensors; sampling B entries through it would cost prod(shape)
        # per step. Here the core is contracted with one gathered factor row per mode: O(B * prod(rank)).
        check_indices(indices, len(self.shape))
        b = indices.shape[0]
        out = self.factors[0].index_select(0, indices[:, 0]) @ self.core.reshape(self.rank[0], -1)  # (B, r_2..r_N)
        for k in range(1, len(self.shape)):
            rows = self.factors[k].index_select(0, indices[:, k]).unsqueeze(1)  # (B, 1, r_k)
            out = torch.bmm(rows, out.reshape(b, self.rank[k], -1))  # (B, 1, r_{k+1} * ... * r_N)
        return out.reshape(b)

    def core_groups(self) -> list[CoreGroup]:
        return [CoreGroup("tucker", [self.core, *self.factors])]

    def extra_repr(self) -> str:
        return f"shape={self.shape}, rank={self.rank}"

    @classmethod
    def from_tensor(
        cls,
        tensor: torch.Tensor | np.ndarray,
        rank: RankLike,
        mask: torch.Tensor | np.ndarray | None = None,
        method: str = "hooi",
        balance: bool = False,
        random_state: int | None = 0,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> TuckerModel:
        """A Tucker model initialised by TensorLy's ``tucker`` (HOOI, masked when a mask is given).

        Args:
            tensor: the data; non-finite entries are treated as missing.
            rank: multilinear rank (int or per mode, each at most its mode size).
            mask: optional boolean mask of entries to fit (True = observed); passed to ``tucker(mask=)``.
            method: ``"hooi"`` (``tensorly.decomposition.tucker``).
            balance: rescale the cores to equal norms afterwards (output unchanged). TensorLy's factors
                are orthonormal, so by default the core tensor carries all the norm.
            random_state: seed for TensorLy.
            dtype: parameter dtype (default: the input's floating dtype, else torch's default).
            **kwargs: passed to ``tucker`` (``n_iter_max``, ``init``, ``tol``, ...).
        """
        fn = method_choice(method, {"hooi": tucker}, "Tucker")
        x, fit = decomposition_input(tensor, mask)
        model = cls(x.shape, rank, generator=private_generator(), dtype=result_dtype(tensor, dtype))
        mask_arg = None if fit is None else fit.astype(np.float64)
        core, factors = run_decomposition(fn, x, model.rank, mask=mask_arg, random_state=random_state, **kwargs)
        load_cores([model.core, *model.factors], [core, *factors], "TuckerModel.from_tensor")
        if balance:
            rebalance_([model.core, *model.factors])
        return model
