"""Tensorized adapters (FLoRA-style Tucker, LoRETTA-style TT): injection, merging, saving, errors."""

import copy
import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import tensordas as td
import tensordas.adapters as A
from tensordas.adapters.loretta import balanced_factors

F64 = torch.float64


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(12, 12)
        self.value = nn.Linear(12, 12)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.value(torch.tanh(self.query(h)))


class Tiny(nn.Module):
    """Two blocks with ``query``/``value`` layers, an input layer and a head (float64)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Linear(6, 12)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(12, 3)
        self.to(F64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x))
        for b in self.blocks:
            h = b(h)
        return self.head(h)


TARGETS = ["blocks.0.query", "blocks.0.value", "blocks.1.query", "blocks.1.value"]


def flora_config(**kw):
    return A.FLoRAConfig(rank=(3, 2), alpha=4.0, target_modules=["query", "value"], **kw)


def loretta_config(**kw):
    return A.LoRETTAConfig(rank=(2, 3), num_cores=3, alpha=0.7, target_modules=["query", "value"], **kw)


CONFIGS = {"flora": flora_config, "loretta": loretta_config}


def x_batch(seed: int = 1) -> torch.Tensor:
    return torch.randn(5, 6, generator=torch.Generator().manual_seed(seed), dtype=F64)


def randomize_cores(model: nn.Module, seed: int = 2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in A.adapter_layers(model).values():
            for c in layer.cores():
                c.copy_(0.3 * torch.randn(c.shape, generator=g, dtype=c.dtype))


def oracle_delta(layer) -> torch.Tensor:
    """``Delta W`` written from the definitions, independently of the layer's code."""
    if isinstance(layer, A.FLoRALinear):
        r_out, r_in = layer.flora_E.shape
        return (4.0 / math.sqrt(r_out * r_in)) * layer.flora_A @ layer.flora_E @ layer.flora_B
    cores = [c.detach() for c in layer.cores()]
    m = [c.shape[1] for c in cores]
    n = [c.shape[2] for c in cores]
    out = torch.zeros(math.prod(m), math.prod(n), dtype=F64)
    for i in itertools.product(*map(range, m)):
        for j in itertools.product(*map(range, n)):
            prod = torch.ones(1, 1, dtype=F64)
            for k, c in enumerate(cores):
                prod = prod @ c[:, i[k], j[k], :]
            row = sum(i[k] * math.prod(m[k + 1 :]) for k in range(len(m)))
            col = sum(j[k] * math.prod(n[k + 1 :]) for k in range(len(n)))
            out[row, col] = prod.item()
    return 0.7 * out


@pytest.mark.parametrize("kind", CONFIGS)
def test_init_equals_base_and_only_adapters_train(kind):
    base = Tiny()
    model = A.inject_adapter(copy.deepcopy(base), CONFIGS[kind](modules_to_save=["head"]))
    x = x_batch()
    assert torch.equal(model(x), base(x))
    assert sorted(A.adapter_layers(model)) == TARGETS
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    adapter = {
        f"{path}.{n}" for path, layer in A.adapter_layers(model).items() for n, _ in layer.adapter_named_parameters()
    }
    assert trainable == adapter | {"head.weight", "head.bias"}
    assert not any(p.requires_grad for n, p in model.named_parameters() if "base_layer" in n or n.startswith("embed"))


@pytest.mark.parametrize("kind", CONFIGS)
def test_one_core_group_per_adapted_layer(kind):
    model = A.inject_adapter(Tiny(), CONFIGS[kind]())
    groups = td.find_core_groups(model)
    layers = A.adapter_layers(model)
    assert [g.name for g in groups] == [f"{t}.{kind}" for t in TARGETS]
    for g, t in zip(groups, TARGETS):
        expected = [p for _, p in layers[t].adapter_named_parameters()]
        assert [id(c) for c in g.cores] == [id(c) for c in expected]
    assert len(groups[0]) == 3  # A, E, B / three TT cores


