"""DAS against hand-written float64 computations of the formulas in docs/optimizers.md ("DAS, precisely")."""

import io
import itertools
import math

import pytest
import torch
from conftest import TwoGroupNet, assert_close, reference_scales, snapshot, sqn
from torch import nn

import tensordas as td

F64 = torch.float64
# The default path (on CPU: scales on host floats), the multi-tensor device path, the single-tensor reference.
PATHS = [None, "device", False]
PATH_IDS = ["host", "multi-tensor", "single-tensor"]


def das(params, base=torch.optim.SGD, foreach=None, **kw):
    """td.DAS on one of PATHS: "device" forces the flat tensor path that CUDA takes."""
    opt = td.DAS(params, base, foreach=None if foreach == "device" else foreach, **kw)
    if foreach == "device":
        opt._host_path = False
    return opt


def make_das(net, base=torch.optim.SGD, params=None, **kw):
    kw.setdefault("lr", 0.1)
    return das(net.parameters() if params is None else params, base, core_groups=net.groups(), **kw)


def scale_map(groups, scales):
    return {id(c): s for g, row in zip(groups, scales) for c, s in zip(g, row)}


# ------------------------------------------------------------------ the norm drift
@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("grad_norm", ["group", "global"])
def test_rescale_moves_each_sq_norm_by_sam_drift(net, grad_norm, foreach):
    alpha, lr = 0.05, 0.1
    opt = make_das(net, alpha=alpha, lr=lr, grad_norm=grad_norm, foreach=foreach)
    net.loss().backward()
    groups = net.groups()
    n0 = [[sqn(c) for c in g] for g in groups]
    gam = [[sqn(c.grad) for c in g] for g in groups]
    total_sq = sum(sqn(p.grad) for p in net.parameters())  # includes the bias: "global"
    assert total_sq > sum(map(sum, gam)) * (1 + 1e-6)
    bias0, grads0 = net.bias.detach().clone(), [p.grad.clone() for p in net.parameters()]

    opt.rescale_cores()

    for g, n_before, gk in zip(groups, n0, gam):
        norm = math.sqrt(sum(gk) if grad_norm == "group" else total_sq)
        gamma_bar = sum(gk) / len(gk)
        expected = [n + 2 * alpha * lr * (x - gamma_bar) / norm for n, x in zip(n_before, gk)]
        assert all(0.3 < e / n < 3.5 for e, n in zip(expected, n_before))  # no clamp bites
        assert max(abs(e - n) / n for e, n in zip(expected, n_before)) > 1e-3  # a visible change
        actual = [sqn(c) for c in g]
        assert actual == pytest.approx(expected, rel=1e-12)
        assert sum(actual) == pytest.approx(sum(n_before), rel=1e-13)
    assert torch.equal(net.bias, bias0)
    assert all(torch.equal(p.grad, g0) for p, g0 in zip(net.parameters(), grads0))
    assert opt.step_count == 0


@pytest.mark.parametrize("variant", ["sam-matched", "reference"])
@pytest.mark.parametrize("grad_norm", ["group", "global"])
@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_full_step_is_scaling_then_plain_sgd(net, variant, grad_norm, foreach):
    alpha, lr = 0.1, 0.05
    opt = make_das(net, alpha=alpha, lr=lr, variant=variant, grad_norm=grad_norm, foreach=foreach)
    params = list(net.parameters())
    net.loss().backward()
    before, grads = snapshot(params), [p.grad.clone() for p in params]
    scales = reference_scales(
        net.groups(), alpha=alpha, lr_of=lambda c: lr, variant=variant, grad_norm=grad_norm, all_params=params
    )
    s_of = scale_map(net.groups(), scales)
    assert all(s != 1.0 for row in scales for s in row)

    opt.step()

    for p, p0, g in zip(params, before, grads):
        assert_close(p, s_of.get(id(p), 1.0) * p0 - lr * g)
    assert opt.step_count == 1


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_reference_variant_formula(net, foreach):
    alpha, lr = 0.05, 0.1
    opt = make_das(net, alpha=alpha, lr=lr, variant="reference", foreach=foreach)
    other = TwoGroupNet()
    opt_matched = make_das(other, alpha=alpha, lr=lr, variant="sam-matched", foreach=foreach)
    for m in (net, other):
        m.loss().backward()
    before = [snapshot(g) for g in net.groups()]
    expected = []
    for g in net.groups():
        gam = [float(c.grad.double().pow(2).sum()) for c in g]
        norm, gamma_bar = math.sqrt(sum(gam)), sum(gam) / len(gam)
        # s_k = 1 + alpha eta (gamma_k - gamma_bar) / (||g|| ||G_k||)
        expected.append(
            [1 + alpha * lr * (x - gamma_bar) / (norm * float(c.detach().double().norm())) for c, x in zip(g, gam)]
        )
    opt.rescale_cores()
    opt_matched.rescale_cores()
    for g, g0, s in zip(net.groups(), before, expected):
        for c, c0, sk in zip(g, g0, s):
            assert_close(c, sk * c0)
    # the variant flag matters
    assert not torch.allclose(net.cp.factors[0], other.cp.factors[0])


