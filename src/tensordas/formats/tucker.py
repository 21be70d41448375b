"""Tucker: ``X = G x_1 U_1 ... x_N U_N`` (with two modes, the Tucker-2 matrix model ``A G B^T``).

Cores: the core tensor ``G`` of shape ``(r_1, ..., r_N)`` first, then the factors ``U_k`` of shape
``(I_k, r_k)``. Ranks: an int for every mode or one per mode, each at most its mode size. Decomposition: HOOI
(``tensorly.decomposition.tucker``), masked when a mask is given.
"""

from __future__ import annotations

import numpy as np
import torch
from tensorly.decomposition import tucker
from tensorly.tucker_tensor import tucker_to_tensor

from ._base import TensorFormat
from ._ranks import is_int, parse_ranks, positive_int
from ._tensorly import pytorch_backend, run_decomposition

__all__ = ["Tucker"]


class Tucker(TensorFormat):
    name = "tucker"
    label = "Tucker"
    algorithms = {"hooi": tucker}
    masked = True
    default_rank = 8
    layer_factors_offset = 1
    dense_copies = 16  # data/dense.py: measured 7.2-11.9 copies, plus about 30%

    def ranks(self, shape, rank, *, cap=False):
        if cap and is_int(rank):  # an int is a cap: every mode gets min(rank, its size)
            r = positive_int(rank, "Tucker")
            return tuple(min(r, s) for s in shape)
        ranks = parse_ranks(rank, len(shape), "Tucker")
        for k, (s, r) in enumerate(zip(shape, ranks)):
            if r > s:
                raise ValueError(
                    f"Invalid Tucker rank {rank!r} for shape {tuple(shape)}: rank {r} of mode {k} exceeds its size {s}"
                )
        return tuple(ranks)

    def max_int_rank(self, shape):
        return max(shape)

    def n_cores(self, n_modes):
        return n_modes + 1

    def core_shapes(self, shape, ranks):
        return [tuple(ranks)] + [(s, r) for s, r in zip(shape, ranks)]

    def to_tensor(self, cores):
        with pytorch_backend():
            return tucker_to_tensor((cores[0], list(cores[1:])))

    def entries(self, cores, indices):
        # TensorLy reconstructs only whole tensors; sampling B entries through it would cost prod(shape)
        # per step. Here the core is contracted with one gathered factor row per mode: O(B * prod(rank)).
        core, factors = cores[0], cores[1:]
        b = indices.shape[0]
        out = factors[0].index_select(0, indices[:, 0]) @ core.reshape(core.shape[0], -1)  # (B, r_2..r_N)
        for k in range(1, len(factors)):
            rows = factors[k].index_select(0, indices[:, k]).unsqueeze(1)  # (B, 1, r_k)
            out = torch.bmm(rows, out.reshape(b, core.shape[k], -1))  # (B, 1, r_{k+1} * ... * r_N)
        return out.reshape(b)

    def decompose(self, tensor, ranks, algorithm=None, mask=None, **kwargs):
        fn = self.algorithm(algorithm)
        mask_arg = None if mask is None else np.asarray(mask).astype(np.float64)
        core, factors = run_decomposition(fn, tensor, list(ranks), mask=mask_arg, **kwargs)
        return [np.asarray(core)] + [np.asarray(f) for f in factors]