@pytest.mark.parametrize("kind", CONFIGS)
def test_forward_equals_base_layer_with_merged_weight(kind):
    model = A.inject_adapter(Tiny(), CONFIGS[kind]())
    randomize_cores(model)
    x = torch.randn(4, 12, dtype=F64, generator=torch.Generator().manual_seed(3))
    for layer in A.adapter_layers(model).values():
        delta = oracle_delta(layer)
        assert delta.abs().max() > 1e-3
        base = layer.base_layer
        torch.testing.assert_close(layer.delta_weight(), delta, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(layer(x), F.linear(x, base.weight + delta, base.bias), rtol=1e-12, atol=1e-13)
    xb = x_batch()
    adapted = model(xb)
    merged = A.merge_adapter(model)
    assert not A.adapter_layers(merged) and all(type(b.query) is nn.Linear for b in merged.blocks)
    torch.testing.assert_close(merged(xb), adapted, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", CONFIGS)
def test_scale_invariance_of_each_group(kind):
    model = A.inject_adapter(Tiny(), CONFIGS[kind]())
    randomize_cores(model)
    x = x_batch()
    before = model(x)
    with torch.no_grad():
        for g in td.find_core_groups(model):
            for c, s in zip(g.cores, (2.0, 0.25, 2.0)):
                c.mul_(s)
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", CONFIGS)
def test_save_load_round_trip_is_exact(kind, tmp_path):
    base = Tiny()
    cfg = CONFIGS[kind](modules_to_save=["head"])
    model = A.inject_adapter(copy.deepcopy(base), cfg)
    randomize_cores(model)
    with torch.no_grad():
        model.head.weight.add_(1.0)  # a trained head is saved too
    A.save_adapter(model, tmp_path / "ad")
    saved = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert saved["adapter_type"] == kind
    loaded = A.load_adapter(copy.deepcopy(base), tmp_path / "ad")
    assert A.adapter_config(loaded) == cfg
    sa, sb = A.adapter_state_dict(model), A.adapter_state_dict(loaded)
    assert sa.keys() == sb.keys() and "head.weight" in sa
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # only adapter weights are stored, not the base model
    stored = torch.load(tmp_path / "ad" / "adapter_model.pt", weights_only=True)
    assert not any("base_layer" in k or k.startswith("embed") for k in stored)
    x = x_batch()
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("kind", CONFIGS)
def test_refused_load_leaves_the_model_as_it_was(kind, tmp_path):
    """Weights that do not fit are refused before anything changes: no adapter layers, the same
    trainable flags, and a trained head (modules_to_save) not partly overwritten."""
    model = A.inject_adapter(Tiny(), CONFIGS[kind](modules_to_save=["head"]))
    randomize_cores(model)
    A.save_adapter(model, tmp_path / "ad")
    state = torch.load(tmp_path / "ad" / "adapter_model.pt", weights_only=True)
    state["head.bias"] = torch.zeros(state["head.bias"].numel() + 1, dtype=state["head.bias"].dtype)
    torch.save(state, tmp_path / "ad" / "adapter_model.pt")
    base = Tiny()
    base.embed.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in base.named_parameters()}
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    with pytest.raises(ValueError, match="head.bias"):
        A.load_adapter(base, tmp_path / "ad")
    assert not A.adapter_layers(base)
    assert {n: p.requires_grad for n, p in base.named_parameters()} == flags
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
    A.inject_adapter(base, CONFIGS[kind]())  # not marked as carrying an adapter any more


@pytest.mark.parametrize("kind", CONFIGS)
def test_dropout_only_on_adapter_branch(kind):
    base = Tiny()
    model = A.inject_adapter(copy.deepcopy(base), CONFIGS[kind](dropout=0.5)).train()
    x = x_batch()
    assert torch.equal(model(x), base(x))  # Delta W = 0: dropout has nothing to act on
    randomize_cores(model)
    torch.manual_seed(0)
    y1 = model(x)
    model.eval()
    assert not torch.allclose(y1, model(x))


@pytest.mark.parametrize("kind", CONFIGS)
def test_das_step_at_init_is_finite(kind):
    model = A.inject_adapter(Tiny(), CONFIGS[kind]())
    groups = td.find_core_groups(model)
    opt = td.DAS(
        [p for p in model.parameters() if p.requires_grad], torch.optim.SGD, core_groups=groups, lr=0.1, alpha=1.0
    )
    model(x_batch()).pow(2).sum().backward()
    zero = [c for g in groups for c in g.cores if float(c.detach().abs().sum()) == 0.0]
    assert len(zero) == len(groups)  # one zero core per group: the start is the base model
    expected = [(c - 0.1 * c.grad).detach() for c in zero]  # s = 1 for a zero core
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    for c, e in zip(zero, expected):
        torch.testing.assert_close(c.detach(), e, rtol=0, atol=0)
        assert c.abs().sum() > 0


def test_tt_factors_and_ranks():
    assert balanced_factors(384, 3) == (8, 8, 6)
    assert math.prod(balanced_factors(1536, 4)) == 1536
    assert balanced_factors(7, 2) == (7, 1)
    layer = A.LoRETTALinear(nn.Linear(12, 20), A.LoRETTAConfig(target_modules=["x"], rank=2, num_cores=2))
    assert layer.out_factors == (5, 4) and layer.in_factors == (4, 3) and layer.tt_ranks == (1, 2, 1)
    cfg = A.LoRETTAConfig(target_modules=["x"], rank=1, num_cores=2, in_factors=(2, 6), out_factors=[4, 5])
    layer = A.LoRETTALinear(nn.Linear(12, 20), cfg)
    assert [tuple(c.shape) for c in layer.cores()] == [(1, 4, 2, 1), (1, 5, 6, 1)]


def test_registry():
    assert A.get_adapter("tt") is A.get_adapter("loretta")
    assert A.get_adapter("flora").config_cls is A.FLoRAConfig
    with pytest.raises(ValueError, match="'nope'"):
        A.get_adapter("nope")
    with pytest.raises(ValueError, match="already registered"):
        A.register_adapter("flora", A.FLoRAConfig, A.FLoRALinear, lambda n, t, c: A.FLoRALinear(t, c))
    cfg = loretta_config()
    assert A.config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    ("make", "value"),
    [
        (lambda: A.FLoRAConfig(target_modules=["q"], rank=0), "0"),
        (lambda: A.FLoRAConfig(target_modules=["q"], rank=(2, 3, 4)), "(2, 3, 4)"),
        (lambda: A.FLoRAConfig(target_modules=["q"], alpha=-1.0), "-1.0"),
        (lambda: A.FLoRAConfig(target_modules=["q"], dropout=1.0), "1.0"),
        (lambda: A.FLoRAConfig(target_modules=[]), "[]"),
        (lambda: A.FLoRAConfig(target_modules="(unclosed"), "(unclosed"),
        (lambda: A.LoRETTAConfig(target_modules=["q"], num_cores=1), "1"),
        (lambda: A.LoRETTAConfig(target_modules=["q"], rank=(2, 2, 2)), "(2, 2, 2)"),
        (lambda: A.LoRETTAConfig(target_modules=["q"], in_factors=(3, 4)), "(3, 4)"),
    ],
)
def test_bad_config_values_raise(make, value):
    with pytest.raises(ValueError) as info:
        make()
    assert value in str(info.value)


