"""A registered tensor format as a layer weight: ranks, core shapes, reconstruction and decomposition over a
:class:`~.factorization.WeightLayout`, for every format at once (the reshapes are defined here only).

The weight in canonical layout is ``W`` of shape ``(in_size, out_size, kernel)``; the layers turn it into a
matrix or a kernel. A format sees it through its ``layer_view`` (:class:`tensordas.formats.TensorFormat`):

- ``"modes"`` (CP, Tucker): the tensor ``W`` reshaped to ``layout.modes()``, cores exactly the format's:
  CP factors ``A_j`` of shape ``(s_j, R)``, ``W[modes] = sum_r prod_j A_j[i_j, r]``; Tucker ``[G, U_1..U_J]``,
  ``W = G x_1 U_1 ... x_J U_J``.
- ``"pairs"`` (TT, TR): the tensor with one mode ``m_k * n_k`` per pair of ``layout.pairs()`` (row index
  ``(in, kernel)``, column index ``out``), each core stored with that mode split into ``(m_k, n_k)``: TT-matrix
  cores ``(r_{k-1}, m_k, n_k, r_k)`` with ``r_0 = r_N = 1``,
  ``W[(i_1..i_N), (o_1..o_N)] = G_1[:, i_1, o_1, :] ... G_N[:, i_N, o_N, :]``; TR the same with a ring
  (``r_N = r_0`` and a trace). For a convolution the last pair is ``(kernel, 1)``.

Layer rank rules are the format's with ``cap=True``: an int caps Tucker ranks at the mode sizes and TT bonds at
their unfolding ranks. Tests rebuild the weight from these layouts with their own einsum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..formats import FORMATS, RankLike, TensorFormat
from ..formats import get_format as _tensor_format
from .factorization import WeightLayout

__all__ = ["FORMATS", "WeightFormat", "weight_format"]


def _split(shape: tuple[int, ...], axis: int, pair: tuple[int, int]) -> tuple[int, ...]:
    return (*shape[:axis], *pair, *shape[axis + 1 :])


class WeightFormat:
    """The layer view of one registered :class:`~tensordas.formats.TensorFormat` (stateless)."""

    def __init__(self, fmt: TensorFormat) -> None:
        self.format = fmt

    @property
    def name(self) -> str:
        return self.format.name

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(self.format.algorithms)

    def tensor_shape(self, layout: WeightLayout) -> tuple[int, ...]:
        """The shape of the tensor the format factorises: ``layout.modes()`` or one mode per pair."""
        if self.format.layer_view == "pairs":
            return tuple(m * n for m, n in layout.pairs())
        return layout.modes()

    def resolve_rank(self, layout: WeightLayout, rank: RankLike) -> tuple[int, ...]:
        """The full rank tuple for ``layout``; raises ValueError when a rank does not fit."""
        shape = self.tensor_shape(layout)
        if self.format.n_cores(len(shape)) < 2:
            raise ValueError(
                f"a {self.name} weight needs at least two cores, but layout in={layout.in_factors}, "
                f"out={layout.out_factors}, kernel={layout.kernel} gives {self.format.n_cores(len(shape))} "
                "(use a factorization with more modes)"
            )
        return self.format.ranks(shape, rank, cap=True)

    def core_shapes(self, layout: WeightLayout, rank: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The stored core shapes (``"pairs"``: mode k split into ``(m_k, n_k)``)."""
        shapes = self.format.core_shapes(self.tensor_shape(layout), rank)
        if self.format.layer_view == "pairs":
            axis = self.format.mode_axis
            return [_split(tuple(s), axis, p) for s, p in zip(shapes, layout.pairs())]
        return [tuple(s) for s in shapes]

    def n_terms(self, rank: tuple[int, ...]) -> int:
        """Number of products of one entry per core that sum to one weight entry (for initialisation)."""
        return self.format.n_terms(rank)

    def max_int_rank(self, layout: WeightLayout) -> int | None:
        """The int rank beyond which ``resolve_rank`` no longer changes (None: unbounded)."""
        return self.format.max_int_rank(self.tensor_shape(layout))

    def num_params(self, layout: WeightLayout, rank: tuple[int, ...]) -> int:
        return sum(math.prod(s) for s in self.core_shapes(layout, rank))

    def reconstruct(self, layout: WeightLayout, cores: Sequence[torch.Tensor]) -> torch.Tensor:
        """The weight ``(in_size, out_size, kernel)`` from the stored cores (differentiable)."""
        if self.format.layer_view == "modes":
            return self.format.to_tensor(list(cores)).reshape(layout.in_size, layout.out_size, layout.kernel)
        a = self.format.mode_axis
        merged = [c.reshape(*c.shape[:a], c.shape[a] * c.shape[a + 1], *c.shape[a + 2 :]) for c in cores]
        full = self.format.to_tensor(merged)  # (m_1 n_1, ..., m_N n_N)
        pairs = layout.pairs()
        d = len(pairs)
        full = full.reshape([x for pair in pairs for x in pair])
        full = full.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2))  # (m_1..m_N, n_1..n_N)
        return full.reshape(layout.in_size, layout.kernel, layout.out_size).permute(0, 2, 1)

    def decompose(
        self, layout: WeightLayout, weight: np.ndarray, rank: tuple[int, ...], algorithm: str | None, **kwargs
    ) -> list[np.ndarray]:
        """Cores fitted to ``weight`` (float64, canonical layout) by the format's TensorLy algorithm.

        A core whose rank the algorithm could not reach keeps TensorLy's shape, so that ``load_cores`` reports it.
        """
        if self.format.layer_view == "modes":
            return self.format.decompose(weight.reshape(layout.modes()), rank, algorithm, **kwargs)
        pairs = layout.pairs()
        ms, ns = [m for m, _ in pairs], [n for _, n in pairs]
        w = weight.transpose(0, 2, 1).reshape(*ms, *ns)  # rows (in, kernel), columns (out)
        d = len(pairs)
        w = w.transpose([x for k in range(d) for x in (k, d + k)]).reshape([m * n for m, n in pairs])
        arrays = self.format.decompose(w, rank, algorithm, **kwargs)
        flat = self.format.core_shapes(self.tensor_shape(layout), rank)
        return [
            a.reshape(s) if a.shape == tuple(f) else a for a, f, s in zip(arrays, flat, self.core_shapes(layout, rank))
        ]


def weight_format(name: str) -> WeightFormat:
    """The layer view of the registered format ``name``, or a ValueError listing the formats."""
    return WeightFormat(_tensor_format(name))
