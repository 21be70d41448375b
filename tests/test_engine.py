"""The one training engine: plans, the running loss, divergence, early stopping, checkpoint/resume."""

from __future__ import annotations

import math

import pytest
import torch

import tensordas as td
from tensordas.training import Checkpoint, Epochs, Monitor, OptimizerConfig, Steps, train
from tensordas.training.engine import Convergence

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

F64 = torch.float64


def problem(seed: int = 0):
    """A Tucker model fitted to a fixed random 6x5x4 target by mean squared error over its entries."""
    gen = torch.Generator().manual_seed(seed)
    model = td.TuckerModel((6, 5, 4), (2, 2, 2), generator=gen, dtype=F64)
    target = torch.randn(6, 5, 4, generator=gen, dtype=F64)
    return model, target


def entries_plan(target: torch.Tensor, steps: int, every: int, batch: int, seed: int = 0) -> Steps:
    idx = torch.cartesian_prod(*(torch.arange(n) for n in target.shape))
    gen = torch.Generator().manual_seed(seed)

    def draw():
        pick = torch.randint(len(idx), (batch,), generator=gen)
        return idx[pick], target[tuple(idx[pick].T)]

    return Steps(steps, every, draw, generator=gen)


def mse(model):
    def loss(batch):
        idx, values = batch
        return torch.mean((model()[tuple(idx.T)] - values) ** 2)

    return loss


def no_metrics(row):
    return {}


def test_epochs_visit_every_sample_once_and_the_loss_is_the_per_sample_or_per_batch_mean():
    x = torch.arange(10, dtype=F64)
    seen = []
    for per_sample in (True, False):
        model = torch.nn.Linear(1, 1).double()
        losses = []

        def loss(batch, losses=losses, model=model):
            seen.append(batch.clone())
            value = (model(batch[:, None]) ** 2).mean() * 0 + batch.mean()  # the batch mean of x, with a graph
            losses.append((float(batch.mean()), len(batch)))
            return value

        plan = Epochs(
            epochs=1, sizes=[4, 4, 2], order=lambda e: torch.randperm(10), take=lambda i: x[i], per_sample=per_sample
        )
        result = train(model, OptimizerConfig(method="base", lr=0.0), plan, loss, no_metrics)
        if per_sample:  # sum over batches of mean * size / samples = the mean of all samples
            expected = math.fsum(m * n for m, n in losses) / 10
        else:
            expected = math.fsum(m for m, _ in losses) / 3
        assert result.final["train_loss"] == pytest.approx(expected, rel=1e-12)
        assert result.steps == 3 and result.final["epoch"] == 1
    assert sorted(torch.cat(seen[:3]).tolist()) == x.tolist()  # one pass: every sample once


def test_steps_plan_rounds_end_at_every_n_steps_and_at_the_last():
    model, target = problem()
    rows = []
    result = train(
        model,
        OptimizerConfig(method="das", base="sgd", lr=0.05, alpha=0.5),
        entries_plan(target, steps=23, every=10, batch=16),
        mse(model),
        lambda row: rows.append(row["step"]) or {},
    )
    assert rows == [0, 10, 20, 23] and [r["step"] for r in result.history] == rows
    assert result.steps == 23 and len(result.step_times) == 23
    groups = td.find_core_groups(model)
    assert result.final["Q"] == pytest.approx(float(td.norm_deviation(groups[0])))


def test_sam_evaluates_the_loss_twice_and_counts_come_from_the_first_pass():
    model, target = problem()
    calls = []

    def loss(batch):
        calls.append(1)
        value = mse(model)(batch)
        return value, {"calls": torch.tensor(len(calls), dtype=F64)}

    result = train(
        model, OptimizerConfig(method="sam", base="sgd", lr=0.05), entries_plan(target, 3, 3, 8), loss, no_metrics
    )
    assert len(calls) == 6  # two passes per step
    assert result.final["calls"] == pytest.approx((1 + 3 + 5) / 3)  # the first pass of each step


def test_a_non_finite_loss_ends_the_run_after_its_round_and_is_recorded():
    model, target = problem()
    steps = []

    def loss(batch):
        steps.append(1)
        value = mse(model)(batch)
        return value * (math.inf if len(steps) == 4 else 1.0)

    result = train(
        model, OptimizerConfig(method="base", base="sgd", lr=0.01), entries_plan(target, 30, 5, 8), loss, no_metrics
    )
    assert result.diverged and result.steps == 5  # the round of step 4 is finished, no further round
    assert not math.isfinite(result.final["train_loss"])
    assert result.record_fields()["diverged"] is True


def test_early_stopping_restores_the_best_evaluation_and_honours_patience():
    model, target = problem()
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.9, 0.95])
    snapshots = {}

    def evaluate(row):
        snapshots[row["step"]] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"val": next(scores)}

    result = train(
        model,
        OptimizerConfig(method="base", base="sgd", lr=0.05),
        entries_plan(target, 50, 5, 8),
        mse(model),
        evaluate,
        monitor=Monitor("val", patience=2),
    )
    # rows: step 0 (0.1, not monitored), 5 (0.5, best), 10 (0.4), 15 (0.3) -> two without gain: stop
    assert [r["step"] for r in result.history] == [0, 5, 10, 15] and result.steps == 15
    assert result.best_step == 5
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[5][name]), name


def test_lower_is_better_monitor():
    assert Monitor("rmse", higher_is_better=False).better(0.2, 0.3)
    assert not Monitor("rmse", higher_is_better=False).better(0.4, 0.3)
    assert not Monitor("r2").better(math.nan, None)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("method", ["das", "sam", "looksam", "msam", "das-gradient"])
