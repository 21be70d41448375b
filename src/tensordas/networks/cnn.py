"""A small CNN for small single- or multi-channel images (the 8x8 digits), with tensorizable convolutions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..formats import RankLike
from ._factory import as_images, check_image_shape, check_widths, conv, linear, pop_factory_kwargs

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """Four 3x3 convolutions, each followed by batch norm and ReLU, then global average pooling and a head:

    ``conv(in -> c0)`` [stem], ``conv(c0 -> c0)``, 2x2 max-pool, ``conv(c0 -> c1)``, ``conv(c1 -> c1)``,
    average pool, ``linear(c1 -> num_classes)``. On 8x8 digits the second stage sees 4x4 maps.

    Args:
        in_channels: image channels.
        num_classes: outputs of the head.
        channels: ``(c0, c1)``.
        image_shape: ``(C, H, W)`` used to read flat ``(B, C*H*W)`` inputs as images; None accepts only images.
        format: None (dense) or a tensor format for the three convolutions after the stem.
        rank: rank of every tensorized layer (None: the format's default, see ``DEFAULT_RANKS``).
        tensorize_stem, tensorize_head: also tensorize the stem convolution / the linear head.
        **layer_kwargs: passed to the tensorized layers (``factorization``, ``init``, ...); a dense CNN takes none
            (ValueError). ``device``/``dtype`` apply to the whole network.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        image_shape: Sequence[int] | None = None,
        format: str | None = None,
        rank: RankLike | None = None,
        tensorize_stem: bool = False,
        tensorize_head: bool = False,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        factory = pop_factory_kwargs(layer_kwargs)
        channels = check_widths(list(channels) if isinstance(channels, Sequence) else channels, "channels")
        if len(channels) != 2:
            raise ValueError(f"Invalid channels {channels!r} (expected two sizes (c0, c1))")
        self.image_shape = check_image_shape(image_shape, in_channels)
        c0, c1 = channels
        stem_kwargs = layer_kwargs if tensorize_stem else {}
        self.stem = conv(in_channels, c0, 3, 1, 1, format if tensorize_stem else None, rank, **stem_kwargs)
        self.conv2 = conv(c0, c0, 3, 1, 1, format, rank, **layer_kwargs)
        self.conv3 = conv(c0, c1, 3, 1, 1, format, rank, **layer_kwargs)
        self.conv4 = conv(c1, c1, 3, 1, 1, format, rank, **layer_kwargs)
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in (c0, c0, c1, c1))
        head_kwargs = layer_kwargs if tensorize_head else {}
        self.head = linear(
            c1, num_classes, format if tensorize_head else None, rank, nonlinearity="linear", **head_kwargs
        )
        if factory:
            self.to(**factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_images(x, self.image_shape, "SmallCNN")
        x = F.relu(self.bns[0](self.stem(x)))
        x = F.relu(self.bns[1](self.conv2(x)))
        if min(x.shape[-2:]) >= 2:
            x = F.max_pool2d(x, 2)
        x = F.relu(self.bns[2](self.conv3(x)))
        x = F.relu(self.bns[3](self.conv4(x)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))
