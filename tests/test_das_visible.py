"""What DAS did, visible to the user (issue 15): DASTrainer logs Q and the scale range through the
Trainer's own logging, and the engine and DASTrainer warn once when DAS's scales never moved."""

import copy
import warnings

import pytest
import torch

import tensordas as td
from tensordas.optim.watch import ScaleWatch, UnmovedScalesWarning, step_log
from tensordas.tasks.completion import CompletionConfig, run_completion

pytest.importorskip("peft")
pytest.importorskip("transformers")
from test_hf_trainer import ALPHA, LR, dataset, full_batch, hf, lora_classifier, trainable, training_args  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _unmoved(record: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, UnmovedScalesWarning)]


def test_trainer_logs_q_and_the_applied_scale_range(tmp_path):
    model, data = lora_classifier(), dataset()
    reference = copy.deepcopy(model)
    reference(**full_batch(data)).loss.backward()
    args = training_args(tmp_path, 4, 1)
    args.logging_strategy, args.logging_steps = "steps", 1
    trainer = hf.DASTrainer(model=model, args=args, train_dataset=data, method="das", alpha=ALPHA)
    trainer.train()
    (log,) = [row for row in trainer.state.log_history if "loss" in row]
    after = trainable(model)
    groups = td.find_core_groups(reference)
    # Q: variance of the squared core norms per group before the step, averaged over groups (float64).
    qs = []
    for g in groups:
        n = torch.stack([c.detach().pow(2).sum() for c in g.cores])
        qs.append(float(((n - n.mean()) ** 2).mean()))
    assert log["das/Q"] == pytest.approx(sum(qs) / len(qs), rel=1e-9)
    # The scales: after an SGD step on scaled cores, w_new = s * w - lr * g, so s = <w_new + lr g, w> / |w|^2.
    name = {id(p): n for n, p in reference.named_parameters()}
    scales = []
    for g in groups:
        for c in g.cores:
            w, new = c.detach(), after[name[id(c)]].detach()
            scales.append(float(((new + LR * c.grad) * w).sum() / (w * w).sum()))
    assert log["das/scale_min"] == pytest.approx(min(scales), rel=1e-9)
    assert log["das/scale_max"] == pytest.approx(max(scales), rel=1e-9)
    assert log["das/scale_min"] < 1 < log["das/scale_max"]


def test_trainer_warns_once_when_das_never_moved(tmp_path):
    args = training_args(tmp_path, 2, 1)
    args.max_steps = 3
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        hf.DASTrainer(model=lora_classifier(), args=args, train_dataset=dataset(), alpha=1e-14).train()
    (warning,) = _unmoved(record)
    assert "alpha 1e-14 is too small" in str(warning.message) and "3 steps" in str(warning.message)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        hf.DASTrainer(model=lora_classifier(), args=args, train_dataset=dataset(), alpha=ALPHA).train()
    assert _unmoved(record) == []


def test_engine_warns_once_when_das_never_moved():
    synth = "synthetic:shape=9x8x7,rank=2,noise=0.1,seed=1"
    for alpha, expected in ((1e-14, 1), (0.05, 0)):
        # the random start (small cores, large relative drift): from the spectral start, cores as large as the
        # data, alpha 0.05 moves no norm by 1e-6 in 6 steps either
        cfg = CompletionConfig(data=synth, model="cp", rank=2, steps=6, optimizers=("das",), alpha=alpha, als=False,
                               init="balanced")  # fmt: skip
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            run_completion(cfg)
        assert len(_unmoved(record)) == expected, alpha


def test_scale_watch_checks_once_after_n_steps():
    a, b = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3, 5))
    opt = td.DAS([a, b], torch.optim.SGD, core_groups=[[a, b]], alpha=0.0, lr=0.1)
    watch = ScaleWatch(opt, after=3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for step in range(1, 7):
            (a @ b).pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
            watch.step(step)
            assert len(_unmoved(record)) == (step >= 3)
    assert step_log(torch.optim.SGD([a], lr=0.1)) == {}  # no cores scaled: nothing to log
