r"""The FLoRA-style Tucker adapter layer (Si et al., "FLoRA: Low-Rank Core Space for N-dimension", 2024).

For a linear layer (a 2-way weight) FLoRA's Tucker form is a Tucker-2 decomposition of the update::

    Delta W = scaling * A E B,    A: (out, r_out),  E: (r_out, r_in),  B: (r_in, in)

``E`` is the Tucker core, ``A`` and ``B`` the factor matrices. ``Delta W`` is linear in each of
``A``, ``E``, ``B``, so ``[A, E, B]`` is one scale-invariant core group.

Initialisation: ``A`` and ``B`` are drawn like LoRA's down-projection (Kaiming-uniform with
``a = sqrt(5)``); the core ``E`` starts at zero, so the adapted model starts as the base model.
At the first step only ``E`` has a non-zero gradient; DAS keeps ``s = 1`` for it while ``||E|| = 0``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..base import AdapterLayer
from .config import FLoRAConfig

__all__ = ["FLoRALinear"]


class FLoRALinear(AdapterLayer):
    """``y = W x + b + scaling * A E B dropout(x)`` around a frozen ``nn.Linear``.

    Args:
        base_layer: the layer to adapt.
        config: ranks, ``alpha`` (``scaling = alpha / sqrt(r_out r_in)``), dropout.
        name: the layer's module path, for error messages.

    Raises:
        ValueError: if ``r_out > out_features`` or ``r_in > in_features``.
    """

    adapter_type = "flora"

    def __init__(self, base_layer: nn.Linear, config: FLoRAConfig, name: str = "") -> None:
        super().__init__(base_layer, config)
        r_out, r_in = config.ranks
        if r_out > self.out_features or r_in > self.in_features:
            raise ValueError(
                f"FLoRA rank {config.rank} is too large for layer {name or type(base_layer).__name__!r} "
                f"({self.out_features} x {self.in_features}): need r_out <= {self.out_features} "
                f"and r_in <= {self.in_features}"
            )
        self.ranks = (r_out, r_in)
        self.scaling = config.alpha / math.sqrt(r_out * r_in)
        kw = self._factory_kwargs()
        self.flora_A = nn.Parameter(torch.empty(self.out_features, r_out, **kw))
        self.flora_E = nn.Parameter(torch.zeros(r_out, r_in, **kw))
        self.flora_B = nn.Parameter(torch.empty(r_in, self.in_features, **kw))
        nn.init.kaiming_uniform_(self.flora_A, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.flora_B, a=math.sqrt(5))

    def cores(self) -> list[nn.Parameter]:
        return [self.flora_A, self.flora_E, self.flora_B]

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.flora_A @ self.flora_E @ self.flora_B)

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        # Three thin products instead of the dense (out x in) update.
        return self.scaling * F.linear(F.linear(F.linear(x, self.flora_B), self.flora_E), self.flora_A)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ranks={self.ranks}"
