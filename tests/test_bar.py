"""nBAR on two-core groups (docs/design.md, section 1, "Variants and relatives")."""

import pytest
import torch
from conftest import assert_close, snapshot
from torch import nn

import tensordas as td

F64 = torch.float64

PATHS = [
    pytest.param(None, id="multi-tensor"),
    pytest.param(False, id="single-tensor"),
]


class Pairs(nn.Module):
    """Three low-rank products U V^T of different shapes, each a two-core group."""

    SHAPES = [((4, 2), (3, 2)), ((5, 3), (2, 3)), ((2, 1), (6, 1))]

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        scales = [(2.0, 0.5), (0.5, 2.0), (1.0, 1.0)]  # unbalanced both ways
        self.u = nn.ParameterList(
            nn.Parameter(su * torch.randn(a, generator=g, dtype=F64)) for (a, _), (su, _) in zip(self.SHAPES, scales)
        )
        self.v = nn.ParameterList(
            nn.Parameter(sv * torch.randn(b, generator=g, dtype=F64)) for (_, b), (_, sv) in zip(self.SHAPES, scales)
        )
        self.targets = [torch.randn(a[0], b[0], generator=g, dtype=F64) for a, b in self.SHAPES]
        self.bias = nn.Parameter(torch.zeros(2, dtype=F64))

    def groups(self):
        return [[u, v] for u, v in zip(self.u, self.v)]

    def loss(self):
        total = self.bias.pow(2).sum() + (self.bias - 1).pow(2).sum()
        for (u, v), t in zip(self.groups(), self.targets):
            total = total + 0.5 * (u @ v.T - t).pow(2).sum()
        return total


def expected_factors(groups, step):
    out = {}
    for x, y in groups:
        gx, gy = x.grad.double().norm(), y.grad.double().norm()
        grow, shrink = (x, y) if gx >= gy else (y, x)
        out[id(grow)], out[id(shrink)] = 1 + step, 1 - step
    return out


@pytest.mark.parametrize("foreach", PATHS)
def test_larger_gradient_core_grows_other_shrinks(foreach):
    m = Pairs()
    alpha, lr = 0.1, 0.05
    opt = td.BAR(m.parameters(), torch.optim.SGD, core_groups=m.groups(), alpha=alpha, lr=lr, foreach=foreach)
    m.loss().backward()
    factors = expected_factors(m.groups(), alpha * lr)
    # both directions occur in this model
    assert {factors[id(g[0])] for g in m.groups()} == {1 - alpha * lr, 1 + alpha * lr}
    params = list(m.parameters())
    before, grads = snapshot(params), [p.grad.clone() for p in params]
    opt.step()
    for p, p0, g in zip(params, before, grads):
        assert_close(p, factors.get(id(p), 1.0) * p0 - lr * g, rtol=1e-14, atol=1e-15)
    assert opt.step_count == 1


@pytest.mark.parametrize("foreach", [None, False], ids=["multi-tensor", "single-tensor"])
def test_tie_first_core_grows(foreach):
    x = nn.Parameter(torch.tensor([1.0, 0.0], dtype=F64))
    y = nn.Parameter(torch.tensor([0.0, 1.0], dtype=F64))
    opt = td.BAR([x, y], torch.optim.SGD, core_groups=[[x, y]], alpha=0.5, lr=0.5, foreach=foreach)
    (x * y).sum().backward()  # grad_x = y, grad_y = x: equal norms
    opt.rescale_cores()
    assert x.tolist() == [1.25, 0.0] and y.tolist() == [0.0, 0.75]  # exact in binary


@pytest.mark.parametrize("foreach", [None, False], ids=["multi-tensor", "single-tensor"])
def test_missing_and_nonfinite_gradients_leave_group_unscaled(foreach):
    m = Pairs()
    opt = td.BAR(m.parameters(), torch.optim.SGD, core_groups=m.groups(), alpha=0.1, lr=0.05, foreach=foreach)
    m.loss().backward()
    m.v[0].grad = None
    m.u[1].grad[0, 0] = float("nan")
    factors = expected_factors([m.groups()[2]], 0.1 * 0.05)
    before = {id(p): p.detach().clone() for p in m.parameters()}
    opt.rescale_cores()
    for c in [*m.groups()[0], *m.groups()[1]]:
        assert torch.equal(c, before[id(c)])
    for c in m.groups()[2]:
        torch.testing.assert_close(c, factors[id(c)] * before[id(c)], rtol=1e-6, atol=0)
    assert opt.skipped_per_group() == {"group0": 0, "group1": 1, "group2": 0}


def test_three_core_group_raises():
    m = td.CPModel((3, 4, 5), 2)
    with pytest.raises(ValueError, match="3 cores"):
        td.BAR(m.parameters(), torch.optim.SGD, core_groups=td.find_core_groups(m), lr=0.1)


def test_alpha_times_lr_must_stay_below_one():
    m = Pairs()
    with pytest.raises(ValueError, match="alpha=20"):
        td.BAR(m.parameters(), torch.optim.SGD, core_groups=m.groups(), alpha=20.0, lr=0.1)


def test_lr_raised_past_one_over_alpha_raises_at_step():
    m = Pairs()
    opt = td.BAR(m.parameters(), torch.optim.SGD, core_groups=m.groups(), alpha=5.0, lr=0.1)
    opt.param_groups[0]["lr"] = 0.3  # as an LR scheduler would
    m.loss().backward()
    before = snapshot(m.parameters())
    with pytest.raises(ValueError, match="lr=0.3"):
        opt.step()
    assert all(torch.equal(p, p0) for p, p0 in zip(m.parameters(), before))
