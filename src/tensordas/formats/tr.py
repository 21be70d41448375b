"""Tensor ring (TR): ``X[i_1..i_N] = trace(G_1[:, i_1, :] G_2[:, i_2, :] ... G_N[:, i_N, :])``.

Cores: ``G_k`` of shape ``(r_k, I_k, r_{k+1})`` with ``r_N = r_0`` (the ring closes). Ranks: an int (every
rank), N ranks ``r_0..r_{N-1}``, or N+1 with equal ends (TensorLy's convention). Decomposition: TR-ALS
(``tensor_ring_als``, any ranks) or TR-SVD (``tensor_ring``, needs ``r_0 * r_1 <= I_1``; fast, but with
``r_0 > 1`` it does not recover even an exact TR tensor, since it splits ``r_0 * r_1`` arbitrarily); no mask.
A layer's TR weight is this format over one mode ``m_k * n_k`` per pair of factors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tensorly.decomposition import tensor_ring, tensor_ring_als
from tensorly.tr_tensor import tr_to_tensor

from ._base import TensorFormat, slice_chain
from ._ranks import RankLike, parse_ranks
from ._tensorly import pytorch_backend, run_decomposition

__all__ = ["TR", "tr_ranks"]


def tr_ranks(n: int, rank: RankLike) -> tuple[int, ...]:
    """The N TR ranks ``(r_0, ..., r_{N-1})`` from an int, N ranks, or N+1 ranks with ``r_N == r_0`` (TensorLy)."""
    if isinstance(rank, Sequence) and not isinstance(rank, str) and len(rank) == n + 1:
        full = parse_ranks(rank, n + 1, "TR")
        if full[0] != full[-1]:
            raise ValueError(f"Invalid TR rank {list(rank)}: with N+1 ranks the first and last must be equal")
        return tuple(full[:-1])
    return tuple(parse_ranks(rank, n, "TR", allowed_lengths=[n, n + 1]))


class TR(TensorFormat):
    name = "tr"
    label = "TR"
    algorithms = {"als": tensor_ring_als, "svd": tensor_ring}
    layer_view = "pairs"
    mode_axis = 1
    default_rank = 8
    dense_copies = 10  # data/dense.py: measured 3.0-7.3 copies, plus about 30%

    def ranks(self, shape, rank, *, cap=False):
        return tr_ranks(len(shape), rank)  # no bound, so an int is never capped

    def core_shapes(self, shape, ranks):
        n = len(shape)
        return [(ranks[k], s, ranks[(k + 1) % n]) for k, s in enumerate(shape)]

    def to_tensor(self, cores):
        with pytorch_backend():
            return tr_to_tensor(list(cores))

    def entries(self, cores, indices):
        # TensorLy reconstructs only whole tensors; sampling B entries through it would cost prod(shape)
        # per step. Here each entry is the trace of a chain of gathered slices: O(B * N * r^3).
        return slice_chain(cores, indices).diagonal(dim1=1, dim2=2).sum(dim=1)

    def decompose(self, tensor, ranks, algorithm=None, mask=None, **kwargs):
        fn = self.algorithm(algorithm)
        self._no_mask(mask)
        return [np.asarray(c) for c in run_decomposition(fn, tensor, [*ranks, ranks[0]], **kwargs)]
