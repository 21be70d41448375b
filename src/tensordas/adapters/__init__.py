"""Parameter-efficient fine-tuning: core groups of PEFT tuners and tensorized adapters.

- Importing this package registers core-group finders for Hugging Face PEFT layers
  (LoRA, AdaLoRA, LoHa, LoKr; see :mod:`.peft_discovery`) and TensorLy-Torch factorized tensors
  and layers (:mod:`.tltorch_discovery`), without importing ``peft`` or ``tltorch``.
- Tensorized adapters in PEFT's style, one folder per method: :class:`FLoRAConfig` (Tucker,
  ``Delta W = A E B``) and :class:`LoRETTAConfig` (tensor train), put on any model with
  :func:`inject_adapter`, saved/loaded with :func:`save_adapter`/:func:`load_adapter`, merged with
  :func:`merge_adapter`; each adapter layer exposes ``core_groups()``.
- :mod:`tensordas.adapters.hf` (imported explicitly; needs ``transformers``) runs DAS and SAM
  under ``transformers.Trainer``.
"""

from . import peft_discovery, tltorch_discovery
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
    "peft_discovery",
    "register_adapter",
    "save_adapter",
    "tltorch_discovery",
]
