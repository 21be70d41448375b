"""What every tensorized adapter shares: the config fields, the wrapped-``nn.Linear`` layer, pattern matching.

An adapter layer wraps a frozen ``nn.Linear`` ``W x + b`` and adds a low-parameter update::

    y = W x + b + Delta W dropout(x),        Delta W = scaling * T(G_1, .., G_N)

with ``T`` linear in each core ``G_k``. The cores form one core group (``core_groups()``), and
merging replaces the layer by an ``nn.Linear`` with weight ``W + Delta W``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..core_groups import CoreGroup

__all__ = ["AdapterConfig", "AdapterLayer", "match_module_name", "normalize_patterns", "parse_positive_ints"]


def parse_positive_ints(value: Any, n: int, what: str) -> tuple[int, ...]:
    """An int (repeated ``n`` times) or a sequence of ``n`` positive ints, as a tuple; else ``ValueError``."""
    items = [value] * n if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise ValueError(f"Invalid {what} {value!r} (expected a positive int or {n} positive ints)")
    items = list(items)
    if len(items) != n or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
        raise ValueError(f"Invalid {what} {value!r} (expected a positive int or {n} positive ints)")
    return tuple(items)


def normalize_patterns(value: Any, what: str) -> list[str] | str:
    """A regular expression (``str``) or a non-empty list of name suffixes, validated."""
    if isinstance(value, str):
        if not value:
            raise ValueError(f"Invalid {what}: {value!r} (expected a regular expression or a list of names)")
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"Invalid {what}: {value!r} is not a regular expression ({exc})") from None
        return value
    if not isinstance(value, Sequence) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"Invalid {what}: {value!r} (expected a regular expression or a non-empty list of names)")
    return list(value)


def match_module_name(name: str, patterns: list[str] | str) -> bool:
    """PEFT's rule: a ``str`` is a regular expression the full name must match; a list matches
    a module whose name equals an entry or ends with ``"." + entry``."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


@dataclass(kw_only=True)
class AdapterConfig:
    """Fields shared by every tensorized adapter.

    Args:
        target_modules: the ``nn.Linear`` layers to adapt: a list of module names or name
            suffixes (``["query", "value"]``), or one regular expression matched against the
            full module name.
        alpha: multiplier of the update (each adapter documents its ``scaling``), > 0.
        dropout: dropout probability on the adapter's input, in ``[0, 1)``.
        modules_to_save: other modules (e.g. a new classification head) that stay trainable
            and are saved with the adapter; same matching rule as ``target_modules``.
    """

    adapter_type: ClassVar[str] = ""

    target_modules: list[str] | str
    alpha: float = 1.0
    dropout: float = 0.0
    modules_to_save: list[str] | str | None = None

    def __post_init__(self) -> None:
        self.target_modules = normalize_patterns(self.target_modules, "target_modules")
        if self.modules_to_save is not None:
            self.modules_to_save = normalize_patterns(self.modules_to_save, "modules_to_save")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)):
            raise ValueError(f"Invalid alpha value: {self.alpha!r} (expected a positive number)")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"Invalid alpha value: {self.alpha} (expected a finite number > 0)")
        self.alpha = float(self.alpha)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"Invalid dropout value: {self.dropout!r} (expected a probability in [0, 1))")
        self.dropout = float(self.dropout)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, with the ``adapter_type`` that :func:`config_from_dict` dispatches on."""
        return {"adapter_type": self.adapter_type, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdapterConfig:
        """Inverse of :meth:`to_dict` (the ``adapter_type`` key must match this class, if present)."""
        data = dict(data)
        kind = data.pop("adapter_type", cls.adapter_type)
        if kind != cls.adapter_type:
            raise ValueError(f"config is for adapter {kind!r}, not {cls.adapter_type!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        return cls(**data)


class AdapterLayer(nn.Module):
    """A frozen ``nn.Linear`` plus ``Delta W = scaling * T(cores)``; subclasses define the cores.

    Subclasses set ``adapter_type``, create the cores in ``__init__`` and implement
    :meth:`cores` and :meth:`delta_weight`; they may override :meth:`adapter_output` with a
    cheaper path than the dense ``Delta W``. Every parameter outside ``base_layer`` is an
    adapter parameter (trainable, saved by :func:`~tensordas.adapters.save_adapter`).
    """

    adapter_type: ClassVar[str] = ""

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"{type(self).__name__} wraps an nn.Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.scaling = 1.0  # set by the subclass from config.alpha
        self.dropout: nn.Module = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    # ------------------------------------------------------------------ cores
    def cores(self) -> list[nn.Parameter]:
        """The adapter's cores, in product order."""
        raise NotImplementedError

    def adapter_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every parameter outside the wrapped base layer."""
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("base_layer.")]

    def core_groups(self) -> list[CoreGroup]:
        """One group: the cores of ``T`` (a multilinear map, so the group is scale-invariant)."""
        return [CoreGroup(self.adapter_type, self.cores())]

    def _factory_kwargs(self) -> dict[str, Any]:
        w = self.base_layer.weight
        return {"device": w.device, "dtype": w.dtype}

    # ---------------------------------------------------------------- compute
    def delta_weight(self) -> torch.Tensor:
        """``scaling * T(cores)`` as a dense ``(out_features, in_features)`` matrix."""
        raise NotImplementedError

    def adapter_output(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ Delta W^T`` (the adapter branch, without dropout)."""
        return F.linear(x, self.delta_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.adapter_output(self.dropout(x))

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        """A new ``nn.Linear`` with weight ``W + Delta W`` (and the base bias), frozen like the base."""
        base = self.base_layer
        merged = nn.Linear(self.in_features, self.out_features, bias=base.bias is not None, **self._factory_kwargs())
        merged.weight.copy_(base.weight + self.delta_weight().to(base.weight.dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
        merged.requires_grad_(base.weight.requires_grad)
        return merged

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scaling={self.scaling:g}"
