"""The four weight formats: rank rules, core shapes, reconstruction through TensorLy, and decomposition.

Every format reconstructs the weight in the canonical layout of :class:`~.factorization.WeightLayout`,
a tensor ``W`` of shape ``(in_size, out_size, kernel)``; the layers turn it into a matrix or a kernel.

Core layouts (documented here once; tests rebuild the weight from them with their own einsum):

- ``cp``: factors ``A_j`` of shape ``(s_j, R)`` over ``layout.modes()``;
  ``W[modes] = sum_r prod_j A_j[i_j, r]``.
- ``tucker``: ``[G, U_1, ..., U_J]`` with core ``G`` of shape ``(r_1, ..., r_J)`` and ``U_j`` of shape
  ``(s_j, r_j)`` over ``layout.modes()``; ``W = G x_1 U_1 ... x_J U_J``.
- ``tt``: TT-matrix cores ``G_k`` of shape ``(r_{k-1}, m_k, n_k, r_k)`` over ``layout.pairs()``, ``r_0 = r_N = 1``;
  ``W[(i_1..i_N), (o_1..o_N)] = G_1[:, i_1, o_1, :] ... G_N[:, i_N, o_N, :]``. For a convolution the last pair
  is ``(kernel, 1)``: the row index runs over ``(in, kernel)`` and the column index over ``out``.
- ``tr``: the same with a ring: ``r_N = r_0`` and ``W = trace(G_1[:, i_1, o_1, :] ... G_N[:, i_N, o_N, :])``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from tensorly.cp_tensor import cp_to_tensor
from tensorly.decomposition import parafac, tensor_ring, tensor_ring_als, tensor_train, tucker
from tensorly.tr_tensor import tr_to_tensor
from tensorly.tt_matrix import tt_matrix_to_tensor
from tensorly.tucker_tensor import tucker_to_tensor

from ..models._init import _as_int, method_choice, parse_ranks, run_decomposition
from ..models._tensorly import pytorch_backend
from ..models.tr import tr_ranks
from ..models.tt import tt_ranks
from .factorization import WeightLayout

__all__ = ["FORMATS", "WeightFormat", "get_format"]

FORMATS = ("cp", "tucker", "tt", "tr")
Rank = int | Sequence[int]


def _is_int(rank: object) -> bool:
    return isinstance(rank, (int, np.integer)) and not isinstance(rank, bool)


def _positive_int(rank: object, what: str) -> int:
    r = _as_int(rank, f"{what} rank")
    if r < 1:
        raise ValueError(f"Invalid {what} rank {rank!r} (expected a positive int)")
    return r


class WeightFormat:
    """One tensor format for a layer weight (stateless; one instance per format)."""

    name: str = ""
    algorithms: tuple[str, ...] = ()

    def resolve_rank(self, layout: WeightLayout, rank: Rank) -> tuple[int, ...]:
        """The full rank tuple for ``layout``; raises ValueError when a rank does not fit."""
        raise NotImplementedError

    def core_shapes(self, layout: WeightLayout, rank: tuple[int, ...]) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def n_terms(self, rank: tuple[int, ...]) -> int:
        """Number of products of one entry per core that sum to one weight entry (for initialisation)."""
        return math.prod(rank)

    def max_int_rank(self, layout: WeightLayout) -> int | None:
        """The int rank beyond which ``resolve_rank`` no longer changes (None: unbounded)."""
        return None

    def reconstruct(self, layout: WeightLayout, cores: Sequence[torch.Tensor]) -> torch.Tensor:
        """The weight ``(in_size, out_size, kernel)`` from the cores, through TensorLy's PyTorch backend."""
        raise NotImplementedError

    def decompose(
        self, layout: WeightLayout, weight: np.ndarray, rank: tuple[int, ...], algorithm: str | None, **kwargs
    ) -> list[np.ndarray]:
        """Cores fitted to ``weight`` (float64, canonical layout) by TensorLy (NumPy backend)."""
        raise NotImplementedError

    def num_params(self, layout: WeightLayout, rank: tuple[int, ...]) -> int:
        return sum(math.prod(s) for s in self.core_shapes(layout, rank))


