"""Tensor-train (TT) model: ``X[i_1..i_N] = G_1[:, i_1, :] G_2[:, i_2, :] ... G_N[:, i_N, :]`` (a 1x1 product)."""

from __future__ import annotations

from ._model import TensorModel, register_model_class

__all__ = ["TTModel"]


@register_model_class
class TTModel(TensorModel):
    """A tensor of ``shape`` in tensor-train form; one core group of N cores ``G_k`` of shape ``(r_k, I_k, r_{k+1})``.

    Args:
        shape: tensor shape (at least two modes).
        rank: an int (every internal rank), N-1 internal ranks, or N+1 ranks with boundary 1s
            (TensorLy's convention). Internal ranks above the unfolding rank are rejected. ``self.rank`` holds
            the N+1 ranks.
        std: a float gives i.i.d. ``N(0, std^2)`` entries; ``"balanced"`` gives every core the same squared
            norm ``c = (prod_k m_k / prod_k r_k)^(1/N)`` (``m_k`` entries in core k, product over the internal
            ranks), so that the reconstruction, a sum of ``prod_k r_k`` products of N entries, has
            unit-variance entries.
        core_scales: N per-core multipliers (deliberately unbalanced initialisation).
        generator, dtype: for the random initialisation.

    :meth:`from_tensor` fits it by TT-SVD (``tensorly.decomposition.tensor_train``); TT-SVD takes no mask, so
    missing entries are mean-imputed first (a warm start), and ranks it cannot reach
    (``r_{k+1} > r_k * shape[k]``) are a ValueError.
    """

    format = "tt"