def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path, method):
    """Random mini-batches drawn from the plan's own generator: its state travels in the checkpoint."""
    config = OptimizerConfig(method=method, base="adam", lr=0.02, alpha=0.3, alpha_schedule="cosine")

    def run(path, progress=None):
        model, target = problem()
        plan = entries_plan(target, steps=12, every=4, batch=8, seed=3)
        lr = lambda t: 1.0 - t / 24  # noqa: E731
        store = Checkpoint(path, tag="t", settings="s")
        return model, train(model, config, plan, mse(model), no_metrics, lr_lambda=lr, checkpoint=store,
                            progress=progress)  # fmt: skip

    full_model, full = run(tmp_path / "full.pt")

    def stop(label, done, total):
        if done == 6:  # in the second round
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "cut.pt", progress=stop)
    torch.manual_seed(123)
    model, resumed = run(tmp_path / "cut.pt")
    assert resumed.resumed_from == 1 and full.resumed_from == 0
    for (name, a), (_, b) in zip(full_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    stale = Checkpoint(tmp_path / "cut.pt", tag="other", settings="s")
    again_model, target = problem()
    again = train(again_model, config, entries_plan(target, 12, 4, 8, seed=3), mse(again_model), no_metrics,
                  checkpoint=stale)  # fmt: skip
    assert again.resumed_from == 0  # another tag: stale, trained afresh


def test_a_method_that_needs_core_groups_on_a_dense_model_is_a_clear_error():
    model = torch.nn.Linear(3, 2)
    plan = Epochs(1, [2], lambda e: torch.arange(2), lambda i: torch.ones(2, 3))
    with pytest.raises(ValueError, match="das\\(sgd\\) needs core groups"):
        train(model, OptimizerConfig(method="das"), plan, lambda b: model(b).sum(), no_metrics)


def test_step_time_of_a_cyclic_method_is_its_mean_cost_per_cycle():
    """LookSAM takes its second pass every k-th step: the median of single steps would be its cheap steps'
    cost; the median of per-cycle means is what a step costs on average."""
    from tensordas.training.engine import TrainResult

    times = [0.001, 0.001, 0.001, 0.001, 0.005] * 4  # k = 5: one two-pass (5x) step per cycle
    plain = TrainResult(history=[], steps=20, train_time_s=sum(times), wall_time_s=1.0, diverged=False,
                        step_times=times)  # fmt: skip
    cyclic = TrainResult(history=[], steps=20, train_time_s=sum(times), wall_time_s=1.0, diverged=False,
                         step_times=times, cycle=5)  # fmt: skip
    assert plain.step_time_ms == pytest.approx(1.0)
    assert cyclic.step_time_ms == pytest.approx(1e3 * sum(times[:5]) / 5)  # 1.8 ms
    cfg = OptimizerConfig(method="looksam", looksam_k=3)
    from tensordas.training.methods import METHODS

    assert getattr(cfg, METHODS["looksam"].cycle) == 3 and METHODS["das"].cycle is None


def rows(*values):
    """Evaluation rows: row 0 (before training, whose value takes no part) and one row per value."""
    return [{"step": 0, "obj": 123.0}] + [{"step": 5 * (i + 1), "obj": v} for i, v in enumerate(values)]


def test_convergence_needs_small_relative_decreases_at_patience_evaluations_in_a_row():
    rule = Convergence("obj", tol=1e-3, patience=2)
    assert rule.converged(rows(1.0, 0.5, 0.49990, 0.49985))  # decreases of 2e-4 and 1e-4 relative: both < 1e-3
    assert not rule.converged(rows(1.0, 0.5, 0.49990, 0.4))  # the last one is 20%
    assert not rule.converged(rows(1.0, 0.9995, 0.9))  # one small decrease is not two
    assert not rule.converged(rows(0.5, 0.49990))  # too few rows
    assert rule.converged(rows(1.0, 1.1, 1.2))  # a rise counts as no improvement
    assert not rule.converged(rows(1.0, 1.0, math.nan))  # a non-finite objective is never "converged"
    assert not Convergence("obj", tol=0.0).converged(rows(1.0, 1.0, 1.0))  # tol 0: off
    assert Convergence("obj", tol=0.1, patience=1).converged(rows(1.0, 0.95))  # 5% < 10%
    for bad in (-1e-3, math.inf, math.nan):
        with pytest.raises(ValueError, match="Invalid tol"):
            Convergence("obj", tol=bad)
    with pytest.raises(ValueError, match="patience"):
        Convergence("obj", patience=0)


def test_the_engine_stops_on_convergence_and_says_why():
    def run(convergence, steps=400):
        model, target = problem()
        target = model().detach() + 0.0  # reachable: the loss converges to 0 geometrically, then stalls in float64
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=F64))
        full = entries_plan(target, steps, 10, 120)
        return train(model, OptimizerConfig(method="base", base="adam", lr=0.01), full, mse(model), no_metrics,
                     convergence=convergence)  # fmt: skip

    loose = run(Convergence("train_loss", tol=0.5, patience=2))
    assert loose.stop_reason == "converged" and loose.steps < 400 and loose.steps % 10 == 0
    losses = [r["train_loss"] for r in loose.history[1:]]
    assert all((a - b) < 0.5 * a for a, b in zip(losses[-3:], losses[-2:]))  # the rule held at the stop
    assert not all((a - b) < 0.5 * a for a, b in zip(losses[-4:-1], losses[-3:-1]))  # and not one round earlier
    assert run(None, steps=30).stop_reason == "steps" and run(Convergence(tol=0.0), steps=30).steps == 30
