"""DAS in gradient form (``variant="gradient"``) against hand-written float64 computations.

The oracle is written from docs/design.md ("DAS in gradient form") with Python floats:
``c_k = -alpha (gamma_k - gamma_bar) / (||g|| n_k) [+ (beta/2)(log n_k - mean log n)]``, clamped so that
``1 - 2 eta c_k`` lies in ``[s_min^2, s_max^2]``, and ``g_k <- g_k + c_k G_k`` before the base step.
"""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from conftest import TwoGroupNet, assert_close, snapshot, sqn

import tensordas as td

PATHS = [None, "device", False]
PATH_IDS = ["host", "multi-tensor", "single-tensor"]


def das(net, foreach=None, base=torch.optim.SGD, **kw):
    kw.setdefault("lr", 0.05)
    opt = td.DAS(
        net.parameters(), base, core_groups=net.groups(), foreach=None if foreach == "device" else foreach, **kw
    )
    if foreach == "device":
        opt._host_path = False  # the flat tensor path that CUDA takes
    return opt


def oracle_coefficients(groups, *, alpha, lr, grad_norm="group", all_params=None, beta=0.0, s_min=0.5, s_max=2.0):
    """``{id(core): c_k}`` in float64 from the formula (0 where the core is left alone)."""
    global_sq = sum(sqn(p.grad) for p in all_params if p.grad is not None) if grad_norm == "global" else None
    out = {}
    for cores in groups:
        gammas = [sqn(c.grad) for c in cores]
        norms = [sqn(c) for c in cores]
        gamma_bar = sum(gammas) / len(gammas)
        norm = math.sqrt(sum(gammas) if global_sq is None else global_sq)
        mean_log = sum(math.log(n) for n in norms) / len(norms)
        for c, gk, n in zip(cores, gammas, norms):
            value = -alpha * (gk - gamma_bar) / (norm * n) + beta / 2 * (math.log(n) - mean_log)
            out[id(c)] = min(max(value, (1 - s_max**2) / (2 * lr)), (1 - s_min**2) / (2 * lr))
    return out


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("grad_norm", ["group", "global"])
@pytest.mark.parametrize("beta", [0.0, 0.7])
def test_added_gradient_term_is_the_formula(net, foreach, grad_norm, beta):
    alpha, lr = 0.2, 0.05
    opt = das(net, foreach, alpha=alpha, lr=lr, variant="gradient", grad_norm=grad_norm, balance=beta)
    params = list(net.parameters())
    net.loss().backward()
    before, grads = snapshot(params), [p.grad.clone() for p in params]
    coef = oracle_coefficients(net.groups(), alpha=alpha, lr=lr, grad_norm=grad_norm, all_params=params, beta=beta)
    assert min(abs(c) for c in coef.values()) > 1e-3  # every core gets a visible term
    assert all(-30 < c < 7.5 for c in coef.values())  # and no clamp bites

    opt.rescale_cores()

    for p, p0, g in zip(params, before, grads):
        assert torch.equal(p, p0)  # the weights are not touched
        assert_close(p.grad, g + coef.get(id(p), 0.0) * p0)  # the bias (in no group) keeps its gradient
    stats = opt.last_step_stats()
    for name, cores in zip(stats, net.groups()):
        scales = [math.sqrt(1 - 2 * lr * coef[id(c)]) for c in cores]
        assert stats[name]["scale_min"] == pytest.approx(min(scales), rel=1e-12)
        assert stats[name]["scale_max"] == pytest.approx(max(scales), rel=1e-12)
    expected_dev = max(abs(lr * c) for c in coef.values())
    assert float(opt.max_scale_deviation) == pytest.approx(expected_dev, rel=1e-6)


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_full_step_is_plain_sgd_on_the_modified_gradient(net, foreach):
    alpha, lr = 0.2, 0.05
    opt = das(net, foreach, alpha=alpha, lr=lr, variant="gradient")
    params = list(net.parameters())
    net.loss().backward()
    before, grads = snapshot(params), [p.grad.clone() for p in params]
    coef = oracle_coefficients(net.groups(), alpha=alpha, lr=lr)
    opt.step()
    for p, p0, g in zip(params, before, grads):
        assert_close(p, p0 - lr * (g + coef.get(id(p), 0.0) * p0))


def _norms_after_one_step(variant: str, lr: float, alpha: float) -> list[float]:
    net = TwoGroupNet()
    opt = td.DAS(net.parameters(), torch.optim.SGD, core_groups=net.groups(), alpha=alpha, lr=lr, variant=variant)
    net.loss().backward()
    opt.step()
    return [sqn(c) for g in net.groups() for c in g]


