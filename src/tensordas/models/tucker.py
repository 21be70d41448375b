"""Tucker model: ``X = G x_1 U_1 ... x_N U_N``; cores are the core tensor and the factors.

With two modes this is the Tucker-2 matrix model ``A G B^T`` of the dynamics study.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensorly.tucker_tensor import tucker_to_tensor
from torch import nn

from ..core_groups import CoreGroup
from ._init import check_shape_rank, make_cores
from ._tensorly import pytorch_backend


class TuckerModel(nn.Module):
    """A tensor of ``shape`` in Tucker form with multilinear ``rank`` (int or per mode).

    One core group: ``[core, U_1, ..., U_N]``. ``core_scales`` (N+1 multipliers, core first)
    gives a deliberately unbalanced initialisation.
    """

    def __init__(
        self,
        shape: Sequence[int],
        rank: int | Sequence[int],
        std: float = 1.0,
        core_scales: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.shape, self.rank = check_shape_rank(shape, rank, "a Tucker model")
        shapes = [tuple(self.rank)] + [(s, r) for s, r in zip(self.shape, self.rank)]
        params = make_cores(shapes, std, core_scales, generator, dtype)
        self.core = params[0]
        self.factors = nn.ParameterList(list(params[1:]))

    def forward(self) -> torch.Tensor:
        """The full reconstructed tensor."""
        with pytorch_backend():
            return tucker_to_tensor((self.core, list(self.factors)))

    def core_groups(self) -> list[CoreGroup]:
        return [CoreGroup("tucker", [self.core, *self.factors])]
