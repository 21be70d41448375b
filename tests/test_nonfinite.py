"""Non-finite gradients: nonfinite="warn" | "skip" | "raise" on DAS, BAR and SAM, and the warning
when a decaying alpha schedule runs past total_steps."""

import io
import warnings

import pytest
import torch
from conftest import TwoGroupNet, snapshot
from torch import nn

import tensordas as td

F64 = torch.float64
PATHS = ["host", "device", "reference"]


def make_das(net, path="host", base=torch.optim.SGD, **kw):
    kw.setdefault("lr", 0.05)
    kw.setdefault("alpha", 0.5)
    opt = td.DAS(net.parameters(), base, core_groups=net.groups(), foreach=path != "reference", **kw)
    opt._host_path = path == "host"
    return opt


def state_snapshot(opt):
    """Every tensor of the base optimizer's state (momentum, Adam moments and step), cloned."""
    return {
        id(p): {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()} for p, s in opt.state.items()
    }


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            va, vb = a[key][k], b[key][k]
            assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb


def poison(net, where):
    """A NaN in one gradient: a core of the CP group, or the bias (outside every group)."""
    target = net.cp.factors[1] if where == "core" else net.bias
    target.grad[0, 0] = float("nan")


def train(pairs, steps, bad_step=None):
    """Steps of each (net, optimizer) pair; at ``bad_step`` a NaN in a CP core's gradient."""
    for step in steps:
        for net, opt in pairs:
            opt.zero_grad()
            net.loss(step).backward()
            if step == bad_step:
                poison(net, "core")
            opt.step()


# ---------------------------------------------------------------------- DAS: warn
@pytest.mark.parametrize("path", PATHS)
def test_warn_leaves_the_group_unscaled_and_warns_once_naming_it(path):
    net = TwoGroupNet()
    opt = make_das(net, path)
    with pytest.warns(RuntimeWarning, match="'group0'") as record:
        train([(net, opt)], range(3), bad_step=0)
    assert len([w for w in record if "non-finite" in str(w.message)]) == 1
    assert "group1" not in str(record[0].message)
    # "warn" lets the base step apply the NaN, so the CP group's later gradients are NaN too
    assert not torch.isfinite(net.cp.factors[1]).all()
    assert opt.skipped_per_group() == {"group0": 3, "group1": 0}
    assert opt.step_count == 3


# ---------------------------------------------------------------------- DAS: skip
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("where", ["core", "bias"])
@pytest.mark.parametrize(
    "base,kwargs", [(torch.optim.SGD, {"momentum": 0.9}), (torch.optim.Adam, {"lr": 0.01})], ids=["sgd", "adam"]
)
def test_skip_leaves_parameters_state_and_counter_bit_identical(path, where, base, kwargs):
    """A skipped step changes nothing: the run equals one in which the bad batch never came."""
    net, clean = TwoGroupNet(), TwoGroupNet()
    opt = make_das(net, path, base=base, nonfinite="skip", balance=0.1, **kwargs)
    ref = make_das(clean, path, base=base, balance=0.1, **kwargs)
    train([(net, opt), (clean, ref)], range(2))
    params, state = snapshot(net.parameters()), state_snapshot(opt)
    opt.zero_grad()
    net.loss(7).backward()
    poison(net, where)
    opt.step()
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), params))
    assert_same_state(state_snapshot(opt), state)
    assert opt.step_count == 2 and opt.skipped_whole_steps == 1
    assert opt.skipped_per_group() == {"group0": int(where == "core"), "group1": 0}
    assert opt.last_step_stats() == {}
    train([(net, opt), (clean, ref)], range(2, 4))
    for a, b in zip(net.parameters(), clean.parameters()):
        assert torch.equal(a, b)
    assert opt.step_count == ref.step_count == 4


def test_skip_state_dict_round_trip():
    net = TwoGroupNet()
    opt = make_das(net, nonfinite="skip", momentum=0.9)
    train([(net, opt)], range(3), bad_step=1)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    fresh = make_das(TwoGroupNet(), nonfinite="skip", momentum=0.9)
    fresh.load_state_dict(torch.load(buf))
    assert fresh.step_count == 2 and fresh.skipped_whole_steps == 1
    assert fresh.skipped_per_group() == opt.skipped_per_group() == {"group0": 1, "group1": 0}
    assert float(fresh.max_scale_deviation) == float(opt.max_scale_deviation) > 0


