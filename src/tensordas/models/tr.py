"""Tensor-ring (TR) model: ``X[i_1..i_N] = trace(G_1[:, i_1, :] G_2[:, i_2, :] ... G_N[:, i_N, :])``."""

from __future__ import annotations

from ._model import TensorModel, register_model_class

__all__ = ["TRModel"]


@register_model_class
class TRModel(TensorModel):
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

    :meth:`from_tensor` fits it by TR-ALS (``algorithm="als"``, ``tensor_ring_als``, any ranks) or TR-SVD
    (``"svd"``, ``tensor_ring``, needs ``r_0 * r_1 <= shape[0]``; with ``r_0 > 1`` it does not recover even an
    exact TR tensor). Neither takes a mask: missing entries are mean-imputed first (a warm start).
    """

    format = "tr"
