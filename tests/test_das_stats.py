"""What DAS did, made visible: last_step_stats() and max_scale_deviation, against float64
recomputations from the gradients and norms before the step."""

import math

import pytest
import torch
from conftest import TwoGroupNet, reference_scales, sqn

import tensordas as td

PATHS = ["host", "device", "reference"]


def make_das(net, path, **kw):
    kw.setdefault("lr", 0.1)
    opt = td.DAS(net.parameters(), torch.optim.SGD, core_groups=net.groups(), foreach=path != "reference", **kw)
    opt._host_path = path == "host"
    return opt


def expected_stats(groups, scales):
    out = {}
    for i, (g, row) in enumerate(zip(groups, scales)):
        active = [(sqn(c), sqn(c.grad), s) for c, s in zip(g, row) if c.grad is not None]
        n = [a[0] for a in active]
        gam = [a[1] for a in active]
        n_bar, g_bar = sum(n) / len(n), sum(gam) / len(gam)
        out[f"group{i}"] = {
            "scale_min": min(a[2] for a in active),
            "scale_max": max(a[2] for a in active),
            "Q": sum((x - n_bar) ** 2 for x in n) / len(n),
            "C": sum((x - n_bar) * (y - g_bar) for x, y in zip(n, gam)) / len(n),
            "grad_norm": math.sqrt(sum(gam)),
        }
    return out


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("missing", [False, True])
def test_last_step_stats_match_float64_recomputation(path, missing):
    net = TwoGroupNet()
    opt = make_das(net, path, alpha=0.3, momentum=0.9)
    assert opt.last_step_stats() == {}
    for step in range(2):
        opt.zero_grad()
        net.loss(step).backward()
        if missing:
            net.cp.factors[2].grad = None
        want = expected_stats(net.groups(), reference_scales(net.groups(), alpha=0.3, lr_of=lambda c: 0.1))
        opt.step()
    got = opt.last_step_stats()
    assert set(got) == {"group0", "group1"}
    for name, values in want.items():
        assert got[name]["skipped"] is False
        for key, value in values.items():
            assert got[name][key] == pytest.approx(value, rel=1e-10), (name, key)
    # the covariance of norms and gradients is negative here: large cores get small gradients
    assert got["group0"]["C"] < 0
    assert td.norm_grad_covariance(net.groups()[1]) != 0  # the recomputation is not a tautology


@pytest.mark.parametrize("path", PATHS)
def test_stats_of_a_non_finite_group_and_of_a_group_without_gradients(path):
    net = TwoGroupNet()
    opt = make_das(net, path)
    net.loss().backward()
    net.cp.factors[0].grad[0, 0] = float("nan")
    for c in net.groups()[1]:
        c.grad = None
    with pytest.warns(RuntimeWarning):
        opt.step()
    stats = opt.last_step_stats()
    assert set(stats) == {"group0"}
    assert stats["group0"]["skipped"] is True
    assert stats["group0"]["scale_min"] == stats["group0"]["scale_max"] == 1.0


@pytest.mark.parametrize("path", PATHS)
def test_max_scale_deviation_is_the_running_maximum(path):
    net = TwoGroupNet()
    opt = make_das(net, path, alpha=0.2)
    assert float(opt.max_scale_deviation) == 0.0
    assert opt.max_scale_deviation.device == net.cp.factors[0].device
    seen = 0.0
    for step in range(3):
        opt.zero_grad()
        net.loss(step).backward()
        scales = reference_scales(net.groups(), alpha=0.2, lr_of=lambda c: 0.1)
        seen = max(seen, max(abs(s - 1) for row in scales for s in row))
        opt.step()
        assert float(opt.max_scale_deviation) == pytest.approx(seen, rel=1e-6)
    assert seen > 1e-3


@pytest.mark.parametrize("path", PATHS)
def test_tiny_alpha_is_visible_as_a_tiny_deviation(path):
    """The measure the training engine uses to warn that DAS never moved the cores."""
    net = TwoGroupNet()
    opt = make_das(net, path, alpha=1e-12, lr=0.01)
    for step in range(3):
        opt.zero_grad()
        net.loss(step).backward()
        opt.step()
    assert 0 < float(opt.max_scale_deviation) < 1e-6
    stats = opt.last_step_stats()
    assert all(abs(v["scale_max"] - 1) < 1e-6 and abs(v["scale_min"] - 1) < 1e-6 for v in stats.values())


def test_alpha_zero_records_nothing():
    net = TwoGroupNet()
    opt = make_das(net, "host", alpha=0.0)
    net.loss().backward()
    opt.step()
    assert opt.last_step_stats() == {} and float(opt.max_scale_deviation) == 0.0