# ------------------------------------------------------------ alpha = 0 is the base
BASES = [
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    (torch.optim.Adam, {"lr": 0.01}),
    (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
]


@pytest.mark.parametrize("base,kwargs", BASES, ids=["sgd-momentum", "sgd-nesterov", "adam", "adamw"])
def test_alpha_zero_is_bitwise_the_base_optimizer(base, kwargs):
    a, b = TwoGroupNet(), TwoGroupNet()
    das = make_das(a, base=base, alpha=0.0, **kwargs)
    ref = base(b.parameters(), **kwargs)
    for step in range(4):
        for m, o in ((a, das), (b, ref)):
            o.zero_grad()
            m.loss(step).backward()
            o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert das.step_count == 4


# ----------------------------------------------------------------- robustness
@pytest.mark.parametrize("variant", ["sam-matched", "reference"])
@pytest.mark.parametrize("s_min,s_max", [(0.5, 2.0), (0.8, 1.25), (1.0, 1.0)])
@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_clamp_bounds_the_scale(net, variant, s_min, s_max, foreach):
    opt = make_das(net, alpha=1e9, variant=variant, s_min=s_min, s_max=s_max, foreach=foreach)
    net.loss().backward()
    n0 = [[sqn(c) for c in g] for g in net.groups()]
    gam = [[sqn(c.grad) for c in g] for g in net.groups()]
    opt.rescale_cores()
    for g, n_before, gk in zip(net.groups(), n0, gam):
        gamma_bar = sum(gk) / len(gk)
        for c, n, x in zip(g, n_before, gk):
            factor = s_max**2 if x > gamma_bar else s_min**2
            assert sqn(c) == pytest.approx(n * factor, rel=1e-13)


def lora_like(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = nn.Parameter(torch.randn(2, 5, generator=g, dtype=F64))
    b = nn.Parameter(torch.zeros(4, 2, dtype=F64))  # LoRA's B at initialisation
    x, y = torch.randn(8, 5, generator=g, dtype=F64), torch.randn(8, 4, generator=g, dtype=F64)
    return a, b, lambda: 0.5 * (x @ a.T @ b.T - y).pow(2).sum()


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_zero_norm_core_stays_zero_and_others_are_scaled(foreach):
    a, b, loss_fn = lora_like()
    alpha, lr = 0.2, 0.1
    opt = das([a, b], torch.optim.SGD, core_groups=[[a, b]], alpha=alpha, lr=lr, foreach=foreach)
    loss_fn().backward()
    assert sqn(a.grad) == 0.0 and sqn(b.grad) > 0.0
    a0, gb = a.detach().clone(), b.grad.clone()
    gamma_b = sqn(gb)
    # gamma_bar = gamma_b / 2, ||g|| = sqrt(gamma_b): n_A moves by -alpha eta sqrt(gamma_b)
    s_a = math.sqrt(1 - alpha * lr * math.sqrt(gamma_b) / sqn(a0))
    assert 0.5 < s_a < 0.999
    opt.rescale_cores()
    assert torch.equal(b, torch.zeros_like(b))
    assert_close(a, s_a * a0)
    opt.step()  # the base step alone moves B
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert_close(b, -lr * gb)


@pytest.mark.parametrize("grad_norm", ["group", "global"])
@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_core_without_gradient_keeps_value_and_is_left_out(net, grad_norm, foreach):
    alpha, lr = 0.05, 0.1
    opt = make_das(net, alpha=alpha, lr=lr, grad_norm=grad_norm, foreach=foreach)
    net.loss().backward()
    net.cp.factors[1].grad = None
    params = list(net.parameters())
    before = {id(p): p.detach().clone() for p in params}
    scales = reference_scales(
        net.groups(), alpha=alpha, lr_of=lambda c: lr, grad_norm=grad_norm, all_params=params
    )  # the oracle leaves gradient-less cores out of gamma_bar
    s_of = scale_map(net.groups(), scales)
    opt.rescale_cores()
    assert torch.equal(net.cp.factors[1], before[id(net.cp.factors[1])])
    for g in net.groups():
        for c in g:
            assert_close(c, s_of[id(c)] * before[id(c)])
    # counting the missing gradient as gamma = 0 would give other scales
    f0 = net.cp.factors[0]
    gam = [sqn(net.cp.factors[0].grad), sqn(net.cp.factors[2].grad)]
    norm = (
        math.sqrt(sum(gam))
        if grad_norm == "group"
        else math.sqrt(sum(sqn(p.grad) for p in params if p.grad is not None))
    )
    wrong = math.sqrt(1 + 2 * alpha * lr * (gam[0] - sum(gam) / 3) / (norm * sqn(before[id(f0)])))
    assert abs(wrong - s_of[id(f0)]) > 1e-6


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_nan_gradient_skips_only_its_group(net, foreach):
    alpha, lr = 0.05, 0.1
    opt = make_das(net, alpha=alpha, lr=lr, foreach=foreach)
    names = [g.name for g in opt.core_groups]
    for rounds in (1, 2):
        opt.zero_grad()
        net.loss().backward()
        net.cp.factors[2].grad[0, 0] = float("nan")
        before = {id(p): p.detach().clone() for p in net.parameters()}
        scales = reference_scales(net.groups(), alpha=alpha, lr_of=lambda c: lr)
        assert scales[0] == [1.0, 1.0, 1.0] and all(s != 1.0 for s in scales[1])
        opt.rescale_cores()  # no base step: SGD would write the NaN into the parameter
        for c in net.groups()[0]:
            assert torch.equal(c, before[id(c)])
        for c, s in zip(net.groups()[1], scales[1]):
            assert torch.isfinite(c).all()
            assert_close(c, s * before[id(c)])
        assert opt.skipped_steps == rounds
        assert opt.skipped_per_group() == {names[0]: rounds, names[1]: 0}


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("where", ["core", "bias"])
def test_nan_gradient_with_global_norm_skips_and_counts_every_group(net, foreach, where):
    """With grad_norm="global" a non-finite gradient anywhere (even outside the groups) leaves SAM's norm
    undefined: no group is scaled, and every group counts the skip."""
    opt = make_das(net, alpha=0.5, grad_norm="global", foreach=foreach)
    net.loss().backward()
    bad = net.tucker.factors[0] if where == "core" else net.bias
    bad.grad[1, 1] = float("inf")
    before = snapshot(net.parameters())
    opt.rescale_cores()
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), before))
    assert opt.skipped_per_group() == {g.name: 1 for g in opt.core_groups}


