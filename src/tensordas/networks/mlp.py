"""A multilayer perceptron for vector inputs whose hidden layers can be tensorized."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..formats import RankLike
from ._factory import check_widths, linear, pop_factory_kwargs

__all__ = ["MLP"]


class MLP(nn.Module):
    """``Linear -> ReLU`` blocks then a linear head; inputs are flattened (``(B, ...) -> (B, in_features)``).

    Args:
        in_features: input size (64 for the 8x8 digits).
        num_classes: outputs of the head.
        hidden: sizes of the hidden layers.
        format: None (dense) or ``"tt"``, ``"tr"``, ``"cp"``, ``"tucker"`` for the hidden layers.
        rank: rank of every tensorized layer (None: the format's default, see ``DEFAULT_RANKS``).
        tensorize_head: also tensorize the head (initialised with ``nonlinearity="linear"``).
        dropout: dropout probability after each hidden activation.
        **layer_kwargs: passed to :class:`TensorizedLinear` (``factorization``, ``init``, ...); a dense MLP
            takes none (ValueError). ``device``/``dtype`` apply to the whole network.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (256, 256),
        format: str | None = None,
        rank: RankLike | None = None,
        tensorize_head: bool = False,
        dropout: float = 0.0,
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        factory = pop_factory_kwargs(layer_kwargs)
        hidden = check_widths(list(hidden) if isinstance(hidden, Sequence) else hidden, "hidden sizes")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Invalid dropout {dropout!r} (expected 0 <= dropout < 1)")
        layers: list[nn.Module] = []
        size = in_features
        for h in hidden:
            layers += [linear(size, h, format, rank, **layer_kwargs), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            size = h
        self.features = nn.Sequential(*layers)
        head_format = format if tensorize_head else None
        head_kwargs = layer_kwargs if tensorize_head else {}
        self.head = linear(size, num_classes, head_format, rank, nonlinearity="linear", **head_kwargs)
        self.in_features = in_features
        if factory:
            self.to(**factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(x.shape[0], -1)))
