"""Factorisation of a layer's input and output sizes into tensor modes.

A tensorized layer views its ``in x out`` weight (times the kernel for a convolution) as a tensor
whose modes are factors of the sizes: ``784 = 7 * 4 * 4 * 7``. The automatic choice takes the most
balanced factors (smallest largest factor) and puts the largest ones at the ends, where TT/TR cores
have the smallest bond ranks. Sizes with too few prime factors (primes, small sizes) get fewer modes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from .. import formats
from ..formats import as_int

__all__ = ["Factorization", "WeightLayout", "auto_factorization", "factorize", "default_modes", "resolve_layout"]

# (input factors, output factors), of equal length; the k-th pair is one TT/TR core's (m_k, n_k).
Factorization = tuple[Sequence[int], Sequence[int]]

DEFAULT_MODES_LINEAR = 3
DEFAULT_MODES_CONV = 2


def default_modes(kernel: int, format: str | None = None) -> int:
    """Automatic number of factors per side: 3 for linear layers and 2 for convolutions, less the format's
    ``layer_factors_offset`` (Tucker: one fewer, its core has one entry per combination of mode ranks)."""
    n = DEFAULT_MODES_LINEAR if kernel == 1 else DEFAULT_MODES_CONV
    if format is not None and format in formats.FORMATS:  # an unknown name is reported by the layer
        n -= formats.get_format(format).layer_factors_offset
    return n


def _prime_count(n: int) -> int:
    """Number of prime factors of ``n`` counted with multiplicity."""
    count, p = 0, 2
    while p * p <= n:
        while n % p == 0:
            n //= p
            count += 1
        p += 1
    return count + (1 if n > 1 else 0)


@lru_cache(maxsize=1024)
def _balanced(n: int, parts: int, largest: int) -> tuple[int, ...] | None:
    """Non-increasing factors > 1 of ``n``, exactly ``parts`` of them, none above ``largest``; None if impossible.

    Greedy on the largest factor: the smallest feasible one is taken, then the rest recursively, which
    gives the smallest largest factor (the most balanced split in the sense that matters for core sizes).
    """
    if parts == 1:
        return (n,) if 1 < n <= largest else None
    low = max(2, math.ceil(round(n ** (1.0 / parts), 9)))  # the largest factor is at least the parts-th root
    for f in range(low, min(n, largest) + 1):
        if n % f == 0:
            rest = _balanced(n // f, parts - 1, f)
            if rest is not None:
                return (f, *rest)
    return None


def _arrange(factors: Sequence[int]) -> tuple[int, ...]:
    """Largest factors at the ends: sorted ``f1 >= f2 >= ...`` become ``(f1, f3, f5, ..., f4, f2)``."""
    ordered = sorted(factors, reverse=True)
    return tuple(ordered[0::2] + ordered[1::2][::-1])


def factorize(n: int, n_factors: int) -> tuple[int, ...]:
    """The most balanced factorisation of ``n`` into at most ``n_factors`` factors > 1.

    Exactly ``n_factors`` factors when ``n`` has that many prime factors; fewer otherwise (a prime
    gives one factor, ``1`` gives none). Largest factors at the ends: ``factorize(784, 4) == (7, 4, 4, 7)``.
    """
    n = as_int(n, "size to factorize")
    n_factors = as_int(n_factors, "number of factors")
    if n < 1 or n_factors < 1:
        raise ValueError(f"factorize needs a positive size and number of factors, got n={n}, n_factors={n_factors}")
    if n == 1:
        return ()
    parts = min(n_factors, _prime_count(n))
    found = _balanced(n, parts, n)
    assert found is not None  # parts <= number of prime factors, so a factorisation exists
    return _arrange(found)


def _pad_middle(factors: tuple[int, ...], length: int) -> tuple[int, ...]:
    """Insert 1s in the middle of ``factors`` (the large end factors stay at the ends)."""
    half = (len(factors) + 1) // 2
    return factors[:half] + (1,) * (length - len(factors)) + factors[half:]


def auto_factorization(
    in_size: int, out_size: int, n_modes: int = DEFAULT_MODES_LINEAR, min_pairs: int = 1
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Input and output factors of equal length (the shorter list padded with 1s in the middle).

    Each side is ``factorize(size, n_modes)``. When fewer than ``min_pairs`` pairs result (prime or
    tiny sizes), the sizes are split into ``(in, 1), (1, out)``: a low-rank matrix factorisation.
    """
    ins, outs = factorize(in_size, n_modes), factorize(out_size, n_modes)
    d = max(len(ins), len(outs), 1)
    ins, outs = _pad_middle(ins, d), _pad_middle(outs, d)
    if d < min_pairs:
        ins, outs = (in_size, 1), (1, out_size)
    return ins, outs