def test_zero_gradient_group_is_not_scaled(net):
    opt = make_das(net, alpha=0.5)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    before = snapshot(net.parameters())
    opt.rescale_cores()
    assert all(torch.equal(p, p0) for p, p0 in zip(net.parameters(), before))
    assert opt.skipped_steps == 0


# ------------------------------------------------------------------- schedules
@pytest.mark.parametrize(
    "schedule,formula",
    [
        ("constant", lambda a, t, T: a),
        ("linear", lambda a, t, T: a * (1 - min(t, T) / T)),
        ("cosine", lambda a, t, T: a * (1 + math.cos(math.pi * min(t, T) / T)) / 2),
    ],
)
def test_alpha_schedule_values(net, schedule, formula):
    alpha, total = 0.3, 5
    opt = make_das(net, alpha=alpha, alpha_schedule=schedule, total_steps=total)
    for t in range(total + 3):
        assert opt.alpha_t == pytest.approx(formula(alpha, t, total), rel=1e-14, abs=1e-15)
        opt.step()  # no gradients: counts the step, changes nothing


@pytest.mark.parametrize("schedule,factor", [("linear", 0.5), ("cosine", 0.5), ("constant", 1.0)])
def test_step_uses_scheduled_alpha(net, schedule, factor):
    alpha, lr, total = 0.1, 0.05, 4
    opt = make_das(net, alpha=alpha, lr=lr, alpha_schedule=schedule, total_steps=total)
    for step in range(2):
        opt.zero_grad()
        net.loss(step).backward()
        opt.step()
    opt.zero_grad()
    net.loss(2).backward()  # t = 2 = T/2: linear and cosine give alpha/2
    params = list(net.parameters())
    before, grads = snapshot(params), [p.grad.clone() for p in params]
    s_of = scale_map(net.groups(), reference_scales(net.groups(), alpha=alpha * factor, lr_of=lambda c: lr))
    opt.step()
    for p, p0, g in zip(params, before, grads):
        assert_close(p, s_of.get(id(p), 1.0) * p0 - lr * g)


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_lr_scheduler_sets_eta(net, foreach):
    alpha, lr = 0.5, 0.1
    opt = make_das(net, alpha=alpha, lr=lr, foreach=foreach)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.2)
    net.loss(0).backward()
    opt.step()
    sched.step()
    eta = lr * 0.2
    assert opt.param_groups[0]["lr"] == pytest.approx(eta)
    opt.zero_grad()
    net.loss(1).backward()
    params = list(net.parameters())
    before, grads = snapshot(params), [p.grad.clone() for p in params]
    s_of = scale_map(net.groups(), reference_scales(net.groups(), alpha=alpha, lr_of=lambda c: eta))
    opt.step()
    for p, p0, g in zip(params, before, grads):
        assert_close(p, s_of.get(id(p), 1.0) * p0 - eta * g)


