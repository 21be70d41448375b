"""Tensorized layers against oracles written here: weights rebuilt by our own einsum from the documented
core layouts, float64 gradchecks, TensorLy round trips at full rank, ratio targeting by brute force."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tensordas as td
from tensordas.layers import (
    FORMATS,
    TensorizedConv2d,
    TensorizedLinear,
    auto_factorization,
    factorize,
    from_dense,
    rank_for_ratio,
    resolve_layout,
    reused_weights,
)
from tensordas.layers._formats import WeightFormat

F64 = torch.float64
LOWER = "abcdefghijklmnopqrstuvwxyz"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# --- oracle: the dense weight from the cores, by einsum over the documented layouts -------------------------


def oracle_canonical(layer) -> torch.Tensor:
    """``W[in, out, kernel]`` rebuilt from ``layer.cores`` with einsum (no layer code involved)."""
    cores = [c.detach() for c in layer.cores]
    ins, outs, k = layer.layout.in_factors, layer.layout.out_factors, layer.layout.kernel
    n_in, n_out = math.prod(ins), math.prod(outs)
    if layer.format in ("cp", "tucker"):
        modes = [s for s in (*ins, *outs, k) if s > 1]
        j = len(modes)
        if layer.format == "cp":
            spec = ",".join(f"{LOWER[i]}Z" for i in range(j)) + "->" + LOWER[:j]
            full = torch.einsum(spec, *cores)
        else:
            spec = UPPER[:j] + "," + ",".join(f"{LOWER[i]}{UPPER[i]}" for i in range(j)) + "->" + LOWER[:j]
            full = torch.einsum(spec, *cores)
        assert tuple(full.shape) == tuple(modes)
        return full.reshape(n_in, n_out, k)
    pairs = list(zip(ins, outs)) + ([(k, 1)] if k > 1 else [])
    n = len(pairs)
    rows, cols, bonds = LOWER[:n], LOWER[n : 2 * n], UPPER[: n + 1]
    right = [bonds[i + 1] for i in range(n)]
    if layer.format == "tr":
        right[-1] = bonds[0]  # the ring closes: a trace
    spec = ",".join(f"{bonds[i]}{rows[i]}{cols[i]}{right[i]}" for i in range(n)) + "->" + rows + cols
    full = torch.einsum(spec, *cores)  # (m_1..m_N, n_1..n_N); TT's boundary bonds have size 1
    return full.reshape(n_in, k, n_out).permute(0, 2, 1)


def oracle_linear(layer, x):
    w = oracle_canonical(layer)[:, :, 0].t()
    return F.linear(x, w, None if layer.bias is None else layer.bias.detach())


def oracle_conv(layer, x):
    w = oracle_canonical(layer).permute(1, 0, 2).reshape(layer.out_channels, layer.in_channels, *layer.kernel_size)
    b = None if layer.bias is None else layer.bias.detach()
    return F.conv2d(x, w, b, layer.stride, layer.padding, layer.dilation)


def make_layer(kind: str, fmt: str, dtype=torch.float32, rank=3, **kw):
    if kind == "linear":
        return TensorizedLinear(12, 10, fmt, rank, dtype=dtype, **kw)
    if kind == "conv":
        return TensorizedConv2d(4, 6, 3, stride=2, padding=1, format=fmt, rank=rank, dtype=dtype, **kw)
    return TensorizedConv2d(6, 4, (3, 2), padding=(1, 0), dilation=(1, 2), format=fmt, rank=rank, dtype=dtype, **kw)


def sample_input(kind: str, dtype=torch.float32, batch=3):
    g = torch.Generator().manual_seed(7)
    if kind == "linear":
        return torch.randn(batch, 12, generator=g, dtype=dtype)
    channels = 4 if kind == "conv" else 6
    return torch.randn(batch, channels, 7, 7, generator=g, dtype=dtype)


KINDS = ["linear", "conv", "conv-rect"]


@pytest.mark.parametrize("kind", KINDS)
def test_reused_weights_rebuild_once_per_block_without_autograd(kind, monkeypatch):
    layer, x = make_layer(kind, "tt"), sample_input(kind)
    with torch.no_grad():
        fresh = layer(x)
    calls = []
    real = WeightFormat.reconstruct
    monkeypatch.setattr(WeightFormat, "reconstruct", lambda self, *a: calls.append(1) or real(self, *a))
    with reused_weights(nn.Sequential(layer)), torch.no_grad():
        first, second = layer(x), layer(x[:2])
        with reused_weights(layer):  # a nested block rebuilds once more, and leaves the outer block's weight
            layer(x)
        layer(x)
    assert len(calls) == 2
    assert torch.equal(first, fresh) and torch.equal(second, fresh[:2])
    with reused_weights(layer):  # with autograd every pass rebuilds, and gradients reach the cores
        layer(x).sum().backward()
        layer(x).sum().backward()
    assert len(calls) == 4 and all(c.grad is not None and c.grad.abs().sum() > 0 for c in layer.cores)
    with torch.no_grad():  # after the block the weight follows the cores again
        layer.cores[0].mul_(2.0)
        assert not torch.allclose(layer(x), fresh)
    assert len(calls) == 5
    with reused_weights(layer), torch.no_grad():  # a core changed in place inside the block: rebuilt
        before = layer(x)
        layer.cores[0].mul_(0.5)
        assert torch.allclose(layer(x), fresh) and not torch.allclose(before, fresh)
        copied = copy.deepcopy(layer)  # a copy made inside the block: its own cores, its own weight
        copied.cores[0].data = copied.cores[0].data * 3
        assert not torch.allclose(copied(x), fresh) and torch.allclose(layer(x), fresh)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_einsum_rebuilt_dense_layer(kind, fmt):
    torch.manual_seed(0)
    layer = make_layer(kind, fmt, dtype=F64)
    x = sample_input(kind, F64)
    expected = oracle_linear(layer, x) if kind == "linear" else oracle_conv(layer, x)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    dense = layer.dense_weight()
    if kind == "linear":
        assert dense.shape == (10, 12)
    else:
        assert dense.shape == (layer.out_channels, layer.in_channels, *layer.kernel_size)


@pytest.mark.parametrize("fmt", FORMATS)
def test_forward_with_explicit_factorization_and_no_bias(fmt):
    torch.manual_seed(1)
    layer = TensorizedLinear(
        24, 6, fmt, rank=[2, 2] if fmt == "tt" else 2, factorization=([2, 3, 4], [1, 3, 2]), bias=False, dtype=F64
    )
    assert layer.bias is None and layer.layout.in_factors == (2, 3, 4)
    x = torch.randn(4, 24, dtype=F64)
    torch.testing.assert_close(layer(x), oracle_linear(layer, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_gradcheck_float64(kind, fmt):
    torch.manual_seed(2)
    if kind == "linear":
        layer = TensorizedLinear(6, 4, fmt, 2, dtype=F64)
        x = torch.randn(2, 6, dtype=F64, requires_grad=True)
    else:
        layer = TensorizedConv2d(2, 4, 3, stride=2, padding=1, format=fmt, rank=2, dtype=F64)
        x = torch.randn(1, 2, 3, 3, dtype=F64, requires_grad=True)  # output (1, 4, 2, 2)
    names = [f"cores.{i}" for i in range(len(layer.cores))] + ["bias"]
    params = [p.detach().clone().requires_grad_(True) for p in [*layer.cores, layer.bias]]

    def f(x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_core_groups_hold_the_cores_not_the_bias(kind, fmt):
    layer = make_layer(kind, fmt)
    (group,) = layer.core_groups()
    assert isinstance(group, td.CoreGroup)
    assert [id(c) for c in group.cores] == [id(c) for c in layer.cores]
    assert all(c is not layer.bias for c in group.cores)
    expected_cores = {"cp": len(layer.layout.modes()), "tucker": len(layer.layout.modes()) + 1}
    assert len(group) == expected_cores.get(fmt, len(layer.layout.pairs()))
    net = nn.Sequential(layer, nn.ReLU(), make_layer(kind, fmt) if kind == "linear" else nn.Identity())
    assert len(td.find_core_groups(net)) == (2 if kind == "linear" else 1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_rescaling_cores_with_unit_product_leaves_output_unchanged(kind, fmt):
    torch.manual_seed(3)
    layer = make_layer(kind, fmt, dtype=F64)
    x = sample_input(kind, F64)
    before = layer(x).detach()
    n = len(layer.cores)
    scales = [2.0 ** (k - (n - 1) / 2) * (-1) ** k for k in range(n)]  # product is +-1; fix the sign below
    if math.prod(scales) < 0:
        scales[0] = -scales[0]
    assert math.isclose(math.prod(scales), 1.0)
    with torch.no_grad():
        for c, s in zip(layer.cores, scales):
            c.mul_(s)
    torch.testing.assert_close(layer(x), before, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("init", ["normal", "balanced"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_init_keeps_activation_variance_like_kaiming(kind, fmt, init):
    g = torch.Generator().manual_seed(4)
    ratios = []
    for seed in range(8):
        torch.manual_seed(seed)
        if kind == "linear":
            layer = TensorizedLinear(256, 128, fmt, rank=8, bias=False, init=init)
            dense = nn.Linear(256, 128, bias=False)
            x = torch.randn(256, 256, generator=g)
        else:
            layer = TensorizedConv2d(16, 32, 3, padding=1, format=fmt, rank=8, bias=False, init=init)
            dense = nn.Conv2d(16, 32, 3, padding=1, bias=False)
            x = torch.randn(32, 16, 6, 6, generator=g)
        nn.init.kaiming_normal_(dense.weight, nonlinearity="relu")
        with torch.no_grad():
            y, y_dense = layer(x), dense(x)
        if kind == "conv":  # interior pixels only: the border sees zero padding
            y, y_dense = y[..., 1:-1, 1:-1], y_dense[..., 1:-1, 1:-1]
        ratios.append(float(y.var() / y_dense.var()))
    mean = sum(ratios) / len(ratios)
    assert 0.5 < mean < 2.0, ratios


@pytest.mark.parametrize("fmt", FORMATS)
def test_balanced_init_gives_equal_core_norms(fmt):
    torch.manual_seed(5)
    layer = TensorizedConv2d(8, 16, 3, format=fmt, rank=4, init="balanced")
    assert float(td.norm_deviation(layer.core_groups()[0])) < 1e-8
    norms = torch.stack([c.detach().pow(2).sum() for c in layer.cores])
    torch.testing.assert_close(norms, norms[0].expand_as(norms), rtol=1e-5, atol=0)


def test_reset_parameters_with_generator_is_reproducible():
    a = TensorizedLinear(12, 10, "tr", 3)
    b = TensorizedLinear(12, 10, "tr", 3)
    a.reset_parameters(torch.Generator().manual_seed(9))
    b.reset_parameters(torch.Generator().manual_seed(9))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


# --- factorisation -------------------------------------------------------------------------------------------


def test_factorize_is_balanced_and_handles_primes():
    assert factorize(784, 4) == (7, 4, 4, 7)
    assert factorize(64, 3) == (4, 4, 4)
    assert factorize(13, 3) == (13,)  # a prime: fewer modes
    assert factorize(1, 3) == ()
    assert factorize(2 * 7919, 3) == (7919, 2)
    for n in [1, 2, 12, 30, 97, 100, 360, 784, 1000, 1024, 3072, 4096]:
        for d in (1, 2, 3, 4):
            f = factorize(n, d)
            assert math.prod(f) == n and len(f) <= d and all(x > 1 for x in f)
    with pytest.raises(ValueError, match="n=0"):
        factorize(0, 2)


def test_auto_factorization_pairs_and_prime_fallback():
    ins, outs = auto_factorization(784, 10, 3)
    assert math.prod(ins) == 784 and math.prod(outs) == 10 and len(ins) == len(outs) == 3
    assert all(m * n > 1 for m, n in zip(ins, outs))
    # both sizes prime: one pair only, so a linear layer splits into (in, 1), (1, out): two cores
    layout = resolve_layout(13, 7, None, kernel=1)
    assert layout.pairs() == [(13, 1), (1, 7)]
    for fmt in FORMATS:
        layer = TensorizedLinear(13, 7, fmt, rank=2, dtype=F64)
        x = torch.randn(2, 13, dtype=F64)
        torch.testing.assert_close(layer(x), oracle_linear(layer, x))
    # a convolution between prime channel counts: the kernel core is the second core
    assert resolve_layout(3, 5, None, kernel=9).pairs() == [(3, 5), (9, 1)]


@pytest.mark.parametrize(
    "factorization, message",
    [
        (([2, 2], [2, 5]), "product 4 is not input size 12"),
        (([3, 4], [2, 5, 1]), "2 input and 3 output factors"),
        (([3, 0, 4], [2, 5, 1]), r"factors \[3, 0, 4\]"),
        (0, "factorization 0"),
        ("auto", "factorization 'auto'"),
    ],
)
def test_bad_factorization_raises(factorization, message):
    with pytest.raises(ValueError, match=message):
        TensorizedLinear(12, 10, "tt", 2, factorization=factorization)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: TensorizedLinear(12, 10, "ttt", 2), "Unknown tensor format 'ttt'"),
        (lambda: TensorizedLinear(12, 10, "cp", 0), "CP rank 0"),
        (lambda: TensorizedLinear(12, 10, "cp", [2, 2]), r"CP rank \[2, 2\]"),
        (lambda: TensorizedLinear(12, 10, "tt", -1), "TT rank -1"),
        (lambda: TensorizedLinear(12, 10, "tucker", [5, 2, 2, 2], factorization=([3, 4], [2, 5])), r"rank 5 of mode 0"),
        (lambda: TensorizedLinear(12, 10, "tucker", [2, 2], factorization=([3, 4], [2, 5])), r"Tucker rank \[2, 2\]"),
        (lambda: TensorizedLinear(12, 10, "tt", [1, 50, 1], factorization=([3, 4], [2, 5])), "rank 50"),
        (lambda: TensorizedLinear(12, 10, "tr", [2, 2]), r"TR rank \[2, 2\]"),
        (lambda: TensorizedLinear(12, 10, "tt", 2, nonlinearity="swish"), "swish"),
        (lambda: TensorizedLinear(12, 10, "tt", 2, init="orthogonal"), "orthogonal"),
        (lambda: TensorizedConv2d(4, 6, 0), "kernel_size 0"),
        (lambda: TensorizedConv2d(4, 6, 3, padding="full"), "padding 'full'"),
    ],
)
def test_invalid_layer_arguments_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: TensorizedConv2d(4, 6, 3, stride=0), "stride"),
        (lambda: TensorizedConv2d(4, 6, 3, stride=(1, -2)), "stride"),
        (lambda: TensorizedConv2d(4, 6, 3, dilation=0), "dilation"),
        (lambda: TensorizedConv2d(4, 6, 3, padding=-1), "padding"),
        (lambda: TensorizedConv2d(4, 6, 3, padding=(1, 1, 1, 1)), "padding"),
        (lambda: TensorizedConv2d(4, 6, 3, stride=2, padding="same"), "'same'"),
        (lambda: TensorizedLinear(12, 10, "tt", 2, dtype=torch.int64), "dtype"),
        (lambda: TensorizedConv2d(4, 6, 3, dtype=torch.bool), "dtype"),
    ],
)
def test_bad_conv_geometry_and_dtype_raise_at_construction(build, message):
    # These used to be accepted and fail only in forward (or build a non-float layer with a RuntimeError).
    with pytest.raises(ValueError, match=message):
        build()


def test_conv_geometry_is_applied_like_conv2d():
    torch.manual_seed(0)
    layer = TensorizedConv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), rank=3, dtype=F64)
    x = torch.randn(2, 4, 9, 8, dtype=F64)
    ref = F.conv2d(x, layer.dense_weight(), layer.bias, (2, 1), (1, 2), (1, 2))
    torch.testing.assert_close(layer(x), ref)


def test_int_rank_caps_tucker_and_tt_at_full_rank():
    layer = TensorizedLinear(12, 10, "tucker", 100, factorization=([3, 4], [2, 5]))
    assert layer.rank == (3, 4, 2, 5)
    layer = TensorizedLinear(12, 10, "tt", 100, factorization=([3, 4], [2, 5]))
    assert layer.rank == (1, 6, 1)  # the bond between (3,2) and (4,5) has unfolding rank min(6, 20)


# --- from_dense ----------------------------------------------------------------------------------------------


def dense_pair(dtype=F64):
    torch.manual_seed(11)
    return nn.Linear(12, 10).to(dtype), nn.Conv2d(4, 6, 3, stride=2, padding=1).to(dtype)


@pytest.mark.parametrize("fmt", ["tt", "tucker"])
def test_from_dense_at_full_rank_reconstructs_the_layer(fmt):
    for dense in dense_pair():
        new = from_dense(dense, fmt, rank=10_000)  # an int caps at full rank
        assert type(new) is (TensorizedLinear if isinstance(dense, nn.Linear) else TensorizedConv2d)
        torch.testing.assert_close(new.dense_weight(), dense.weight, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(oracle_canonical(new), new.canonical_weight().detach(), rtol=1e-12, atol=1e-12)
        assert torch.equal(new.bias, dense.bias) and new.bias is not dense.bias
        x = torch.randn(2, 12, dtype=F64) if isinstance(dense, nn.Linear) else torch.randn(2, 4, 5, 5, dtype=F64)
        torch.testing.assert_close(new(x), dense(x), rtol=1e-9, atol=1e-10)
        if isinstance(dense, nn.Conv2d):
            assert new.stride == dense.stride and new.padding == dense.padding


def rel_error(new, dense) -> float:
    return float((new.dense_weight().detach() - dense.weight.detach()).norm() / dense.weight.detach().norm())


@pytest.mark.parametrize("fmt", ["tt", "tucker"])
def test_from_dense_error_does_not_increase_with_rank(fmt):
    for dense in dense_pair():
        errors = [rel_error(from_dense(dense, fmt, rank=r), dense) for r in range(1, 8)]
        assert all(b <= a + 1e-10 for a, b in zip(errors, errors[1:])), errors
        assert errors[-1] < errors[0]


@pytest.mark.parametrize("fmt", ["cp", "tr"])
def test_from_dense_iterative_formats_improve_with_rank(fmt):
    linear, conv = dense_pair()
    for dense in (linear, conv):
        low = rel_error(from_dense(dense, fmt, rank=1), dense)
        high = rel_error(from_dense(dense, fmt, rank=6, n_iter_max=200), dense)
        assert high < low < 1.0 + 1e-9


def test_from_dense_balance_and_dtype():
    linear, _ = dense_pair(torch.float32)
    new = from_dense(linear, "tt", rank=4, balance=True)
    assert new.cores[0].dtype == torch.float32
    norms = [float(c.detach().norm()) for c in new.cores]
    assert max(norms) / min(norms) < 1 + 1e-4
    raw = from_dense(linear, "tt", rank=4, balance=False)
    torch.testing.assert_close(raw.dense_weight(), new.dense_weight(), rtol=1e-5, atol=1e-6)


def brute_force_rank(make, ratio: float, limit: int = 64) -> int | None:
    """Largest int rank whose layer reaches ``ratio``, by building each layer (None if none does)."""
    best = None
    for r in range(1, limit + 1):
        layer = make(r)
        if layer.layout.dense_numel / sum(c.numel() for c in layer.cores) >= ratio:
            best = r
    return best


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ratio", [1.5, 3.0, 6.0])
def test_ratio_picks_the_largest_rank_that_reaches_it(fmt, ratio):
    _, conv = dense_pair()
    options = {"n_iter_max": 5} if fmt in ("cp", "tr") else {}
    new = from_dense(conv, fmt, ratio=ratio, **options)
    assert new.compression_ratio >= ratio

    def make(r):
        return TensorizedConv2d(4, 6, 3, format=fmt, rank=r)

    assert new.rank == make(brute_force_rank(make, ratio)).rank
    expected = brute_force_rank(lambda r: TensorizedLinear(12, 10, fmt, r), ratio)
    layout = resolve_layout(12, 10, None, 1, fmt)
    if expected is None:  # 6x is out of reach for some formats of this small linear layer
        with pytest.raises(ValueError, match=f"compression ratio {ratio:g} cannot be reached"):
            rank_for_ratio(fmt, layout, ratio)
    else:
        assert rank_for_ratio(fmt, layout, ratio) == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_unreachable_ratio_and_bad_arguments_raise(fmt):
    linear, conv = dense_pair()
    with pytest.raises(ValueError, match=re.escape("compression ratio 1000 cannot be reached")):
        from_dense(linear, fmt, ratio=1000)
    for bad in (0, -2.0, float("nan"), True):
        with pytest.raises(ValueError, match="compression ratio"):
            from_dense(conv, fmt, ratio=bad)
    with pytest.raises(ValueError, match="exactly one of rank and ratio"):
        from_dense(linear, fmt, rank=2, ratio=2.0)
    with pytest.raises(ValueError, match="exactly one of rank and ratio"):
        from_dense(linear, fmt)


def test_from_dense_rejects_unsupported_layers_and_ranks():
    linear, _ = dense_pair()
    with pytest.raises(ValueError, match="groups=2"):
        from_dense(nn.Conv2d(4, 6, 3, groups=2), "tt", rank=2)
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        from_dense(nn.Conv2d(4, 6, 3, padding_mode="reflect"), "tt", rank=2)
    with pytest.raises(TypeError, match="BatchNorm"):
        from_dense(nn.BatchNorm2d(3), "tt", rank=2)
    with pytest.raises(ValueError, match=r"rank 7 of mode 0"):
        from_dense(linear, "tucker", rank=[7, 2, 2, 2], factorization=([3, 4], [2, 5]))
    with pytest.raises(ValueError, match="Unknown TR algorithm 'qr'"):
        from_dense(linear, "tr", rank=2, algorithm="qr")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_from_dense_raises_instead_of_returning_nan_cores():
    # CP-ALS with a rank far above the weight's size diverges; the NaN cores used to be loaded silently
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="not finite"):
        from_dense(nn.Conv2d(4, 8, 3), "cp", rank=200)
