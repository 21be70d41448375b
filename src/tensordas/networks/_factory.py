"""Dense-or-tensorized layer factories shared by the networks."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..layers import TensorizedConv2d, TensorizedLinear
from ..layers._formats import Rank, get_format

__all__ = ["DEFAULT_RANKS", "conv", "linear"]

# Rank used when a network is built with a format and no rank: a moderate compression of each layer.
DEFAULT_RANKS: dict[str, int] = {"tt": 8, "tr": 8, "cp": 32, "tucker": 8}


def resolve_rank(format: str | None, rank: Rank | None) -> Rank | None:
    """``rank``, or the format's default when None (dense networks ignore it)."""
    if format is None:
        return None
    return DEFAULT_RANKS[get_format(format).name] if rank is None else rank


def linear(
    in_features: int,
    out_features: int,
    format: str | None,
    rank: Rank | None,
    bias: bool = True,
    nonlinearity: str = "relu",
    **layer_kwargs: Any,
) -> nn.Module:
    """``nn.Linear`` when ``format`` is None, else a :class:`TensorizedLinear`."""
    if format is None:
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
    rank: Rank | None,
    bias: bool = False,
    **layer_kwargs: Any,
) -> nn.Module:
    """A Kaiming-initialised ``nn.Conv2d`` when ``format`` is None, else a :class:`TensorizedConv2d`."""
    if format is None:
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
