"""Tensor train (TT): ``X[i_1..i_N] = G_1[:, i_1, :] G_2[:, i_2, :] ... G_N[:, i_N, :]`` (a 1x1 product).

Cores: ``G_k`` of shape ``(r_{k-1}, I_k, r_k)`` with boundary ranks ``r_0 = r_N = 1``. Ranks: an int (every
bond), the N-1 bond ranks, or all N+1 with the boundary 1s (TensorLy's convention); bond k cannot exceed the
rank of the unfolding it factorises. Decomposition: TT-SVD (``tensorly.decomposition.tensor_train``, no mask).
A layer's TT weight is the TT-matrix: this format over one mode ``m_k * n_k`` per pair of factors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from tensorly.decomposition import tensor_train
from tensorly.tt_tensor import tt_to_tensor

from ._base import TensorFormat, slice_chain
from ._ranks import RankLike, is_int, parse_ranks, positive_int
from ._tensorly import pytorch_backend, run_decomposition

__all__ = ["TT", "tt_ranks"]


def _bounds(shape: tuple[int, ...]) -> list[int]:
    """The largest rank of every bond: the rank of the unfolding it factorises."""
    return [min(math.prod(shape[:k]), math.prod(shape[k:])) for k in range(1, len(shape))]


def tt_ranks(shape: tuple[int, ...], rank: RankLike) -> tuple[int, ...]:
    """The N+1 TT ranks ``(1, r_1, ..., r_{N-1}, 1)`` from an int, N-1 internal ranks, or N+1 ranks.

    An internal rank ``r_k`` (bond between modes k and k+1) cannot exceed the rank of the unfolding it
    factorises, ``min(prod(shape[:k]), prod(shape[k:]))``; a larger one is rejected.
    """
    n = len(shape)
    if isinstance(rank, Sequence) and not isinstance(rank, str) and len(rank) == n + 1:
        full = parse_ranks(rank, n + 1, "TT")
        if full[0] != 1 or full[-1] != 1:
            raise ValueError(f"Invalid TT rank {list(rank)}: the boundary ranks (first and last) must be 1")
    else:
        lengths = [n - 1, n + 1] if n > 2 else [1, 3]
        full = [1, *parse_ranks(rank, n - 1, "TT", allowed_lengths=lengths), 1]
    for k, bound in enumerate(_bounds(shape), start=1):
        if full[k] > bound:
            raise ValueError(
                f"Invalid TT rank {rank!r} for shape {shape}: rank {full[k]} between modes {k - 1} and {k} "
                f"exceeds its maximum {bound}"
            )
    return tuple(full)


class TT(TensorFormat):
    name = "tt"
    label = "TT"
    algorithms = {"svd": tensor_train}
    layer_view = "pairs"
    mode_axis = 1
    default_rank = 8
    dense_copies = 10  # data/dense.py: measured 3.0-7.6 copies, plus about 30%

    def ranks(self, shape, rank, *, cap=False):
        if cap and is_int(rank):  # an int is a cap: every bond gets min(rank, the rank of its unfolding)
            r = positive_int(rank, "TT")
            return (1, *(min(r, b) for b in _bounds(shape)), 1)
        return tt_ranks(tuple(shape), rank)

    def max_int_rank(self, shape):
        return max(_bounds(shape))

    def core_shapes(self, shape, ranks):
        return [(ranks[k], s, ranks[k + 1]) for k, s in enumerate(shape)]

    def to_tensor(self, cores):
        with pytorch_backend():
            return tt_to_tensor(list(cores))

    def entries(self, cores, indices):
        # TensorLy reconstructs only whole tensors; sampling B entries through it would cost prod(shape)
        # per step. Here each entry is a chain of gathered (r_k x r_{k+1}) slices: O(B * N * r^2).
        return slice_chain(cores, indices).reshape(indices.shape[0])

    def decompose(self, tensor, ranks, algorithm=None, mask=None, **kwargs):
        fn = self.algorithm(algorithm)
        self._no_mask(mask)
        return [np.asarray(c) for c in run_decomposition(fn, tensor, list(ranks), **kwargs)]
