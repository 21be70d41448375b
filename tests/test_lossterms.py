"""Loss terms of registered methods (issue 21, points 3-5): Jacobian regularisation, SAF, MESA, with DAS.

Every term is checked against a float64 computation written here from its paper's formula, and a
training step against an SGD step on the hand-written loss; SAF's memory against the epoch it must come
from; resumed runs against uninterrupted ones, bit for bit.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tensordas as td
from tensordas.data import add_label_noise, load_classification
from tensordas.networks import build_network
from tensordas.training import METHODS, LoopConfig, OptimizerConfig, compared_methods, engine, train_classifier
from tensordas.training.lossterms import (
    HeadTap,
    LossContext,
    find_head,
    jreg_term,
    mesa_term,
    saf_term,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

TIMES = ("time_s",)


@pytest.fixture(scope="module")
def digits():
    return load_classification("digits", seed=0, train_size=120, test_size=60)


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_network("tt-mlp", (1, 8, 8), 10, rank=3, hidden=(16, 16))


def kl64(past: torch.Tensor, now: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-row tau^2 * KL(p || q), p = softmax(past/tau), q = softmax(now/tau), in float64 from the formula."""
    past, now = past.double() / tau, now.double() / tau
    p = torch.exp(past) / torch.exp(past).sum(dim=1, keepdim=True)
    q = torch.exp(now) / torch.exp(now).sum(dim=1, keepdim=True)
    return tau**2 * (p * (torch.log(p) - torch.log(q))).sum(dim=1)


SAF_OPTS = {"saf_lambda": 0.3, "saf_tau": 5.0, "saf_epochs": 2, "saf_start": 0}


# --------------------------------------------------------------------------------------- jreg
def test_jreg_term_equals_the_formula_in_float64():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    with HeadTap(model) as tap:
        logits = model(x)
    ctx = LossContext(
        logits=logits, features=tap.take(logits), head=tap.head, options={"jreg_lambda": 0.02, "jreg_ratio": 0.5}
    )
    got = jreg_term(ctx).detach()
    w1, b1, w2 = model[0].weight.detach(), model[0].bias.detach(), model[2].weight.detach()
    h = torch.clamp(x @ w1.T + b1, min=0)  # the last layer's input, written out
    want = 0.02 * (sum(float(v) ** 2 for v in w2.flatten()) + 0.5 * sum(float(r @ r) for r in h) / 4)
    assert float(got) == pytest.approx(want, rel=1e-12)
    assert not model[2]._forward_hooks  # the hook lives only inside the block


def test_the_head_of_the_networks_is_their_last_linear_layer():
    model = tiny()
    assert find_head(model) is model.head
    resnet = build_network("tr-resnet20", (1, 8, 8), 10, width=4)
    assert find_head(resnet) is resnet.fc
    with pytest.raises(ValueError, match="no linear layer"):
        find_head(nn.Sequential(nn.ReLU()))