# ---------------------------------------------------------------------- DAS: raise
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("where,needle", [("core", "'group0'"), ("bias", "outside the core groups")])
def test_raise_names_the_group_and_changes_nothing(path, where, needle):
    net = TwoGroupNet()
    opt = make_das(net, path, nonfinite="raise", momentum=0.9)
    net.loss().backward()
    opt.step()
    params, state = snapshot(net.parameters()), state_snapshot(opt)
    opt.zero_grad()
    net.loss(1).backward()
    poison(net, where)
    with pytest.raises(FloatingPointError, match=needle):
        opt.step()
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), params))
    assert_same_state(state_snapshot(opt), state)
    assert opt.step_count == 1


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_alpha_zero_still_checks_the_gradients(mode):
    net = TwoGroupNet()
    opt = make_das(net, alpha=0.0, nonfinite=mode)
    net.loss().backward()
    net.tucker.factors[0].grad[0, 0] = float("inf")
    before = snapshot(net.parameters())
    if mode == "raise":
        with pytest.raises(FloatingPointError, match="group1"):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_whole_steps == 1
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), before))


def test_large_finite_gradients_are_not_flagged():
    """The check takes the max-norm: a gradient whose squares overflow float32 is still finite."""
    a, b = (nn.Parameter(torch.ones(3, 2)) for _ in range(2))
    opt = td.DAS([a, b], torch.optim.SGD, core_groups=[[a, b]], lr=1e-30, nonfinite="raise")
    a.grad, b.grad = torch.full((3, 2), 1e30), torch.ones(3, 2)
    opt.step()
    assert opt.step_count == 1


# ---------------------------------------------------------------------- BAR
@pytest.mark.parametrize("mode", ["warn", "skip", "raise"])
def test_bar_shares_the_modes(mode):
    g = torch.Generator().manual_seed(0)
    x, y, u, v = (nn.Parameter(torch.randn(3, 2, generator=g, dtype=F64)) for _ in range(4))
    opt = td.BAR([x, y, u, v], torch.optim.SGD, core_groups=[[x, y], [u, v]], lr=0.1, momentum=0.9, nonfinite=mode)
    ((x * y).sum() + (u * v).sum()).backward()
    y.grad[0, 0] = float("nan")
    before = snapshot([x, y, u, v])
    if mode == "raise":
        with pytest.raises(FloatingPointError, match="group0"):
            opt.step()
    elif mode == "skip":
        opt.step()
        assert opt.skipped_whole_steps == 1 and opt.step_count == 0
    else:
        with pytest.warns(RuntimeWarning, match="group0"):
            opt.step()
        assert opt.skipped_per_group() == {"group0": 1, "group1": 0}
        assert torch.equal(x, before[0] - 0.1 * x.grad)  # unscaled, base step only
        return
    assert all(torch.equal(p, p0) for p, p0 in zip([x, y, u, v], before))


# ---------------------------------------------------------------------- GradScaler rules
def test_grad_scaler_skips_before_das_looks():
    net = TwoGroupNet()
    opt = make_das(net, nonfinite="raise", momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(net.loss()).backward()
    net.cp.factors[0].grad[0, 0] = float("inf")
    before = snapshot(net.parameters())
    scaler.step(opt)  # the scaler finds the inf and never calls DAS.step: no FloatingPointError
    scaler.update()
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), before))
    assert opt.step_count == 0 and opt.skipped_whole_steps == 0 and scaler.get_scale() == 2.0**9


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize("kind", ["DAS", "BAR", "SAM"])
def test_invalid_nonfinite_mode_raises(kind):
    a, b = (nn.Parameter(torch.ones(2, 2)) for _ in range(2))
    with pytest.raises(ValueError, match="'ignore'"):
        if kind == "SAM":
            td.SAM([a, b], torch.optim.SGD, lr=0.1, nonfinite="ignore")
        else:
            getattr(td, kind)([a, b], torch.optim.SGD, core_groups=[[a, b]], lr=0.1, nonfinite="ignore")


# ---------------------------------------------------------------------- SAM
def sam_closure(sam, net, batch, bad=False, calls=None):
    def closure():
        if calls is not None:
            calls.append(1)
        sam.zero_grad()
        loss = net.loss(batch)
        loss.backward()
        if bad:
            net.tucker.core.grad[0, 0] = float("nan")
        return loss

    return closure


