"""CP (CANDECOMP/PARAFAC) model: ``X = sum_r a_r^(1) o ... o a_r^(N)``, cores are the factor matrices."""

from __future__ import annotations

from torch import nn

from ._model import TensorModel, register_model_class

__all__ = ["CPModel"]


@register_model_class
class CPModel(TensorModel):
    """A tensor of ``shape`` in CP form with ``rank`` components; one core group of N factors.

    Factor k has shape ``(shape[k], rank)`` (``self.factors``); the model has no separate weight vector.

    Args:
        shape: tensor shape (at least two modes).
        rank: number of rank-one components (a positive int; any size, CP ranks are not bounded by the modes).
        std: a float gives i.i.d. ``N(0, std^2)`` factor entries; ``"balanced"`` gives every factor the same
            squared norm ``c = (rank^(N-1) * prod_k shape[k])^(1/N)`` so that the reconstruction has
            unit-variance entries (``rank * prod_k c/(shape[k]*rank) = 1``), see ``make_cores``.
        core_scales: optional per-factor multipliers (deliberately unbalanced initialisation).
        generator, dtype: for the random initialisation.

    :meth:`from_tensor` fits it by CP-ALS (``tensorly.decomposition.parafac``, masked when a mask is given).
    """

    format = "cp"

    def _public_rank(self, ranks: tuple[int, ...]) -> int:
        return ranks[0]

    def _set_cores(self, cores: nn.ParameterList) -> None:
        self.factors = cores

    def _core_params(self) -> list[nn.Parameter]:
        return list(self.factors)
