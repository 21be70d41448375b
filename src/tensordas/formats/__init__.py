"""Tensor formats (CP, Tucker, TT, TR), each defined once and registered by name.

A format (:class:`TensorFormat`) holds its rank rules, core shapes, reconstruction through TensorLy's PyTorch
backend, sampled entries, decomposition of a dense tensor (TensorLy, NumPy backend, float64) and its default
rank. The completion models (:func:`tensordas.models.model_class`) and the tensorized layers
(:class:`tensordas.layers.TensorizedLinear`, ...) are built from it, so a format registered here works in both.

A new format is one module (a :class:`TensorFormat` subclass) plus one entry in :data:`_BUILTIN` below (and its
import); or, from user code, one call to :func:`register_format`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import overload

from ._base import TensorFormat
from ._cores import balanced_norm, load_cores, rebalance_
from ._ranks import RankLike, as_int
from ._tensorly import numpy_backend, pytorch_backend
from .cp import CP
from .tr import TR
from .tt import TT
from .tucker import Tucker

__all__ = [
    "CP",
    "DEFAULT_RANKS",
    "FORMATS",
    "TR",
    "TT",
    "RankLike",
    "TensorFormat",
    "Tucker",
    "as_int",
    "available_formats",
    "balanced_norm",
    "get_format",
    "load_cores",
    "numpy_backend",
    "pytorch_backend",
    "rebalance_",
    "register_format",
    "unregister_format",
]

_REGISTRY: dict[str, TensorFormat] = {}


def register_format(fmt: TensorFormat, *, replace: bool = False) -> TensorFormat:
    """Add ``fmt`` to the registry under ``fmt.name``; models, layers, ``tensorize`` and networks then accept it.

    Raises ValueError for a malformed format or a name already taken (unless ``replace=True``).
    """
    if not isinstance(fmt, TensorFormat):
        raise ValueError(f"register_format expects a TensorFormat instance, got {type(fmt).__name__}")
    name = fmt.name
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"Invalid format name {name!r} (expected a lower-case identifier such as 'tt')")
    if not fmt.algorithms:
        raise ValueError(f"format {name!r} lists no decomposition algorithm")
    if fmt.layer_view not in ("modes", "pairs"):
        raise ValueError(f"format {name!r}: invalid layer_view {fmt.layer_view!r} (expected 'modes' or 'pairs')")
    if fmt.layer_view == "pairs" and fmt.n_cores(3) != 3:
        raise ValueError(f"format {name!r}: layer_view 'pairs' needs one core per mode")
    if isinstance(fmt.default_rank, bool) or not isinstance(fmt.default_rank, int) or fmt.default_rank < 1:
        raise ValueError(f"format {name!r}: invalid default_rank {fmt.default_rank!r} (expected a positive int)")
    if name in _REGISTRY and not replace:
        raise ValueError(f"a tensor format named {name!r} is already registered (pass replace=True to replace it)")
    _REGISTRY[name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    """Remove the format called ``name`` (a KeyError-free no-op if it is not registered)."""
    _REGISTRY.pop(name, None)


def get_format(name: str) -> TensorFormat:
    """The format called ``name`` (case-insensitive), or a ValueError listing the registered ones."""
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(f"Unknown tensor format {name!r} (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name.lower()]


def available_formats() -> tuple[str, ...]:
    """The names of the registered formats, in registration order."""
    return tuple(_REGISTRY)


class _FormatNames(Sequence[str]):
    """The registered format names as a read-only tuple-like sequence that follows the registry."""

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...
    def __getitem__(self, i):
        return tuple(_REGISTRY)[i]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_REGISTRY))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in _REGISTRY

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) and not isinstance(other, str) else other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


class _DefaultRanks(Mapping[str, int]):
    """Format name -> its ``default_rank``, following the registry."""

    def __getitem__(self, name: str) -> int:
        return _REGISTRY[name].default_rank

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(_REGISTRY))

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


FORMATS: Sequence[str] = _FormatNames()  # ("cp", "tucker", "tt", "tr") plus any registered later
DEFAULT_RANKS: Mapping[str, int] = _DefaultRanks()  # {"cp": 32, "tucker": 8, "tt": 8, "tr": 8} plus later ones

# The registry. A new built-in format: its module, and one entry here.
_BUILTIN = (CP(), Tucker(), TT(), TR())
for _fmt in _BUILTIN:
    register_format(_fmt)