@pytest.mark.parametrize("foreach", PATHS, ids=PATH_IDS)
def test_each_core_uses_its_param_groups_lr(net, foreach):
    alpha = 0.05
    cp, tk = net.cp.factors, net.tucker
    param_groups = [
        {"params": [cp[0], tk.core], "lr": 0.1},
        {"params": [cp[1], cp[2], tk.factors[0]], "lr": 0.03},
        {"params": [tk.factors[1], net.bias], "lr": 0.2},
    ]
    lr_of = {id(p): pg["lr"] for pg in param_groups for p in pg["params"]}
    opt = make_das(net, params=param_groups, alpha=alpha, foreach=foreach)
    net.loss().backward()
    n0 = [[sqn(c) for c in g] for g in net.groups()]
    gam = [[sqn(c.grad) for c in g] for g in net.groups()]
    opt.rescale_cores()
    for g, n_before, gk in zip(net.groups(), n0, gam):
        norm, gamma_bar = math.sqrt(sum(gk)), sum(gk) / len(gk)
        expected = [n + 2 * alpha * lr_of[id(c)] * (x - gamma_bar) / norm for c, n, x in zip(g, n_before, gk)]
        assert [sqn(c) for c in g] == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ checkpoints
CHECKPOINT_CASES = [
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}, "linear"),
    (torch.optim.Adam, {"lr": 0.01}, "cosine"),
    (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}, "constant"),
]


def das_run(base, kwargs, schedule, steps, resume_at=None, load_optimizer=True):
    net = TwoGroupNet()

    def build(model):
        opt = make_das(model, base=base, alpha=0.5, alpha_schedule=schedule, total_steps=6, **kwargs)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    opt, sched = build(net)
    for step in range(steps):
        if step == resume_at:
            buf = io.BytesIO()
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
            buf.seek(0)
            ckpt = torch.load(buf)
            net = TwoGroupNet(seed=99)  # fresh objects
            opt, sched = build(net)
            net.load_state_dict(ckpt["model"])
            if load_optimizer:
                opt.load_state_dict(ckpt["opt"])
            sched.load_state_dict(ckpt["sched"])
        opt.zero_grad()
        net.loss(step).backward()
        opt.step()
        sched.step()
    return net, opt


@pytest.mark.parametrize("base,kwargs,schedule", CHECKPOINT_CASES, ids=["sgd", "adam", "adamw"])
def test_checkpoint_resume_is_exact(base, kwargs, schedule):
    full, opt_full = das_run(base, kwargs, schedule, 6)
    resumed, opt_resumed = das_run(base, kwargs, schedule, 6, resume_at=3)
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert opt_resumed.step_count == opt_full.step_count == 6
    assert opt_resumed.param_groups[0]["lr"] == opt_full.param_groups[0]["lr"]
    # the comparison is sensitive: dropping the optimizer state changes the result
    lost, _ = das_run(base, kwargs, schedule, 6, resume_at=3, load_optimizer=False)
    assert not torch.equal(full.cp.factors[0], lost.cp.factors[0])