def test_sam_warn_warns_once():
    net = TwoGroupNet()
    sam = td.SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.05)
    with pytest.warns(RuntimeWarning, match="first-pass gradient was not finite") as record:
        for step in range(3):
            sam.step(sam_closure(sam, net, step, bad=step == 0))
    assert len([w for w in record if "SAM" in str(w.message)]) == 1
    assert sam.nonfinite_steps == 3  # the NaN reached the weights: every later gradient is NaN too


@pytest.mark.parametrize("use_closure", [True, False], ids=["closure", "phases"])
def test_sam_skip_first_pass_changes_nothing_and_runs_no_second_pass(use_closure):
    net, clean = TwoGroupNet(), TwoGroupNet()
    sam = td.SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9, nonfinite="skip")
    ref = td.SAM(clean.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9)
    sam.step(sam_closure(sam, net, 0))
    ref.step(sam_closure(ref, clean, 0))
    params, state = snapshot(net.parameters()), state_snapshot(sam)
    calls = []
    if use_closure:
        sam.step(sam_closure(sam, net, 5, bad=True, calls=calls))
        assert len(calls) == 1
    else:
        sam_closure(sam, net, 5, bad=True)()
        sam.first_step(zero_grad=True)
        assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), params))  # not perturbed
        sam_closure(sam, net, 5)()
        sam.second_step(zero_grad=True)
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), params))
    assert_same_state(state_snapshot(sam), state)
    assert sam.nonfinite_steps == 1
    sam.step(sam_closure(sam, net, 1))
    ref.step(sam_closure(ref, clean, 1))
    for a, b in zip(net.parameters(), clean.parameters()):
        assert torch.equal(a, b)


def test_sam_skip_second_pass_restores_w_without_a_base_step():
    net = TwoGroupNet()
    sam = td.SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, momentum=0.9, nonfinite="skip")
    params = snapshot(net.parameters())
    sam_closure(sam, net, 0)()
    sam.first_step(zero_grad=True)
    assert any(not torch.equal(p, p0) for p, p0 in zip(net.parameters(), params))  # at w + e
    sam_closure(sam, net, 0, bad=True)()
    sam.second_step(zero_grad=True)
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), params))
    assert len(sam.state) == 0 and sam.nonfinite_steps == 1


@pytest.mark.parametrize("bad_pass", ["first", "second"])
def test_sam_raise_names_the_param_group_with_weights_at_w(bad_pass):
    net = TwoGroupNet()
    groups = [{"params": [net.bias]}, {"params": list(net.cp.parameters()) + list(net.tucker.parameters())}]
    sam = td.SAM(groups, torch.optim.SGD, rho=0.05, lr=0.05, nonfinite="raise")
    params = snapshot(net.parameters())
    sam_closure(sam, net, 0, bad=bad_pass == "first")()
    with pytest.raises(FloatingPointError, match=r"param group 1 \(1 of 6 parameters\)"):
        sam.first_step(zero_grad=True)
        sam_closure(sam, net, 0, bad=True)()
        sam.second_step(zero_grad=True)
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), params))
    assert len(sam.state) == 0


def test_sam_state_dict_keeps_the_count():
    net = TwoGroupNet()
    sam = td.SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.05, nonfinite="skip")
    sam.step(sam_closure(sam, net, 0, bad=True))
    fresh = td.SAM(TwoGroupNet().parameters(), torch.optim.SGD, rho=0.05, lr=0.05, nonfinite="skip")
    fresh.load_state_dict(sam.state_dict())
    assert fresh.nonfinite_steps == 1


# ---------------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decaying_schedule_warns_once_when_the_run_passes_total_steps(schedule):
    net = TwoGroupNet()
    opt = make_das(net, alpha_schedule=schedule, total_steps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train([(net, opt)], range(3))
    with pytest.warns(RuntimeWarning, match="total_steps=3") as record:
        train([(net, opt)], range(3, 6))
    assert len(record) == 1 and "step 4" in str(record[0].message)


def test_constant_schedule_never_warns():
    net = TwoGroupNet()
    opt = make_das(net, total_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train([(net, opt)], range(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sam_warn_counts_without_a_host_sync_on_cuda():
    net = TwoGroupNet().cuda()
    sam = td.SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.05)
    caught = []
    for step in range(4):
        sam_closure(sam, net, None, bad=step == 0)()  # batch None: TwoGroupNet's targets stay on the GPU
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                sam.first_step(zero_grad=True)
                sam_closure(sam, net, None)()
                sam.second_step(zero_grad=True)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        caught += [str(w.message) for w in record]
    assert any("first-pass gradient was not finite" in m for m in caught)
