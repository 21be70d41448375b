"""DAS and SAM under transformers.Trainer: gradient accumulation gives the full-batch update."""

import copy
import math

import pytest
import torch
from torch.utils.data import SequentialSampler

import tensordas as td

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
hf = pytest.importorskip("tensordas.integrations.trainer")

F64 = torch.float64
LR, ALPHA, RHO = 0.1, 300.0, 0.05


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def lora_classifier(seed: int = 0):
    cfg = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        classifier_dropout=0.0,
        num_labels=3,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    base = transformers.BertForSequenceClassification(cfg).to(F64)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    model.to(F64)
    with torch.no_grad():  # B != 0, so DAS scales both cores
        g = torch.Generator().manual_seed(seed + 1)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    return model


def dataset(n: int = 4) -> list[dict]:
    g = torch.Generator().manual_seed(7)
    return [{"input_ids": torch.randint(0, 40, (6,), generator=g), "labels": torch.tensor(i % 3)} for i in range(n)]


def full_batch(data) -> dict:
    return {k: torch.stack([d[k] for d in data]) for k in data[0]}


def training_args(tmp_path, batch: int, accumulation: int) -> "transformers.TrainingArguments":
    return transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=LR,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,  # no clipping: compare the raw update
        weight_decay=0.0,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=0,
    )


class InOrderTrainer(hf.DASTrainer):
    """Micro-batches in dataset order, so a test can rebuild them."""

    def _get_train_sampler(self, *args, **kwargs):
        return SequentialSampler(self.train_dataset)


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def assert_same_update(model, reference, rtol=1e-10):
    got, want = trainable(model), trainable(reference)
    assert got.keys() == want.keys()
    for n in got:
        torch.testing.assert_close(got[n].detach(), want[n].detach(), rtol=rtol, atol=1e-13, msg=n)


def full_batch_das(model, data):
    model.train()
    model(**full_batch(data)).loss.backward()
    params = list(trainable(model).values())
    plain = {n: (p - LR * p.grad).detach() for n, p in trainable(model).items()}
    opt = td.DAS(params, torch.optim.SGD, core_groups=td.find_core_groups(model), alpha=ALPHA, lr=LR)
    opt.step()
    return plain


@pytest.mark.parametrize("accumulation", [1, 2])
def test_das_under_trainer_equals_full_batch_update(tmp_path, accumulation):
    model, data = lora_classifier(), dataset()
    reference = copy.deepcopy(model)
    plain_sgd = full_batch_das(reference, data)
    trainer = hf.DASTrainer(
        model=model,
        args=training_args(tmp_path, 4 // accumulation, accumulation),
        train_dataset=data,
        method="das",
        alpha=ALPHA,
    )
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, td.DAS)
    assert_same_update(model, reference)
    lora_b = [n for n in plain_sgd if "lora_B" in n]
    assert max(float((trainable(model)[n].detach() - plain_sgd[n]).abs().max()) for n in lora_b) > 1e-6  # DAS acted


def test_base_method_under_accumulation_equals_full_batch_sgd(tmp_path):
    model, data = lora_classifier(), dataset()
    reference = copy.deepcopy(model)
    reference(**full_batch(data)).loss.backward()
    with torch.no_grad():
        for p in trainable(reference).values():
            p.sub_(LR * p.grad)
    hf.DASTrainer(model=model, args=training_args(tmp_path, 2, 2), train_dataset=data, method="base").train()
    assert_same_update(model, reference)


def test_plain_trainer_with_das_factory(tmp_path):
    model, data = lora_classifier(), dataset()
    reference = copy.deepcopy(model)
    full_batch_das(reference, data)
    args = training_args(tmp_path, 4, 1)
    factory = hf.das_optimizer_cls_and_kwargs(model, args, alpha=ALPHA)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, optimizer_cls_and_kwargs=factory)
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, td.DAS)
    assert_same_update(model, reference)


