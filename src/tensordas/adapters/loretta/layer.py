r"""The LoRETTA-style tensor-train adapter layer (Yang et al., "LoRETTA: Low-Rank Economic Tensor-Train
Adaptation for Ultra-Low-Parameter Fine-Tuning of Large Language Models", NAACL 2024).

The update is one TT-matrix (TT-operator). With ``out = m_1 .. m_d``, ``in = n_1 .. n_d`` and cores
``G_k`` of shape ``(r_{k-1}, m_k, n_k, r_k)`` (``r_0 = r_d = 1``)::

    Delta W[(i_1..i_d), (j_1..j_d)] = scaling * G_1[:, i_1, j_1, :] G_2[:, i_2, j_2, :] .. G_d[:, i_d, j_d, :]

(row index ``i = i_1 m_2..m_d + .. + i_d``, row-major; the same for columns). ``Delta W`` is linear
in each core, so ``[G_1, .., G_d]`` is one scale-invariant core group. LoRETTA's ``rep`` variant
writes LoRA's two factors in TT form; here the whole update is one TT-matrix, which keeps a single
multilinear map (and so a single core group) per layer.

Initialisation: cores ``G_1..G_{d-1}`` are i.i.d. ``N(0, sigma^2)`` with
``sigma^2 = (in * r_1 .. r_{d-1})^(-1/d)`` (the variance a fully random TT-matrix would need for
``Var(Delta W_ij) = 1 / in``); the last core ``G_d`` starts at zero, so the adapted model starts as
the base model. DAS keeps ``s = 1`` for a zero core.

The forward pass forms the dense ``Delta W`` (cost ``O(out * in * r)``, small next to the layer's
own product for batches of more than ``r`` rows) and adds ``x @ Delta W^T``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..base import AdapterLayer
from .config import LoRETTAConfig

__all__ = ["LoRETTALinear", "balanced_factors", "tt_matrix", "tt_matrix_ranks"]


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def balanced_factors(n: int, d: int) -> tuple[int, ...]:
    """``d`` factors of ``n`` (descending) as close to ``n^(1/d)`` as greedy prime packing gets."""
    buckets = [1] * d
    for p in sorted(_prime_factors(n), reverse=True):
        buckets[buckets.index(min(buckets))] *= p
    return tuple(sorted(buckets, reverse=True))


def tt_matrix_ranks(
    out_factors: tuple[int, ...], in_factors: tuple[int, ...], ranks: tuple[int, ...], name: str = ""
) -> tuple[int, ...]:
    """The full rank tuple ``(1, r_1, .., r_{d-1}, 1)``; ``ValueError`` if a rank exceeds its unfolding bound."""
    sizes = [m * n for m, n in zip(out_factors, in_factors)]
    for k, r in enumerate(ranks, start=1):
        bound = min(math.prod(sizes[:k]), math.prod(sizes[k:]))
        if r > bound:
            where = f" for layer {name!r}" if name else ""
            raise ValueError(
                f"TT rank {r} (rank {k} of {list(ranks)}) is too large{where}: with out_factors {out_factors} and "
                f"in_factors {in_factors} it can be at most {bound}"
            )
    return (1, *ranks, 1)


def tt_matrix(cores: list[torch.Tensor]) -> torch.Tensor:
    """The dense ``(prod m_k, prod n_k)`` matrix of TT-matrix cores ``(r_{k-1}, m_k, n_k, r_k)``."""
    first = cores[0]
    t = first.reshape(first.shape[1], first.shape[2], first.shape[3])  # (M, N, r)
    for g in cores[1:]:
        rows, cols, _ = t.shape
        _, m, n, r_next = g.shape
        t = torch.einsum("MNr,rmns->MmNns", t, g).reshape(rows * m, cols * n, r_next)
    return t.reshape(t.shape[0], t.shape[1])


class LoRETTALinear(AdapterLayer):
    """``y = W x + b + alpha * TT-matrix(G_1..G_d) dropout(x)`` around a frozen ``nn.Linear``.

    Args:
        base_layer: the layer to adapt.
        config: TT ranks, number of cores, mode factorisations, ``alpha``, dropout.
        name: the layer's module path, for error messages.

    Raises:
        ValueError: if the given factors do not multiply to the layer's dimensions, or a TT rank
            exceeds its unfolding bound.
    """

    adapter_type = "loretta"

    def __init__(self, base_layer: nn.Linear, config: LoRETTAConfig, name: str = "") -> None:
        super().__init__(base_layer, config)
        d = config.num_cores
        label = name or type(base_layer).__name__
        out_f = config.out_factors or balanced_factors(self.out_features, d)
        in_f = config.in_factors or balanced_factors(self.in_features, d)
        for what, factors, size in (("out_factors", out_f, self.out_features), ("in_factors", in_f, self.in_features)):
            if math.prod(factors) != size:
                raise ValueError(
                    f"{what} {factors} multiply to {math.prod(factors)}, but layer {label!r} has {size} "
                    f"{'outputs' if what == 'out_factors' else 'inputs'}"
                )
        self.out_factors, self.in_factors = tuple(out_f), tuple(in_f)
        self.tt_ranks = tt_matrix_ranks(self.out_factors, self.in_factors, config.ranks, name=label)
        self.scaling = config.alpha
        kw = self._factory_kwargs()
        std = (self.in_features * math.prod(config.ranks)) ** (-0.5 / d)
        self.tt_cores = nn.ParameterList()
        for k in range(d):
            shape = (self.tt_ranks[k], self.out_factors[k], self.in_factors[k], self.tt_ranks[k + 1])
            core = torch.zeros(shape, **kw)
            if k < d - 1:
                nn.init.normal_(core, std=std)
            self.tt_cores.append(nn.Parameter(core))

    def cores(self) -> list[nn.Parameter]:
        return list(self.tt_cores)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * tt_matrix(list(self.tt_cores))

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, out_factors={self.out_factors}, in_factors={self.in_factors}, "
            f"tt_ranks={self.tt_ranks}"
        )
