"""Put tensorized adapters on any ``nn.Module``, save and load them, merge them for inference.

::

    cfg = FLoRAConfig(rank=8, target_modules=["query", "value"], modules_to_save=["classifier"])
    model = inject_adapter(model, cfg)          # in place: base frozen, adapters trainable
    groups = td.find_core_groups(model)         # one group per adapted layer
    ...train...
    save_adapter(model, "run/adapter")          # adapter_config.json + adapter_model.pt
    model2 = load_adapter(fresh_base_model, "run/adapter")
    plain = merge_adapter(model2)               # nn.Linear layers with W + Delta W
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .base import AdapterConfig, AdapterLayer, match_module_name
from .registry import config_from_dict, get_adapter

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "adapter_config",
    "adapter_layers",
    "adapter_state_dict",
    "inject_adapter",
    "load_adapter",
    "merge_adapter",
    "save_adapter",
]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.pt"
_CONFIG_ATTR = "tensordas_adapter_config"  # where inject_adapter records the config on the model


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    """Every tensorized adapter layer of ``model``, by module path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLayer)}


def adapter_config(model: nn.Module) -> AdapterConfig:
    """The config ``inject_adapter`` recorded on ``model``; ``ValueError`` if it has none."""
    config = getattr(model, _CONFIG_ATTR, None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no tensordas adapter (use inject_adapter or load_adapter)")
    return config


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _saved_modules(model: nn.Module, patterns: list[str] | str | None) -> dict[str, nn.Module]:
    if patterns is None:
        return {}
    return {n: m for n, m in model.named_modules() if n and match_module_name(n, patterns)}


def inject_adapter(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Wrap every ``nn.Linear`` of ``model`` that ``config.target_modules`` matches, in place.

    All parameters of ``model`` are frozen except the new adapter parameters and those of
    ``config.modules_to_save``. Every layer is built (and every rank checked) before the model
    is changed, so a ``ValueError`` leaves ``model`` as it was.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: the patterns match no ``nn.Linear`` (or ``modules_to_save`` matches nothing),
            a rank is too large for a layer, or ``model`` already carries adapters.
    """
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"config must be an AdapterConfig (e.g. FLoRAConfig), got {type(config).__name__}")
    spec = get_adapter(config.adapter_type)
    if adapter_layers(model) or getattr(model, _CONFIG_ATTR, None) is not None:
        raise ValueError(f"{type(model).__name__} already has tensordas adapters; merge or reload the base model first")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n}
    targets = {n: m for n, m in linears.items() if match_module_name(n, config.target_modules)}
    if not targets:
        matched_other = [
            f"{n} ({type(m).__name__})"
            for n, m in model.named_modules()
            if n and match_module_name(n, config.target_modules)
        ]
        hint = f"; it matched only non-Linear modules: {', '.join(matched_other[:5])}" if matched_other else ""
        sample = ", ".join(list(linears)[:6]) or "none"
        raise ValueError(
            f"target_modules {config.target_modules!r} matched no nn.Linear layer of {type(model).__name__}"
            f"{hint} (linear layers: {sample}{', ...' if len(linears) > 6 else ''})"
        )
    saved = _saved_modules(model, config.modules_to_save)
    if config.modules_to_save is not None and not saved:
        raise ValueError(f"modules_to_save {config.modules_to_save!r} matched no module of {type(model).__name__}")
    layers = {name: spec.create_layer(name, base, config) for name, base in targets.items()}
    model.requires_grad_(False)
    for name, layer in layers.items():
        _set_submodule(model, name, layer)
        for _, p in layer.adapter_named_parameters():
            p.requires_grad_(True)
    for module in saved.values():
        module.requires_grad_(True)
    setattr(model, _CONFIG_ATTR, config)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter parameters (and ``modules_to_save`` state) of ``model``, by full name, detached."""
    config = adapter_config(model)
    state: dict[str, torch.Tensor] = {}
    for path, layer in adapter_layers(model).items():
        for n, p in layer.adapter_named_parameters():
            state[f"{path}.{n}"] = p.detach()
    for path, module in _saved_modules(model, config.modules_to_save).items():
        for n, t in module.state_dict().items():
            state.setdefault(f"{path}.{n}", t.detach())
    return state


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_adapter(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.pt`` (adapter weights only) into ``directory``.

    Each file is written to a temporary name and renamed; the config is written last, so a
    directory with a config always has the matching weights.
    """
    config = adapter_config(model)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.cpu().clone() for k, v in adapter_state_dict(model).items()}
    _atomic_write(out / WEIGHTS_NAME, lambda p: torch.save(state, p))
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    _atomic_write(out / CONFIG_NAME, lambda p: Path(p).write_text(text))
    return out


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Inject the adapter saved in ``directory`` into the base ``model`` and load its weights (in place).

    Raises:
        ValueError: missing files, an unknown adapter type, or weights that do not fit the model.
    """
    src = Path(directory)
    if not (src / CONFIG_NAME).is_file() or not (src / WEIGHTS_NAME).is_file():
        raise ValueError(f"{src} is not a saved tensordas adapter (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    config = config_from_dict(json.loads((src / CONFIG_NAME).read_text()))
    state = torch.load(src / WEIGHTS_NAME, map_location="cpu", weights_only=True)
    trainable = {p: p.requires_grad for p in model.parameters()}
    inject_adapter(model, config)
    expected = adapter_state_dict(model)
    try:
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"saved adapter does not fit {type(model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        for name, target in expected.items():  # every check before the first copy
            if target.shape != state[name].shape:
                raise ValueError(
                    f"saved adapter tensor {name!r} has shape {tuple(state[name].shape)}, the model expects "
                    f"{tuple(target.shape)}"
                )
    except ValueError:
        _remove_adapter(model, trainable)  # a refused adapter leaves the model as it was
        raise
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(state[name])
    return model


def _remove_adapter(model: nn.Module, trainable: dict[nn.Parameter, bool]) -> None:
    """Undo :func:`inject_adapter`: put the base layers back and restore ``requires_grad``."""
    for name, layer in adapter_layers(model).items():
        _set_submodule(model, name, layer.base_layer)
    for p, flag in trainable.items():
        p.requires_grad_(flag)
    if hasattr(model, _CONFIG_ATTR):
        delattr(model, _CONFIG_ATTR)


def merge_adapter(model: nn.Module) -> nn.Module:
    """Replace every adapter layer by an ``nn.Linear`` with weight ``W + Delta W`` (in place; for inference).

    ``modules_to_save`` keep their trained weights; the model no longer carries an adapter config.
    """
    layers = adapter_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no tensordas adapter layers to merge")
    for name, layer in layers.items():
        _set_submodule(model, name, layer.merged_linear())
    if hasattr(model, _CONFIG_ATTR):
        delattr(model, _CONFIG_ATTR)
    return model
