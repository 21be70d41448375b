"""A method is one module plus one registry entry (issue 19, point 1): a toy method defined here only, registered
with ``register_method``, runs through every command, ``reproduce``, the report's tables and figures, the
Trainer integration (``tensordas.integrations.trainer``) and ``dynamics``, with no other file touched.

The toy, ``shrink``, is a one-pass wrapper that adds ``alpha * w`` to every gradient before the base step (a
weight-decay-like term); its strength reuses the existing option ``alpha``. Where a step can be checked exactly
(dynamics, the Trainer) it is checked against the formula written out here.
"""

from __future__ import annotations

import csv
import json
import math
import random

import numpy as np
import pytest
import torch

from tensordas.cli import main
from tensordas.optim import BaseOptimizerWrapper
from tensordas.reporting import series_style
from tensordas.tasks import TASKS
from tensordas.training import (
    METHODS,
    Method,
    OptimizerConfig,
    build_optimizer,
    compared_optimizers,
    register_method,
    unregister_method,
)

TOY_COLOR, TOY_LINESTYLE = "#17becf", "-."
COMPLETION = ["--data", "synthetic:shape=6x5x4,rank=2,noise=0.1", "--model", "cp", "--rank", "2", "--steps", "10",
              "--eval-every", "5", "--no-als"]  # fmt: skip
CLASSIFIER = ["--train-size", "120", "--test-size", "60", "--batch-size", "30", "--epochs", "1"]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class Shrink(BaseOptimizerWrapper):
    """Adds ``alpha * w`` to each gradient, then the base optimizer steps (one pass)."""

    def __init__(self, params, base_optimizer, alpha: float = 0.05, **kwargs) -> None:
        super().__init__(params, base_optimizer, {"shrink": alpha}, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.add_(p, alpha=group["shrink"])
        self.base_optimizer.step()
        return loss


class Strict(torch.optim.SGD):
    """An optimizer class that takes only ``alpha`` beside the parameters and the base class, and no closure."""

    def __init__(self, params, base_optimizer, alpha: float = 0.05) -> None:
        super().__init__(params, lr=0.1)

    def step(self):  # noqa: D102
        return super().step()


TOY = Method(
    "shrink",
    "a toy: alpha * w added to every gradient (one pass)",
    Shrink,
    options=("alpha",),
    strength="alpha",
    grid=(0.01, 0.1, 1.0),
    color=TOY_COLOR,
    linestyle=TOY_LINESTYLE,
)


@pytest.fixture
def toy():
    """The toy registered for one test, and gone after it."""
    register_method(TOY)
    yield METHODS["shrink"]
    unregister_method("shrink")


def _records(folder) -> list[dict]:
    return json.loads((folder / "results.json").read_text())["records"]


def test_registration_is_checked_and_undone(toy):
    assert list(METHODS)[-1] == "shrink" and series_style("shrink(adam)") == (TOY_COLOR, TOY_LINESTYLE)
    with pytest.raises(ValueError, match="'shrink' is already registered"):
        register_method(TOY)
    unregister_method("shrink")
    assert "shrink" not in METHODS and series_style("shrink(adam)")[0] != TOY_COLOR
    register_method(TOY)  # the fixture unregisters it again
    with pytest.raises(ValueError, match="built in"):
        unregister_method("sam")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        (
            {"options": ("shrink_rate",), "strength": "shrink_rate"},
            r"unknown option\(s\) 'shrink_rate'.*a new one is a field there, `shrink_rate: float = option\(",
        ),
        ({"options": ("alpha", "s_max"), "strength": "s_max"}, "'s_max' cannot be tuned"),
        ({"grid": (0.1, 1.0)}, "its grid needs 3 distinct values"),
        ({"grid": (0.1, 1.0, -1.0)}, "alpha value: -1.0"),
        ({"name": "shrink,fast"}, "Invalid method name"),
        ({"cls": torch.nn.Linear}, "torch.optim.Optimizer subclass"),
        ({"cls": Strict, "fixed": {"beta": 1.0}}, r"Strict must accept \(params, base_optimizer, alpha, beta\)"),
        ({"cls": Strict, "needs_core_groups": True}, r"Strict must accept \(.*core_groups\)"),
        ({"cls": Strict, "needs_closure": True}, "Strict.step must take one"),
        ({"cls": Shrink, "load": lambda: Shrink}, "cls or load, not both"),
        ({"cycle": "looksam_k"}, "cycle 'looksam_k' is not one of its options"),
    ],
)
def test_a_malformed_entry_is_refused_with_what_is_wrong(changes, needle):
    import dataclasses

    with pytest.raises(ValueError, match=needle):
        register_method(dataclasses.replace(TOY, **changes))
    assert "shrink" not in METHODS and "shrink,fast" not in METHODS