def sam_reference(model, data):
    """A copy of ``model`` after one ``td.SAM.step(closure)`` on the full batch: the reference update."""
    reference = copy.deepcopy(model)
    sam = td.SAM(list(trainable(reference).values()), torch.optim.SGD, rho=RHO, lr=LR)
    batch = full_batch(data)

    def closure():
        sam.zero_grad()
        loss = reference(**batch).loss
        loss.backward()
        return loss

    sam.step(closure)
    return reference


def test_sam_under_trainer_equals_sam_step(tmp_path):
    model, data = lora_classifier(), dataset()
    reference = sam_reference(model, data)
    trainer = hf.DASTrainer(model=model, args=training_args(tmp_path, 4, 1), train_dataset=data, method="sam", rho=RHO)
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, td.SAM)
    assert_same_update(model, reference)


def test_sam_with_accumulation_is_per_micro_batch_sam(tmp_path):
    model, data = lora_classifier(), dataset()
    reference = copy.deepcopy(model)
    params = list(trainable(reference).values())
    total = [torch.zeros_like(p) for p in params]
    for micro in (data[:2], data[2:]):  # documented: perturbation from each micro-batch's own gradient
        batch = full_batch(micro)
        grads = torch.autograd.grad(reference(**batch).loss / 2, params)
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.add_(RHO * g / (norm + 1e-12))
        sharp = torch.autograd.grad(reference(**batch).loss / 2, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(RHO * g / (norm + 1e-12))
        total = [t + s for t, s in zip(total, sharp)]
    with torch.no_grad():
        for p, t in zip(params, total):
            p.sub_(LR * t)
    trainer = InOrderTrainer(model=model, args=training_args(tmp_path, 2, 2), train_dataset=data, method="sam", rho=RHO)
    trainer.train()
    assert_same_update(model, reference, rtol=1e-9)


def test_decaying_alpha_uses_trainer_steps_and_bad_settings_raise(tmp_path):
    model, data = lora_classifier(), dataset()
    trainer = hf.DASTrainer(
        model=model, args=training_args(tmp_path, 2, 1), train_dataset=data, alpha_schedule="linear"
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=5)
    assert trainer.optimizer.total_steps == 5
    with pytest.raises(ValueError, match="'adam'"):
        hf.DASTrainer(model=model, args=training_args(tmp_path, 2, 1), train_dataset=data, method="adam")
    with pytest.raises(ValueError, match="-1"):
        hf.DASTrainer(model=model, args=training_args(tmp_path, 2, 1), train_dataset=data, alpha=-1.0)
    for method in ("msam", "msam-das"):  # their weights rest at a perturbed point the Trainer would evaluate
        assert method not in hf.trainer_methods()
        with pytest.raises(ValueError, match=f"method '{method}'.*perturbed point"):
            hf.DASTrainer(model=model, args=training_args(tmp_path, 2, 1), train_dataset=data, method=method)


def test_decaying_alpha_schedule_trains_and_resumes_exactly(tmp_path):
    """train() creates the optimizer with create_optimizer() alone: a decaying alpha schedule must still get the
    Trainer's number of optimizer steps, and a resumed run must equal the uninterrupted one (DAS's step counter)."""
    data = dataset(8)

    def run(out, save, resume=None):
        args = training_args(out, 2, 2)
        args.max_steps, args.optim, args.lr_scheduler_type, args.learning_rate = 2, "adamw_torch", "linear", 0.05
        args.save_strategy, args.save_steps = ("steps", 1) if save else ("no", 500)
        model = lora_classifier()
        trainer = InOrderTrainer(model=model, args=args, train_dataset=data, alpha=50.0, alpha_schedule="linear")
        trainer.train(resume_from_checkpoint=resume)
        das = trainer.optimizer.optimizer
        assert (das.total_steps, das.step_count) == (2, 2)
        return model

    straight = run(tmp_path / "a", save=True)
    resumed = run(tmp_path / "a", save=False, resume=str(tmp_path / "a" / "checkpoint-1"))
    assert_same_update(resumed, straight, rtol=1e-12)


def test_given_optimizer_must_match_method(tmp_path):
    model, data = lora_classifier(), dataset()
    args = training_args(tmp_path, 4, 1)
    params = list(trainable(model).values())
    sgd = torch.optim.SGD(params, lr=LR)
    with pytest.raises(ValueError, match="method='das' but optimizers=.* SGD"):  # was silently plain SGD
        hf.DASTrainer(model=model, args=args, train_dataset=data, optimizers=(sgd, None))
    sam = td.SAM(params, torch.optim.SGD, rho=RHO, lr=LR)
    with pytest.raises(ValueError, match="method='sam'"):
        hf.DASTrainer(model=model, args=args, train_dataset=data, method="base", optimizers=(sam, None))
    factory = hf.das_optimizer_cls_and_kwargs(model, args, alpha=ALPHA)
    with pytest.raises(ValueError, match="tensordas wrapper"):
        hf.DASTrainer(model=model, args=args, train_dataset=data, optimizer_cls_and_kwargs=factory).create_optimizer()


def test_user_built_sam_under_trainer_equals_sam_step(tmp_path):
    model, data = lora_classifier(), dataset()
    reference = sam_reference(model, data)
    sam = td.SAM(list(trainable(model).values()), torch.optim.SGD, rho=RHO, lr=LR)
    args = training_args(tmp_path, 4, 1)
    hf.DASTrainer(model=model, args=args, train_dataset=data, method="sam", optimizers=(sam, None)).train()
    assert_same_update(model, reference)
    assert sam.state_dict()["tensordas"]["wrapper"] == "SAM"


def test_model_without_core_groups_fails_at_construction(tmp_path):
    model, data = lora_classifier(), dataset()
    base = model.get_base_model()
    for p in base.parameters():
        p.requires_grad_(True)
    plain = copy.deepcopy(base)
    for name, module in list(plain.named_modules()):
        if hasattr(module, "base_layer"):  # unwrap the LoRA layers: a model with no core groups
            parent, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent), child, module.base_layer)
    args = training_args(tmp_path, 4, 1)
    with pytest.raises(ValueError, match="no core groups.*method='base' or 'sam'"):
        hf.DASTrainer(model=plain, args=args, train_dataset=data)
    hf.DASTrainer(model=plain, args=args, train_dataset=data, method="sam")  # needs no groups


