"""How the FLoRA adapter is put on a target layer (the registry calls this for each match)."""

from __future__ import annotations

from torch import nn

from .config import FLoRAConfig
from .layer import FLoRALinear

__all__ = ["create_flora_layer"]


def create_flora_layer(name: str, target: nn.Linear, config: FLoRAConfig) -> FLoRALinear:
    """Wrap ``target`` (module ``name``); ``ValueError`` if a rank exceeds the layer's dimension."""
    return FLoRALinear(target, config, name=name)
