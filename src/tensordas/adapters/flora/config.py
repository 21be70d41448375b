"""Configuration of the FLoRA-style Tucker adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..base import AdapterConfig, parse_positive_ints

__all__ = ["FLoRAConfig"]


@dataclass(kw_only=True)
class FLoRAConfig(AdapterConfig):
    """FLoRA-style adapter ``Delta W = (alpha / sqrt(r_out r_in)) A E B`` on each target ``nn.Linear``.

    Args:
        rank: ``r`` for ``r_out = r_in = r``, or ``(r_out, r_in)``; the cores are
            ``A (out x r_out)``, ``E (r_out x r_in)``, ``B (r_in x in)``. A layer needs
            ``r_out <= out_features`` and ``r_in <= in_features``.
        alpha: the update is scaled by ``alpha / sqrt(r_out * r_in)`` (``alpha / r`` for a square
            core, as in LoRA).
        (other fields: see :class:`~tensordas.adapters.AdapterConfig`)
    """

    adapter_type: ClassVar[str] = "flora"

    rank: int | tuple[int, int] = 8
    alpha: float = 8.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.rank = parse_positive_ints(self.rank, 2, "FLoRA rank")

    @property
    def ranks(self) -> tuple[int, int]:
        """``(r_out, r_in)``."""
        return self.rank  # type: ignore[return-value]
