"""SAM against a test-only peer (pytorch_optimizer.SAM) and a hand-written float64 step."""

import io
import math

import pytest
import torch
from conftest import TwoGroupNet, assert_close, snapshot
from pytorch_optimizer import SAM as PeerSAM

import tensordas as td

F64 = torch.float64


def closure_for(opt, net, batch):
    def closure():
        opt.zero_grad()
        loss = net.loss(batch)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_sam_matches_pytorch_optimizer_sam(adaptive):
    ours_net, peer_net = TwoGroupNet(), TwoGroupNet()
    kwargs = {"rho": 0.05, "adaptive": adaptive, "lr": 0.01, "momentum": 0.9}
    ours = td.SAM(ours_net.parameters(), torch.optim.SGD, **kwargs)
    peer = PeerSAM(peer_net.parameters(), torch.optim.SGD, **kwargs)
    for step in range(4):
        loss = ours.step(closure_for(ours, ours_net, step))  # calls the closure at w itself
        peer_loss = closure_for(peer, peer_net, step)()  # the peer wants the gradient at w already there
        peer.step(closure_for(peer, peer_net, step))
        assert loss.item() == pytest.approx(peer_loss.item(), rel=1e-6)  # the loss at w, not at w + e
    start = TwoGroupNet()
    for a, b, p0 in zip(ours_net.parameters(), peer_net.parameters(), start.parameters()):
        # the peer computes the perturbation norm in float32
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
        assert not torch.allclose(a, p0)


def hand_sam_step(net, rho, lr, adaptive):
    """One SAM step with base SGD (first momentum step: buffer = gradient), in float64."""
    params = list(net.parameters())
    w = snapshot(params)
    grads = torch.autograd.grad(net.loss(), params)
    if adaptive:
        norm = math.sqrt(sum(float((p.detach() * g).pow(2).sum()) for p, g in zip(params, grads)))
        e = [rho * p.detach() ** 2 * g / norm for p, g in zip(params, grads)]
    else:
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        e = [rho * g / norm for g in grads]
    probe = TwoGroupNet()
    with torch.no_grad():
        for q, w0, e0 in zip(probe.parameters(), w, e):
            q.copy_(w0 + e0)
    g_tilde = torch.autograd.grad(probe.loss(), list(probe.parameters()))
    return [w0 - lr * g for w0, g in zip(w, g_tilde)], w


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
@pytest.mark.parametrize("use_closure", [True, False], ids=["step-closure", "two-phases"])
def test_sam_one_step_matches_hand_formula(adaptive, use_closure):
    rho, lr = 0.1, 0.02
    net = TwoGroupNet()
    expected, w = hand_sam_step(TwoGroupNet(), rho, lr, adaptive)
    sam = td.SAM(net.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr, momentum=0.9)
    if use_closure:
        sam.step(closure_for(sam, net, None))
    else:
        net.loss().backward()
        sam.first_step(zero_grad=True)
        assert all(p.grad is None for p in net.parameters())
        assert not torch.equal(net.bias, w[0])  # at w + e now (the bias is the first parameter)
        net.loss().backward()
        sam.second_step(zero_grad=True)
    for p, p_exp in zip(net.parameters(), expected):
        assert_close(p, p_exp)
    # the perturbation matters: plain SGD would land elsewhere
    plain = TwoGroupNet()
    grads = torch.autograd.grad(plain.loss(), list(plain.parameters()))
    for p, w0, g in zip(net.parameters(), w, grads):
        assert not torch.allclose(p, w0 - lr * g)


def test_closure_step_equals_explicit_phases_bitwise():
    a, b = TwoGroupNet(), TwoGroupNet()
    sam_a = td.SAM(a.parameters(), torch.optim.SGD, rho=0.05, lr=0.01, momentum=0.9)
    sam_b = td.SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=0.01, momentum=0.9)
    for step in range(3):
        loss = sam_a.step(closure_for(sam_a, a, step))
        first = b.loss(step)
        first.backward()
        sam_b.first_step(zero_grad=True)
        b.loss(step).backward()
        sam_b.second_step(zero_grad=True)
        assert torch.equal(loss, first)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_rho_zero_is_bitwise_the_base_optimizer():
    a, b = TwoGroupNet(), TwoGroupNet()
    sam = td.SAM(a.parameters(), torch.optim.SGD, rho=0.0, lr=0.01, momentum=0.9)
    sgd = torch.optim.SGD(b.parameters(), lr=0.01, momentum=0.9)
    for step in range(3):
        sam.step(closure_for(sam, a, step))
        sgd.zero_grad()
        b.loss(step).backward()
        sgd.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_step_without_closure_raises():
    net = TwoGroupNet()
    sam = td.SAM(net.parameters(), torch.optim.SGD, lr=0.1)
    net.loss().backward()
    with pytest.raises(ValueError, match="closure"):
        sam.step()


