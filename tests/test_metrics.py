"""Q, C and group statistics against NumPy float64 (docs/design.md, section 1)."""

import numpy as np
import pytest
import torch

import tensordas as td

SHAPES = [
    [(3, 2), (4, 2), (5, 2)],
    [(2, 3), (4, 2), (3, 4), (2, 2)],
    [(7,), (1, 1, 3)],
]


def make_group(shapes, dtype, seed=0, with_grads=True):
    g = torch.Generator().manual_seed(seed)
    cores = [(float(k + 1) * torch.randn(s, generator=g, dtype=torch.float64)).to(dtype) for k, s in enumerate(shapes)]
    cores = [c.requires_grad_() for c in cores]
    if with_grads:
        for k, c in enumerate(cores):
            c.grad = (torch.randn(c.shape, generator=g, dtype=torch.float64) / (k + 1)).to(dtype)
    return cores


def np_stats(cores):
    n = np.array([np.sum(c.detach().double().numpy() ** 2) for c in cores])
    gamma = np.array([np.sum(c.grad.double().numpy() ** 2) for c in cores])
    q = np.mean((n - n.mean()) ** 2)
    c = np.mean((n - n.mean()) * (gamma - gamma.mean()))
    return n, gamma, q, c, np.sqrt(gamma.sum())


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("as_core_group", [True, False])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_metrics_match_numpy(shapes, as_core_group, dtype, rtol):
    cores = make_group(shapes, dtype)
    group = td.CoreGroup("g", cores) if as_core_group else cores
    n, gamma, q, c, gnorm = np_stats(cores)

    q_td = td.norm_deviation(group)
    c_td = td.norm_grad_covariance(group)
    assert q_td.dim() == 0 and c_td.dim() == 0
    assert q_td.item() == pytest.approx(q, rel=rtol)
    assert c_td.item() == pytest.approx(c, rel=rtol)

    stats = td.group_stats(group)
    np.testing.assert_allclose(stats.n.double().numpy(), n, rtol=rtol)
    np.testing.assert_allclose(stats.gamma.double().numpy(), gamma, rtol=rtol)
    assert stats.Q.item() == pytest.approx(q, rel=rtol)
    assert stats.C.item() == pytest.approx(c, rel=rtol)
    assert stats.grad_norm.item() == pytest.approx(gnorm, rel=rtol)
    d = stats.as_dict()
    assert d["n"] == pytest.approx(list(n), rel=rtol)
    assert d["Q"] == pytest.approx(q, rel=rtol)


def test_half_precision_cores_are_accumulated_in_float32():
    cores = make_group(SHAPES[0], torch.bfloat16)
    n, _, q, c, _ = np_stats(cores)  # of the bf16 values, exactly representable in float64
    assert td.norm_deviation(cores).dtype == torch.float32
    assert td.norm_deviation(cores).item() == pytest.approx(q, rel=1e-5)
    assert td.norm_grad_covariance(cores).item() == pytest.approx(c, rel=1e-5)


def test_equal_norms_give_zero_deviation():
    cores = [torch.full((2, 3), 2.0, dtype=torch.float64), torch.full((3, 2), -2.0, dtype=torch.float64)]
    assert td.norm_deviation(cores).item() == 0.0


def test_covariance_without_gradients_raises():
    cores = make_group(SHAPES[0], torch.float64, with_grads=False)
    cores[1].grad = torch.ones_like(cores[1])
    with pytest.raises(ValueError, match="gradient"):
        td.norm_grad_covariance(cores)
    # Q needs no gradient; group_stats reports the gradient statistics as missing.
    n = np.array([np.sum(c.detach().numpy() ** 2) for c in cores])
    stats = td.group_stats(cores)
    assert stats.gamma is None and stats.C is None and stats.grad_norm is None
    assert stats.Q.item() == pytest.approx(np.var(n), rel=1e-12)
    assert stats.as_dict()["C"] is None


def test_empty_group_raises():
    with pytest.raises(ValueError):
        td.norm_deviation([])
