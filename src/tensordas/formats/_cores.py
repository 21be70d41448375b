"""Cores as parameters: the balanced initialisation rule, loading a decomposition's arrays, rebalancing."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["balanced_norm", "load_cores", "rebalance_"]


def balanced_norm(core_sizes: Sequence[int], n_terms: int, variance: float = 1.0) -> float:
    """The Frobenius norm ``sqrt(c)`` that every core gets in a balanced initialisation (Norm Deviation Q = 0).

    A tensor entry is a sum of ``P = n_terms`` products of one entry from each of the C cores (``m_k`` entries
    in core k). Core entries with variance ``c / m_k`` give the tensor entries the variance
    ``P * prod_k (c / m_k)``; setting it to ``variance`` gives ``c = (variance * prod_k m_k / P)^(1/C)``.
    """
    log_c = (math.log(variance) - math.log(n_terms) + sum(math.log(m) for m in core_sizes)) / len(core_sizes)
    return math.exp(0.5 * log_c)


@torch.no_grad()
def rebalance_(cores: Sequence[torch.Tensor]) -> None:
    """Rescale ``cores`` in place to equal Frobenius norms with factors whose product is 1.

    The multilinear output is unchanged; every squared norm becomes the geometric mean of the old ones.
    Does nothing if some core is zero (no finite rescaling balances it).
    """
    norms = torch.stack([c.detach().double().norm() for c in cores])
    if not bool((norms > 0).all()) or not bool(torch.isfinite(norms).all()):
        return
    log_mean = norms.log().mean()
    for c, n in zip(cores, norms):
        c.mul_(float(torch.exp(log_mean - n.log())))


@torch.no_grad()
def load_cores(params: Sequence[nn.Parameter], arrays: Sequence[np.ndarray], what: str) -> None:
    """Copy a decomposition's arrays into the parameters; a non-finite core or a shape mismatch is a clear error."""
    for k, (p, a) in enumerate(zip(params, arrays)):
        if not np.isfinite(np.asarray(a)).all():
            raise ValueError(
                f"{what}: TensorLy returned core {k} with values that are not finite (the decomposition diverged; "
                "lower the rank or pick another algorithm)"
            )
        if tuple(a.shape) != tuple(p.shape):
            raise ValueError(
                f"{what}: TensorLy returned core {k} of shape {tuple(a.shape)}, expected {tuple(p.shape)} "
                "(the requested rank is not reachable by this algorithm; lower it or pick another algorithm)"
            )
        p.copy_(torch.as_tensor(np.asarray(a)).to(p.dtype))
