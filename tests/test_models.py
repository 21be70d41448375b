"""CP and Tucker models: reconstruction, scale invariance, Euler identity, conservation of Q."""

import math

import pytest
import torch

import tensordas as td

F64 = torch.float64
LETTERS = "abcdefgh"


def cp_einsum(factors):
    # X[i,j,k,..] = sum_r A1[i,r] A2[j,r] ...
    modes = LETTERS[: len(factors)]
    spec = ",".join(f"{m}r" for m in modes) + "->" + modes
    return torch.einsum(spec, *factors)


def tucker_einsum(core, factors):
    # X[i,j,..] = sum_{p,q,..} G[p,q,..] U1[i,p] U2[j,q] ...
    ranks = "pqrstuvw"[: len(factors)]
    modes = LETTERS[: len(factors)]
    spec = ranks + "," + ",".join(f"{m}{r}" for m, r in zip(modes, ranks)) + "->" + modes
    return torch.einsum(spec, core, *factors)


def make_model(kind, seed=0, core_scales=None):
    g = torch.Generator().manual_seed(seed)
    if kind == "cp":
        return td.CPModel((3, 4, 5), 3, core_scales=core_scales, generator=g, dtype=F64)
    if kind == "cp4":
        return td.CPModel((2, 3, 2, 4), 2, core_scales=core_scales, generator=g, dtype=F64)
    if kind == "tucker2":
        return td.TuckerModel((5, 4), (2, 3), core_scales=core_scales, generator=g, dtype=F64)
    return td.TuckerModel((3, 4, 5), (2, 3, 2), core_scales=core_scales, generator=g, dtype=F64)


def cores_of(model):
    (group,) = model.core_groups()
    return group.cores


