"""What tensorized linear and convolution layers share: cores, initialisation, core groups."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from ..core_groups import CoreGroup
from ..formats import RankLike, balanced_norm
from ._formats import weight_format
from .factorization import WeightLayout

__all__ = ["INITS", "TensorizedLayer", "reused_weights"]

INITS = ("normal", "balanced")
Init = Literal["normal", "balanced"]


class TensorizedLayer(nn.Module):
    r"""Base class: a weight stored as the cores of a CP, Tucker, TT or TR tensor, plus an optional bias.

    **Initialisation** (variance preserving, He/Kaiming-like). A weight entry is a sum of ``P`` products of
    one entry from each of the ``N`` cores (``P = R`` for CP, ``prod(ranks)`` for Tucker, TT and TR). With
    independent zero-mean core entries of variances ``sigma_k^2`` the entries of the weight are uncorrelated
    with variance ``P * prod_k sigma_k^2``. The cores are drawn so that this equals
    ``gain^2 / fan_in`` (``gain = nn.init.calculate_gain(nonlinearity)``: ``2 / fan_in`` for ReLU,
    ``1 / fan_in`` for ``"linear"``), the variance of ``nn.init.kaiming_normal_``:

    - ``init="normal"``: every core ``N(0, sigma^2)`` with ``sigma = (gain^2 / (fan_in * P))^(1 / (2N))``;
    - ``init="balanced"``: every core gets the same squared Frobenius norm ``c`` (Norm Deviation Q = 0), with
      ``P * prod_k (c / m_k) = gain^2 / fan_in`` for cores of ``m_k`` entries.

    The bias, as in ``nn.Linear``/``nn.Conv2d``, is ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
    """

    def __init__(
        self,
        layout: WeightLayout,
        format: str,
        rank: RankLike,
        bias: bool,
        fan_in: int,
        nonlinearity: str,
        init: Init,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        fmt = weight_format(format)
        if init not in INITS:
            raise ValueError(f"Invalid init {init!r} (expected one of {', '.join(INITS)})")
        self.gain = nn.init.calculate_gain(nonlinearity)  # raises ValueError for an unknown nonlinearity
        self.format = fmt.name
        self.layout = layout
        self.rank = fmt.resolve_rank(layout, rank)
        self.fan_in = fan_in
        self.nonlinearity = nonlinearity
        self.init = init
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise ValueError(f"Invalid dtype {dtype!r} for a tensorized layer (expected a floating-point dtype)")
        factory = {"device": device, "dtype": dtype}
        self.cores = nn.ParameterList(
            [nn.Parameter(torch.empty(s, **factory)) for s in fmt.core_shapes(layout, self.rank)]
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(layout.out_size, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw the cores and the bias afresh (see the class docstring for the rule)."""
        target = self.gain**2 / self.fan_in
        n = len(self.cores)
        n_terms = weight_format(self.format).n_terms(self.rank)
        if self.init == "normal":
            std = math.exp((math.log(target) - math.log(n_terms)) / (2 * n))
            for c in self.cores:
                c.normal_(0.0, std, generator=generator)
        else:
            norm = balanced_norm([c.numel() for c in self.cores], n_terms, target)
            for c in self.cores:
                c.normal_(0.0, 1.0, generator=generator)
                c.mul_(norm / c.norm().clamp_min(torch.finfo(c.dtype).tiny))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.fan_in)
            if generator is None:
                self.bias.uniform_(-bound, bound)
            else:
                self.bias.copy_(torch.rand(self.bias.shape, generator=generator, dtype=self.bias.dtype) * 2 - 1)
                self.bias.mul_(bound)

    def canonical_weight(self) -> torch.Tensor:
        """The reconstructed weight in canonical layout ``(in_size, out_size, kernel)`` (differentiable).

        Inside :func:`reused_weights` and without autograd it is rebuilt once and reused."""
        memo = getattr(self, "_weight_memo", None)
        if memo is None or torch.is_grad_enabled():
            return weight_format(self.format).reconstruct(self.layout, list(self.cores))
        # the cores as they are now: an in-place change (an optimizer step, load_state_dict, MSAM moving the
        # weights) bumps a version, a copied or moved layer has other tensors; either rebuilds
        key = tuple((id(c), c._version, _storage(c)) for c in self.cores)
        if memo.get("key") != key:
            memo["weight"] = weight_format(self.format).reconstruct(self.layout, list(self.cores))
            memo["key"] = key
        return memo["weight"]

    def core_groups(self) -> list[CoreGroup]:
        """One group: all cores (the bias is not a core)."""
        return [CoreGroup(self.format, list(self.cores))]

    @property
    def num_core_params(self) -> int:
        """Number of entries in the cores."""
        return sum(c.numel() for c in self.cores)

    @property
    def compression_ratio(self) -> float:
        """Dense weight entries / core entries (the bias, the same in both, is not counted)."""
        return self.layout.dense_numel / self.num_core_params

    def _format_repr(self) -> str:
        return (
            f"format={self.format!r}, rank={self.rank}, in_factors={self.layout.in_factors}, "
            f"out_factors={self.layout.out_factors}, bias={self.bias is not None}"
        )


def _storage(t: torch.Tensor) -> int | None:
    """Where ``t``'s data lives (None for a tensor without storage of its own, e.g. a sharded DTensor)."""
    try:
        return t.data_ptr()
    except RuntimeError:
        return None


@contextlib.contextmanager
def reused_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, each tensorized layer of ``model`` rebuilds its weight from its cores once and reuses it
    in every forward pass without autograd (an evaluation over several batches or data sets). A core changed in
    place, or replaced, rebuilds it; passes with autograd rebuild as usual. Every caller gets the same tensor:
    do not modify it in place. Leaving the block forgets the weights (a block around this one keeps its own)."""
    layers = [m for m in model.modules() if isinstance(m, TensorizedLayer)]
    outer = [getattr(layer, "_weight_memo", None) for layer in layers]  # a block around this one keeps its own
    for layer in layers:
        layer._weight_memo = {}
    try:
        yield model
    finally:
        for layer, memo in zip(layers, outer):
            layer._weight_memo = memo
