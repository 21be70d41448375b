"""TensorizedConv2d: a 2-D convolution whose kernel is stored as a CP, Tucker, TT or TR tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from ..formats import RankLike
from ._base import Init, TensorizedLayer
from .factorization import Factorization, resolve_layout

__all__ = ["TensorizedConv2d"]


def _int_pair(value: object, what: str, minimum: int) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, each ``>= minimum``) as a pair; else a ValueError naming it."""
    pair = _pair(value)
    if len(pair) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < minimum for v in pair):
        kind = "positive" if minimum >= 1 else "non-negative"
        raise ValueError(f"Invalid {what} {value!r} (expected a {kind} int or a pair of them)")
    return (pair[0], pair[1])


class TensorizedConv2d(TensorizedLayer):
    """A ``Conv2d`` (``groups=1``, zero padding) whose ``(out, in, kh, kw)`` kernel is a tensor in ``format``.

    The channels are factorised as for :class:`TensorizedLinear` (automatically at most 2 factors per side,
    1 for Tucker, which then is the usual Tucker decomposition of the ``(in, out, kh * kw)`` kernel);
    the spatial kernel is one more mode of size ``kh * kw``: for TT/TR an extra last core of shape
    ``(r_d, kh * kw, 1, r_{d+1})`` (the TT-conv layout of Garipov et al., 2016), for CP/Tucker an extra
    factor. The kernel is rebuilt through TensorLy and applied with ``F.conv2d``.

    ``rank``, ``factorization``, ``init`` and ``nonlinearity``: as for :class:`TensorizedLinear`, with
    ``fan_in = in_channels * kh * kw`` (weight variance ``2 / fan_in`` for ReLU).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        format: str = "tt",
        rank: RankLike = 8,
        factorization: int | Factorization | None = None,
        bias: bool = True,
        nonlinearity: str = "relu",
        init: Init = "normal",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        ks = _pair(kernel_size)
        if any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
            raise ValueError(f"Invalid kernel_size {kernel_size!r} (expected positive ints)")
        stride_ = _int_pair(stride, "stride", minimum=1)
        dilation_ = _int_pair(dilation, "dilation", minimum=1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding {padding!r} (expected an int, a pair, 'same' or 'valid')")
            if padding == "same" and stride_ != (1, 1):
                raise ValueError(f"Invalid padding 'same' with stride {stride!r} (F.conv2d needs stride 1 for it)")
            padding_: str | tuple[int, int] = padding
        else:
            padding_ = _int_pair(padding, "padding", minimum=0)
        kernel = ks[0] * ks[1]
        layout = resolve_layout(in_channels, out_channels, factorization, kernel=kernel, format=str(format).lower())
        super().__init__(layout, format, rank, bias, layout.in_size * kernel, nonlinearity, init, device, dtype)
        self.kernel_size = ks
        self.in_channels = layout.in_size
        self.out_channels = layout.out_size
        self.stride = stride_
        self.padding = padding_
        self.dilation = dilation_

    def dense_weight(self) -> torch.Tensor:
        """The reconstructed ``(out_channels, in_channels, kh, kw)`` kernel (differentiable)."""
        w = self.canonical_weight().permute(1, 0, 2)
        return w.reshape(self.out_channels, self.in_channels, *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, {self._format_repr()}"
        )