def _check_two_cores(name: str, layout: WeightLayout, n: int) -> None:
    if n < 2:
        raise ValueError(
            f"a {name} weight needs at least two cores, but layout in={layout.in_factors}, out={layout.out_factors}, "
            f"kernel={layout.kernel} gives {n} (use a factorization with more modes)"
        )


# --- CP and Tucker: over layout.modes() -----------------------------------------------------------


class _CP(WeightFormat):
    name = "cp"
    algorithms = ("als",)

    def resolve_rank(self, layout, rank):
        _check_two_cores(self.name, layout, len(layout.modes()))
        if not _is_int(rank):
            raise ValueError(f"Invalid CP rank {rank!r} (expected a single positive int)")
        return (_positive_int(rank, "CP"),)

    def core_shapes(self, layout, rank):
        return [(s, rank[0]) for s in layout.modes()]

    def reconstruct(self, layout, cores):
        with pytorch_backend():
            full = cp_to_tensor((None, list(cores)))
        return full.reshape(layout.in_size, layout.out_size, layout.kernel)

    def decompose(self, layout, weight, rank, algorithm, **kwargs):
        fn = method_choice(algorithm, {"als": parafac}, "CP")
        kwargs.setdefault("init", "svd")
        with warnings.catch_warnings():  # an SVD init with a rank above a mode size pads randomly, as intended
            warnings.filterwarnings("ignore", message="Trying to compute SVD with n_eigenvecs", category=UserWarning)
            weights, factors = run_decomposition(fn, weight.reshape(layout.modes()), rank[0], **kwargs)
        factors = [np.asarray(f) for f in factors]
        if weights is not None:
            factors[0] = factors[0] * np.asarray(weights)[None, :]
        return factors


class _Tucker(WeightFormat):
    name = "tucker"
    algorithms = ("hooi",)

    def resolve_rank(self, layout, rank):
        modes = layout.modes()
        _check_two_cores(self.name, layout, len(modes) + 1)
        if _is_int(rank):  # an int is a cap: every mode gets min(rank, its size)
            r = _positive_int(rank, "Tucker")
            return tuple(min(r, s) for s in modes)
        ranks = parse_ranks(rank, len(modes), "Tucker")
        for k, (s, r) in enumerate(zip(modes, ranks)):
            if r > s:
                raise ValueError(
                    f"Invalid Tucker rank {list(rank)} for modes {modes}: rank {r} of mode {k} exceeds its size {s}"
                )
        return tuple(ranks)

    def core_shapes(self, layout, rank):
        return [tuple(rank)] + [(s, r) for s, r in zip(layout.modes(), rank)]

    def max_int_rank(self, layout):
        return max(layout.modes())

    def reconstruct(self, layout, cores):
        with pytorch_backend():
            full = tucker_to_tensor((cores[0], list(cores[1:])))
        return full.reshape(layout.in_size, layout.out_size, layout.kernel)

    def decompose(self, layout, weight, rank, algorithm, **kwargs):
        fn = method_choice(algorithm, {"hooi": tucker}, "Tucker")
        kwargs.setdefault("init", "svd")
        core, factors = run_decomposition(fn, weight.reshape(layout.modes()), list(rank), **kwargs)
        return [np.asarray(core)] + [np.asarray(f) for f in factors]


# --- TT and TR: over layout.pairs() ---------------------------------------------------------------


def _paired(layout: WeightLayout, weight: np.ndarray) -> np.ndarray:
    """The canonical weight as a tensor with one mode ``m_k * n_k`` per pair (the TT-matrix ordering)."""
    pairs = layout.pairs()
    ms, ns = [m for m, _ in pairs], [n for _, n in pairs]
    w = weight.transpose(0, 2, 1).reshape(*ms, *ns)  # rows (in, kernel), columns (out)
    d = len(pairs)
    w = w.transpose([x for k in range(d) for x in (k, d + k)])
    return w.reshape([m * n for m, n in pairs])


