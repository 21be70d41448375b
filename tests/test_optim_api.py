"""The torch.optim.Optimizer contract of DAS, SAM and BAR, and their argument checks."""

import pytest
import torch
from conftest import TwoGroupNet, snapshot
from torch import nn

import tensordas as td

F64 = torch.float64


def pair_net():
    """Two 2-core groups (BAR needs them) plus a bias."""
    net = nn.Module()
    g = torch.Generator().manual_seed(0)
    net.a, net.b, net.c, net.d = (nn.Parameter(torch.randn(3, 2, generator=g, dtype=F64)) for _ in range(4))
    net.bias = nn.Parameter(torch.randn(3, generator=g, dtype=F64))
    return net


def build(kind, net=None, **kw):
    net = pair_net() if net is None else net
    kw.setdefault("lr", 0.1)
    groups = [[net.a, net.b], [net.c, net.d]]
    if kind == "DAS":
        return td.DAS(net.parameters(), torch.optim.SGD, core_groups=groups, **kw)
    if kind == "BAR":
        return td.BAR(net.parameters(), torch.optim.SGD, core_groups=groups, **kw)
    return td.SAM(net.parameters(), torch.optim.SGD, **kw)


KINDS = ["DAS", "SAM", "BAR"]


@pytest.mark.parametrize("kind", KINDS)
def test_param_groups_and_state_are_shared_with_base(kind):
    opt = build(kind, momentum=0.9)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is opt.base_optimizer.param_groups
    assert opt.state is opt.base_optimizer.state
    opt.param_groups[0]["lr"] = 0.01
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize("kind", KINDS)
def test_zero_grad(kind):
    net = pair_net()
    opt = build(kind, net)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.zero_grad(set_to_none=False)
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in net.parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_lr_scheduler_acts_on_the_wrapper(kind):
    opt = build(kind, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    if kind == "SAM":
        opt.step(lambda: torch.zeros(()))
    else:
        opt.step()
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize("kind", ["DAS", "BAR"])
def test_add_param_group_gets_base_update_with_defaults(kind):
    net = pair_net()
    opt = build(kind, net, momentum=0.9, alpha=0.5)
    extra = nn.Parameter(torch.tensor([1.0, -2.0], dtype=F64))
    opt.add_param_group({"params": [extra]})
    assert opt.param_groups is opt.base_optimizer.param_groups and len(opt.param_groups) == 2
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["lr"] == 0.1
    twin = nn.Parameter(extra.detach().clone())
    sgd = torch.optim.SGD([twin], lr=0.1, momentum=0.9)
    for step in range(3):
        for p in net.parameters():
            p.grad = torch.full_like(p, 0.1 * (step + 1))
        extra.grad = torch.tensor([0.5, -0.25 * step], dtype=F64)
        twin.grad = extra.grad.clone()
        opt.step()
        sgd.step()
    assert torch.equal(extra, twin)


def test_sam_add_param_group():
    net = pair_net()
    sam = build("SAM", net, rho=0.1, momentum=0.9)
    extra = nn.Parameter(torch.ones(2, dtype=F64))
    sam.add_param_group({"params": [extra], "rho": 0.0})
    assert sam.param_groups[1]["rho"] == 0.0 and sam.param_groups[1]["adaptive"] is False
    assert sam.param_groups is sam.base_optimizer.param_groups


@pytest.mark.parametrize("kind", ["DAS", "BAR"])
def test_params_in_no_group_get_only_the_base_update(kind):
    net = pair_net()
    opt = build(kind, net, momentum=0.9, alpha=0.5)
    twin = nn.Parameter(net.bias.detach().clone())
    sgd = torch.optim.SGD([twin], lr=0.1, momentum=0.9)
    cores_before = snapshot([net.a, net.b])
    for step in range(3):
        loss = (net.a @ net.b.T).pow(2).sum() + (net.c @ net.d.T - 1).pow(2).sum() + (net.bias * step).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        twin.grad = net.bias.grad.clone()
        opt.step()
        sgd.step()
    assert torch.equal(net.bias, twin)
    assert not torch.equal(net.a, cores_before[0])


def test_core_groups_accepts_core_group_objects_and_plain_lists():
    a, b = TwoGroupNet(), TwoGroupNet()
    opt_a = td.DAS(a.parameters(), torch.optim.SGD, core_groups=td.find_core_groups(a), lr=0.1)
    opt_b = td.DAS(b.parameters(), torch.optim.SGD, core_groups=b.groups(), lr=0.1)
    for m, o in ((a, opt_a), (b, opt_b)):
        m.loss().backward()
        o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


# --------------------------------------------------------------- argument checks
def das(**kw):
    net = pair_net()
    kw.setdefault("lr", 0.1)
    return lambda: td.DAS(net.parameters(), torch.optim.SGD, core_groups=[[net.a, net.b]], **kw)


def sam(**kw):
    net = pair_net()
    kw.setdefault("lr", 0.1)
    return lambda: td.SAM(net.parameters(), torch.optim.SGD, **kw)


def bar(**kw):
    net = pair_net()
    kw.setdefault("lr", 0.1)
    return lambda: td.BAR(net.parameters(), torch.optim.SGD, core_groups=[[net.a, net.b]], **kw)


INVALID = [
    ("das-alpha", das(alpha=-0.1), "-0.1"),
    ("das-alpha-nan", das(alpha=float("nan")), "nan"),
    ("das-lr", das(lr=-0.2), "-0.2"),
    ("das-schedule", das(alpha_schedule="exponential"), "exponential"),
    ("das-linear-no-T", das(alpha_schedule="linear"), "linear"),
    ("das-cosine-no-T", das(alpha_schedule="cosine"), "cosine"),
    ("das-T-zero", das(alpha_schedule="linear", total_steps=0), "0"),
    ("das-T-negative", das(alpha_schedule="cosine", total_steps=-5), "-5"),
    ("das-grad-norm", das(grad_norm="l1"), "l1"),
    ("das-variant", das(variant="authors"), "authors"),
    ("das-s_min-zero", das(s_min=0.0), "s_min=0.0"),
    ("das-s_min-above-1", das(s_min=1.5), "s_min=1.5"),
    ("das-s_max-below-1", das(s_max=0.9), "s_max=0.9"),
    ("das-s_max-inf", das(s_max=float("inf")), "s_max=inf"),
    ("sam-rho", sam(rho=-0.05), "-0.05"),
    ("sam-lr", sam(lr=-1.0), "-1.0"),
    ("bar-alpha", bar(alpha=-3.0), "-3.0"),
    ("bar-lr", bar(lr=-0.3), "-0.3"),
    ("bar-schedule", bar(alpha_schedule="step"), "step"),
]


@pytest.mark.parametrize("factory,needle", [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_hyper_parameters_raise_value_error(factory, needle):
    with pytest.raises(ValueError) as info:
        factory()
    assert needle in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_optimizer_instance_instead_of_class_raises_type_error(kind):
    net = pair_net()
    instance = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="class"):
        if kind == "SAM":
            td.SAM(net.parameters(), instance, lr=0.1)
        else:
            cls = td.DAS if kind == "DAS" else td.BAR
            cls(net.parameters(), instance, core_groups=[[net.a, net.b]], lr=0.1)


def test_trainable_core_not_held_by_optimizer_raises():
    net = pair_net()
    with pytest.raises(ValueError, match="not among the optimizer's parameters"):
        td.DAS([net.a, net.bias], torch.optim.SGD, core_groups=[[net.a, net.b]], lr=0.1)


def test_frozen_core_not_held_is_ignored():
    net = pair_net()
    net.c.requires_grad_(False)
    params = [net.a, net.b, net.d]
    opt = td.DAS(params, torch.optim.SGD, core_groups=[[net.a, net.b], [net.c, net.d]], lr=0.1)
    assert [len(g) for g in opt.core_groups] == [2]


@pytest.mark.parametrize("groups", [None, []], ids=["none", "empty"])
def test_missing_core_groups_raise(groups):
    net = pair_net()
    with pytest.raises(ValueError, match="core_groups"):
        td.DAS(net.parameters(), torch.optim.SGD, core_groups=groups, lr=0.1)


def test_flat_list_of_tensors_as_core_groups_raises_type_error():
    net = pair_net()
    with pytest.raises(TypeError):
        td.DAS(net.parameters(), torch.optim.SGD, core_groups=[net.a, net.b], lr=0.1)


def test_base_kwargs_reach_the_base_optimizer():
    net = pair_net()
    opt = td.DAS(net.parameters(), torch.optim.Adam, core_groups=[[net.a, net.b]], lr=0.01, betas=(0.8, 0.9))
    assert isinstance(opt.base_optimizer, torch.optim.Adam)
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)


def test_sam_add_param_group_with_negative_rho_raises():
    sam = build("SAM", pair_net(), rho=0.1)
    with pytest.raises(ValueError, match="-0.5"):
        sam.add_param_group({"params": [nn.Parameter(torch.ones(2, dtype=F64))], "rho": -0.5})