def test_gradient_form_moves_norms_like_the_weight_form_to_first_order():
    """Under plain SGD both forms change n_k by 2 alpha eta (gamma_k - gamma_bar)/||g|| more than GD, to
    first order: their difference is O(eta^2) (it shrinks ~4x as eta halves) while the drift is O(eta)."""
    alpha = 0.3
    gaps, drifts = [], []
    for lr in (1e-3, 5e-4, 2.5e-4):
        weight = _norms_after_one_step("sam-matched", lr, alpha)
        gradient = _norms_after_one_step("gradient", lr, alpha)
        base = _norms_after_one_step("sam-matched", lr, 0.0)
        gaps.append([abs(w - g) for w, g in zip(weight, gradient)])
        drifts.append([abs(w - b) for w, b in zip(weight, base)])
    for big, small in zip(gaps, gaps[1:]):  # per core: the gap is quadratic in eta
        assert all(3.5 < b / s < 4.5 for b, s in zip(big, small))
    for gap, drift in zip(gaps, drifts):  # and small against the (linear) drift itself
        assert all(g < 0.01 * d for g, d in zip(gap, drift))


def test_under_momentum_the_term_enters_the_buffer():
    """SGD with momentum on the modified gradient, written by hand in float64 over three steps."""
    alpha, lr, mu = 0.2, 0.05, 0.9
    net, ref = TwoGroupNet(), TwoGroupNet()
    opt = das(net, alpha=alpha, lr=lr, momentum=mu, variant="gradient")
    buffers = None
    for step in range(3):
        opt.zero_grad()
        net.loss(step).backward()
        opt.step()
        ref.zero_grad()
        ref.loss(step).backward()
        coef = oracle_coefficients(ref.groups(), alpha=alpha, lr=lr)
        with torch.no_grad():
            modified = [p.grad + coef.get(id(p), 0.0) * p for p in ref.parameters()]
            buffers = modified if buffers is None else [mu * b + g for b, g in zip(buffers, modified)]
            for p, b in zip(ref.parameters(), buffers):
                p.sub_(lr * b)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert_close(p, q)
    # the weight form with the same settings ends elsewhere: the momentum carries the term
    other = TwoGroupNet()
    opt_w = das(other, alpha=alpha, lr=lr, momentum=mu)
    for step in range(3):
        opt_w.zero_grad()
        other.loss(step).backward()
        opt_w.step()
    assert not torch.allclose(other.cp.factors[0], net.cp.factors[0], rtol=1e-6, atol=0)