@pytest.mark.parametrize("kind", ["cp", "cp4"])
def test_cp_reconstruction_matches_einsum(kind):
    m = make_model(kind)
    out = m()
    assert out.shape == m.shape
    torch.testing.assert_close(out, cp_einsum(list(m.factors)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["tucker2", "tucker3"])
def test_tucker_reconstruction_matches_einsum(kind):
    m = make_model(kind)
    torch.testing.assert_close(m(), tucker_einsum(m.core, list(m.factors)), rtol=1e-12, atol=1e-12)


def test_tucker2_is_a_g_bt():
    m = make_model("tucker2")
    a, b = m.factors
    torch.testing.assert_close(m(), a @ m.core @ b.T, rtol=1e-12, atol=1e-12)


def test_core_groups_list_all_cores():
    cp = make_model("cp")
    assert [id(c) for c in cores_of(cp)] == [id(f) for f in cp.factors]
    tk = make_model("tucker3")
    assert [id(c) for c in cores_of(tk)] == [id(tk.core)] + [id(f) for f in tk.factors]


@pytest.mark.parametrize("kind", ["cp", "cp4", "tucker2", "tucker3"])
def test_rescaling_with_unit_product_leaves_output_unchanged(kind):
    m = make_model(kind)
    before = m().detach()
    cores = cores_of(m)
    c = torch.tensor([2.0, 0.25, 3.0, 0.5, 1.5][: len(cores) - 1], dtype=F64)
    factors = [*c.tolist(), 1.0 / float(c.prod())]
    with torch.no_grad():
        for core, f in zip(cores, factors):
            core.mul_(f)
    torch.testing.assert_close(m().detach(), before, rtol=1e-12, atol=1e-12)
    # ... while a product != 1 changes it (the check above can fail)
    with torch.no_grad():
        cores[0].mul_(1.1)
    assert not torch.allclose(m().detach(), before)


def test_core_scales_and_generator():
    plain = make_model("tucker3", seed=3)
    scaled = make_model("tucker3", seed=3, core_scales=(2.0, 0.5, 1.0, 3.0))
    for c0, c1, f in zip(cores_of(plain), cores_of(scaled), (2.0, 0.5, 1.0, 3.0)):
        torch.testing.assert_close(c1.detach(), f * c0.detach(), rtol=1e-15, atol=0)
    assert not torch.equal(make_model("cp", seed=1).factors[0], make_model("cp", seed=2).factors[0])


@pytest.mark.parametrize(
    "build",
    [
        lambda: td.CPModel((3, 4), 0),
        lambda: td.CPModel((3,), 2),
        lambda: td.CPModel((3, 0), 2),
        lambda: td.CPModel((3, 4), 2, std=0.0),
        lambda: td.CPModel((3, 4), 2, core_scales=(1.0,)),
        lambda: td.TuckerModel((3, 4), (2, 2, 2)),
        lambda: td.TuckerModel((3, 4), 0),
    ],
)
def test_invalid_model_arguments_raise(build):
    with pytest.raises(ValueError):
        build()


@pytest.mark.parametrize("model", ["CPModel", "TuckerModel", "TTModel", "TRModel"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_non_float_dtype_is_a_clear_error(model, dtype):
    # used to fail deep inside torch.randn / nn.Parameter with NotImplementedError or RuntimeError
    with pytest.raises(ValueError, match="dtype"):
        getattr(td, model)((3, 4), 2, dtype=dtype)


# ----------------------------------------------------------- the facts of section 1
def loss_and_grads(m, target):
    cores = cores_of(m)
    for c in cores:
        c.grad = None
    loss = 0.5 * (m() - target).pow(2).sum()
    loss.backward()
    return [c.grad.clone() for c in cores]


def hand_q(cores):
    n = [float(c.detach().pow(2).sum()) for c in cores]
    mean = sum(n) / len(n)
    return sum((x - mean) ** 2 for x in n) / len(n)


def hand_c_and_var_gamma(cores, grads):
    n = [float(c.detach().pow(2).sum()) for c in cores]
    gam = [float(g.pow(2).sum()) for g in grads]
    nb, gb = sum(n) / len(n), sum(gam) / len(gam)
    cov = sum((a - nb) * (b - gb) for a, b in zip(n, gam)) / len(n)
    var = sum((b - gb) ** 2 for b in gam) / len(gam)
    return cov, var


@pytest.mark.parametrize("kind", ["cp", "tucker2", "tucker3"])
def test_euler_identity(kind):
    m = make_model(kind)
    target = torch.randn(m.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    grads = loss_and_grads(m, target)
    inner = [float((c.detach() * g).sum()) for c, g in zip(cores_of(m), grads)]
    assert max(abs(x) for x in inner) > 1e-3  # not trivially zero
    for x in inner[1:]:
        assert x == pytest.approx(inner[0], rel=1e-10)


def one_gd_step_dq(kind, eta):
    m = make_model(kind, core_scales=(1.5, 0.6, 1.0))  # three cores in both models
    target = torch.randn(m.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    grads = loss_and_grads(m, target)
    cores = cores_of(m)
    q0 = hand_q(cores)
    cov, var = hand_c_and_var_gamma(cores, grads)
    with torch.no_grad():
        for c, g in zip(cores, grads):
            c.sub_(eta * g)
    return hand_q(cores) - q0, cov, var


@pytest.mark.parametrize("kind", ["cp", "tucker2"])
def test_q_drift_is_second_order_under_gd(kind):
    # Euler identity => n_k - n_bar moves by eta^2 (gamma_k - gamma_bar) only, so exactly
    # dQ = 2 eta^2 C + eta^4 Var(gamma).
    eta = 1e-3
    dq, cov, var = one_gd_step_dq(kind, eta)
    assert cov != 0.0
    assert dq == pytest.approx(2 * eta**2 * cov + eta**4 * var, rel=1e-5)
    dq_half, *_ = one_gd_step_dq(kind, eta / 2)
    assert dq / dq_half == pytest.approx(4.0, rel=1e-2)
    dq_quarter, *_ = one_gd_step_dq(kind, eta / 4)
    assert dq_half / dq_quarter == pytest.approx(4.0, rel=1e-2)
    assert math.isfinite(dq)
