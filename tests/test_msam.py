"""MSAM (Momentum-SAM, Becker et al. 2024) against hand-written float64 computations of the paper's step.

The oracle: with the momentum ``m`` (SGD: ``m_{t+1} = mu m_t + g``) the gradient is taken at
``w~_t = w_t - rho m_t / (||m_t|| + 1e-12)`` (no perturbation before the first step), then
``w_{t+1} = w_t - lr m_{t+1}``; the parameters rest at ``w~_{t+1}`` between steps.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

import tensordas as td
from tensordas.training import Epochs, Monitor, OptimizerConfig, train
from tensordas.training.methods import METHODS, method_of

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


class Quadratic(nn.Module):
    """``L = 0.5 x^T A x - b^T x`` over ``x = (u, v)`` flattened: its gradient ``A x - b`` is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.u = nn.Parameter(torch.randn(2, 3, generator=g, dtype=F64))
        self.v = nn.Parameter(torch.randn(4, generator=g, dtype=F64))
        q = torch.randn(10, 10, generator=g, dtype=F64)
        self.A = q @ q.T / 10 + torch.eye(10, dtype=F64)
        self.b = torch.randn(10, generator=g, dtype=F64)

    def x(self) -> torch.Tensor:
        return torch.cat([self.u.reshape(-1), self.v])

    def loss(self) -> torch.Tensor:
        x = self.x()
        return 0.5 * x @ self.A @ x - self.b @ x


def grad_of(model: Quadratic, x: list[float]) -> list[float]:
    """``A x - b`` with Python floats."""
    A, b = model.A.tolist(), model.b.tolist()
    return [sum(A[i][j] * x[j] for j in range(len(x))) - b[i] for i in range(len(x))]


def das_gradient_term(w: list[float], g: list[float], alpha: float) -> list[float]:
    """``g`` plus DAS's gradient term ``c_k w_k`` per core, ``c_k = -alpha (gamma_k - gamma_bar) / (||g|| n_k)``
    from the cores at ``w``; the group is ``[u, v]`` (6 and 4 entries of ``x``)."""
    g = list(g)
    parts = [slice(0, 6), slice(6, 10)]
    n = [sum(x * x for x in w[s]) for s in parts]
    gam = [sum(x * x for x in g[s]) for s in parts]
    gnorm, gbar = math.sqrt(sum(gam)), sum(gam) / 2
    for s, nk, gk in zip(parts, n, gam):
        c = -alpha * (gk - gbar) / (gnorm * nk)
        g[s] = [gi + c * wi for gi, wi in zip(g[s], w[s])]
    return g


def oracle(
    model: Quadratic, steps: int, lr: float, rho: float, mu: float, das_alpha: float = 0.0
) -> list[tuple[list[float], list[float]]]:
    """(unperturbed w_t, perturbed w~_t) after each step; mu = 0 keeps the last gradient as m. With
    ``das_alpha``, DAS's gradient term (taken at the unperturbed ``w``) is added to the gradient at ``w~``
    (MSAM + DAS)."""
    w = model.x().tolist()
    m = None
    out = []
    for _ in range(steps):
        if m is None:
            at = w
        else:
            norm = math.sqrt(sum(x * x for x in m))
            at = [wi - rho * mi / (norm + 1e-12) for wi, mi in zip(w, m)]
        g = grad_of(model, at)
        if das_alpha:
            g = das_gradient_term(w, g, das_alpha)
        m = g if m is None or mu == 0 else [mu * mi + gi for mi, gi in zip(m, g)]
        w = [wi - lr * mi for wi, mi in zip(w, m)]
        norm = math.sqrt(sum(x * x for x in m))
        out.append((w, [wi - rho * mi / (norm + 1e-12) for wi, mi in zip(w, m)]))
    return out


def run_steps(model: Quadratic, opt: torch.optim.Optimizer, steps: int) -> None:
    """``steps`` full-batch steps of ``opt`` on ``model``'s loss."""
    for _ in range(steps):
        opt.zero_grad()
        model.loss().backward()
        opt.step()


