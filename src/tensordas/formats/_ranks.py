"""Parsing of ranks (an int, or one int per mode or bond) shared by the formats' rank rules."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

__all__ = ["RankLike", "as_int", "is_int", "parse_ranks", "positive_int"]

# A rank argument: an int, or a sequence of ints (per mode, bond or core, as the format defines).
RankLike = int | Sequence[int]


def as_int(value: object, what: str) -> int:
    """``value`` as a Python int (numpy ints accepted, bools and floats rejected)."""
    if isinstance(value, bool):
        raise ValueError(f"Invalid {what} {value!r} (expected a positive int)")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"Invalid {what} {value!r} (expected a positive int)") from None


def is_int(rank: object) -> bool:
    """Whether ``rank`` is a single int (Python or numpy, not a bool)."""
    return isinstance(rank, (int, np.integer)) and not isinstance(rank, bool)


def positive_int(rank: object, what: str) -> int:
    """``rank`` as a positive Python int; a ValueError naming ``what`` (e.g. ``"TT"``) and the value otherwise."""
    r = as_int(rank, f"{what} rank")
    if r < 1:
        raise ValueError(f"Invalid {what} rank {rank!r} (expected a positive int)")
    return r


def parse_ranks(rank: RankLike, n: int, what: str, allowed_lengths: Sequence[int] | None = None) -> list[int]:
    """An int (broadcast to ``n`` entries) or a sequence of positive ints, as a list.

    ``allowed_lengths`` lists the accepted sequence lengths (default: ``[n]``).
    """
    allowed = list(allowed_lengths) if allowed_lengths is not None else [n]
    if isinstance(rank, (str, bytes)) or not isinstance(rank, Sequence | np.ndarray):
        return [positive_int(rank, what)] * n
    ranks = [as_int(r, f"{what} rank entry") for r in rank]
    if len(ranks) not in allowed:
        lengths = " or ".join(str(a) for a in allowed)
        raise ValueError(f"Invalid {what} rank {list(ranks)}: expected an int or {lengths} ranks, got {len(ranks)}")
    if any(r < 1 for r in ranks):
        raise ValueError(f"Invalid {what} rank {list(ranks)} (every rank must be a positive int)")
    return ranks
