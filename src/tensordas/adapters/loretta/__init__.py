"""LoRETTA-style tensor-train adapter: ``Delta W`` as a TT-matrix (``num_cores`` cores, one group)."""

from .config import LoRETTAConfig
from .layer import LoRETTALinear, balanced_factors, tt_matrix
from .model import create_loretta_layer

__all__ = ["LoRETTAConfig", "LoRETTALinear", "balanced_factors", "create_loretta_layer", "tt_matrix"]