@pytest.mark.parametrize(
    ("config", "value"),
    [
        (A.FLoRAConfig(target_modules=["query"], rank=13), "13"),  # layers are 12 x 12
        (A.FLoRAConfig(target_modules=["embed"], rank=(4, 7)), "(4, 7)"),  # embed is 12 x 6
        (A.LoRETTAConfig(target_modules=["query"], rank=(2, 5)), "5"),  # (3,2,2) x (3,2,2): r_2 <= 4
        (A.LoRETTAConfig(target_modules=["query"], rank=3, num_cores=2, in_factors=(5, 2)), "(5, 2)"),
    ],
)
def test_rank_or_factors_that_do_not_fit_raise_and_leave_model_unchanged(config, value):
    model = Tiny()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        A.inject_adapter(model, config)
    assert value in str(info.value)
    assert not A.adapter_layers(model) and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())


def test_unmatched_targets_and_misuse_raise(tmp_path):
    with pytest.raises(ValueError, match="'nothing_like_this'"):
        A.inject_adapter(Tiny(), A.FLoRAConfig(target_modules=["nothing_like_this"], rank=2))
    with pytest.raises(ValueError, match="non-Linear modules: blocks.0 "):
        A.inject_adapter(Tiny(), A.FLoRAConfig(target_modules=r"blocks\.\d", rank=2))
    with pytest.raises(ValueError, match="'classifier'"):
        A.inject_adapter(Tiny(), flora_config(modules_to_save=["classifier"]))
    model = A.inject_adapter(Tiny(), flora_config())
    with pytest.raises(ValueError, match="already has tensordas adapters"):
        A.inject_adapter(model, flora_config())
    with pytest.raises(ValueError, match="not a saved tensordas adapter"):
        A.load_adapter(Tiny(), tmp_path)
    A.save_adapter(A.inject_adapter(Tiny(), A.FLoRAConfig(target_modules=["query"], rank=2)), tmp_path / "a")
    wide = nn.Module()
    wide.blocks = nn.ModuleList([nn.Module(), nn.Module()])
    for b in wide.blocks:
        b.query = nn.Linear(12, 14)  # same names, other shape
    with pytest.raises(ValueError, match="shape"):
        A.load_adapter(wide, tmp_path / "a")


def test_importing_tensordas_does_not_import_peft_or_transformers():
    code = "import sys, tensordas, tensordas.adapters; print('peft' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
