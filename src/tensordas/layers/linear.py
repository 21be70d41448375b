"""TensorizedLinear: ``y = x W^T + b`` with ``W`` stored as a CP, Tucker, TT-matrix or TR tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..formats import RankLike
from ._base import Init, TensorizedLayer
from .factorization import Factorization, resolve_layout

__all__ = ["TensorizedLinear"]


class TensorizedLinear(TensorizedLayer):
    """A linear layer whose ``(out_features, in_features)`` weight is a tensor in ``format``.

    The sizes are factorised as ``in_features = m_1 * ... * m_d`` and ``out_features = n_1 * ... * n_d``
    (``factorization``: None picks balanced factors automatically, at most 3 per side, 2 for Tucker; an int
    sets that maximum; or give ``(in_factors, out_factors)`` of equal length, padded with 1s). Prime sizes get
    fewer factors; if only one pair is left, the weight is split as ``(in, 1), (1, out)``. The weight is
    rebuilt from its cores through TensorLy and applied with ``F.linear``.

    Formats (core layouts in ``tensordas.layers._formats``):
      - ``"tt"``: TT-matrix cores ``(r_{k-1}, m_k, n_k, r_k)``;
      - ``"tr"``: tensor-ring cores of the same shape with ``r_d = r_0``;
      - ``"cp"``: factors ``(s_j, R)`` over the modes ``(m_1..m_d, n_1..n_d)`` (size-1 modes left out);
      - ``"tucker"``: a core of shape ``rank`` and factors ``(s_j, r_j)`` over the same modes.

    ``rank``: an int, or the exact ranks. An int is used as-is for CP and TR and as a cap for Tucker (each mode
    ``min(rank, size)``) and TT (each bond ``min(rank, rank of its unfolding)``). A sequence is exact: Tucker one
    rank per mode; TT one rank per bond between cores (or with the boundary 1s added); TR one rank per core
    (or one more, equal to the first: TensorLy's convention). A rank that does not fit raises ValueError.
    ``self.rank`` holds the resolved ranks.

    Initialisation keeps the activation variance: see :class:`TensorizedLayer` (``nonlinearity="relu"`` gives
    weight variance ``2 / in_features``, ``"linear"`` gives ``1 / in_features``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        format: str = "tt",
        rank: RankLike = 8,
        factorization: int | Factorization | None = None,
        bias: bool = True,
        nonlinearity: str = "relu",
        init: Init = "normal",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        layout = resolve_layout(in_features, out_features, factorization, kernel=1, format=str(format).lower())
        super().__init__(layout, format, rank, bias, layout.in_size, nonlinearity, init, device, dtype)
        self.in_features = layout.in_size
        self.out_features = layout.out_size

    def dense_weight(self) -> torch.Tensor:
        """The reconstructed ``(out_features, in_features)`` weight (differentiable)."""
        return self.canonical_weight().reshape(self.in_features, self.out_features).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._format_repr()}"
