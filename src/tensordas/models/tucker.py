"""Tucker model: ``X = G x_1 U_1 ... x_N U_N``; cores are the core tensor and the factors.

With two modes this is the Tucker-2 matrix model ``A G B^T`` of the dynamics study.
"""

from __future__ import annotations

from torch import nn

from ._model import TensorModel, register_model_class

__all__ = ["TuckerModel"]


@register_model_class
class TuckerModel(TensorModel):
    """A tensor of ``shape`` in Tucker form with multilinear ``rank`` (int or per mode).

    One core group: ``[core, U_1, ..., U_N]`` with ``core`` of shape ``rank`` and ``U_k`` of shape
    ``(shape[k], rank[k])`` (``self.core``, ``self.factors``). A multilinear rank cannot exceed its mode
    (``rank[k] <= shape[k]``); a larger one is rejected. ``self.rank`` is the list of the N ranks.

    Args:
        shape: tensor shape (at least two modes).
        rank: an int for every mode, or one per mode.
        std: a float gives i.i.d. ``N(0, std^2)`` entries; ``"balanced"`` gives the N+1 cores the same squared
            norm ``c = (prod_k m_k / prod_k rank[k])^(1/(N+1))`` (``m_k`` entries in core k), so that the
            reconstruction, a sum of ``prod_k rank[k]`` products of N+1 entries, has unit-variance entries.
        core_scales: N+1 multipliers, core tensor first (deliberately unbalanced initialisation).
        generator, dtype: for the random initialisation.

    :meth:`from_tensor` fits it by HOOI (``tensorly.decomposition.tucker``, masked when a mask is given).
    """

    format = "tucker"

    def _public_rank(self, ranks: tuple[int, ...]) -> list[int]:
        return list(ranks)

    def _set_cores(self, cores: nn.ParameterList) -> None:
        self.core = cores[0]
        self.factors = nn.ParameterList(list(cores[1:]))

    def _core_params(self) -> list[nn.Parameter]:
        return [self.core, *self.factors]
