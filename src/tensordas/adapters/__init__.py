"""Parameter-efficient fine-tuning: tensorized adapters.

- Tensorized adapters in PEFT's style, one folder per method: :class:`FLoRAConfig` (Tucker,
  ``Delta W = A E B``) and :class:`LoRETTAConfig` (tensor train), put on any model with
  :func:`inject_adapter`, saved/loaded with :func:`save_adapter`/:func:`load_adapter`, merged with
  :func:`merge_adapter`; each adapter layer exposes ``core_groups()``.
- The core groups of Hugging Face PEFT tuners and TensorLy-Torch layers, and the ``transformers.Trainer``
  integration, are in :mod:`tensordas.integrations`.
"""

from .base import AdapterConfig, AdapterLayer
from .flora import FLoRAConfig, FLoRALinear
from .loretta import LoRETTAConfig, LoRETTALinear
from .registry import ADAPTERS, AdapterSpec, config_from_dict, get_adapter, register_adapter
from .tuner import (
    adapter_config,
    adapter_layers,
    adapter_state_dict,
    inject_adapter,
    load_adapter,
    merge_adapter,
    save_adapter,
)

__all__ = [
    "ADAPTERS",
    "AdapterConfig",
    "AdapterLayer",
    "AdapterSpec",
    "FLoRAConfig",
    "FLoRALinear",
    "LoRETTAConfig",
    "LoRETTALinear",
    "adapter_config",
    "adapter_layers",
    "adapter_state_dict",
    "config_from_dict",
    "get_adapter",
    "inject_adapter",
    "load_adapter",
    "merge_adapter",
    "register_adapter",
    "save_adapter",
]
