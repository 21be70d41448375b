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
    ("das-balance", das(balance=-0.1), "-0.1"),
    ("das-nonfinite", das(nonfinite="ignore"), "ignore"),
    ("das-s_min-zero", das(s_min=0.0), "s_min=0.0"),
    ("das-s_min-above-1", das(s_min=1.5), "s_min=1.5"),
    ("das-s_max-below-1", das(s_max=0.9), "s_max=0.9"),
    ("das-s_max-inf", das(s_max=float("inf")), "s_max=inf"),
    ("sam-rho", sam(rho=-0.05), "-0.05"),
    ("sam-lr", sam(lr=-1.0), "-1.0"),
    ("sam-nonfinite", sam(nonfinite="zero"), "zero"),
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


def test_flat_list_of_tensors_is_one_core_group():
    net = pair_net()
    opt = td.DAS(net.parameters(), torch.optim.SGD, core_groups=[net.a, net.b], lr=0.1)
    assert [(g.name, g.cores) for g in opt.core_groups] == [("group0", [net.a, net.b])]


def test_base_kwargs_reach_the_base_optimizer():
    net = pair_net()
    opt = td.DAS(net.parameters(), torch.optim.Adam, core_groups=[[net.a, net.b]], lr=0.01, betas=(0.8, 0.9))
    assert isinstance(opt.base_optimizer, torch.optim.Adam)
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)


def test_sam_add_param_group_with_negative_rho_raises():
    sam = build("SAM", pair_net(), rho=0.1)
    with pytest.raises(ValueError, match="-0.5"):
        sam.add_param_group({"params": [nn.Parameter(torch.ones(2, dtype=F64))], "rho": -0.5})


def _adam(kind, net):
    groups = [[net.a, net.b], [net.c, net.d]]
    if kind == "SAM":
        return td.SAM(net.parameters(), torch.optim.Adam, lr=0.01)
    cls = td.DAS if kind == "DAS" else td.BAR
    return cls(net.parameters(), torch.optim.Adam, core_groups=groups, lr=0.01)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.filterwarnings("error")  # also: no "lr_scheduler.step() before optimizer.step()" for SAM's phases
def test_one_cycle_lr_cycles_adams_beta1_through_the_wrapper(kind):
    """OneCycleLR reads the optimizer's defaults for beta1: the wrapper exposes the base's defaults."""
    net = pair_net()
    opt = _adam(kind, net)
    assert opt.defaults["betas"] == torch.optim.Adam([nn.Parameter(torch.ones(1))]).defaults["betas"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    beta1_start = opt.param_groups[0]["betas"][0]
    for _ in range(4):
        net.a.sum().backward() if kind == "SAM" else (net.a.sum() + net.c.sum()).backward()
        if kind == "SAM":
            opt.first_step(zero_grad=True)
            net.a.sum().backward()
            opt.second_step(zero_grad=True)
        else:
            opt.step()
            opt.zero_grad()
        sched.step()
    assert opt.param_groups[0]["betas"][0] < beta1_start  # the momentum cycle reached the base
    assert opt.base_optimizer.param_groups[0]["betas"] == opt.param_groups[0]["betas"]


@pytest.mark.parametrize("kind", KINDS)
def test_negative_lr_in_a_param_group_raises(kind):
    net = pair_net()
    groups = [{"params": [net.a, net.b, net.c, net.d], "lr": -0.1}, {"params": [net.bias]}]
    with pytest.raises(ValueError, match="-0.1"):
        if kind == "SAM":
            td.SAM(groups, torch.optim.SGD, lr=0.1)
        else:
            cls = td.DAS if kind == "DAS" else td.BAR
            cls(groups, torch.optim.SGD, core_groups=[[net.a, net.b], [net.c, net.d]], lr=0.1)
    opt = build(kind, pair_net())
    with pytest.raises(ValueError, match="-2.0"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2, dtype=F64))], "lr": -2.0})


def test_failed_load_state_dict_changes_nothing():
    """A checkpoint from a DAS with another core-group layout is refused before anything is loaded."""
    net = pair_net()
    src = td.DAS(net.parameters(), torch.optim.SGD, core_groups=[[net.a, net.b], [net.c, net.d]], lr=0.1, momentum=0.9)
    for _ in range(2):
        (net.a.sum() * net.b.sum() + net.c.sum() * net.d.sum()).backward()
        src.step()
        src.zero_grad()
    other = pair_net()
    dst = td.DAS(
        other.parameters(), torch.optim.SGD, core_groups=[[other.a, other.b, other.c, other.d]], lr=0.5, momentum=0.9
    )
    before = dst.state_dict()
    with pytest.raises(ValueError, match="core groups"):
        dst.load_state_dict(src.state_dict())
    assert dst.param_groups[0]["lr"] == 0.5
    assert dst.step_count == 0
    assert len(dst.state) == 0
    assert dst.state_dict()["tensordas"]["step"] == before["tensordas"]["step"]


