"""DAS's balance option (docs/optimizers.md): each scale times
exp(-(beta eta / 2)(log n_k - mean_j log n_j)), checked against float64 references written here."""

import io
import math

import pytest
import torch
from conftest import TwoGroupNet, assert_close, snapshot, sqn
from torch import nn

import tensordas as td

F64 = torch.float64
PATHS = ["host", "device", "reference"]


def make_das(params, groups, path, **kw):
    kw.setdefault("lr", 0.1)
    opt = td.DAS(params, torch.optim.SGD, core_groups=groups, foreach=path != "reference", **kw)
    opt._host_path = path == "host"
    return opt


def balanced_reference(groups, *, alpha, lr, beta, variant="sam-matched", grad_norm="group", all_params=None):
    """The DAS scale, then the balance factor, then the clamp, on Python floats."""
    s_min, s_max = 0.5, 2.0
    global_sq = sum(sqn(p.grad) for p in all_params if p.grad is not None) if grad_norm == "global" else None
    out = []
    for cores in groups:
        gam = [sqn(c.grad) if c.grad is not None else None for c in cores]
        active = [x for x in gam if x is not None]
        gamma_bar, total = sum(active) / len(active), sum(active)
        norm = math.sqrt(total if global_sq is None else global_sq)
        logs = [math.log(sqn(c)) for c, x in zip(cores, gam) if x is not None and sqn(c) > 0]
        mean_log = sum(logs) / len(logs)
        row = []
        for c, x in zip(cores, gam):
            n = sqn(c)
            if x is None or n == 0:
                row.append(1.0)
                continue
            das = 1.0
            if norm > 0:
                if variant == "sam-matched":
                    das = math.sqrt(1 + 2 * alpha * lr * (x - gamma_bar) / (norm * n))
                else:
                    das = 1 + alpha * lr * (x - gamma_bar) / (norm * math.sqrt(n))
            b = math.exp(-(beta * lr / 2) * (math.log(n) - mean_log))
            row.append(min(max(das * b, s_min), s_max))
        out.append(row)
    return out


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("variant", ["sam-matched", "reference"])
@pytest.mark.parametrize("grad_norm", ["group", "global"])
def test_balanced_step_matches_the_float64_reference(path, variant, grad_norm):
    net = TwoGroupNet()
    alpha, lr, beta = 0.1, 0.1, 0.8
    opt = make_das(
        net.parameters(), net.groups(), path, alpha=alpha, lr=lr, balance=beta, variant=variant, grad_norm=grad_norm
    )
    net.loss().backward()
    params = list(net.parameters())
    before, grads = snapshot(params), [p.grad.clone() for p in params]
    scales = balanced_reference(
        net.groups(), alpha=alpha, lr=lr, beta=beta, variant=variant, grad_norm=grad_norm, all_params=params
    )
    plain = balanced_reference(net.groups(), alpha=alpha, lr=lr, beta=0.0, variant=variant, all_params=params)
    assert max(abs(s / p - 1) for r, q in zip(scales, plain) for s, p in zip(r, q)) > 1e-3  # balance acts
    assert all(0.5 < s < 2.0 for row in scales for s in row)  # no clamp bites
    s_of = {id(c): s for g, row in zip(net.groups(), scales) for c, s in zip(g, row)}
    opt.step()
    for p, p0, g in zip(params, before, grads):
        assert_close(p, s_of.get(id(p), 1.0) * p0 - lr * g)


@pytest.mark.parametrize("path", PATHS)
def test_balance_alone_preserves_the_model_and_equalises_the_norms(path):
    """alpha = 0, balance > 0: for the CP and Tucker groups (multilinear) the model's function is
    unchanged, the product of the factors is 1, and each log n_k moves by -beta eta (log n_k - mean)."""
    net = TwoGroupNet()
    beta, lr = 0.5, 0.2
    opt = make_das(net.parameters(), net.groups(), path, alpha=0.0, balance=beta, lr=lr)
    net.loss().backward()
    with torch.no_grad():
        out_cp, out_tucker = net.cp(), net.tucker()
    n0 = [[sqn(c) for c in g] for g in net.groups()]
    opt.rescale_cores()
    with torch.no_grad():
        assert_close(net.cp(), out_cp, rtol=1e-13, atol=1e-13)
        assert_close(net.tucker(), out_tucker, rtol=1e-13, atol=1e-13)
    for g, before in zip(net.groups(), n0):
        mean = sum(map(math.log, before)) / len(before)
        expected = [n * math.exp(-beta * lr * (math.log(n) - mean)) for n in before]
        after = [sqn(c) for c in g]
        assert after == pytest.approx(expected, rel=1e-12)
        assert math.fsum(math.log(a / b) for a, b in zip(after, before)) == pytest.approx(0.0, abs=1e-12)
        assert td.norm_deviation(g) < torch.tensor(before, dtype=F64).var(unbiased=False)


