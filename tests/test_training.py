"""The shared optimizer factory and step function every task uses."""

import dataclasses

import pytest
import torch
from conftest import TwoGroupNet

import tensordas as td
from tensordas.training import OptimizerConfig, build_optimizer, compared_optimizers, optimizer_step


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
        ("looksam", "sgd", "LookSAM", torch.optim.SGD),
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
    assert type(opt).__name__ == kind if isinstance(kind, str) else type(opt) is kind
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


# --- the method registry ----------------------------------------------------------------------------
def test_every_registered_method_builds_and_steps_through_the_registry():
    from tensordas.training import METHODS, method_of

    target = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for name, spec in METHODS.items():
        m = model()
        groups = td.find_core_groups(m)
        if name == "bar":  # two-core groups only: a Tucker-2 group has three cores
            continue
        opt = build_optimizer(OptimizerConfig(method=name, lr=0.01, total_steps=10), m.parameters(), groups)
        # a loss term is not in the optimizer: jreg's is the base optimizer's, das+jreg's is DAS's
        optimizer_method = {None: spec, "jreg": METHODS["base"], "saf": METHODS["base"], "mesa": METHODS["base"]}
        assert method_of(opt) is optimizer_method.get(name if spec.loss_term else None, METHODS["das"]), name
        calls = []

        def closure(m=m, opt=opt, calls=calls):
            opt.zero_grad()
            loss = (m() - target).pow(2).sum()
            loss.backward()
            calls.append(1)
            return loss

        optimizer_step(opt, closure)
        assert len(calls) == (2 if spec.needs_closure else 1), name


def test_each_option_has_one_name_and_reaches_the_optimizer_under_its_keyword():
    from tensordas.training import OPTIONS, ComparisonSettings

    m = model()
    cfg = OptimizerConfig(
        method="das", das_variant="reference", grad_norm="global", s_min=0.25, s_max=3.0, balance=0.01
    )
    opt = build_optimizer(cfg, m.parameters(), td.find_core_groups(m))
    assert (opt.variant, opt.grad_norm, opt.s_min, opt.s_max, opt.balance) == ("reference", "global", 0.25, 3.0, 0.01)
    assert cfg.record_fields() == {
        "lr": 0.01, "alpha": 0.05, "alpha_schedule": "constant", "grad_norm": "global", "das_variant": "reference",
        "s_min": 0.25, "s_max": 3.0, "balance": 0.01,
    }  # fmt: skip
    assert OptimizerConfig(method="sam").record_fields() == {"lr": 0.01, "rho": 0.05, "adaptive": False}
    assert OptimizerConfig(method="base").record_fields() == {"lr": 0.01}
    fields = set(ComparisonSettings.__dataclass_fields__)
    assert set(OPTIONS) <= fields and "variant" not in fields  # one name: das_variant


def test_a_new_registry_entry_is_a_method_everywhere(monkeypatch):
    """One entry: configs accept it, the factory builds it, the step function gives it a closure."""
    from tensordas.training import METHODS, Method, compared_optimizers

    entry = Method("sam2", "SAM again", td.SAM, options=("rho",), strength="rho", needs_closure=True)
    monkeypatch.setitem(METHODS, "sam2", entry)
    cfg = OptimizerConfig(method="sam2", rho=0.1)
    assert cfg.label == "sam2(sgd)" and cfg.record_fields() == {"lr": 0.01, "rho": 0.1}
    m = model()
    opt = build_optimizer(cfg, m.parameters())
    assert type(opt) is td.SAM and opt.param_groups[0]["rho"] == 0.1
    from tensordas.training import ComparisonSettings

    (built,) = compared_optimizers(ComparisonSettings(optimizers=("sam2",), rho=0.2))
    assert built.method == "sam2" and built.rho == 0.2


