"""Networks with tensorized layers, and a registry to build them by name.

Names are a base network, optionally prefixed by a tensor format: ``mlp``, ``tt-mlp``, ``tr-mlp``, ``cp-mlp``,
``tucker-mlp``; ``cnn``, ``tt-cnn``, ...; ``resnet20``, ``tt-resnet20``, ``tr-resnet20``, ...; ``resnet32``, ...
A new network is added in one place: :data:`NETWORKS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..formats import FORMATS, RankLike, as_int
from ._factory import DEFAULT_RANKS
from .cnn import SmallCNN
from .mlp import MLP
from .resnet import BasicBlock, ResNet, resnet20, resnet32

__all__ = [
    "DEFAULT_RANKS",
    "MLP",
    "NETWORKS",
    "BasicBlock",
    "ResNet",
    "SmallCNN",
    "available_networks",
    "build_network",
    "parse_network_name",
    "resnet20",
    "resnet32",
]


def _image_shape(input_shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    """``(C, H, W)``; ``(H, W)`` is one channel; a flat ``(s*s,)`` is read as a 1 x s x s image."""
    if len(input_shape) == 3:
        return input_shape  # type: ignore[return-value]
    if len(input_shape) == 2:
        return (1, *input_shape)  # type: ignore[return-value]
    side = math.isqrt(input_shape[0])
    if len(input_shape) == 1 and side * side == input_shape[0]:
        return (1, side, side)
    raise ValueError(
        f"network {name!r} needs image inputs (C, H, W) or (H, W), or a flat square size; got input_shape={input_shape}"
    )


def _mlp(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
    return MLP(math.prod(input_shape), num_classes, **kw)


def _cnn(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
    shape = _image_shape(input_shape, "cnn")
    return SmallCNN(shape[0], num_classes, image_shape=shape, **kw)


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
        shape = _image_shape(input_shape, f"resnet{depth}")
        return ResNet(depth, num_classes, shape[0], image_shape=shape, **kw)

    return build


# base name -> builder(input_shape, num_classes, format=..., rank=..., **kwargs)
NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet20": _resnet(20),
    "resnet32": _resnet(32),
}


def available_networks() -> list[str]:
    """Every name :func:`build_network` accepts."""
    return [f"{p}{base}" for base in NETWORKS for p in ("", *(f"{f}-" for f in FORMATS))]


def parse_network_name(name: str) -> tuple[str | None, str]:
    """``"tr-resnet20"`` -> ``("tr", "resnet20")``; ``"mlp"`` -> ``(None, "mlp")``."""
    if not isinstance(name, str):
        raise ValueError(f"Invalid network name {name!r}")
    key = name.strip().lower()
    fmt, sep, base = key.partition("-")
    if not sep:
        fmt, base = None, key
    if base not in NETWORKS or (fmt is not None and fmt not in FORMATS):
        raise ValueError(f"Unknown network {name!r} (known: {', '.join(available_networks())})")
    return fmt, base


def build_network(
    name: str,
    input_shape: int | Sequence[int],
    num_classes: int,
    *,
    rank: RankLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a network by name for inputs of ``input_shape`` (one sample, e.g. ``(64,)`` or ``(3, 32, 32)``).

    Args:
        name: see :func:`available_networks`; the prefix picks the format of the tensorized layers.
        input_shape: an int (vector size) or a sample's shape. MLPs flatten it; image networks read ``(C, H, W)``,
            ``(H, W)`` as one channel, and a flat square size ``s*s`` as a ``1 x s x s`` image (the 8x8 digits as
            64 features); flat ``(B, prod(input_shape))`` batches are then reshaped to images.
        num_classes: outputs.
        rank: rank of every tensorized layer (None: :data:`DEFAULT_RANKS` of the format).
        **kwargs: passed to the network (``hidden``, ``width``, ``tensorize_head``, ``factorization``, ``init``, ...).
    """
    fmt, base = parse_network_name(name)
    if "format" in kwargs:
        raise ValueError(f"build_network takes the format from the name (e.g. 'tt-{base}'), not format=")
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    shape = tuple(as_int(s, "input_shape entry") for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"Invalid input_shape {input_shape!r} (expected positive sizes)")
    classes = as_int(num_classes, "num_classes")
    if classes < 1:
        raise ValueError(f"Invalid num_classes {num_classes!r} (expected a positive int)")
    if fmt is None and rank is not None:
        raise ValueError(f"network {name!r} is dense; rank={rank!r} needs a tensorized one (e.g. 'tt-{base}')")
    return NETWORKS[base](shape, classes, format=fmt, rank=rank, **kwargs)
