"""Dense-or-tensorized layer factories shared by the networks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..formats import DEFAULT_RANKS, RankLike, get_format
from ..layers import TensorizedConv2d, TensorizedLinear

__all__ = ["DEFAULT_RANKS", "as_images", "check_image_shape", "check_widths", "conv", "linear", "pop_factory_kwargs"]

# DEFAULT_RANKS (re-exported): the rank of a network's layers when it is built with a format and no rank, a
# moderate compression of each layer; it is each format's ``default_rank`` (tensordas.formats).


def pop_factory_kwargs(layer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove ``device``/``dtype`` from ``layer_kwargs``; the networks apply them to every module with ``.to``."""
    return {k: layer_kwargs.pop(k) for k in ("device", "dtype") if layer_kwargs.get(k) is not None}


def check_widths(widths: Any, what: str) -> tuple[int, ...]:
    """Layer widths as a tuple of positive ints; ValueError naming ``what`` otherwise."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, (list, tuple)):
        raise ValueError(f"Invalid {what} {widths!r} (expected a sequence of positive ints)")
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ValueError(f"Invalid {what} {widths!r} (every width must be a positive int)")
    return tuple(widths)


def check_image_shape(image_shape: Any, in_channels: int) -> tuple[int, ...] | None:
    """``image_shape`` ``(C, H, W)`` with ``C == in_channels`` as a tuple (or None); ValueError otherwise."""
    if image_shape is not None and (len(image_shape) != 3 or image_shape[0] != in_channels):
        raise ValueError(f"Invalid image_shape {image_shape!r} for in_channels={in_channels} (expected (C, H, W))")
    return None if image_shape is None else tuple(image_shape)


def as_images(x: torch.Tensor, image_shape: tuple[int, ...] | None, network: str) -> torch.Tensor:
    """Flat ``(B, C*H*W)`` inputs reshaped to ``(B, C, H, W)``; images pass through."""
    if x.dim() == 2:
        if image_shape is None:
            raise ValueError(f"{network} got flat inputs but was built without image_shape")
        x = x.reshape(x.shape[0], *image_shape)
    return x


def _check_dense_kwargs(layer_kwargs: dict[str, Any]) -> None:
    if layer_kwargs:
        raise ValueError(
            f"a dense layer takes no tensorized-layer options, got {', '.join(sorted(layer_kwargs))} "
            "(use a tensorized network, e.g. 'tt-mlp', or drop them)"
        )


def resolve_rank(format: str | None, rank: RankLike | None) -> RankLike | None:
    """``rank``, or the format's default when None (dense networks ignore it)."""
    if format is None:
        return None
    return get_format(format).default_rank if rank is None else rank


def linear(
    in_features: int,
    out_features: int,
    format: str | None,
    rank: RankLike | None,
    bias: bool = True,
    nonlinearity: str = "relu",
    **layer_kwargs: Any,
) -> nn.Module:
    """``nn.Linear`` when ``format`` is None, else a :class:`TensorizedLinear`."""
    if format is None:
        _check_dense_kwargs(layer_kwargs)
        return nn.Linear(in_features, out_features, bias=bias)
    return TensorizedLinear(
        in_features,
        out_features,
        format,
        resolve_rank(format, rank),
        bias=bias,
        nonlinearity=nonlinearity,
        **layer_kwargs,
    )


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    padding: int,
    format: str | None,
    rank: RankLike | None,
    bias: bool = False,
    **layer_kwargs: Any,
) -> nn.Module:
    """A Kaiming-initialised ``nn.Conv2d`` when ``format`` is None, else a :class:`TensorizedConv2d`."""
    if format is None:
        _check_dense_kwargs(layer_kwargs)
        layer = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)
        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
        return layer
    return TensorizedConv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        format=format,
        rank=resolve_rank(format, rank),
        bias=bias,
        **layer_kwargs,
    )