def test_sam_with_accumulation_is_not_full_batch_sam(tmp_path):
    """docs/integrations.md (SAM with gradient accumulation): DASTrainer's SAM under accumulation is the
    per-micro-batch (m-sharpness) form, measurably not full-batch SAM; Lightning refuses it instead."""
    model, data = lora_classifier(), dataset()
    full_batch_sam = sam_reference(model, data)
    trainer = InOrderTrainer(model=model, args=training_args(tmp_path, 2, 2), train_dataset=data, method="sam", rho=RHO)
    trainer.train()
    got, want = trainable(model), trainable(full_batch_sam)
    assert max(float((got[n] - want[n]).abs().max()) for n in got) > 1e-6


def test_a_method_registered_later_runs_under_the_trainer(tmp_path, monkeypatch):
    """The Trainer reads the registry when asked: a DAS preset registered by a user runs as DAS does."""
    from tensordas.training.methods import METHODS, Method

    entry = Method("das-copy", "DAS again", td.DAS, options=("alpha",), strength="alpha", needs_core_groups=True)
    monkeypatch.setitem(METHODS, "das-copy", entry)
    assert "das-copy" in hf.trainer_methods()
    model, data = lora_classifier(), dataset()
    reference = copy.deepcopy(model)
    full_batch_das(reference, data)
    hf.DASTrainer(
        model=model, args=training_args(tmp_path, 4, 1), train_dataset=data, method="das-copy", alpha=ALPHA
    ).train()
    assert_same_update(model, reference)