def test_a_preset_entry_passes_its_fixed_keywords_to_the_wrapper(monkeypatch):
    """``fixed``: a preset of another method's class (DAS with the authors' formula) is one entry."""
    from tensordas.training import METHODS, Method

    entry = Method("das-ref", "DAS, reference formula", td.DAS, options=("alpha",), strength="alpha",
                   needs_core_groups=True, fixed={"variant": "reference"}, grid=(0.1, 1.0))  # fmt: skip
    monkeypatch.setitem(METHODS, "das-ref", entry)
    net = TwoGroupNet()
    opt = build_optimizer(OptimizerConfig(method="das-ref", alpha=0.3), net.parameters(), net.groups())
    assert type(opt) is td.DAS and opt.variant == "reference" and opt.alpha == 0.3


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"fixed": {"variant": "reference"}, "options": "das"}, "both fixed and an option"),
        ({"grid": (0.1, -1.0)}, "alpha value: -1.0"),
        ({"grid": (0.1,), "strength": None}, "a grid needs a strength"),
    ],
)
def test_invalid_registry_entries_are_refused(entry, needle):
    from tensordas.training.methods import METHODS, Method, register_method

    options = METHODS["das"].options if entry.pop("options", None) == "das" else ("alpha",)
    kwargs = {"strength": "alpha", **entry}
    with pytest.raises(ValueError, match=needle):
        register_method(Method("x", "x", td.DAS, options=options, needs_core_groups=True, **kwargs))
    assert "x" not in METHODS


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"das_variant": "authors"}, "das_variant 'authors'"),
        ({"grad_norm": "local"}, "grad_norm 'local'"),
        ({"alpha_schedule": "exp"}, "alpha_schedule 'exp'"),
        ({"s_min": 1.5}, "s_min value: 1.5"),
        ({"adaptive": "yes"}, "adaptive value: 'yes'"),
        ({"rho": float("inf")}, "rho value: inf"),
    ],
)
def test_invalid_method_options_name_the_option_and_value(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        OptimizerConfig(**kwargs)


def test_the_authors_das_is_its_own_compared_arm_with_its_own_strength():
    """das-authors: td.DAS with the reference formula and alpha cosine-decayed, alpha from authors_alpha."""
    from tensordas.cli._common import parse_methods
    from tensordas.training import METHODS, ComparisonSettings, compared_methods, method_of

    m = model()
    cfg = OptimizerConfig(method="das-authors", authors_alpha=0.2, alpha=50.0, total_steps=10)
    opt = build_optimizer(cfg, m.parameters(), td.find_core_groups(m))
    assert type(opt) is td.DAS and opt.variant == "reference" and opt.alpha_schedule == "cosine"
    assert opt.alpha == 0.2  # its own option, not DAS's alpha
    assert method_of(opt) is METHODS["das-authors"]
    plain = build_optimizer(OptimizerConfig(method="das", total_steps=10), m.parameters(), td.find_core_groups(m))
    assert method_of(plain) is METHODS["das"]
    assert "das-authors" in compared_methods() and "das-authors" in parse_methods("das", compare=True)
    assert METHODS["das-authors"].grid == (0.03, 0.1, 0.3)
    settings = ComparisonSettings(optimizers=("das", "das-authors"), alpha=(10.0, 100.0, 1000.0),
                                  authors_alpha=(0.03, 0.1, 0.3))  # fmt: skip
    settings.check_options()
    built = [(c.method, c.strength) for c in compared_optimizers(settings)]
    assert built == [("das", ("alpha", v)) for v in (10.0, 100.0, 1000.0)] + [
        ("das-authors", ("authors_alpha", v)) for v in (0.03, 0.1, 0.3)
    ]


def test_looksam_is_labelled_per_tensor_and_its_alpha_reaches_the_optimizer():
    from tensordas.training import METHODS, OPTIONS

    assert "per-tensor" in METHODS["looksam"].title and "Liu et al." in METHODS["looksam"].title
    assert OPTIONS["looksam_alpha"].default == 0.7 and OPTIONS["looksam_alpha"].flag == "--looksam-alpha"
    m = model()
    opt = build_optimizer(OptimizerConfig(method="looksam", looksam_alpha=0.4), m.parameters())
    assert opt.alpha == 0.4
    with pytest.raises(ValueError, match="looksam_alpha value: 1.5"):
        OptimizerConfig(method="looksam", looksam_alpha=1.5)


def test_every_default_grid_has_three_values_and_the_base_grid_scales_the_lr():
    from tensordas.training import GRID_SIZE, METHODS, ComparisonSettings
    from tensordas.training.methods import register_method

    assert GRID_SIZE == 3
    for name in ("base", "sam", "das", "das-authors", "looksam", "bar"):
        assert len(METHODS[name].grid) == 3, name
    settings = ComparisonSettings(optimizers=("base", "sam"), lr=0.04, tune=True)
    settings.check_options()
    assert settings.lr == (0.02, 0.04, 0.08) and settings.rho == METHODS["sam"].grid
    entry = dataclasses.replace(METHODS["sam"], name="x", grid=(0.1, 0.2))
    with pytest.raises(ValueError, match="its grid needs 3 distinct values"):
        register_method(entry)