def test_state_dict_round_trip_continues_exactly():
    kw = dict(alpha=0.2, lr=0.05, momentum=0.9, variant="gradient", alpha_schedule="linear", total_steps=6)
    full = TwoGroupNet()
    opt = das(full, **kw)
    for step in range(4):
        opt.zero_grad()
        full.loss(step).backward()
        opt.step()
    first = TwoGroupNet()
    opt_a = das(first, **kw)
    for step in range(2):
        opt_a.zero_grad()
        first.loss(step).backward()
        opt_a.step()
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt_a.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = TwoGroupNet(seed=3)
    opt_b = das(resumed, **kw)
    resumed.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    assert opt_b.step_count == 2 and opt_b.variant == "gradient"
    for step in range(2, 4):
        opt_b.zero_grad()
        resumed.loss(step).backward()
        opt_b.step()
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_zero_norm_core_and_nonfinite_group_are_left_alone(net, foreach):
    with torch.no_grad():
        net.tucker.factors[0].zero_()
    opt = das(net, foreach, alpha=0.2, variant="gradient")
    net.loss().backward()
    with torch.no_grad():
        net.cp.factors[1].grad[0, 0] = math.inf
    grads = [p.grad.clone() for p in net.parameters()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
    assert any("non-finite gradient" in str(w.message) for w in caught)
    changed = {id(p) for p, g in zip(net.parameters(), grads) if not torch.equal(p.grad, g)}
    assert not changed & {id(c) for c in net.cp.factors}  # the skipped group: gradients untouched
    assert id(net.tucker.factors[0]) not in changed  # n_k = 0: c_k = 0
    assert id(net.tucker.core) in changed
    assert list(opt.skipped_per_group().values()) == [1, 0]


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_clamp_bounds_the_equivalent_scale(net, foreach):
    lr = 0.05
    opt = das(net, foreach, alpha=1e9, lr=lr, variant="gradient", s_min=0.8, s_max=1.5)
    net.loss().backward()
    before = [p.grad.clone() for p in net.parameters()]
    opt.rescale_cores()
    for p, g in zip(net.parameters(), before):
        if any(p is c for grp in net.groups() for c in grp):
            c = float(((p.grad - g) * p).sum() / p.pow(2).sum().detach())
            assert c == pytest.approx((1 - 1.5**2) / (2 * lr)) or c == pytest.approx((1 - 0.8**2) / (2 * lr))


def test_adam_base_receives_the_modified_gradient(net):
    """Under Adam the term goes through the moments: the same as Adam on the modified gradient."""
    alpha, lr = 0.2, 0.01
    ref = TwoGroupNet()
    opt = das(net, base=torch.optim.Adam, alpha=alpha, lr=lr, variant="gradient")
    ref_opt = torch.optim.Adam(ref.parameters(), lr=lr)
    for step in range(2):
        opt.zero_grad()
        net.loss(step).backward()
        opt.step()
        ref_opt.zero_grad()
        ref.loss(step).backward()
        coef = oracle_coefficients(ref.groups(), alpha=alpha, lr=lr)
        with torch.no_grad():
            for p in ref.parameters():
                p.grad.add_(coef.get(id(p), 0.0) * p)
        ref_opt.step()
    for p, q in zip(net.parameters(), ref.parameters()):
        assert_close(p, q, rtol=1e-10, atol=1e-12)


def test_unknown_variant_is_a_clear_error(net):
    with pytest.raises(ValueError, match="Invalid variant: 'grad'.*'gradient'"):
        das(net, variant="grad")


def test_float32_paths_agree():
    nets = [TwoGroupNet(dtype=torch.float32) for _ in PATHS]
    opts = [das(n, f, alpha=0.2, momentum=0.9, variant="gradient") for n, f in zip(nets, PATHS)]
    for step in range(3):
        for n, o in zip(nets, opts):
            o.zero_grad()
            n.loss(step).backward()
            o.step()
    for n in nets[:2]:
        for p, q in zip(n.parameters(), nets[2].parameters()):
            torch.testing.assert_close(p, q, rtol=2e-5, atol=1e-6)


def test_registry_entry_is_a_preset_with_its_own_strength(net):
    from tensordas.training.methods import METHODS, OPTIONS, method_of

    method = METHODS["das-gradient"]
    assert method.compared and method.strength == "das_gradient_alpha" and method.fixed == {"variant": "gradient"}
    assert len(method.grid) == 3
    opt = method.build(
        net.parameters(), torch.optim.SGD, {"lr": 0.1}, {**{o: OPTIONS[o].default for o in method.options},
                                                           "das_gradient_alpha": 0.7},
        core_groups=net.groups(), total_steps=5,
    )  # fmt: skip
    assert opt.variant == "gradient" and opt.alpha == 0.7 and method_of(opt) is method
    plain = METHODS["das"].build(
        net.parameters(), torch.optim.SGD, {"lr": 0.1}, {o: OPTIONS[o].default for o in METHODS["das"].options},
        core_groups=net.groups(), total_steps=5,
    )  # fmt: skip
    assert method_of(plain) is METHODS["das"]


def test_the_balance_preset_adds_the_drift_and_the_pull_to_the_gradients(net):
    """das-gradient-balance: one step is SGD on g_k + c_k G_k with c_k from the formula with beta = 0.1."""
    from tensordas.training.methods import GRADIENT_BALANCE, METHODS, OPTIONS, method_of

    method = METHODS["das-gradient-balance"]
    assert method.compared and method.fixed == {"variant": "gradient", "balance": GRADIENT_BALANCE} == {
        "variant": "gradient",
        "balance": 0.1,
    }
    alpha, lr = 3.0, 0.05
    ref = TwoGroupNet()
    settings = {**{o: OPTIONS[o].default for o in method.options}, "das_gradient_balance_alpha": alpha}
    opt = method.build(net.parameters(), torch.optim.SGD, {"lr": lr}, settings, core_groups=net.groups(),
                       total_steps=5)  # fmt: skip
    assert opt.balance == 0.1 and opt.variant == "gradient" and method_of(opt) is method
    net.loss().backward()
    ref.loss().backward()
    coef = oracle_coefficients(ref.groups(), alpha=alpha, lr=lr, beta=0.1)
    assert any(abs(c) > 1e-6 for c in coef.values())  # the term acts
    opt.step()
    with torch.no_grad():
        expected = [p - lr * (p.grad + coef.get(id(p), 0.0) * p) for p in ref.parameters()]
    for got, want in zip(net.parameters(), expected):
        assert_close(got, want)