def test_the_old_methods_tuple_warns_with_its_removal_release():
    with pytest.warns(FutureWarning, match="removed in tensordas 0.3"):
        old = hf.METHODS
    assert old == hf.trainer_methods() and "looksam" not in old and {"base", "sam", "das"} <= set(old)


class PhasedSAM(torch.optim.Optimizer):
    """SAM in plain per-parameter loops, not a td.SAM: it shares only the phases (first_step, restore,
    second_step) and the registry's needs_closure with it."""

    def __init__(self, params, base_optimizer, rho=0.05, **kwargs):
        super().__init__(params, {"rho": rho, **kwargs})
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups, self.state = self.base_optimizer.param_groups, self.base_optimizer.state
        self.saved = {}

    @torch.no_grad()
    def first_step(self, zero_grad=False):
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params))
        for group in self.param_groups:
            for p in (p for p in group["params"] if p.grad is not None):
                self.saved[p] = p.clone()
                p.add_(group["rho"] * p.grad / (norm + 1e-12))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def restore(self):
        for p, w in self.saved.items():
            p.copy_(w)
        self.saved = {}

    @torch.no_grad()
    def second_step(self, zero_grad=False):
        self.restore()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure):
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss


@pytest.fixture
def phased_sam(monkeypatch):
    """A two-pass method registered by a user: ``phased-sam`` (PhasedSAM) and ``closure-only`` (two passes through
    its own step(closure) alone, which the Trainer's micro-batches cannot drive)."""
    from tensordas.training.methods import METHODS, Method

    entry = Method("phased-sam", "SAM in phases", PhasedSAM, options=("rho",), strength="rho", needs_closure=True)
    monkeypatch.setitem(METHODS, "phased-sam", entry)
    closure_only = Method("closure-only", "two passes in step()", torch.optim.SGD, needs_closure=True)
    monkeypatch.setitem(METHODS, "closure-only", closure_only)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_two_pass_method_runs_under_the_trainer_by_its_phases_not_by_subclassing_sam(
    tmp_path, phased_sam, accumulation
):
    """Read from the registry: needs_closure and the phases, not issubclass(td.SAM). Without accumulation it is
    td.SAM's full-batch step; with it, the same per-micro-batch SAM as td.SAM under the Trainer."""
    assert not issubclass(PhasedSAM, td.SAM)
    assert "phased-sam" in hf.trainer_methods() and "closure-only" not in hf.trainer_methods()
    data = dataset()
    if accumulation == 1:
        reference = sam_reference(lora_classifier(), data)
    else:
        reference = lora_classifier()
        args = training_args(tmp_path / "sam", 2, 2)
        InOrderTrainer(model=reference, args=args, train_dataset=data, method="sam", rho=RHO).train()
    model = lora_classifier()
    args = training_args(tmp_path, 4 // accumulation, accumulation)
    trainer = InOrderTrainer(model=model, args=args, train_dataset=data, method="phased-sam", rho=RHO)
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, PhasedSAM)
    assert_same_update(model, reference, rtol=1e-9)
    with pytest.raises(ValueError, match="does not run method 'closure-only'.*first_step/restore/second_step"):
        hf.DASTrainer(model=model, args=args, train_dataset=data, method="closure-only")


def test_sam_under_the_trainer_warns_of_a_non_finite_gradient_as_its_own_step_does(tmp_path):
    """The Trainer's step is SAM's second_step(), so SAM's nonfinite handling holds there too (it warned nowhere
    while the step was restore + the base step)."""
    model, data = lora_classifier(), dataset()
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n)[0, 0] = float("nan")
    trainer = hf.DASTrainer(model=model, args=training_args(tmp_path, 4, 1), train_dataset=data, method="sam", rho=RHO)
    with pytest.warns(RuntimeWarning, match="first-pass gradient was not finite"):
        trainer.train()
    assert trainer.optimizer.optimizer.nonfinite_steps == 1
