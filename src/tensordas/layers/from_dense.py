"""Build tensorized layers from trained dense ones through TensorLy's decompositions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .._deprecation import renamed_keyword
from ..formats import RankLike, load_cores, rebalance_
from ._formats import WeightFormat, weight_format
from .conv import TensorizedConv2d
from .factorization import Factorization, WeightLayout, resolve_layout
from .linear import TensorizedLinear

__all__ = ["dense_layout", "from_dense", "rank_for_ratio", "tensorized_like"]

DenseLayer = nn.Linear | nn.Conv2d


def _check_dense(layer: nn.Module) -> None:
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(f"Conv2d with groups={layer.groups} cannot be tensorized (only groups=1)")
        if layer.padding_mode != "zeros":
            raise ValueError(f"Conv2d with padding_mode={layer.padding_mode!r} cannot be tensorized (only 'zeros')")
    elif not isinstance(layer, nn.Linear):
        raise TypeError(f"from_dense expects an nn.Linear or nn.Conv2d, got {type(layer).__name__}")


def dense_layout(
    layer: DenseLayer, factorization: int | Factorization | None = None, format: str | None = None
) -> WeightLayout:
    """The :class:`WeightLayout` a tensorized replacement of ``layer`` would use."""
    _check_dense(layer)
    if isinstance(layer, nn.Linear):
        return resolve_layout(layer.in_features, layer.out_features, factorization, kernel=1, format=format)
    kh, kw = layer.kernel_size
    return resolve_layout(layer.in_channels, layer.out_channels, factorization, kernel=kh * kw, format=format)


def _canonical(layer: DenseLayer) -> np.ndarray:
    """The dense weight as a float64 array ``(in, out, kernel)``."""
    w = layer.weight.detach().to("cpu", torch.float64)
    if isinstance(layer, nn.Linear):
        return w.t().unsqueeze(-1).numpy()
    return w.permute(1, 0, 2, 3).reshape(w.shape[1], w.shape[0], -1).numpy()


def _check_ratio(ratio: object) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"Invalid compression ratio {ratio!r} (expected a positive finite number)")
    return float(ratio)


@renamed_keyword("method", "format")
def rank_for_ratio(format: str, layout: WeightLayout, ratio: float) -> int:
    """The largest int rank whose layer has ``dense weight entries / core entries >= ratio``.

    The core count grows with the int rank (Tucker and TT ranks are capped by their modes, so it stops
    growing at full rank). Raises ValueError naming ``ratio`` when even rank 1 cannot reach it.
    """
    ratio = _check_ratio(ratio)
    fmt: WeightFormat = weight_format(format)
    budget = layout.dense_numel / ratio

    def params(r: int) -> int:
        return fmt.num_params(layout, fmt.resolve_rank(layout, r))

    if params(1) > budget:
        best = layout.dense_numel / params(1)
        raise ValueError(
            f"compression ratio {ratio:g} cannot be reached by a {fmt.name} layer with in factors "
            f"{layout.in_factors}, out factors {layout.out_factors}, kernel {layout.kernel}: "
            f"the largest ratio is {best:.4g} (rank 1)"
        )
    high = fmt.max_int_rank(layout)
    if high is None:  # unbounded: double until over budget
        high = 2
        while params(high) <= budget:
            high *= 2
    elif params(high) <= budget:
        return high
    low = 1  # invariant: params(low) <= budget < params(high)
    while high - low > 1:
        mid = (low + high) // 2
        if params(mid) <= budget:
            low = mid
        else:
            high = mid
    return low


def tensorized_like(
    layer: DenseLayer,
    format: str,
    rank: RankLike,
    factorization: int | Factorization | None,
    nonlinearity: str = "relu",
) -> TensorizedLinear | TensorizedConv2d:
    """A freshly initialised tensorized layer with ``layer``'s sizes, geometry, bias, device and dtype."""
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        return TensorizedLinear(
            layer.in_features, layer.out_features, format, rank, factorization, bias, nonlinearity, **factory
        )
    return TensorizedConv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        format,
        rank,
        factorization,
        bias,
        nonlinearity,
        **factory,
    )


@renamed_keyword("method", "format")
def from_dense(
    layer: DenseLayer,
    format: str = "tt",
    rank: RankLike | None = None,
    ratio: float | None = None,
    factorization: int | Factorization | None = None,
    algorithm: str | None = None,
    balance: bool = True,
    random_state: int | None = 0,
    **kwargs: Any,
) -> TensorizedLinear | TensorizedConv2d:
    """A tensorized copy of a dense ``nn.Linear``/``nn.Conv2d``, fitted by a TensorLy decomposition.

    Args:
        layer: the dense layer (``Conv2d`` with ``groups=1`` and zero padding).
        format: the tensor format: ``"tt"`` (TT-SVD, ``tensor_train`` on the TT-matrix ordering), ``"tr"``
            (TR-ALS, ``tensor_ring_als``; ``algorithm="svd"`` for TR-SVD), ``"cp"`` (``parafac``) or ``"tucker"``
            (HOOI, ``tucker``), or any format registered in :mod:`tensordas.formats`. (``method=`` is the
            deprecated name of this argument.)
        rank: ranks as for :class:`TensorizedLinear` (an int caps Tucker/TT ranks at full rank).
        ratio: instead of ``rank``: the target compression ratio ``dense weight entries / core entries``;
            the largest int rank meeting it is used (:func:`rank_for_ratio`).
        factorization: as for the layers (None: automatic).
        algorithm: the TensorLy algorithm within the format (None: the first listed above).
        balance: rescale the cores to equal Frobenius norms afterwards (the weight is unchanged). TT-SVD and
            HOOI return orthonormal cores with all the norm in one; balanced cores are better conditioned.
        random_state: seed for TensorLy.
        **kwargs: passed to the TensorLy function (``n_iter_max``, ``tol``, ...).

    The bias is copied; stride, padding and dilation are kept; dtype and device follow ``layer.weight``.

    Raises:
        ValueError: for a rank that does not fit, a ratio that cannot be reached, both or neither of
            ``rank``/``ratio``, or an unsupported layer (grouped convolution, non-zero padding mode).
    """
    _check_dense(layer)
    fmt = weight_format(format)
    if (rank is None) == (ratio is None):
        raise ValueError(f"from_dense needs exactly one of rank and ratio, got rank={rank!r}, ratio={ratio!r}")
    layout = dense_layout(layer, factorization, fmt.name)
    if ratio is not None:
        rank = rank_for_ratio(fmt.name, layout, ratio)
    new = tensorized_like(layer, fmt.name, rank, (layout.in_factors, layout.out_factors))
    kwargs.setdefault("random_state", random_state)
    arrays = fmt.decompose(layout, _canonical(layer), new.rank, algorithm, **kwargs)
    with torch.no_grad():
        load_cores(list(new.cores), arrays, f"from_dense({fmt.name})")
        if balance:
            rebalance_(list(new.cores))
        if new.bias is not None:
            new.bias.copy_(layer.bias.detach())
    return new
