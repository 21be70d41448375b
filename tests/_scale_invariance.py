"""Independent checks that a core group is really scale-invariant, shared by the discovery tests.

Both follow from the definition of a core group (cores entering through a map linear in each):
the Euler identity ``<G_k, dL/dG_k> = <T, dL/dT>`` for every core ``k``, and an unchanged output
when the cores are multiplied by factors whose product is 1. Neither uses tensordas.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def assert_euler_identity(groups, rel: float = 1e-9, min_abs: float = 1e-6) -> None:
    """After ``backward()``: ``<G_k, dL/dG_k>`` is the same number for every core of each group."""
    for g in groups:
        inner = [float((c.detach() * c.grad).sum()) for c in g.cores]
        assert abs(inner[0]) > min_abs, (g.name, inner)  # a trivial 0 = 0 would prove nothing
        assert max(inner) - min(inner) <= rel * max(abs(v) for v in inner), (g.name, inner)


def assert_unit_product_scaling_keeps(groups, output: Callable[[], torch.Tensor], base: float = 2.0) -> None:
    """Scaling the cores of every group by ``base, base^2, ..`` times a last factor making the product
    1 leaves ``output()`` unchanged (float64 tolerances)."""
    before = output().detach()
    with torch.no_grad():
        for g in groups:
            scales = [base ** (k + 1) for k in range(len(g.cores) - 1)]
            scales.append(1.0 / math.prod(scales))
            for c, s in zip(g.cores, scales):
                c.mul_(s)
    torch.testing.assert_close(output(), before, rtol=1e-10, atol=1e-12)