@pytest.mark.parametrize("path", PATHS)
def test_balance_acts_when_the_gradient_is_zero(path):
    """At a stationary point the DAS factor is 1 (||g|| = 0) but the balance still moves the norms;
    a core without a gradient (None) is left out and kept."""
    net = TwoGroupNet()
    beta, lr = 0.5, 0.2
    opt = make_das(net.parameters(), net.groups(), path, alpha=0.7, balance=beta, lr=lr)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    net.tucker.factors[1].grad = None
    groups = net.groups()
    n0 = [[sqn(c) for c in g] for g in groups]
    kept = net.tucker.factors[1].detach().clone()
    opt.rescale_cores()
    assert torch.equal(net.tucker.factors[1], kept)
    for g, before in zip(groups, n0):
        included = [n for c, n in zip(g, before) if c.grad is not None]
        mean = sum(map(math.log, included)) / len(included)
        for c, n in zip(g, before):
            want = n if c.grad is None else n * math.exp(-beta * lr * (math.log(n) - mean))
            assert sqn(c) == pytest.approx(want, rel=1e-12)
    assert opt.skipped_steps == 0


@pytest.mark.parametrize("path", PATHS)
def test_zero_norm_core_is_left_out_and_stays_zero(path):
    g = torch.Generator().manual_seed(0)
    a = nn.Parameter(torch.randn(2, 5, generator=g, dtype=F64))
    b = nn.Parameter(torch.zeros(4, 2, dtype=F64))  # LoRA's B at initialisation
    c = nn.Parameter(3 * torch.randn(3, 2, generator=g, dtype=F64))
    for p in (a, b, c):
        p.grad = torch.zeros_like(p)
    opt = make_das([a, b, c], [[a, b, c]], path, alpha=0.0, balance=1.0)
    n_a, n_c = sqn(a), sqn(c)
    opt.rescale_cores()
    assert torch.equal(b, torch.zeros_like(b))
    mean = (math.log(n_a) + math.log(n_c)) / 2  # b is not in the mean
    assert sqn(a) == pytest.approx(n_a * math.exp(-0.1 * (math.log(n_a) - mean)), rel=1e-12)
    assert sqn(a) * sqn(c) == pytest.approx(n_a * n_c, rel=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_balance_zero_is_bitwise_the_default(path):
    results = []
    for kw in ({}, {"balance": 0.0}, {"balance": 0}):
        net = TwoGroupNet()
        opt = make_das(net.parameters(), net.groups(), path, alpha=0.5, momentum=0.9, **kw)
        for step in range(3):
            opt.zero_grad()
            net.loss(step).backward()
            opt.step()
        results.append(list(net.parameters()))
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


@pytest.mark.parametrize("path", ["device", "reference"])
def test_paths_agree_with_balance_over_several_steps(path):
    """Host path against the other two, with momentum, split learning rates and a missing gradient."""
    runs = []
    for p in ("host", path):
        net = TwoGroupNet()
        cp, tk = net.cp.factors, net.tucker
        params = [{"params": [cp[0], tk.core, net.bias], "lr": 0.05}, {"params": [cp[1], cp[2], *tk.factors]}]
        opt = make_das(params, net.groups(), p, alpha=0.5, balance=0.3, lr=0.02, momentum=0.9)
        for step in range(4):
            opt.zero_grad()
            net.loss(step).backward()
            if step == 2:
                cp[2].grad = None
            opt.step()
        runs.append(net)
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_balance_in_state_dict_and_exact_resume():
    def run(resume_at=None):
        net = TwoGroupNet()
        opt = make_das(net.parameters(), net.groups(), "host", alpha=0.5, balance=0.3, momentum=0.9)
        for step in range(4):
            if step == resume_at:
                buf = io.BytesIO()
                torch.save({"net": net.state_dict(), "opt": opt.state_dict()}, buf)
                buf.seek(0)
                ckpt = torch.load(buf)
                assert ckpt["opt"]["tensordas"]["balance"] == 0.3
                net = TwoGroupNet(seed=5)
                opt = make_das(net.parameters(), net.groups(), "host", alpha=0.5, balance=0.3, momentum=0.9)
                net.load_state_dict(ckpt["net"])
                opt.load_state_dict(ckpt["opt"])
            opt.zero_grad()
            net.loss(step).backward()
            opt.step()
        return net

    for a, b in zip(run().parameters(), run(resume_at=2).parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_negative_or_non_finite_balance_raises(bad):
    a, b = (nn.Parameter(torch.ones(2, 2)) for _ in range(2))
    with pytest.raises(ValueError, match=f"balance value: {bad}"):
        td.DAS([a, b], torch.optim.SGD, core_groups=[[a, b]], lr=0.1, balance=bad)
