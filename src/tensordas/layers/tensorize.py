"""Swap chosen ``nn.Linear``/``nn.Conv2d`` layers of any model for tensorized ones."""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from .._deprecation import renamed_keyword
from ..formats import RankLike
from ._formats import weight_format
from .factorization import Factorization
from .from_dense import _check_dense, dense_layout, from_dense, rank_for_ratio, tensorized_like

__all__ = ["LayerReport", "TensorizeReport", "tensorize"]

# A selector: a module-name pattern (fnmatch, e.g. "layer1.*" or "*.conv2") or a module type.
Selector = str | type


@dataclass
class LayerReport:
    """One swapped layer."""

    name: str
    kind: str  # "Linear" or "Conv2d"
    format: str
    rank: tuple[int, ...]
    in_factors: tuple[int, ...]
    out_factors: tuple[int, ...]
    params_before: int  # weight + bias of the dense layer
    params_after: int  # cores + bias of the tensorized layer
    weight_params: int  # entries of the dense weight
    core_params: int  # entries of the cores
    ratio: float  # weight_params / core_params (the bias, unchanged, is not counted)
    relative_error: float | None  # ||W - W_hat||_F / ||W||_F after decomposition; None for a fresh init


@dataclass
class TensorizeReport:
    """What :func:`tensorize` did."""

    format: str
    init: str
    layers: list[LayerReport] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (layer name, reason)
    model_params_before: int = 0
    model_params_after: int = 0

    @property
    def method(self) -> str:
        """Deprecated name of :attr:`format`."""
        warnings.warn("TensorizeReport.method is deprecated, use .format", DeprecationWarning, stacklevel=2)
        return self.format

    @property
    def layer_ratio(self) -> float:
        """Dense weight entries / core entries over all swapped layers."""
        cores = sum(r.core_params for r in self.layers)
        return sum(r.weight_params for r in self.layers) / cores if cores else 1.0

    @property
    def model_ratio(self) -> float:
        """All parameters of the model before / after."""
        return self.model_params_before / self.model_params_after

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with both ratios)."""
        d = asdict(self)
        d["skipped"] = [list(s) for s in self.skipped]
        d["layer_ratio"] = self.layer_ratio
        d["model_ratio"] = self.model_ratio
        return d


def _matches(name: str, module: nn.Module, selectors: Sequence[Selector]) -> bool:
    for s in selectors:
        if isinstance(s, str):
            if fnmatch.fnmatchcase(name, s):
                return True
        elif isinstance(s, type):
            if isinstance(module, s):
                return True
        else:
            raise ValueError(f"Invalid layer selector {s!r} (expected a name pattern or a module type)")
    return False


def _as_selectors(value: Selector | Sequence[Selector] | None, what: str) -> list[Selector] | None:
    if value is None:
        return None
    if isinstance(value, (str, type)):
        return [value]
    if not isinstance(value, Sequence):
        raise ValueError(f"Invalid {what} {value!r} (expected name patterns or module types)")
    return list(value)


def _candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear/Conv2d modules, outside ``nn.MultiheadAttention`` (which reads ``out_proj.weight`` directly)."""
    inside_mha: list[str] = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    out = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        if any(name.startswith(p + ".") or p == "" for p in inside_mha):
            continue
        out.append((name, m))
    return out