def sam_run(steps, resume_at=None):
    net = TwoGroupNet()

    def build(model):
        opt = td.SAM(model.parameters(), torch.optim.SGD, rho=0.05, adaptive=True, lr=0.01, momentum=0.9)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    opt, sched = build(net)
    for step in range(steps):
        if step == resume_at:
            buf = io.BytesIO()
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
            buf.seek(0)
            ckpt = torch.load(buf)
            assert "momentum_buffer" in ckpt["opt"]["state"][0]
            assert ckpt["opt"]["param_groups"][0]["rho"] == 0.05
            net = TwoGroupNet(seed=7)
            opt, sched = build(net)
            net.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
        opt.step(closure_for(opt, net, step))
        sched.step()
    return net, opt


def test_checkpoint_resume_is_exact():
    full, opt_full = sam_run(5)
    resumed, opt_resumed = sam_run(5, resume_at=2)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert opt_resumed.param_groups[0]["lr"] == opt_full.param_groups[0]["lr"]
    for p, q in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(opt_full.state[p]["momentum_buffer"], opt_resumed.state[q]["momentum_buffer"])


# --------------------------------------------- SAM's norm drift and DAS's copy of it
def q_of(cores):
    n = [float(c.detach().pow(2).sum()) for c in cores]
    mean = sum(n) / len(n)
    return sum((x - mean) ** 2 for x in n) / len(n)


def cp_problem():
    g = torch.Generator().manual_seed(0)
    m = td.CPModel((6, 5, 4), 3, std=0.7, core_scales=(1.5, 0.6, 1.0), generator=g, dtype=F64)
    target = torch.randn(m.shape, generator=g, dtype=F64)
    return m, lambda: 0.5 * (m() - target).pow(2).sum()


def one_step_dq(kind, eta, rho):
    m, loss_fn = cp_problem()
    cores = list(m.factors)
    q0 = q_of(cores)
    if kind == "sam":
        opt = td.SAM(m.parameters(), torch.optim.SGD, rho=rho, lr=eta)

        def closure():
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        opt.step(closure)
    else:
        base = torch.optim.SGD(m.parameters(), lr=eta)
        opt = base if kind == "gd" else td.DAS(m.parameters(), torch.optim.SGD, core_groups=[cores], alpha=rho, lr=eta)
        loss_fn().backward()
        opt.step()
    return q_of(cores) - q0


def test_sam_and_das_shrink_q_by_the_predicted_drift():
    eta, rho = 1e-4, 1e-3
    m, loss_fn = cp_problem()
    loss_fn().backward()
    n = [float(c.detach().pow(2).sum()) for c in m.factors]
    gam = [float(c.grad.pow(2).sum()) for c in m.factors]
    nb, gb = sum(n) / 3, sum(gam) / 3
    cov = sum((a - nb) * (b - gb) for a, b in zip(n, gam)) / 3
    assert cov < 0  # large cores get small gradients
    predicted = 4 * eta * rho * cov / math.sqrt(sum(gam))  # dQ_SAM - dQ_GD, docs/design.md section 1, fact 3
    dq_gd = one_step_dq("gd", eta, rho)
    assert (one_step_dq("sam", eta, rho) - dq_gd) / predicted == pytest.approx(1.0, rel=2e-2)
    assert (one_step_dq("das", eta, rho) - dq_gd) / predicted == pytest.approx(1.0, rel=2e-2)


def test_restore_returns_to_the_unperturbed_weights_without_stepping():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    sam = td.SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    x = torch.randn(8, 4, dtype=torch.float64)
    before = [p.detach().clone() for p in model.parameters()]
    model(x).pow(2).sum().backward()
    sam.first_step(zero_grad=True)
    assert not all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    sam.restore()
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert sam.base_optimizer.state == {}  # no base step was taken
    sam.restore()  # a second restore is a no-op
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