def test_state_dict_carries_step_counter_and_skips(net):
    opt = make_das(net, momentum=0.9)
    net.loss().backward()
    net.cp.factors[0].grad[0, 0] = float("nan")
    opt.rescale_cores()
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    assert "momentum_buffer" in sd["state"][0]
    fresh = make_das(TwoGroupNet(), momentum=0.9)
    fresh.load_state_dict(sd)
    assert fresh.step_count == 1
    assert fresh.skipped_per_group() == opt.skipped_per_group() and fresh.skipped_steps == 1
    with pytest.raises(ValueError, match="SAM"):
        fresh.load_state_dict(td.SAM(TwoGroupNet().parameters(), torch.optim.SGD, lr=0.1).state_dict())


# ----------------------------------------------- multi-tensor path == single-tensor path
SHAPES = [
    [(3,), (2, 3), (4,)],
    [(2, 2, 2), (5, 1), (1,), (3, 4)],
    [(6, 2), (2, 6)],
    [(1, 1), (7,), (2, 3, 1, 2)],
]


class RandomGroups(nn.Module):
    """Several groups of odd shapes with a multilinear coupling, plus a non-core parameter."""

    def __init__(self, dtype):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.cores = nn.ParameterList(
            nn.Parameter((0.5 + k) * torch.randn(s, generator=g, dtype=dtype))
            for shapes in SHAPES
            for k, s in enumerate(shapes)
        )
        self.w = [torch.randn(s, generator=g, dtype=dtype) for shapes in SHAPES for s in shapes]
        self.extra = nn.Parameter(torch.randn(3, generator=g, dtype=dtype))

    def groups(self):
        it = iter(self.cores)
        return [[next(it) for _ in shapes] for shapes in SHAPES]

    def loss(self, step):
        total = 0.5 * (self.extra - step).pow(2).sum()
        it = iter(zip(self.cores, self.w))
        for i, shapes in enumerate(SHAPES):
            prod = 1.0
            for c, w in (next(it) for _ in shapes):
                prod = prod * (c * w).sum()
            total = total + (prod - 1.0 - 0.1 * step - i) ** 2
        return total


PARITY_CASES = [
    (variant, grad_norm, missing, split_lrs, F64)
    for variant, grad_norm, missing, split_lrs in itertools.product(
        ["sam-matched", "reference"], ["group", "global"], [False, True], [False, True]
    )
] + [
    ("sam-matched", "group", True, True, torch.float32),
    ("reference", "global", False, True, torch.float32),
    ("gradient", "group", True, True, F64),
    ("gradient", "global", False, True, F64),
    ("gradient", "group", True, True, torch.float32),
]


PARITY_IDS = [
    f"{v}-{g}-{'missing' if m else 'all'}-{'lrs' if s else 'lr'}-{str(d).split('.')[-1]}"
    for v, g, m, s, d in PARITY_CASES
]


@pytest.mark.parametrize("variant,grad_norm,missing,split_lrs,dtype", PARITY_CASES, ids=PARITY_IDS)
def test_fast_paths_equal_single_tensor_path(variant, grad_norm, missing, split_lrs, dtype):
    results = []
    for foreach in ("device", None, False):
        m = RandomGroups(dtype)
        if split_lrs:
            params = [
                {"params": list(m.cores)[::2], "lr": 0.02},
                {"params": list(m.cores)[1::2], "lr": 0.07},
                {"params": [m.extra], "lr": 0.1},
            ]
        else:
            params = m.parameters()
        opt = das(
            params,
            torch.optim.SGD,
            core_groups=m.groups(),
            alpha=2.0,
            grad_norm=grad_norm,
            variant=variant,
            foreach=foreach,
            lr=0.05,
            momentum=0.9,
        )
        for step in range(3):
            opt.zero_grad()
            m.loss(step).backward()
            if missing:
                m.groups()[0][1].grad = None
                for c in m.groups()[2]:
                    c.grad = None
            opt.step()
        results.append((m, opt))
    *fast, (m_single, opt_single) = results
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == F64 else {"rtol": 2e-5, "atol": 1e-6}
    for m_fast, opt_fast in fast:
        for a, b in zip(m_fast.parameters(), m_single.parameters()):
            torch.testing.assert_close(a, b, **tol)
        assert opt_fast.skipped_per_group() == opt_single.skipped_per_group()
        assert not torch.allclose(m_fast.groups()[1][0], RandomGroups(dtype).groups()[1][0])  # it moved