def _from_rows_cols(layout: WeightLayout, full: torch.Tensor) -> torch.Tensor:
    """``(m_1..m_N, n_1..n_N)`` -> canonical ``(in, out, kernel)``."""
    return full.reshape(layout.in_size, layout.kernel, layout.out_size).permute(0, 2, 1)


def _as_cores(cores: Sequence, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """TensorLy's 3-way cores ``(r, m * n, r')`` as 4-way ``(r, m, n, r')``; a core whose rank TensorLy could not
    reach keeps its shape, so that ``load_cores`` reports the mismatch."""
    out = []
    for c, shape in zip(cores, shapes):
        a = np.asarray(c)
        out.append(a.reshape(shape) if a.shape[0] == shape[0] and a.shape[-1] == shape[-1] else a)
    return out


def _tt_bounds(layout: WeightLayout) -> list[int]:
    sizes = [m * n for m, n in layout.pairs()]
    return [min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes))]


class _TT(WeightFormat):
    name = "tt"
    algorithms = ("svd",)

    def resolve_rank(self, layout, rank):
        pairs = layout.pairs()
        _check_two_cores(self.name, layout, len(pairs))
        if _is_int(rank):  # an int is a cap: every bond gets min(rank, the rank of its unfolding)
            r = _positive_int(rank, "TT")
            return (1, *(min(r, b) for b in _tt_bounds(layout)), 1)
        return tt_ranks(tuple(m * n for m, n in pairs), rank)

    def core_shapes(self, layout, rank):
        return [(rank[k], m, n, rank[k + 1]) for k, (m, n) in enumerate(layout.pairs())]

    def max_int_rank(self, layout):
        return max(_tt_bounds(layout))

    def reconstruct(self, layout, cores):
        with pytorch_backend():
            full = tt_matrix_to_tensor(list(cores))
        return _from_rows_cols(layout, full)

    def decompose(self, layout, weight, rank, algorithm, **kwargs):
        fn = method_choice(algorithm, {"svd": tensor_train}, "TT")
        cores = run_decomposition(fn, _paired(layout, weight), list(rank), **kwargs)
        return _as_cores(cores, self.core_shapes(layout, rank))


class _TR(WeightFormat):
    name = "tr"
    algorithms = ("als", "svd")

    def resolve_rank(self, layout, rank):
        n = len(layout.pairs())
        _check_two_cores(self.name, layout, n)
        if _is_int(rank):
            return (_positive_int(rank, "TR"),) * n
        return tr_ranks(n, rank)

    def core_shapes(self, layout, rank):
        n = len(rank)
        return [(rank[k], m, o, rank[(k + 1) % n]) for k, (m, o) in enumerate(layout.pairs())]

    def reconstruct(self, layout, cores):
        pairs = layout.pairs()
        flat = [c.reshape(c.shape[0], c.shape[1] * c.shape[2], c.shape[3]) for c in cores]
        with pytorch_backend():
            full = tr_to_tensor(flat)  # (m_1 n_1, ..., m_N n_N)
        d = len(pairs)
        full = full.reshape([x for pair in pairs for x in pair])
        full = full.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2))
        return _from_rows_cols(layout, full)

    def decompose(self, layout, weight, rank, algorithm, **kwargs):
        fn = method_choice(algorithm, {"als": tensor_ring_als, "svd": tensor_ring}, "TR")
        cores = run_decomposition(fn, _paired(layout, weight), [*rank, rank[0]], **kwargs)
        return _as_cores(cores, self.core_shapes(layout, rank))


_REGISTRY: dict[str, WeightFormat] = {f.name: f for f in (_CP(), _Tucker(), _TT(), _TR())}


def get_format(name: str) -> WeightFormat:
    """The format called ``name`` (``cp``, ``tucker``, ``tt`` or ``tr``), or a ValueError listing them."""
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(f"Unknown tensor format {name!r} (known: {', '.join(FORMATS)})")
    return _REGISTRY[name.lower()]
