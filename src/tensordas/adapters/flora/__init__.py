"""FLoRA-style Tucker adapter: ``Delta W = scaling * A E B`` (three cores, one group)."""

from .config import FLoRAConfig
from .layer import FLoRALinear
from .model import create_flora_layer

__all__ = ["FLoRAConfig", "FLoRALinear", "create_flora_layer"]