def close(model: Quadratic, expected: list[float]) -> None:
    torch.testing.assert_close(model.x().detach(), torch.tensor(expected, dtype=F64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mu", [0.9, 0.0])
def test_three_steps_follow_the_paper(mu):
    lr, rho = 0.1, 0.5
    model = Quadratic()
    expected = oracle(Quadratic(), 3, lr, rho, mu)
    opt = td.MSAM(model.parameters(), torch.optim.SGD, rho=rho, lr=lr, momentum=mu)
    assert not opt.perturbed
    for w, w_tilde in expected:
        opt.zero_grad()
        model.loss().backward()
        opt.step()
        assert opt.perturbed
        close(model, w_tilde)  # between steps: the perturbed point
        with opt.evaluation_point():
            close(model, w)  # evaluation: the unperturbed point
        close(model, w_tilde)
    assert math.dist(expected[-1][0], expected[-1][1]) == pytest.approx(rho)
    opt.settle()
    close(model, expected[-1][0])
    assert not opt.perturbed
    with opt.evaluation_point():  # already at w: nothing moves
        close(model, expected[-1][0])
    close(model, expected[-1][0])


def test_adam_perturbs_along_the_first_moment():
    """The authors' AdamW variant: the gradient at w - rho exp_avg/||exp_avg||, then Adam's step at w."""
    lr, rho = 0.05, 0.3
    model, ref = Quadratic(), Quadratic()
    opt = td.MSAM(model.parameters(), torch.optim.Adam, rho=rho, lr=lr)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=lr)
    for step in range(3):
        opt.zero_grad()
        model.loss().backward()
        opt.step()
        ref_opt.zero_grad()
        x = ref.x().detach()
        if step:
            m = torch.cat([ref_opt.state[p]["exp_avg"].reshape(-1) for p in ref.parameters()])
            x = x - rho * m / (m.norm() + 1e-12)
        g = torch.tensor(grad_of(ref, x.tolist()), dtype=F64)
        ref.u.grad, ref.v.grad = g[:6].reshape(2, 3).clone(), g[6:].clone()
        ref_opt.step()
        with opt.evaluation_point():
            torch.testing.assert_close(model.x(), ref.x(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("inside", [True, False])
def test_state_dict_round_trip_continues_exactly(inside):
    """Saved at w (inside evaluation_point, as the engine does) or at w~: loading continues the run."""
    lr, rho, mu = 0.1, 0.5, 0.9
    full = Quadratic()
    opt = td.MSAM(full.parameters(), torch.optim.SGD, rho=rho, lr=lr, momentum=mu)
    run_steps(full, opt, 4)
    part = Quadratic()
    opt_a = td.MSAM(part.parameters(), torch.optim.SGD, rho=rho, lr=lr, momentum=mu)
    run_steps(part, opt_a, 2)
    buf = io.BytesIO()
    if inside:
        with opt_a.evaluation_point():
            torch.save({"model": part.state_dict(), "opt": opt_a.state_dict()}, buf)
    else:
        torch.save({"model": part.state_dict(), "opt": opt_a.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = Quadratic()
    opt_b = td.MSAM(resumed.parameters(), torch.optim.SGD, rho=rho, lr=lr, momentum=mu)
    resumed.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    assert opt_b.perturbed
    for p, q in zip(part.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-15)
    run_steps(resumed, opt_b, 2)
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)


def test_engine_evaluates_and_returns_the_unperturbed_weights():
    """Every evaluation row and the trained model see w, not w~ (rho large enough to tell them apart)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1, dtype=F64)
    data = torch.randn(16, 3, dtype=F64)
    target = data @ torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    seen = []

    def evaluate(row):
        seen.append([p.detach().clone() for p in model.parameters()])
        return {"val": -float(torch.mean((model(data).squeeze(-1) - target) ** 2))}

    def loss(idx):
        return torch.mean((model(data[idx]).squeeze(-1) - target[idx]) ** 2)

    plan = Epochs(3, [8, 8], lambda e: torch.randperm(16, generator=torch.Generator().manual_seed(e)), lambda i: i)
    config = OptimizerConfig(method="msam", lr=0.05, momentum=0.9, msam_rho=0.5)
    result = train(model, config, plan, loss, evaluate, monitor=Monitor("val"))
    final = [p.detach() for p in model.parameters()]
    best = max(range(1, len(result.history)), key=lambda i: result.history[i]["val"])
    for a, b in zip(final, seen[best]):  # the restored best weights are the evaluated (unperturbed) ones
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    # a run without the monitor ends at w of its last step, as evaluated in the last row
    model2 = nn.Linear(3, 1, dtype=F64)
    model2.load_state_dict({k: v for k, v in zip(model.state_dict(), seen[0])})
    model = model2
    seen.clear()
    train(model, config, plan, loss, evaluate)
    for a, b in zip(model.parameters(), seen[-1]):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=1e-14)


def test_engine_evaluation_differs_from_the_perturbed_point():
    """The evaluation hook really moves: rows evaluated inside it differ from evaluating at w~."""
    model = Quadratic()
    opt = td.MSAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1, momentum=0.9)
    run_steps(model, opt, 2)
    at_tilde = model.x().detach().clone()
    with opt.evaluation_point():
        at_w = model.x().detach().clone()
    assert float((at_w - at_tilde).norm()) == pytest.approx(0.5)


def test_registry_entry_and_its_own_strength():
    method = METHODS["msam"]
    assert method.compared and method.strength == "msam_rho" and not method.needs_closure
    assert method.grid == (0.3, 1.0, 3.0)
    model = Quadratic()
    opt = method.build(model.parameters(), torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, {"msam_rho": 2.0})
    assert isinstance(opt, td.MSAM) and opt.rho == 2.0 and method_of(opt) is method


def test_bad_input_is_a_clear_error():
    model = Quadratic()
    with pytest.raises(ValueError, match="rho"):
        td.MSAM(model.parameters(), torch.optim.SGD, rho=-1.0, lr=0.1)
    with pytest.raises(ValueError, match="Adagrad has none"):
        td.MSAM(model.parameters(), torch.optim.Adagrad, lr=0.1)
    opt = td.MSAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    state = opt.state_dict()
    state["tensordas"] = {**state["tensordas"], "moved": [99]}
    with pytest.raises(ValueError, match="does not have"):
        opt.load_state_dict(state)


# ------------------------------------------------------------------ MSAM + DAS (gradient form)
def test_msam_das_three_steps_follow_both_formulas():
    lr, rho, mu, alpha = 0.1, 0.5, 0.9, 0.3
    model = Quadratic()
    expected = oracle(Quadratic(), 3, lr, rho, mu, das_alpha=alpha)
    plain = oracle(Quadratic(), 3, lr, rho, mu)
    opt = td.optim.MSAMDAS(
        model.parameters(), torch.optim.SGD, core_groups=[[model.u, model.v]], rho=rho, alpha=alpha, lr=lr, momentum=mu
    )
    for w, w_tilde in expected:
        opt.zero_grad()
        model.loss().backward()
        opt.step()
        close(model, w_tilde)
        with opt.evaluation_point():
            close(model, w)
    assert math.dist(expected[-1][0], plain[-1][0]) > 1e-3  # the DAS term made a difference


def test_msam_das_state_dict_round_trip_keeps_both_sections():
    kw = dict(rho=0.5, alpha=0.3, lr=0.1, momentum=0.9, alpha_schedule="linear", total_steps=5)

    def make(model):
        return td.optim.MSAMDAS(model.parameters(), torch.optim.SGD, core_groups=[[model.u, model.v]], **kw)

    full, part, resumed = Quadratic(), Quadratic(), Quadratic()
    opt, opt_a, opt_b = make(full), make(part), make(resumed)
    run_steps(full, opt, 4)
    run_steps(part, opt_a, 2)
    with opt_a.evaluation_point():
        saved = {"model": copy.deepcopy(part.state_dict()), "opt": copy.deepcopy(opt_a.state_dict())}
    assert saved["opt"]["tensordas"]["wrapper"] == "MSAMDAS" and saved["opt"]["tensordas"]["das"]["step"] == 2
    resumed.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    assert opt_b.das.step_count == 2 and opt_b.perturbed
    run_steps(resumed, opt_b, 2)
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-14)