# --------------------------------------------------------------------- GradScaler
def test_grad_scaler_drives_das():
    a, b = TwoGroupNet(), TwoGroupNet()
    opt_a, opt_b = make_das(a, alpha=0.5, momentum=0.9), make_das(b, alpha=0.5, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    for step in range(3):
        opt_a.zero_grad()
        scaler.scale(a.loss(step)).backward()
        scaler.step(opt_a)
        scaler.update()
        opt_b.zero_grad()
        b.loss(step).backward()
        opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-14)
    assert opt_a.step_count == 3

    before, scale = snapshot(a.parameters()), scaler.get_scale()
    opt_a.zero_grad()
    scaler.scale(a.loss(3)).backward()
    a.cp.factors[1].grad[0, 0] = float("inf")
    scaler.step(opt_a)
    scaler.update()
    assert all(torch.equal(p, p0) for p, p0 in zip(a.parameters(), before))
    assert opt_a.step_count == 3
    assert opt_a.skipped_steps == 0  # the scaler skipped the whole step, DAS never saw it
    assert scaler.get_scale() == scale / 2


def test_step_with_closure_returns_loss_and_matches_backward_then_step():
    a, b = TwoGroupNet(), TwoGroupNet()
    opt_a, opt_b = make_das(a, momentum=0.9), make_das(b, momentum=0.9)

    def closure():
        opt_a.zero_grad()
        loss = a.loss()
        loss.backward()
        return loss

    loss = opt_a.step(closure)
    b.loss().backward()
    opt_b.step()
    assert loss.item() == pytest.approx(TwoGroupNet().loss().item(), rel=1e-15)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("chunk", [None, 7], ids=["one-batch", "chunked"])
def test_expanded_scale_application_equals_per_core_application(net, chunk, monkeypatch):
    """The device path's multiply (scales expanded to elements, persistent same-shape views) equals a
    per-core multiply; with a small buffer bound the cores are split into several batches and cores
    larger than the bound are multiplied on their own."""
    from tensordas.optim import _core_scaling

    if chunk is not None:
        monkeypatch.setattr(_core_scaling, "EXPAND_CHUNK", chunk)
    opt = make_das(net, foreach="device")
    net.loss().backward()
    net.tucker.factors[1].grad = None  # a core left out of the plan
    plan = opt._current_plan()
    before = snapshot(plan.cores)
    opt.rescale_cores()  # builds the layout, and applies the DAS scales
    layout = plan.flat.apply
    if chunk is not None:
        assert len(layout.batches) >= 2 and layout.large  # both strategies are exercised
        assert all(b.total <= chunk for b in layout.batches)
        assert layout.buffer.numel() <= chunk  # one bounded buffer, reused by every batch
        assert all(b.element_index is None for b in layout.batches)
        assert sorted([i for b in layout.batches for i in b.index] + layout.large) == list(range(len(plan.cores)))
    applied = plan.flat.s.clone()
    for c, c0, s in zip(plan.cores, before, applied):
        assert torch.equal(c, c0 * s)
    scales = torch.linspace(0.5, 2.0, len(plan.cores), dtype=F64)
    with torch.no_grad():
        for c, c0 in zip(plan.cores, before):
            c.copy_(c0)
        plan.flat.s.copy_(scales)
        layout(plan.cores, fixed=True)
    for c, c0, s in zip(plan.cores, before, scales):
        assert torch.equal(c, c0 * s)


def test_reference_path_keeps_every_tensor_on_the_cores_device():
    """The per-group reference path builds its learning-rate vector on the cores' device (on the
    "meta" device here, which stands in for CUDA: mixing it with a CPU tensor raises)."""
    from tensordas.optim.das import das_scales_single_group

    a, b = (torch.nn.Parameter(torch.randn(3, 2, device="meta")) for _ in range(2))
    a.grad, b.grad = torch.randn(3, 2, device="meta"), torch.randn(3, 2, device="meta")
    scales, skipped, _ = das_scales_single_group([a, b], 0.5, [0.1, 0.2])
    assert all(s.device.type == "meta" for s in scales) and skipped.device.type == "meta"
