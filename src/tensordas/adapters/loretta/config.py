"""Configuration of the LoRETTA-style tensor-train adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import AdapterConfig, parse_positive_ints

__all__ = ["LoRETTAConfig"]


@dataclass(kw_only=True)
class LoRETTAConfig(AdapterConfig):
    """Tensor-train adapter: ``Delta W = alpha * TT-matrix(G_1, .., G_d)`` on each target ``nn.Linear``.

    Args:
        rank: the internal TT ranks ``r_1..r_{d-1}`` (an int for all of them, or ``num_cores - 1`` ints).
            A rank above its unfolding bound ``min(prod_{i<=k} m_i n_i, prod_{i>k} m_i n_i)`` is rejected.
        num_cores: ``d >= 2``, the number of TT cores.
        out_factors, in_factors: ``d`` ints whose product is the layer's ``out_features`` /
            ``in_features`` (the TT-matrix mode sizes ``m_k``, ``n_k``); ``None`` factorises each
            dimension as evenly as its prime factors allow. Fixed factors apply to every target
            layer, so they suit targets of one shape.
        alpha: ``scaling = alpha`` (the cores' initial scale already normalises the update).
        (other fields: see :class:`~tensordas.adapters.AdapterConfig`)
    """

    adapter_type: ClassVar[str] = "loretta"

    rank: int | tuple[int, ...] = 4
    num_cores: int = 3
    out_factors: tuple[int, ...] | None = None
    in_factors: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.num_cores, bool) or not isinstance(self.num_cores, int) or self.num_cores < 2:
            raise ValueError(f"Invalid num_cores value: {self.num_cores!r} (expected an int >= 2)")
        self.rank = parse_positive_ints(self.rank, self.num_cores - 1, "TT rank")
        for field_name in ("out_factors", "in_factors"):
            value = getattr(self, field_name)
            if value is not None:
                if isinstance(value, int):
                    raise ValueError(f"Invalid {field_name} {value!r} (expected {self.num_cores} positive ints)")
                setattr(self, field_name, parse_positive_ints(value, self.num_cores, field_name))

    @property
    def ranks(self) -> tuple[int, ...]:
        """The internal TT ranks ``(r_1, .., r_{d-1})``."""
        return self.rank  # type: ignore[return-value]
