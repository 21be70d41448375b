"""The one place where tensorized adapter methods are registered.

Each method lives in its own folder (``config.py``, ``layer.py``, ``model.py``) and is listed
here once; :func:`~tensordas.adapters.inject_adapter`, saving and loading find it by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from typing import Any

from torch import nn

from .base import AdapterConfig, AdapterLayer
from .flora import FLoRAConfig, FLoRALinear, create_flora_layer
from .loretta import LoRETTAConfig, LoRETTALinear, create_loretta_layer

__all__ = ["ADAPTERS", "AdapterSpec", "config_from_dict", "get_adapter", "register_adapter"]

LayerFactory = Callable[[str, nn.Linear, Any], AdapterLayer]


@dataclass(frozen=True)
class AdapterSpec:
    """A registered adapter method: its config class, layer class and layer factory."""

    name: str
    config_cls: type[AdapterConfig]
    layer_cls: type[AdapterLayer]
    create_layer: LayerFactory
    aliases: tuple[str, ...] = ()


ADAPTERS: dict[str, AdapterSpec] = {}
_ALIASES: dict[str, str] = {}


def register_adapter(
    name: str,
    config_cls: type[AdapterConfig],
    layer_cls: type[AdapterLayer],
    create_layer: LayerFactory,
    aliases: tuple[str, ...] = (),
) -> AdapterSpec:
    """Register an adapter method under ``name`` (and ``aliases``), after checking its parts fit together."""
    taken = [n for n in (name, *aliases) if n in ADAPTERS or n in _ALIASES]
    if taken:
        raise ValueError(f"adapter name {taken[0]!r} is already registered")
    if not (isinstance(config_cls, type) and issubclass(config_cls, AdapterConfig) and is_dataclass(config_cls)):
        raise TypeError(f"config_cls must be an AdapterConfig dataclass, got {config_cls!r}")
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, AdapterLayer)):
        raise TypeError(f"layer_cls must be an AdapterLayer subclass, got {layer_cls!r}")
    if config_cls.adapter_type != name or layer_cls.adapter_type != name:
        raise ValueError(
            f"adapter {name!r}: config_cls.adapter_type={config_cls.adapter_type!r} and "
            f"layer_cls.adapter_type={layer_cls.adapter_type!r} must both equal the name"
        )
    if not callable(create_layer):
        raise TypeError(f"create_layer must be callable, got {create_layer!r}")
    spec = AdapterSpec(name, config_cls, layer_cls, create_layer, tuple(aliases))
    ADAPTERS[name] = spec
    for alias in aliases:
        _ALIASES[alias] = name
    return spec


def get_adapter(name: str) -> AdapterSpec:
    """The adapter method registered as ``name`` (or an alias); ``ValueError`` listing the known ones."""
    key = _ALIASES.get(name, name)
    if key not in ADAPTERS:
        known = sorted([*ADAPTERS, *_ALIASES])
        raise ValueError(f"Unknown adapter {name!r} (expected one of {', '.join(known)})")
    return ADAPTERS[key]


def config_from_dict(data: dict[str, Any]) -> AdapterConfig:
    """The config object a ``to_dict()`` result (e.g. a saved ``adapter_config.json``) describes."""
    if "adapter_type" not in data:
        raise ValueError("adapter config has no 'adapter_type' field")
    return get_adapter(data["adapter_type"]).config_cls.from_dict(data)


register_adapter("flora", FLoRAConfig, FLoRALinear, create_flora_layer)
register_adapter("loretta", LoRETTAConfig, LoRETTALinear, create_loretta_layer, aliases=("tt",))