def test_complete_command_and_its_figure(toy, tmp_path):
    out = tmp_path / "complete"
    assert main(["complete", *COMPLETION, "--optimizer", "base,shrink", "--alpha", "0.5", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    base, shrink = _records(out)
    assert (shrink["method"], shrink["optimizer"], shrink["alpha"]) == ("shrink", "shrink(adam)", 0.5)
    assert shrink["method_title"] == TOY.title and "alpha_schedule" not in shrink  # only its own options
    assert shrink["train_loss"] != base["train_loss"]  # the term acted
    # the figure the command draws (through the library function it calls): the toy in its registry style
    task = TASKS["completion"]
    config = task.config(data="synthetic:shape=6x5x4,rank=2,noise=0.1", model="cp", rank=2, steps=10, eval_every=5,
                         als=False, optimizers=("base", "shrink"), alpha=0.5)  # fmt: skip
    outcome = task.run(config, out_dir=out, resume=True)  # the command's runs, resumed from its folder
    lines = {line.get_label(): line for ax in task.plot(outcome, config).axes for line in ax.get_lines()}
    assert (lines["shrink(adam)"].get_color(), lines["shrink(adam)"].get_linestyle()) == (TOY_COLOR, TOY_LINESTYLE)


def test_train_and_compress_commands(toy, tmp_path):
    train = tmp_path / "train"
    assert main(["train", *CLASSIFIER, "--optimizer", "base,shrink", "--out", str(train), "--no-progress"]) == 0
    assert [r["optimizer"] for r in _records(train)] == ["sgd", "shrink(sgd)"]
    compress = tmp_path / "compress"
    args = ["compress", "--train-dense", "--hidden", "16", "--dense-epochs", "1", "--format", "tt", "--ratio", "2",
            *CLASSIFIER, "--optimizer", "shrink", "--alpha", "0.01", "--out", str(compress),
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    (record,) = _records(compress)
    assert record["method"] == "shrink" and record["alpha"] == 0.01 and 0 <= record["test_acc"] <= 1


def test_finetune_command(toy, tiny_model, tmp_path):
    pytest.importorskip("peft")
    data = tmp_path / "easy.csv"
    rng = random.Random(0)
    with data.open("w", newline="") as fh:
        rows = csv.writer(fh)
        rows.writerow(["text", "label"])
        for i in range(40):
            rows.writerow([f"{rng.choice(['table', 'river', 'blue'])} {'good' if i % 2 else 'bad'}", i % 2])
    out = tmp_path / "finetune"
    assert main(["finetune", "--model", tiny_model, "--dataset", str(data), "--adapter", "lora", "--rank", "2",
                 "--epochs", "1", "--batch-size", "20", "--optimizer", "shrink", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    (record,) = _records(out)
    assert record["optimizer"] == "shrink(adamw)" and record["alpha"] == 0.05  # the registry's default alpha


def test_reproduce_tunes_it_over_its_grid_and_reports_it(toy, tmp_path, recwarn):
    cfg = tmp_path / "toy.toml"
    cfg.write_text(
        'family = "completion"\ntitle = "Toy"\nmetric = "test_r2"\n'
        '[settings]\ndata = "synthetic:shape=6x5x4,rank=2,noise=0.1"\nmodel = "cp"\nrank = 2\nals = false\n'
        'optimizers = ["base", "sam", "shrink"]\ntune = true\neval_every = 5\n'
        "[profiles.smoke]\nsteps = 10\nseeds = [0, 1]\n"
    )
    out = tmp_path / "reproduce"
    # --jobs 2: the spawned workers start with the built-in registry and register the toy again
    assert main(["reproduce", "--profile", "smoke", "--config", str(cfg), "--jobs", "2", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    assert not [w for w in recwarn if "serially" in str(w.message)]  # the runs did go to the workers
    data = json.loads((out / "results.json").read_text())
    picked = [r for r in data["records"] if r["method"] == "shrink"]
    assert len(picked) == 2  # one per seed, tuned over its registry grid (and one value past an edge pick)
    assert all({c["value"] for c in r["candidates"]} >= set(TOY.grid) and "alpha" in r["selected"] for r in picked)
    (summary,) = data["summary"]
    assert "shrink" in summary["verdicts"] and "shrink-sam" in summary["diff"]
    report = (out / "report.md").read_text()
    assert "| toy | test_r2 ↑ | 2 |" in report and "| shrink |" in report.split("## The paper")[0]
    assert "`shrink`: " + TOY.title in report and "Time over SAM's" in report and "shrink **" in report
    assert (out / "toy" / "q_curves.png").exists()


def test_reproduce_report_draws_it_in_its_style(toy, tmp_path, monkeypatch):
    from tensordas.reproduce import report
    from tensordas.tasks import display  # report.q_curve_figure draws through display.curve_figure

    out = tmp_path / "exp"
    assert main(["complete", *COMPLETION, "--optimizer", "base,shrink", "--out", str(out), "--no-progress"]) == 0
    drawn = {}

    def capture(series, *args, **kwargs):
        drawn.update({name: series_style(name) for name in series})
        return object()

    monkeypatch.setattr(display, "line_panels", capture)
    monkeypatch.setattr(report, "save_figure", lambda fig, path: path)
    assert report.q_curve_figure(out, "toy") is not None
    assert drawn["shrink(adam)"] == (TOY_COLOR, TOY_LINESTYLE) and drawn["adam"][0] != TOY_COLOR


def test_trainer_integration_takes_the_toy_s_step(toy, tmp_path):
    transformers = pytest.importorskip("transformers")
    from tensordas.integrations.trainer import DASTrainer, trainer_methods  # the Trainer integration: only here

    class Regressor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)

        def forward(self, x, labels):
            return {"loss": ((self.lin(x).squeeze(-1) - labels) ** 2).mean()}

    torch.manual_seed(0)
    model = Regressor()
    w0 = [p.detach().clone() for p in model.parameters()]
    data = [{"x": torch.randn(3), "labels": torch.randn(())} for _ in range(4)]
    lr, alpha = 0.1, 0.3
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        learning_rate=lr,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.0,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    assert "shrink" in trainer_methods()
    trainer = DASTrainer(model=model, args=args, train_dataset=data, method="shrink", alpha=alpha)
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, Shrink)
    # w1 = w0 - lr (g + alpha w0), g the full-batch gradient at w0, computed here by hand
    x, y = torch.stack([d["x"] for d in data]).double(), torch.stack([d["labels"] for d in data]).double()
    w, b = w0[0].double(), w0[1].double()
    r = x @ w.T + b - y[:, None]
    gw, gb = 2 * (r * x).mean(0, keepdim=True), 2 * r.mean(0)
    expected = [w - lr * (gw + alpha * w), b - lr * (gb + alpha * b)]
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach().double(), e, rtol=1e-5, atol=1e-6)


def test_dynamics_runs_it_as_a_curve_checked_by_hand(toy, tmp_path):
    from tensordas.tasks.dynamics import DynamicsConfig, make_problem, run_dynamics

    cfg = DynamicsConfig(steps=3, size=(8, 6), rank=(2, 2), alpha=0.5, optimizers=("base", "shrink"))
    res = run_dynamics(cfg)
    assert list(res.curves) == ["GD", "shrink"] and res.first_step.dq_ratio == {}  # no prediction: no check
    assert [r["method"] for r in res.records()] == ["base", "shrink"]
    # by hand: w <- w - eta (g + alpha w) on 0.5 ||A G B^T - Y||^2
    m = make_problem(cfg)
    g, a, b = (t.detach().numpy().copy() for t in (m.model.core, *m.model.factors))
    y = m.target.numpy()
    losses = []
    for _ in range(cfg.steps + 1):
        r = a @ g @ b.T - y
        losses.append(0.5 * float((r**2).sum()))
        grads = (a.T @ r @ b, r @ b @ g.T, r.T @ a @ g)
        g, a, b = (w - cfg.eta * (d + 0.5 * w) for w, d in zip((g, a, b), grads))
    np.testing.assert_allclose(res.curves["shrink"].loss, losses, rtol=1e-12)
    assert not math.isclose(res.curves["shrink"].loss[-1], res.curves["GD"].loss[-1], rel_tol=1e-9)
    out = tmp_path / "dynamics"
    assert main(["dynamics", "--steps", "2", "--size", "8x6", "--rank", "2", "--optimizer", "base,shrink",
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    assert list(json.loads((out / "dynamics.json").read_text())["curves"]) == ["GD", "shrink"]


def test_configs_build_and_tune_it_like_a_built_in_method(toy):
    opt = build_optimizer(OptimizerConfig(method="shrink", alpha=0.2), [torch.nn.Parameter(torch.ones(2))])
    assert isinstance(opt, Shrink) and opt.param_groups[0]["shrink"] == 0.2
    from tensordas.training import ComparisonSettings

    settings = ComparisonSettings(optimizers=("base", "shrink"), tune=True)
    settings.check_options()
    assert settings.alpha == TOY.grid
    assert [(c.method, c.alpha) for c in compared_optimizers(settings) if c.method == "shrink"] == [
        ("shrink", v) for v in TOY.grid
    ]