def test_private_subclass_checkpoint_loads_into_its_public_class():
    """The Trainer's private SAM subclass saves and loads as SAM."""

    class _PrivateSAM(td.SAM):
        pass

    net = pair_net()
    private = _PrivateSAM(net.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    net.a.sum().backward()
    private.first_step(zero_grad=True)
    net.a.sum().backward()
    private.second_step(zero_grad=True)
    state = private.state_dict()
    assert state["tensordas"]["wrapper"] == "SAM"
    public = td.SAM(pair_net().parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    public.load_state_dict(state)
    assert torch.equal(public.state_dict()["state"][0]["momentum_buffer"], state["state"][0]["momentum_buffer"])
    with pytest.raises(ValueError, match="saved by SAM"):
        build("DAS").load_state_dict(state)


def test_global_grad_norm_with_a_wider_non_core_gradient():
    """float32 cores with a float64 non-core gradient: the global norm accumulates in float64."""
    g = torch.Generator().manual_seed(3)
    a, b = (nn.Parameter(torch.randn(3, 2, generator=g)) for _ in range(2))
    bias = nn.Parameter(torch.randn(5, generator=g, dtype=F64))
    grads = [torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g), torch.randn(5, generator=g, dtype=F64)]
    results = []
    for foreach in (True, False):
        params = [nn.Parameter(p.detach().clone()) for p in (a, b, bias)]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        opt = td.DAS(
            params, torch.optim.SGD, core_groups=[params[:2]], lr=0.1, alpha=0.5, grad_norm="global", foreach=foreach
        )
        opt.step()
        results.append([p.detach().double() for p in params])
    # independent float64 computation of the sam-matched scale
    n = torch.stack([a.detach().double().pow(2).sum(), b.detach().double().pow(2).sum()])
    gamma = torch.stack([grads[0].double().pow(2).sum(), grads[1].double().pow(2).sum()])
    norm = (gamma.sum() + grads[2].pow(2).sum()).sqrt()
    s = (1 + 2 * 0.5 * 0.1 * (gamma - gamma.mean()) / (norm * n)).sqrt()
    want_a = a.detach().double() * s[0] - 0.1 * grads[0].double()
    for got in results:
        assert torch.allclose(got[0], want_a, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_complex_parameters_raise_a_clear_error(kind):
    a, b = (nn.Parameter(torch.randn(3, 2, dtype=torch.complex64)) for _ in range(2))
    with pytest.raises(ValueError, match="complex"):
        if kind == "SAM":
            td.SAM([a, b], torch.optim.SGD, lr=0.1)
        else:
            cls = td.DAS if kind == "DAS" else td.BAR
            cls([a, b], torch.optim.SGD, core_groups=[[a, b], [a, b]][: 1 if kind == "DAS" else 2], lr=0.1)
    with pytest.raises(ValueError, match="complex"):
        td.norm_deviation([a, b])


@pytest.mark.parametrize("kind", ["DAS", "DAS-reference-path", "SAM"])
def test_sparse_gradients_raise_a_clear_error(kind):
    emb = nn.Embedding(10, 4, sparse=True)
    b = nn.Parameter(torch.randn(4, 3))
    (emb(torch.tensor([1, 1, 2])) @ b).sum().backward()
    if kind == "SAM":
        opt = td.SAM([emb.weight, b], torch.optim.SGD, lr=0.1)
        step = opt.first_step
    else:
        opt = td.DAS([emb.weight, b], torch.optim.SGD, core_groups=[[emb.weight, b]], lr=0.1, foreach=kind == "DAS")
        step = opt.step
    before = emb.weight.detach().clone()
    with pytest.raises(ValueError, match="sparse"):
        step()
    assert torch.equal(emb.weight.detach(), before)


def test_sam_refused_param_group_leaves_the_optimizer_as_it_was():
    sam = build("SAM", pair_net(), rho=0.1)
    groups = len(sam.param_groups)
    with pytest.raises(ValueError, match="-0.5"):
        sam.add_param_group({"params": [nn.Parameter(torch.ones(2, dtype=F64))], "rho": -0.5})
    with pytest.raises(ValueError, match="complex"):
        sam.add_param_group({"params": nn.Parameter(torch.ones(2, dtype=torch.complex64))})
    assert len(sam.param_groups) == len(sam.base_optimizer.param_groups) == groups


@pytest.mark.parametrize("kind", KINDS)
def test_train_and_eval_reach_a_schedule_free_base(kind):
    """Schedule-free optimizers swap the parameters to their averaged point in eval(); the wrapper
    forwards train()/eval() so that happens exactly as with the base optimizer alone."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    net = pair_net()
    groups = [[net.a, net.b], [net.c, net.d]]
    if kind == "SAM":
        opt = td.SAM(net.parameters(), pytorch_optimizer.ScheduleFreeSGD, lr=0.1)
    else:
        cls = td.DAS if kind == "DAS" else td.BAR
        opt = cls(net.parameters(), pytorch_optimizer.ScheduleFreeSGD, core_groups=groups, lr=0.1)
    opt.train()
    for _ in range(3):  # after one step the averaged and training points still coincide
        opt.zero_grad()
        (net.a.sum() * net.b.sum() + net.c.sum() * net.d.sum()).backward()
        if kind == "SAM":
            opt.first_step(zero_grad=True)
            (net.a.sum() * net.b.sum() + net.c.sum() * net.d.sum()).backward()
            opt.second_step(zero_grad=True)
        else:
            opt.step()
    before = [p.detach().clone() for p in net.parameters()]
    ref = pytorch_optimizer.ScheduleFreeSGD([nn.Parameter(p.clone()) for p in before], lr=0.1)
    ref.load_state_dict(opt.base_optimizer.state_dict())
    ref.eval()
    opt.eval()
    after = [p.detach() for p in net.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # eval() moved the weights
    for a, r in zip(after, (p for g in ref.param_groups for p in g["params"])):
        assert torch.equal(a, r.detach())
    opt.train()
    assert all(torch.allclose(p.detach(), b, rtol=0, atol=1e-12) for p, b in zip(net.parameters(), before))
