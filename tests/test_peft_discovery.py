"""Core groups of real Hugging Face PEFT models (LoRA, DoRA, AdaLoRA, LoHa, LoKr) and DAS on them."""

import re

import pytest
import torch
from _scale_invariance import assert_euler_identity, assert_unit_product_scaling_keeps
from conftest import reference_scales

import tensordas as td

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


TUNER_ATTRS = r"(lora_A|lora_B|lora_E|hada_w[12]_[ab]|lokr_w[12](?:_[ab])?|lora_magnitude_vector)"


def tiny_bert(seed: int = 0, classifier: bool = False) -> torch.nn.Module:
    cfg = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=3,
        attn_implementation="eager",  # SDPA in float64 on CPU is ~100x slower here
    )
    torch.manual_seed(seed)
    cls = transformers.BertForSequenceClassification if classifier else transformers.BertModel
    return cls(cfg).to(F64)


def ids(seed: int = 1, batch: int = 3) -> torch.Tensor:
    return torch.randint(0, 40, (batch, 7), generator=torch.Generator().manual_seed(seed))


def peft_model(config, seed: int = 0, classifier: bool = False):
    return peft.get_peft_model(tiny_bert(seed, classifier), config).to(F64)


def hidden(model, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x).last_hidden_state


# name -> (PEFT config, factor attributes of one product in the documented order)
CASES = {
    "lora": (lambda: peft.LoraConfig(r=4, target_modules=["query", "value"]), ["lora_A", "lora_B"]),
    "dora": (lambda: peft.LoraConfig(r=4, target_modules=["query"], use_dora=True), ["lora_A", "lora_B"]),
    "adalora": (
        lambda: peft.AdaLoraConfig(init_r=4, target_r=2, target_modules=["query", "value"], total_step=10),
        ["lora_A", "lora_E", "lora_B"],
    ),
    "loha": (
        lambda: peft.LoHaConfig(r=3, target_modules=["query", "value"]),
        ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"],
    ),
    "lokr": (lambda: peft.LoKrConfig(r=1, target_modules=["query"]), ["lokr_w1", "lokr_w2_a", "lokr_w2_b"]),
    "lokr-both": (
        lambda: peft.LoKrConfig(r=1, decompose_both=True, target_modules=["key"]),
        ["lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"],
    ),
}


