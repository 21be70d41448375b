"""A tensor in any registered format, as a module: random or balanced initialisation, the full tensor,
sampled entries, and a warm start from TensorLy's decomposition of a dense tensor."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
from torch import nn

from .._deprecation import renamed_keyword
from ..core_groups import CoreGroup
from ..formats import RankLike, TensorFormat, as_int, balanced_norm, get_format, load_cores, rebalance_

__all__ = ["Std", "TensorModel", "model_class"]

M = TypeVar("M", bound="TensorModel")

# ``std`` argument of every model: a float for i.i.d. ``N(0, std^2)`` entries, or "balanced".
Std = float | Literal["balanced"]


def check_shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
    """Validate a tensor shape (at least two modes, all positive)."""
    try:
        dims = tuple(as_int(s, "mode size") for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid shape {shape!r} for {what} (expected a sequence of positive ints)") from None
    if len(dims) < 2 or any(s < 1 for s in dims):
        raise ValueError(f"Invalid shape {dims} for {what} (need >= 2 modes of positive size)")
    return dims


def make_cores(
    shapes: Sequence[tuple[int, ...]],
    std: Std,
    core_scales: Sequence[float] | None,
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
    n_terms: int = 1,
) -> nn.ParameterList:
    """Random cores for a multilinear model whose entries are sums of ``n_terms`` products of one entry per core.

    ``std`` a float: i.i.d. ``N(0, std^2)`` entries in every core.

    ``std="balanced"``: every core gets the same squared Frobenius norm ``c`` exactly (Norm Deviation Q = 0),
    with ``c = (prod_k m_k / P)^(1/C)`` for C cores of ``m_k`` entries and ``P = n_terms`` terms. Core k then has
    entry variance about ``c / m_k``, so an entry of the reconstruction (a sum of P uncorrelated products of C
    zero-mean entries) has variance ``P * prod_k (c / m_k) = 1``: unit scale, matching standardised data
    (:func:`tensordas.formats._cores.balanced_norm`).

    ``core_scales`` then multiplies core k by ``core_scales[k]`` (deliberately unbalanced norms; the output
    changes only by their product, so a product of 1 leaves it unchanged).
    """
    if core_scales is not None:
        if len(core_scales) != len(shapes):
            raise ValueError(f"core_scales has {len(core_scales)} entries for {len(shapes)} cores")
        if not all(math.isfinite(float(s)) for s in core_scales):
            raise ValueError(f"Invalid core_scales {list(core_scales)!r} (every scale must be finite)")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"Invalid dtype {dtype!r} for the cores (expected a floating-point dtype)")
    dtype = dtype or torch.get_default_dtype()
    if isinstance(std, str):
        if std != "balanced":
            raise ValueError(f"Invalid std value: {std!r} (expected a positive float or 'balanced')")
        target_norm = balanced_norm([math.prod(s) for s in shapes], n_terms)
    else:
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
            raise ValueError(f"Invalid std value: {std!r} (expected a positive float or 'balanced')")
        target_norm = None
    cores = []
    for k, shape in enumerate(shapes):
        t = torch.randn(*shape, generator=generator, dtype=dtype)
        if target_norm is None:
            t = t * float(std)
        else:
            t = t * (target_norm / t.norm().clamp_min(torch.finfo(dtype).tiny))
        if core_scales is not None:
            t = t * float(core_scales[k])
        cores.append(nn.Parameter(t))
    return nn.ParameterList(cores)


def check_indices(indices: torch.Tensor, n_modes: int) -> None:
    """``indices`` must be an integer tensor of shape (B, n_modes). No range check (it would sync the device)."""
    if not isinstance(indices, torch.Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise ValueError(f"indices must be an integer tensor of shape (B, {n_modes}), got {type(indices).__name__}")
    if indices.dim() != 2 or indices.shape[1] != n_modes:
        raise ValueError(f"indices must have shape (B, {n_modes}), got {tuple(indices.shape)}")
    if indices.dtype.is_complex:
        raise ValueError(f"indices must be an integer tensor, got dtype {indices.dtype}")


def decomposition_input(tensor: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None):
    """Float64 numpy copy of ``tensor`` for TensorLy, and the mask of entries to fit (None: all).

    Entries that are masked out or not finite are filled with the mean of the fitted entries, so
    that no NaN reaches TensorLy (a masked algorithm ignores them; an unmasked one sees a
    mean-imputed tensor).
    """
    if isinstance(tensor, torch.Tensor):
        x = tensor.detach().cpu().to(torch.float64).numpy()
    else:
        x = np.asarray(tensor, dtype=np.float64)
    check_shape(x.shape, "from_tensor")
    fit = np.isfinite(x)
    if mask is not None:
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        if m.shape != x.shape:
            raise ValueError(f"mask shape {m.shape} does not match tensor shape {x.shape}")
        fit &= m.astype(bool)
    if not fit.any():
        raise ValueError("from_tensor: the tensor has no finite entry inside the mask")
    if fit.all():
        return x, None
    x = np.where(fit, x, x[fit].mean())
    return x, fit


def result_dtype(tensor: torch.Tensor | np.ndarray, dtype: torch.dtype | None) -> torch.dtype:
    """``dtype``, else the input's floating dtype when it is a torch tensor, else torch's default."""
    if dtype is not None:
        return dtype
    if isinstance(tensor, torch.Tensor) and tensor.dtype.is_floating_point:
        return tensor.dtype
    return torch.get_default_dtype()


def private_generator() -> torch.Generator:
    """A seeded generator for throw-away initialisations (leaves the global RNG untouched)."""
    return torch.Generator().manual_seed(0)


class TensorModel(nn.Module):
    """A tensor of ``shape`` stored as the cores of a registered format; one core group (named after the format).

    Subclasses fix the format with the class attribute ``format`` (:class:`~tensordas.models.CPModel` and the
    others; :func:`model_class` gives one for any registered format).

    Args:
        shape: tensor shape (at least two modes).
        rank: the format's rank (see :mod:`tensordas.formats`); a rank that does not fit is a ValueError.
        std: a float gives i.i.d. ``N(0, std^2)`` core entries; ``"balanced"`` gives every core the same squared
            norm so that the reconstruction has unit-variance entries (see :func:`make_cores`).
        core_scales: optional per-core multipliers (deliberately unbalanced initialisation).
        generator, dtype: for the random initialisation.
    """

    format: ClassVar[str] = ""

    def __init__(
        self,
        shape: Sequence[int],
        rank: RankLike,
        std: Std = 1.0,
        core_scales: Sequence[float] | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        fmt = self.tensor_format()
        self.shape = check_shape(shape, f"a {fmt.label} model")
        self._ranks = fmt.ranks(self.shape, rank)
        self.rank = self._public_rank(self._ranks)
        shapes = fmt.core_shapes(self.shape, self._ranks)
        self._set_cores(make_cores(shapes, std, core_scales, generator, dtype, n_terms=fmt.n_terms(self._ranks)))

    @classmethod
    def tensor_format(cls) -> TensorFormat:
        """The registered format of this class."""
        if not cls.format:
            raise TypeError(f"{cls.__name__} has no format: use a subclass such as CPModel, or model_class(name)")
        return get_format(cls.format)

    # How the rank is shown and where the cores live. The four classes of the first release keep their
    # ``rank`` types (CP an int, Tucker a list) and attribute names (``factors``; ``core`` + ``factors``;
    # ``cores``), so that user code and state dicts keep working.
    def _public_rank(self, ranks: tuple[int, ...]) -> Any:
        return ranks

    def _set_cores(self, cores: nn.ParameterList) -> None:
        self.cores = cores

    def _core_params(self) -> list[nn.Parameter]:
        return list(self.cores)

    def forward(self) -> torch.Tensor:
        """The full reconstructed tensor."""
        return self.tensor_format().to_tensor(self._core_params())

    def entries(self, indices: torch.Tensor) -> torch.Tensor:
        """Values at a batch of index tuples ``indices`` (B, N) without forming the dense tensor: shape (B,)."""
        check_indices(indices, len(self.shape))
        return self.tensor_format().entries(self._core_params(), indices)

    def core_groups(self) -> list[CoreGroup]:
        return [CoreGroup(self.tensor_format().name, self._core_params())]

    def extra_repr(self) -> str:
        return f"shape={self.shape}, rank={self.rank}"

    @classmethod
    @renamed_keyword("method", "algorithm")
    def from_tensor(
        cls: type[M],
        tensor: torch.Tensor | np.ndarray,
        rank: RankLike,
        mask: torch.Tensor | np.ndarray | None = None,
        algorithm: str | None = None,
        balance: bool = False,
        random_state: int | None = 0,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> M:
        """A model initialised by the format's TensorLy decomposition of ``tensor`` (NumPy backend, float64).

        Args:
            tensor: the data; non-finite entries are treated as missing.
            rank: the format's rank (see the class).
            mask: optional boolean mask of entries to fit (True = observed). Formats with a masked algorithm
                (CP, Tucker) fit only those; for the others (TT, TR) the entries outside it, and non-finite
                ones, are filled with the mean of the fitted entries first: a warm start, not a masked fit.
            algorithm: the format's algorithm (None: its default): CP ``"als"`` (``parafac``), Tucker
                ``"hooi"`` (``tucker``), TT ``"svd"`` (``tensor_train``), TR ``"als"`` (``tensor_ring_als``) or
                ``"svd"`` (``tensor_ring``). ``method=`` is the deprecated name of this argument.
            balance: rescale the cores to equal norms afterwards (output unchanged). TensorLy's cores are
                generally unbalanced (orthonormal factors for HOOI and TT-SVD, with all the norm in one core).
            random_state: seed for TensorLy.
            dtype: parameter dtype (default: the input's floating dtype, else torch's default).
            **kwargs: passed to the TensorLy function (``n_iter_max``, ``init``, ``tol``, ``svd``, ...).
        """
        fmt = cls.tensor_format()
        fmt.algorithm(algorithm)  # an unknown algorithm fails before any work
        x, fit = decomposition_input(tensor, mask)
        model = cls(x.shape, rank, generator=private_generator(), dtype=result_dtype(tensor, dtype))
        mask_arg = fit if fmt.masked else None
        arrays = fmt.decompose(x, model._ranks, algorithm, mask=mask_arg, random_state=random_state, **kwargs)
        load_cores(model._core_params(), arrays, f"{cls.__name__}.from_tensor")
        if balance:
            rebalance_(model._core_params())
        return model


_MODEL_CLASSES: dict[str, type[TensorModel]] = {}


def register_model_class(cls: type[TensorModel]) -> type[TensorModel]:
    """Class decorator: ``cls`` is the model class :func:`model_class` returns for ``cls.format``."""
    _MODEL_CLASSES[cls.format] = cls
    return cls


def model_class(format: str) -> type[TensorModel]:
    """The completion-model class of a registered format: ``CPModel`` for ``"cp"``, ..., and for a format with
    no class of its own a :class:`TensorModel` subclass made (once) for it."""
    fmt = get_format(format)
    cls = _MODEL_CLASSES.get(fmt.name)
    if cls is None:
        cls = type(f"{fmt.label}Model", (TensorModel,), {"format": fmt.name, "__module__": __name__})
        _MODEL_CLASSES[fmt.name] = cls
    return cls
