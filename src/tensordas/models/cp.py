"""CP (CANDECOMP/PARAFAC) model: ``X = sum_r a_r^(1) o ... o a_r^(N)``, cores are the factor matrices."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensorly.cp_tensor import cp_to_tensor
from torch import nn

from ..core_groups import CoreGroup
from ._init import check_shape_rank, make_cores
from ._tensorly import pytorch_backend


class CPModel(nn.Module):
    """A tensor of ``shape`` in CP form with ``rank`` components; one core group of N factors.

    Args:
        shape: tensor shape.
        rank: number of rank-one components.
        std: standard deviation of the Gaussian factor entries.
        core_scales: optional per-factor multipliers (unbalanced initialisation).
        generator, dtype: for the random initialisation.
    """

    def __init__(
        self,
        shape: Sequence[int],
        rank: int,
        std: float = 1.0,
        core_scales: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"Invalid CP rank {rank!r} (expected a positive int)")
        self.shape, _ = check_shape_rank(shape, rank, "a CP model")
        self.rank = rank
        self.factors = make_cores([(s, rank) for s in self.shape], std, core_scales, generator, dtype)

    def forward(self) -> torch.Tensor:
        """The full reconstructed tensor."""
        with pytorch_backend():
            return cp_to_tensor((None, list(self.factors)))

    def core_groups(self) -> list[CoreGroup]:
        return [CoreGroup("cp", list(self.factors))]