def expected_groups(model, order: list[str]) -> dict[str, list[torch.Tensor]]:
    """Groups read off the trainable parameter names: ``<module>.<attr>.<adapter>[.weight]``."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for name, p in model.named_parameters():
        m = re.fullmatch(rf"(.+)\.{TUNER_ATTRS}\.([^.]+)(?:\.weight)?", name)
        if p.requires_grad and m and m.group(2) in order:
            found.setdefault(f"{m.group(1)}.{m.group(3)}", {})[m.group(2)] = p
    return {k: [v[a] for a in order if a in v] for k, v in found.items()}


def randomize_trainable(model, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.2 + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("case", CASES)
def test_one_group_per_adapted_module_and_nothing_else(case):
    make, order = CASES[case]
    model = peft_model(make())
    groups = td.find_core_groups(model)
    expected = expected_groups(model, order)
    assert len(expected) >= 2
    assert [g.name for g in groups] == list(expected)
    for g in groups:
        assert [id(c) for c in g.cores] == [id(c) for c in expected[g.name]]
        assert len(g.cores) == len(order)
    if case == "dora":  # the magnitude vector trains but is not a factor of B A
        in_groups = {id(c) for g in groups for c in g.cores}
        magnitudes = [p for n, p in model.named_parameters() if "lora_magnitude_vector" in n]
        assert magnitudes and all(p.requires_grad and id(p) not in in_groups for p in magnitudes)


@pytest.mark.parametrize("case", CASES)
def test_groups_are_scale_invariant_and_satisfy_euler_identity(case):
    model = peft_model(CASES[case][0]())
    randomize_trainable(model)  # move off the zero initialisation
    x = ids()
    groups = td.find_core_groups(model)
    out = hidden(model, x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    (out * weights).sum().backward()
    assert_euler_identity(groups)
    assert_unit_product_scaling_keeps(groups, lambda: hidden(model, x))


def test_loha_is_one_group_across_both_hadamard_pairs():
    model = peft_model(CASES["loha"][0]())
    randomize_trainable(model)
    x = ids()
    before = hidden(model, x).detach()
    groups = td.find_core_groups(model)
    assert all(len(g) == 4 for g in groups)
    with torch.no_grad():  # scale pair 1 up and pair 2 down: invariant, so they share one group
        for g in groups:
            w1a, _, w2a, _ = g.cores
            w1a.mul_(3.0)
            w2a.div_(3.0)
    torch.testing.assert_close(hidden(model, x), before, rtol=1e-10, atol=1e-12)


def test_several_adapters_and_only_trainable_ones():
    model = peft_model(peft.LoraConfig(r=4, target_modules=["query", "value"]))
    model.add_adapter("second", peft.LoraConfig(r=2, target_modules=["query", "key"]))
    model.base_model.set_adapter(["default", "second"])  # both active and trainable
    names = [g.name for g in td.find_core_groups(model)]
    assert len(names) == 8 and len(set(names)) == 8
    for layer in range(2):
        prefix = f"base_model.model.encoder.layer.{layer}.attention.self"
        for module, adapter in [("query", "default"), ("query", "second"), ("value", "default"), ("key", "second")]:
            assert f"{prefix}.{module}.{adapter}" in names
    model.set_adapter("second")  # "default" becomes inactive and frozen
    groups = td.find_core_groups(model)
    assert sorted(g.name.rsplit(".", 2)[-2:][0] + "." + g.name.rsplit(".", 1)[-1] for g in groups) == [
        "key.second",
        "key.second",
        "query.second",
        "query.second",
    ]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(c) for g in groups for c in g.cores} == trainable


def test_frozen_adapters_give_no_group():
    model = peft_model(peft.LoraConfig(r=4, target_modules=["query"], inference_mode=True))
    with pytest.raises(ValueError, match=r"query.default'.* are frozen \(requires_grad=False\)"):
        td.find_core_groups(model)


def test_model_without_adapters_names_the_peft_finder():
    with pytest.raises(ValueError, match="PEFT tuner layers"):
        td.find_core_groups(tiny_bert())


def classification_step(model, alpha: float, lr: float):
    """One DAS(SGD) step on a cross-entropy loss; returns (groups, scales, before, grads)."""
    labels = torch.tensor([0, 2, 1])
    loss = model(input_ids=ids(), labels=labels).loss
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = td.find_core_groups(model)
    scales = reference_scales([g.cores for g in groups], alpha=alpha, lr_of=lambda c: lr)
    before = {id(p): p.detach().clone() for p in params}
    grads = {id(p): p.grad.clone() for p in params}
    opt = td.DAS(params, torch.optim.SGD, core_groups=groups, alpha=alpha, lr=lr)
    opt.step()
    return params, groups, scales, before, grads


def test_das_step_on_peft_lora_matches_design_formula():
    model = peft_model(peft.LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"), classifier=True)
    with torch.no_grad():  # a step where B is non-zero
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(len(n)))
    alpha, lr = 300.0, 0.1  # large enough for visible scales, the clamp does not bite
    params, groups, scales, before, grads = classification_step(model, alpha, lr)
    assert len(groups) == 4
    assert all(0.5 < s < 2.0 for row in scales for s in row)
    assert max(abs(s - 1) for row in scales for s in row) > 1e-3  # the scaling is visible
    scale_of = {id(c): s for g, row in zip(groups, scales) for c, s in zip(g.cores, row)}
    heads = [p for p in params if id(p) not in scale_of]
    assert heads  # the classifier trains but is in no group
    for p in params:
        expected = scale_of.get(id(p), 1.0) * before[id(p)] - lr * grads[id(p)]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)


def test_das_step_on_fresh_lora_keeps_zero_b_unscaled():
    model = peft_model(peft.LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"), classifier=True)
    alpha, lr = 2.0, 0.1
    params, groups, scales, before, grads = classification_step(model, alpha, lr)
    for g, row in zip(groups, scales):
        lora_a, lora_b = g.cores
        assert float(before[id(lora_b)].abs().sum()) == 0.0 and row[1] == 1.0
        assert float(grads[id(lora_a)].abs().sum()) == 0.0 and row[0] < 1.0  # A shrinks: gamma_A < gamma_bar
        torch.testing.assert_close(lora_b.detach(), -lr * grads[id(lora_b)], rtol=0, atol=0)
        torch.testing.assert_close(lora_a.detach(), row[0] * before[id(lora_a)], rtol=1e-12, atol=1e-14)
    assert all(torch.isfinite(p).all() for p in params)
