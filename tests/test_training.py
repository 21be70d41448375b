"""The shared optimizer factory and step function every task uses."""

import pytest
import torch

import tensordas as td
from tensordas.training import OptimizerConfig, build_optimizer, optimizer_step


def model():
    return td.TuckerModel((5, 4), (2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize(
    ("method", "base", "kind", "base_kind"),
    [
        ("base", "sgd", torch.optim.SGD, None),
        ("base", "adamw", torch.optim.AdamW, None),
        ("sam", "adam", td.SAM, torch.optim.Adam),
        ("das", "sgd", td.DAS, torch.optim.SGD),
        ("bar", "sgd", None, None),
    ],
)
def test_build_optimizer_builds_the_named_method(method, base, kind, base_kind):
    m = model()
    groups = td.find_core_groups(m)
    if method == "bar":  # BAR needs two-core groups
        with pytest.raises(ValueError, match="two-core"):
            build_optimizer(OptimizerConfig(method=method, base=base), m.parameters(), groups)
        return
    opt = build_optimizer(OptimizerConfig(method=method, base=base, lr=0.01), m.parameters(), groups)
    assert type(opt) is kind
    if base_kind is not None:
        assert type(opt.base_optimizer) is base_kind
    assert opt.param_groups[0]["lr"] == 0.01


def test_optimizer_step_calls_the_closure_twice_for_sam_only():
    target = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for method, calls_expected in (("base", 1), ("das", 1), ("sam", 2)):
        m = model()
        opt = build_optimizer(OptimizerConfig(method=method, lr=0.01), m.parameters(), td.find_core_groups(m))
        calls = []

        def closure(m=m, opt=opt, calls=calls):
            opt.zero_grad()
            loss = (m() - target).pow(2).sum()
            loss.backward()
            calls.append(loss.item())
            return loss

        before = (m() - target).pow(2).sum().item()
        loss = optimizer_step(opt, closure)
        assert len(calls) == calls_expected
        assert loss.item() == pytest.approx(before)  # the loss at the weights before the step
        assert (m() - target).pow(2).sum().item() < before


def test_das_needs_core_groups():
    with pytest.raises(ValueError, match="core groups"):
        build_optimizer(OptimizerConfig(method="das"), model().parameters(), None)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"method": "adam"}, "'adam'"),
        ({"base": "lbfgs"}, "'lbfgs'"),
        ({"lr": -1.0}, "-1.0"),
        ({"rho": float("nan")}, "nan"),
        ({"alpha": -0.1}, "-0.1"),
    ],
)
def test_invalid_config_raises_naming_the_value(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        OptimizerConfig(**kwargs)


def test_labels():
    assert OptimizerConfig(method="base", base="adam").label == "adam"
    assert OptimizerConfig(method="das", base="sgd").label == "das(sgd)"