@renamed_keyword("method", "format")
def tensorize(
    model: nn.Module,
    format: str = "tt",
    *,
    rank: RankLike | None = None,
    ratio: float | None = None,
    include: Selector | Sequence[Selector] | None = None,
    exclude: Selector | Sequence[Selector] | None = None,
    init: Literal["decompose", "random"] = "decompose",
    factorization: int | Factorization | None = None,
    inplace: bool = False,
    errors: Literal["raise", "skip"] = "raise",
    nonlinearity: str = "relu",
    **kwargs: Any,
) -> tuple[nn.Module, TensorizeReport]:
    """Replace chosen ``nn.Linear``/``nn.Conv2d`` layers of ``model`` by tensorized layers.

    Args:
        model: any module. It is deep-copied first unless ``inplace=True``; the (possibly new) model is returned.
            If ``model`` itself is a Linear/Conv2d, the returned model is the new layer.
        format: the tensor format, ``"tt"``, ``"tr"``, ``"cp"`` or ``"tucker"`` (or any format registered in
            :mod:`tensordas.formats`; ``method=`` is the deprecated name of this argument).
        rank, ratio: exactly one; the same for every chosen layer (``ratio`` picks each layer's largest int rank
            with ``dense weight entries / core entries >= ratio``).
        include: module-name patterns (``fnmatch``, e.g. ``"layer2.*"``) and/or module types; a layer is chosen if
            it matches one. None: every ``nn.Linear``/``nn.Conv2d`` outside ``nn.MultiheadAttention``.
        exclude: patterns/types removed from the choice (e.g. ``["conv1", "fc"]`` for the stem and the head).
        init: ``"decompose"`` fits the cores to the dense weight (:func:`from_dense`); ``"random"`` draws fresh
            variance-preserving cores (``nonlinearity`` sets the gain).
        factorization: as for the layers (None: automatic).
        errors: ``"raise"`` stops at the first layer that cannot be tensorized (a grouped convolution, a rank or
            ratio that does not fit); ``"skip"`` leaves it dense and lists it in ``report.skipped``.
        **kwargs: passed to :func:`from_dense` (``algorithm``, ``balance``, ``random_state``, TensorLy options).

    Returns:
        ``(model, report)``: the report lists each swapped layer (rank, parameters before/after, ratio, relative
        reconstruction error), the skipped ones, and the model's parameter counts before and after.

    Raises:
        ValueError: for bad arguments, when no layer matches, or (with ``errors="raise"``) a layer that fails.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"tensorize expects an nn.Module, got {type(model).__name__}")
    fmt = weight_format(format)
    if (rank is None) == (ratio is None):
        raise ValueError(f"tensorize needs exactly one of rank and ratio, got rank={rank!r}, ratio={ratio!r}")
    if init not in ("decompose", "random"):
        raise ValueError(f"Invalid init {init!r} (expected 'decompose' or 'random')")
    if errors not in ("raise", "skip"):
        raise ValueError(f"Invalid errors {errors!r} (expected 'raise' or 'skip')")
    inc, exc = _as_selectors(include, "include"), _as_selectors(exclude, "exclude") or []
    params_before = sum(p.numel() for p in model.parameters())
    if not inplace:
        model = copy.deepcopy(model)
    chosen = [(n, m) for n, m in _candidates(model) if (inc is None or _matches(n, m, inc)) and not _matches(n, m, exc)]
    if not chosen:
        raise ValueError(
            f"tensorize: no nn.Linear/nn.Conv2d layer of {type(model).__name__} matches include={include!r}, "
            f"exclude={exclude!r}"
        )
    report = TensorizeReport(format=fmt.name, init=init, model_params_before=params_before)
    for name, layer in chosen:
        label = name or "<model>"
        try:
            _check_dense(layer)
            if init == "decompose":
                new = from_dense(layer, fmt.name, rank=rank, ratio=ratio, factorization=factorization, **kwargs)
            else:
                layer_rank = (
                    rank
                    if ratio is None
                    else rank_for_ratio(fmt.name, dense_layout(layer, factorization, fmt.name), ratio)
                )
                new = tensorized_like(layer, fmt.name, layer_rank, factorization, nonlinearity)
        except ValueError as e:
            if errors == "raise":
                raise ValueError(f"tensorize: layer {label!r}: {e}") from e
            report.skipped.append((label, str(e)))
            continue
        error = None
        if init == "decompose":
            with torch.no_grad():
                w = layer.weight.detach().to(torch.float64)
                diff = (new.dense_weight().detach().to(torch.float64) - w).norm()
                error = float(diff / w.norm()) if float(w.norm()) > 0 else float(diff)
        weight_numel = layer.weight.numel()
        bias_numel = layer.bias.numel() if layer.bias is not None else 0
        entry = LayerReport(
            name=label,
            kind="Linear" if isinstance(layer, nn.Linear) else "Conv2d",
            format=fmt.name,
            rank=tuple(new.rank),
            in_factors=new.layout.in_factors,
            out_factors=new.layout.out_factors,
            params_before=weight_numel + bias_numel,
            params_after=new.num_core_params + bias_numel,
            weight_params=weight_numel,
            core_params=new.num_core_params,
            ratio=weight_numel / new.num_core_params,
            relative_error=error,
        )
        report.layers.append(entry)
        if name == "":
            model = new
        else:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, new)
    report.model_params_after = sum(p.numel() for p in model.parameters())
    return model, report
