"""How the TT adapter is put on a target layer (the registry calls this for each match)."""

from __future__ import annotations

from torch import nn

from .config import LoRETTAConfig
from .layer import LoRETTALinear

__all__ = ["create_loretta_layer"]


def create_loretta_layer(name: str, target: nn.Linear, config: LoRETTAConfig) -> LoRETTALinear:
    """Wrap ``target`` (module ``name``); ``ValueError`` for factors that do not fit or too-large TT ranks."""
    return LoRETTALinear(target, config, name=name)
