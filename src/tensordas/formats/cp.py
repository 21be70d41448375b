"""CP (CANDECOMP/PARAFAC): ``X[i_1..i_N] = sum_r A_1[i_1, r] ... A_N[i_N, r]``.

Cores: the N factor matrices ``A_k`` of shape ``(I_k, R)`` (no separate weight vector: TensorLy's weights are
folded into the first factor). The rank is one int, not bounded by the mode sizes. Decomposition: CP-ALS
(``tensorly.decomposition.parafac``), masked when a mask is given.
"""

from __future__ import annotations

import warnings

import numpy as np
from tensorly.cp_tensor import cp_to_tensor
from tensorly.decomposition import parafac

from ._base import TensorFormat
from ._ranks import as_int, is_int
from ._tensorly import pytorch_backend, run_decomposition

__all__ = ["CP"]


class CP(TensorFormat):
    name = "cp"
    label = "CP"
    algorithms = {"als": parafac}
    masked = True
    default_rank = 32
    dense_copies = 14  # data/dense.py: measured 6.0-10.6 copies, plus about 30%

    def ranks(self, shape, rank, *, cap=False):
        if not is_int(rank) or as_int(rank, "CP rank") < 1:
            raise ValueError(f"Invalid CP rank {rank!r} (expected a single positive int)")
        return (as_int(rank, "CP rank"),)

    def core_shapes(self, shape, ranks):
        return [(s, ranks[0]) for s in shape]

    def to_tensor(self, cores):
        with pytorch_backend():
            return cp_to_tensor((None, list(cores)))

    def entries(self, cores, indices):
        # TensorLy reconstructs only whole tensors (or unfoldings); sampling B entries of a large tensor
        # through it would cost prod(shape) per step, so the gather is written here: O(B * N * rank).
        out = cores[0].index_select(0, indices[:, 0])  # (B, rank); index_select: cheaper backward
        for k in range(1, len(cores)):
            out = out * cores[k].index_select(0, indices[:, k])
        return out.sum(dim=1)

    def decompose(self, tensor, ranks, algorithm=None, mask=None, **kwargs):
        fn = self.algorithm(algorithm)
        with warnings.catch_warnings():  # an SVD init with a rank above a mode size pads randomly, as intended
            warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs", category=UserWarning)
            weights, factors = run_decomposition(fn, tensor, ranks[0], mask=mask, **kwargs)
        factors = [np.asarray(f) for f in factors]
        if weights is not None:
            factors[0] = factors[0] * np.asarray(weights)[None, :]
        return factors
