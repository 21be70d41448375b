"""Initialisation of decomposition cores shared by the models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def make_cores(
    shapes: Sequence[tuple[int, ...]],
    std: float,
    core_scales: Sequence[float] | None,
    generator: torch.Generator | None,
    dtype: torch.dtype | None,
) -> nn.ParameterList:
    """Gaussian cores with entries ``N(0, std^2)``, core k multiplied by ``core_scales[k]``.

    ``core_scales`` makes the core norms deliberately unbalanced (the model output changes by
    their product only, so a product of 1 leaves it unchanged).
    """
    if core_scales is not None and len(core_scales) != len(shapes):
        raise ValueError(f"core_scales has {len(core_scales)} entries for {len(shapes)} cores")
    if std <= 0:
        raise ValueError(f"Invalid std value: {std} (expected > 0)")
    cores = []
    for k, shape in enumerate(shapes):
        t = torch.randn(*shape, generator=generator, dtype=dtype or torch.get_default_dtype()) * std
        if core_scales is not None:
            t = t * float(core_scales[k])
        cores.append(nn.Parameter(t))
    return nn.ParameterList(cores)


def check_shape_rank(shape: Sequence[int], rank: int | Sequence[int], what: str) -> tuple[tuple[int, ...], list[int]]:
    """Validate a tensor shape and an int or per-mode rank; return (shape, per-mode ranks)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"Invalid shape {shape} for {what} (need >= 2 modes of positive size)")
    ranks = [int(rank)] * len(shape) if isinstance(rank, int) else [int(r) for r in rank]
    if len(ranks) != len(shape) or any(r < 1 for r in ranks):
        raise ValueError(f"Invalid rank {rank!r} for {what} of shape {shape}")
    return shape, ranks
