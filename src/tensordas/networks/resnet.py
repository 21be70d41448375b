"""CIFAR-style ResNets (He et al., 2016, section 4.2) whose 3x3 convolutions can be tensorized.

Depth ``6n + 2``: a 3x3 stem with 16 channels, three stages of ``n`` BasicBlocks with 16, 32 and 64
channels (the 2nd and 3rd start with stride 2), global average pooling and a linear head. Shortcuts
that change shape are the parameter-free option A (subsample, zero-pad the new channels), so every
learnable convolution is a 3x3 one: ResNet-20 has 19 of them, 18 inside the blocks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..formats import RankLike
from ._factory import as_images, check_image_shape, check_widths, conv, pop_factory_kwargs

__all__ = ["BasicBlock", "ResNet", "resnet20", "resnet32"]


class _PadShortcut(nn.Module):
    """Option-A shortcut: ``x[:, :, ::stride, ::stride]`` with zero channels added on both sides."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.before = extra_channels // 2
        self.after = extra_channels - self.before
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.before, self.after))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and ReLU, plus the shortcut."""

    def __init__(
        self, in_planes: int, planes: int, stride: int, format: str | None, rank: RankLike | None, **layer_kwargs: Any
    ) -> None:
        super().__init__()
        self.conv1 = conv(in_planes, planes, 3, stride, 1, format, rank, **layer_kwargs)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, 1, 1, format, rank, **layer_kwargs)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = _PadShortcut(planes - in_planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet of ``depth = 6n + 2`` layers.

    Args:
        depth: 20, 32, 44, 56, ... (``6n + 2``).
        num_classes: outputs of the linear head.
        in_channels: input image channels (3 for CIFAR, 1 for digits).
        width: channels of the first stage (16); the stages have ``width, 2*width, 4*width``.
        format: None (dense) or ``"tt"``, ``"tr"``, ``"cp"``, ``"tucker"`` for the convolutions in the blocks.
        rank: rank of every tensorized convolution (None: the format's default, see ``DEFAULT_RANKS``).
        tensorize_stem: also tensorize the stem convolution (``in_channels -> width``; default False: it is tiny).
        image_shape: ``(C, H, W)`` used to read flat ``(B, C*H*W)`` inputs as images; None accepts only images.
        **layer_kwargs: passed to :class:`TensorizedConv2d` (``factorization``, ``init``, ...); a dense ResNet takes
            none (ValueError). ``device``/``dtype`` apply to the whole network.
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 16,
        format: str | None = None,
        rank: RankLike | None = None,
        tensorize_stem: bool = False,
        image_shape: tuple[int, int, int] | None = None,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        factory = pop_factory_kwargs(layer_kwargs)
        self.image_shape = check_image_shape(image_shape, in_channels)
        check_widths((width,), "width")
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"Invalid ResNet depth {depth!r} (expected 6n + 2 with n >= 1: 20, 32, 44, 56, ...)")
        n = (depth - 2) // 6
        self.depth = depth
        stem_format = format if tensorize_stem else None
        self.conv1 = conv(in_channels, width, 3, 1, 1, stem_format, rank, **(layer_kwargs if tensorize_stem else {}))
        self.bn1 = nn.BatchNorm2d(width)
        stages = []
        in_planes = width
        for i, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, format, rank, **layer_kwargs))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(4 * width, num_classes)
        if factory:
            self.to(**factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_images(x, self.image_shape, "ResNet")
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet20(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-20 (three stages of 3 BasicBlocks); ``kwargs`` as for :class:`ResNet`."""
    return ResNet(20, num_classes, in_channels, **kwargs)


def resnet32(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> ResNet:
    """ResNet-32 (three stages of 5 BasicBlocks); ``kwargs`` as for :class:`ResNet`."""
    return ResNet(32, num_classes, in_channels, **kwargs)
