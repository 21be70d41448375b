"""The contract of a tensor format, and the slice gathers that the chain formats (TT, TR) share.

A format is a stateless object registered by name in :mod:`tensordas.formats`. Everything about it is defined
on a plain tensor shape ``(I_1, ..., I_N)``: its rank rules, core shapes, reconstruction, sampled entries and
decomposition. The completion models (:mod:`tensordas.models`) use it on the data's shape; the tensorized
layers (:mod:`tensordas.layers`) use it on a view of their weight (``layer_view`` below).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ._ranks import RankLike

__all__ = ["TensorFormat", "gather_slices", "slice_chain"]


class TensorFormat:
    """One tensor format (subclass it, set the class attributes and implement the methods marked abstract).

    Class attributes:
        name: registry key and core-group name, a lower-case identifier (``"tt"``).
        label: the name in messages (``"TT"``).
        algorithms: decomposition algorithms by name (TensorLy functions; a dict, made read-only); the first one
            is the default.
        masked: whether :meth:`decompose` fits only the entries of a mask (else callers impute missing entries).
        layer_view: how a layer weight ``W[in, out, kernel]`` is seen as a tensor: ``"modes"`` (the modes
            ``in_factors + out_factors + (kernel,)``, size-1 modes left out) or ``"pairs"`` (one mode of size
            ``m_k * n_k`` per pair of input and output factors; the layer stores core k with that mode split
            into ``(m_k, n_k)`` at axis ``mode_axis``, the TT-matrix layout).
        mode_axis: the axis of core k that carries mode k (needed by ``"pairs"``: one core per mode).
        default_rank: the rank of a network's layers when none is given.
        layer_factors_offset: automatic layer factorisations use this many fewer factors per side (Tucker: 1,
            its core has one entry per combination of mode ranks).
        dense_copies: peak memory of a dense TensorLy fit of this format (completion's masked ALS reference and
            ``init="tensorly"``) in float64 copies of the tensor, for the dense-memory budget
            (:func:`tensordas.data.dense_peak_bytes`). The default, 16, is the largest of the built-in formats'.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    algorithms: ClassVar[Mapping[str, Callable[..., Any]]] = MappingProxyType({})
    masked: ClassVar[bool] = False
    layer_view: ClassVar[Literal["modes", "pairs"]] = "modes"
    mode_axis: ClassVar[int] = 0
    default_rank: ClassVar[int] = 8
    layer_factors_offset: ClassVar[int] = 0
    dense_copies: ClassVar[int] = 16

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.algorithms = MappingProxyType(dict(cls.algorithms))  # read-only: formats are shared, stateless objects

    # --- ranks and cores ----------------------------------------------------------------------------------------

    def ranks(self, shape: tuple[int, ...], rank: RankLike, *, cap: bool = False) -> tuple[int, ...]:
        """The full rank tuple for a tensor of ``shape`` (abstract); a ValueError naming the rank when it does not fit.

        ``cap=True`` (the layers' rule): an int rank is a cap, each entry becomes ``min(rank, its bound)``
        instead of an error when it exceeds the bound.
        """
        raise NotImplementedError

    def max_int_rank(self, shape: tuple[int, ...]) -> int | None:
        """The int rank beyond which a capped rank no longer changes (None: unbounded)."""
        return None

    def n_cores(self, n_modes: int) -> int:
        """Number of cores of a tensor with ``n_modes`` modes."""
        return n_modes

    def core_shapes(self, shape: tuple[int, ...], ranks: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The shape of every core (abstract)."""
        raise NotImplementedError

    def n_terms(self, ranks: tuple[int, ...]) -> int:
        """Number of products of one entry per core that sum to one tensor entry (for initialisation)."""
        return math.prod(ranks)

    # --- values ------------------------------------------------------------------------------------------------

    def to_tensor(self, cores: Sequence[torch.Tensor]) -> torch.Tensor:
        """The full tensor from the cores, through TensorLy's PyTorch backend (differentiable; abstract)."""
        raise NotImplementedError

    def entries(self, cores: Sequence[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
        """Values at a batch of index tuples ``indices`` (B, N) without forming the dense tensor: (B,) (abstract).

        No integer matrix product may appear here (``addmv``/``mm`` are not implemented for Long on CUDA): the
        indices only select rows (``index_select``), the products are between floating-point cores.
        """
        raise NotImplementedError

    def decompose(
        self,
        tensor: np.ndarray,
        ranks: tuple[int, ...],
        algorithm: str | None = None,
        mask: np.ndarray | None = None,
        **kwargs: Any,
    ) -> list[np.ndarray]:
        """Cores fitted to ``tensor`` (float64) by ``algorithm`` on TensorLy's NumPy backend (abstract).

        ``mask`` (boolean, True = fit) only for ``masked`` formats; ``kwargs`` go to the algorithm.
        """
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------------------------

    def algorithm(self, name: str | None) -> Callable[..., Any]:
        """The decomposition function called ``name`` (None: the default), or a ValueError listing the known ones."""
        if name is None:
            return next(iter(self.algorithms.values()))
        if name not in self.algorithms:
            raise ValueError(f"Unknown {self.label} algorithm {name!r} (known: {', '.join(self.algorithms)})")
        return self.algorithms[name]

    def _no_mask(self, mask: np.ndarray | None) -> None:
        if mask is not None:
            raise ValueError(f"a {self.label} decomposition takes no mask (impute the missing entries first)")

    def __repr__(self) -> str:
        return f"<tensor format {self.name!r}>"


def gather_slices(core: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Slices ``core[:, i, :]`` of a 3-way core (r, I, r') for a batch of ``index`` values: (B, r, r').

    Rows of a contiguous (I, r * r') copy are gathered with ``index_select``, whose backward is an
    ``index_add``: measured about 2x faster than advanced indexing on the middle mode.
    """
    r, size, r_next = core.shape
    rows = core.transpose(0, 1).reshape(size, r * r_next).index_select(0, index)
    return rows.view(index.shape[0], r, r_next)


def slice_chain(cores: Sequence[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
    """The products ``G_1[:, i_1, :] ... G_N[:, i_N, :]`` of gathered slices for every index tuple: (B, r_0, r_N)."""
    out = gather_slices(cores[0], indices[:, 0])
    for k in range(1, len(cores)):
        out = torch.bmm(out, gather_slices(cores[k], indices[:, k]))
    return out