@dataclass(frozen=True)
class WeightLayout:
    """How a layer's weight is viewed as a tensor.

    The weight in canonical layout is a tensor ``W[i, o, k]`` of shape ``(in_size, out_size, kernel)``
    (``kernel = kh * kw``, 1 for a linear layer) with ``i = (i_1, ..., i_d)`` and ``o = (o_1, ..., o_d)``
    multi-indices over ``in_factors`` and ``out_factors`` (row-major).

    - TT/TR cores pair the modes: ``pairs = [(m_1, n_1), ..., (m_d, n_d)]`` plus ``(kernel, 1)`` for a
      convolution with ``kernel > 1``.
    - CP/Tucker use the modes ``in_factors + out_factors + (kernel,)`` with every size-1 mode left out.
    """

    in_factors: tuple[int, ...]
    out_factors: tuple[int, ...]
    kernel: int = 1

    @property
    def in_size(self) -> int:
        return math.prod(self.in_factors)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_factors)

    @property
    def dense_numel(self) -> int:
        """Entries of the dense weight."""
        return self.in_size * self.out_size * self.kernel

    def pairs(self) -> list[tuple[int, int]]:
        """The ``(m_k, n_k)`` of every TT/TR core, kernel core last."""
        pairs = list(zip(self.in_factors, self.out_factors))
        return pairs + [(self.kernel, 1)] if self.kernel > 1 else pairs

    def modes(self) -> tuple[int, ...]:
        """The CP/Tucker modes: non-trivial input factors, output factors, then the kernel."""
        return tuple(s for s in (*self.in_factors, *self.out_factors, self.kernel) if s > 1)


def _check_factors(factors: object, size: int, what: str) -> tuple[int, ...]:
    if isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence) or len(factors) == 0:
        raise ValueError(f"Invalid {what} factors {factors!r} (expected a non-empty sequence of positive ints)")
    out = tuple(as_int(f, f"{what} factor") for f in factors)
    if any(f < 1 for f in out):
        raise ValueError(f"Invalid {what} factors {list(out)} (every factor must be a positive int)")
    if math.prod(out) != size:
        raise ValueError(
            f"Invalid {what} factors {list(out)}: their product {math.prod(out)} is not {what} size {size}"
        )
    return out


def resolve_layout(
    in_size: int,
    out_size: int,
    factorization: int | Factorization | None,
    kernel: int = 1,
    format: str | None = None,
) -> WeightLayout:
    """A :class:`WeightLayout` from a layer's sizes and its ``factorization`` argument.

    ``factorization``: None (automatic with :func:`default_modes` factors per side for ``format``), an int
    (automatic with at most that many modes per side), or explicit ``(in_factors, out_factors)`` of equal
    length whose products are the sizes.
    """
    in_size = as_int(in_size, "input size")
    out_size = as_int(out_size, "output size")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"Invalid layer sizes in={in_size}, out={out_size} (expected positive ints)")
    min_pairs = 2 if kernel == 1 else 1  # a TT/TR weight needs at least two cores
    if factorization is None or isinstance(factorization, int) and not isinstance(factorization, bool):
        if factorization is None:
            n_modes = default_modes(kernel, format)
        else:
            n_modes = factorization
            if n_modes < 1:
                raise ValueError(f"Invalid factorization {factorization!r} (number of modes must be >= 1)")
        ins, outs = auto_factorization(in_size, out_size, n_modes, min_pairs)
        return WeightLayout(ins, outs, kernel)
    if isinstance(factorization, (str, bytes)) or not isinstance(factorization, Sequence) or len(factorization) != 2:
        raise ValueError(
            f"Invalid factorization {factorization!r} (expected None, an int, or (in_factors, out_factors))"
        )
    ins = _check_factors(factorization[0], in_size, "input")
    outs = _check_factors(factorization[1], out_size, "output")
    if len(ins) != len(outs):
        raise ValueError(
            f"Invalid factorization {factorization!r}: {len(ins)} input and {len(outs)} output factors "
            "(pad the shorter with 1s)"
        )
    return WeightLayout(ins, outs, kernel)