class Pairs(nn.Module):
    """A model whose output is not its last linear layer's: six outputs read as three pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x).reshape(-1, 3, 2).sum(dim=2)


def test_a_head_that_does_not_give_the_logits_is_a_clear_error():
    model = Pairs()
    with HeadTap(model) as tap:
        logits = model(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="did not produce the logits"):
        tap.take(logits)


def test_a_jreg_step_is_an_sgd_step_on_the_penalised_loss(digits):
    """One training step through the engine equals SGD on CE + lambda*(||W||^2 + ratio*mean||h||^2), written out."""
    model = tiny().double()
    reference = copy.deepcopy(model)
    n = 32
    loop = LoopConfig(epochs=1, batch_size=n, lr_schedule="none")
    x, y = digits.x_train[:n], digits.y_train[:n]
    opt = OptimizerConfig(method="jreg", base="sgd", lr=0.1, jreg_lambda=0.05, jreg_ratio=0.3)
    train_classifier(model, opt, (x, y), (digits.x_test, digits.y_test), loop=loop, seed=0)

    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))  # the loop's epoch-1 order for seed 0
    xb, yb = x.double()[order], y[order]
    flat = xb.reshape(n, -1)
    feats = reference.features(flat)  # the MLP's hidden part: the head's input
    logits = reference.head(feats)
    loss = F.cross_entropy(logits, yb) + 0.05 * ((reference.head.weight**2).sum() + 0.3 * (feats**2).sum(dim=1).mean())
    loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.1 * p.grad
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


# ---------------------------------------------------------------------------------------- SAF
def saf_ctx(logits, idx, epoch, state, n=6, **opts):
    return LossContext(logits=logits, indices=idx, n_samples=n, epoch=epoch, state=state, options={**SAF_OPTS, **opts})


def test_saf_reads_the_outputs_of_e_epochs_earlier_not_the_current_ones():
    torch.manual_seed(0)
    idx = torch.tensor([4, 0, 2])
    a, b, c = (torch.randn(3, 4, dtype=torch.float64) for _ in range(3))
    state: dict = {}
    assert float(saf_term(saf_ctx(a, idx, 1, state))) == 0.0  # nothing stored yet from epoch 1 - E
    assert float(saf_term(saf_ctx(b, idx, 2, state))) == 0.0
    got = saf_term(saf_ctx(c, idx, 3, state))  # E = 2: the reference is epoch 1's outputs
    want = 0.3 * kl64(a, c, 5.0).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-10)
    assert float(got) != pytest.approx(float(0.3 * kl64(b, c, 5.0).mean()), rel=1e-3)  # not last epoch's
    # epoch 4 reads epoch 2 (a ring of E + 1 epochs), with another order of the same samples
    d = torch.randn(3, 4, dtype=torch.float64)
    perm = torch.tensor([2, 0, 1])
    got4 = saf_term(saf_ctx(d, idx[perm], 4, state))
    assert float(got4) == pytest.approx(float(0.3 * kl64(b[perm], d, 5.0).mean()), rel=1e-10)


def test_saf_starts_after_its_start_epoch_and_skips_samples_without_a_stored_output():
    torch.manual_seed(1)
    state: dict = {}
    outs = [torch.randn(3, 4, dtype=torch.float64) for _ in range(4)]
    idx = torch.tensor([0, 1, 2])
    # the authors' 0-based "epoch > kl_start_epoch": with start 2 the loss begins at our epoch 4
    values = [float(saf_term(saf_ctx(outs[e - 1], idx, e, state, saf_start=2))) for e in (1, 2, 3)]
    assert values == [0.0, 0.0, 0.0]
    assert torch.equal(state["saf_epoch"][3 % 3], torch.tensor([3, 3, 3, -1, -1, -1]))  # stored all the same
    # sample 5 was never stored: it adds 0, and the mean is still over the batch
    idx4 = torch.tensor([0, 5, 2])
    got = saf_term(saf_ctx(outs[3], idx4, 4, state, saf_start=2))
    per = kl64(outs[1], outs[3], 5.0)  # epoch 2's outputs of samples 0, 1, 2
    assert float(got) == pytest.approx(0.3 * float(per[0] + per[2]) / 3, rel=1e-10)


def test_saf_resumes_bit_exactly_from_a_checkpoint(digits, tmp_path):
    noisy = add_label_noise(digits.y_train, 10, 0.3, seed=0)
    loop = LoopConfig(epochs=5, batch_size=31, lr_schedule="cosine")  # 120 = 3 * 31 + 27
    opt = OptimizerConfig(method="das+saf", base="sgd", lr=0.05, momentum=0.9, alpha=0.5, saf_start=0, saf_lambda=1.0)
    args = ((digits.x_train, noisy.labels), (digits.x_test, digits.y_test))
    kw = dict(loop=loop, seed=3, tag="t")
    full_model = tiny()
    full = train_classifier(full_model, opt, *args, checkpoint=tmp_path / "full.pt", **kw)
    per_epoch = len(loop.batches(digits.n_train))

    def stop(label, done, total):
        if done == 3 * per_epoch + 1:  # memory of epochs 2 and 3 is in the checkpoint, epoch 4 reads epoch 2
            raise RuntimeError("cut")

    with pytest.raises(RuntimeError, match="cut"):
        train_classifier(tiny(), opt, *args, checkpoint=tmp_path / "cut.pt", progress=stop, **kw)
    fresh = tiny(seed=9)
    resumed = train_classifier(fresh, opt, *args, checkpoint=tmp_path / "cut.pt", **kw)
    assert resumed.resumed_from == 3
    for (name, a), (_, b) in zip(full_model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    strip = [{k: v for k, v in r.items() if k not in TIMES} for r in full.history]
    assert strip == [{k: v for k, v in r.items() if k not in TIMES} for r in resumed.history]
    saved = td.training.load_checkpoint(tmp_path / "full.pt")["loss_term"]
    assert saved["saf_logits"].shape == (3, digits.n_train, 10)
    # the term acted: without it (lambda 0) the weights differ
    plain = tiny()
    train_classifier(plain, OptimizerConfig(**{**opt.as_dict(), "saf_lambda": 0.0}), *args, **kw)
    assert not torch.equal(plain.head.weight, full_model.head.weight)


# --------------------------------------------------------------------------------------- MESA
def test_mesa_distils_from_the_ema_of_the_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    opts = {"mesa_lambda": 0.8, "saf_tau": 2.0, "mesa_decay": 0.9, "mesa_start": 0}
    state, cache = {}, {}

    def call(epoch):
        logits = model(x)
        ctx = LossContext(
            logits=logits, model=model, inputs=x, forward=lambda m, v: m(v), epoch=epoch, state=state, cache=cache,
            options=opts,
        )  # fmt: skip
        return mesa_term(ctx), logits

    w0 = [p.detach().clone() for p in model.parameters()]
    first, _ = call(2)  # the teacher starts at the current weights: no loss
    assert float(first.detach()) == pytest.approx(0.0, abs=1e-14)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    second, logits = call(2)
    w_now = [p.detach() for p in model.parameters()]
    ema = [0.9 * a + 0.1 * b for a, b in zip(w0, w_now)]
    teacher = x @ ema[0].T + ema[1]
    assert float(second.detach()) == pytest.approx(float(0.8 * kl64(teacher, logits, 2.0).mean()), rel=1e-10)
    assert set(state) == {"mesa/0.weight", "mesa/0.bias"}
    torch.testing.assert_close(state["mesa/0.weight"], ema[0])


def test_mesa_resumes_bit_exactly(digits, tmp_path):
    loop = LoopConfig(epochs=3, batch_size=40, lr_schedule="none")
    opt = OptimizerConfig(method="mesa", base="sgd", lr=0.05, mesa_start=0, mesa_decay=0.9)
    args = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    kw = dict(loop=loop, seed=1, tag="t")
    full_model = tiny()
    train_classifier(full_model, opt, *args, checkpoint=tmp_path / "full.pt", **kw)

    def stop(label, done, total):
        if done == 2 * 3 + 1:
            raise RuntimeError("cut")

    with pytest.raises(RuntimeError):
        train_classifier(tiny(), opt, *args, checkpoint=tmp_path / "cut.pt", progress=stop, **kw)
    fresh = tiny(seed=4)
    assert train_classifier(fresh, opt, *args, checkpoint=tmp_path / "cut.pt", **kw).resumed_from == 2
    for (name, a), (_, b) in zip(full_model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------------ families, registry
def test_a_family_without_sample_indices_is_a_clear_error_naming_it():
    model = nn.Linear(3, 2)
    plan = engine.Steps(steps=2, every=1, draw=lambda: torch.zeros(4, 3))
    for method, missing in (("saf", "indices"), ("jreg", "features")):
        with pytest.raises(ValueError, match=rf"{missing}.*the completion family cannot"):
            engine.train(
                model, OptimizerConfig(method=method), plan, lambda b: model(b).sum(), lambda r: {},
                supplies=("logits",), family="completion",
            )  # fmt: skip


def test_completion_refuses_a_loss_term_method_and_compare_leaves_them_out():
    from tensordas.tasks.completion import TASK

    assert TASK.loss_context == ()
    assert "jreg" not in compared_methods(TASK.loss_context) and "sam" in compared_methods(TASK.loss_context)
    assert {"jreg", "saf"} <= set(compared_methods())
    cfg = td.tasks.completion.CompletionConfig(optimizers=("saf",), steps=2, eval_every=1)
    with pytest.raises(ValueError, match="completion family cannot"):
        td.tasks.completion.run_completion(cfg)


def test_registry_entries_of_the_loss_term_methods():
    for name, strength in (("jreg", "jreg_lambda"), ("saf", "saf_lambda"), ("mesa", "mesa_lambda")):
        m = METHODS[name]
        assert m.strength == strength and len(m.grid) == 3 and not m.is_base and m.label("sgd") == f"{name}(sgd)"
    assert METHODS["jreg"].compared and METHODS["saf"].compared
    for combo, term in (("das+jreg", "jreg"), ("das+saf", "saf")):
        m = METHODS[combo]
        assert m.cls is td.DAS and m.loss_term is METHODS[term].loss_term and m.needs_core_groups
    # the term's options are not the wrapper's keywords
    kwargs = METHODS["das+jreg"].kwargs(OptimizerConfig(method="das+jreg").options(), core_groups=[[]])
    assert "jreg_lambda" not in kwargs and kwargs["alpha"] == 0.05
    with pytest.raises(ValueError, match="saf_epochs"):
        OptimizerConfig(method="saf", saf_epochs=1.5)
    with pytest.raises(ValueError, match="saf_lambda"):
        OptimizerConfig(method="saf", saf_lambda=-1.0)


def test_das_plus_jreg_scales_the_cores_and_adds_the_term(digits):
    """One step of das+jreg = DAS's scaling, then SGD on the penalised loss; neither alone gives it."""
    n = 32
    loop = LoopConfig(epochs=1, batch_size=n, lr_schedule="none")
    x, y = digits.x_train[:n], digits.y_train[:n]

    def one_step(method, **kw):
        model = tiny().double()
        opt = OptimizerConfig(method=method, base="sgd", lr=0.1, alpha=5.0, jreg_lambda=0.05, **kw)
        train_classifier(model, opt, (x, y), (digits.x_test, digits.y_test), loop=loop, seed=0)
        return model

    both, das, jreg = one_step("das+jreg"), one_step("das"), one_step("jreg")
    # by hand: the penalised loss's gradient, DAS on it (td.DAS, the paper's rule), then the SGD step
    ref = tiny().double()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    xb, yb = x.double()[order].reshape(n, -1), y[order]
    feats = ref.features(xb)
    loss = F.cross_entropy(ref.head(feats), yb) + 0.05 * ((ref.head.weight**2).sum() + (feats**2).sum(dim=1).mean())
    opt = td.DAS(ref.parameters(), torch.optim.SGD, core_groups=td.find_core_groups(ref), alpha=5.0, lr=0.1)
    loss.backward()
    opt.step()
    for (name, a), (_, b) in zip(both.state_dict().items(), ref.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    core = td.find_core_groups(both)[0].cores[0]
    names = {id(p): k for k, p in both.named_parameters()}
    key = names[id(core)]
    assert not torch.allclose(both.state_dict()[key], jreg.state_dict()[key])  # DAS moved the cores
    assert not torch.allclose(both.head.weight, das.head.weight)  # the term moved the head


def test_das_plus_saf_scales_the_cores_and_adds_the_trajectory_loss(digits):
    loop = LoopConfig(epochs=2, batch_size=40, lr_schedule="none")
    args = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))

    def run(method, **kw):
        model = tiny()
        opt = OptimizerConfig(method=method, lr=0.05, alpha=5.0, saf_epochs=1, saf_start=0, saf_lambda=3.0, **kw)
        train_classifier(model, opt, *args, loop=loop, seed=0)
        return model

    both, das, saf = run("das+saf"), run("das"), run("saf")
    core = td.find_core_groups(both)[0].cores[0]
    key = {id(p): k for k, p in both.named_parameters()}[id(core)]
    assert not torch.allclose(both.state_dict()[key], saf.state_dict()[key])  # DAS moved the cores
    assert not torch.allclose(both.head.weight, das.head.weight)  # the trajectory loss moved the head


def test_the_trainer_integration_refuses_a_loss_term_method():
    pytest.importorskip("transformers")
    from tensordas.integrations.trainer import _method_settings, trainer_methods

    assert "jreg" not in trainer_methods() and "das" in trainer_methods()
    with pytest.raises(ValueError, match="loss term"):
        _method_settings("das+jreg", {})


def test_cli_complete_refuses_a_loss_term_method_before_any_run(tmp_path, capsys):
    from tensordas.cli import main

    status = main(["complete", "--optimizer", "base,saf", "--steps", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status != 0 and "indices" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "runs").exists()  # nothing trained
