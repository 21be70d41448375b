"""Tuning a method's strength on a validation split, LookSAM, and the label-noise options of the families."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch

import tensordas as td
from tensordas.cli import main
from tensordas.data import validation_split
from tensordas.data.text import TextSet, TextSplit, noisy_training_labels
from tensordas.tasks import TASKS
from tensordas.tasks import compress as compress_module
from tensordas.tasks import noisy as noisy_module
from tensordas.tasks.compress import CompressConfig, CompressExperiment
from tensordas.tasks.grid import run_grid
from tensordas.tasks.noisy import NoisyConfig, run_noisy
from tensordas.tasks.protocol import Metric
from tensordas.tasks.runstore import RunResult, run_key
from tensordas.tasks.selection import select_candidate
from tensordas.training import ComparisonSettings, OptimizerConfig, build_optimizer, compared_optimizers, optimizer_step

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

ACC = Metric("test_acc", "accuracy")


# --- selection ------------------------------------------------------------------------------------------
def test_select_candidate_follows_the_direction_then_the_loss_then_the_order():
    cands = [
        {"value": 1.0, "val_acc": 0.7, "val_loss": 0.5},
        {"value": 2.0, "val_acc": 0.9, "val_loss": 0.9},
        {"value": 3.0, "val_acc": 0.9, "val_loss": 0.4},  # ties 2.0 on accuracy, lower loss
        {"value": 4.0, "val_acc": math.nan, "val_loss": 0.1},  # diverged: last
    ]
    assert select_candidate(cands, "val_acc", higher_is_better=True) == 2
    assert select_candidate(cands, "val_acc", higher_is_better=False) == 0
    same = [{"value": v, "val_r2": 0.5} for v in (1.0, 2.0)]  # no loss recorded: the first value
    assert select_candidate(same, "val_r2", higher_is_better=True) == 0
    with pytest.raises(ValueError, match="no candidate"):
        select_candidate([], "val_acc", True)


def fake_runs(calls):
    """run_one with a made-up validation accuracy peaking at alpha 10 / rho 0.1, and a test accuracy that
    peaks elsewhere (alpha 1000 / rho 1): selection must follow the validation numbers."""

    def run_one(opt, seed, progress):
        calls.append((opt.method, opt.strength, seed))
        value = opt.strength[1] if opt.strength else 0.0
        best, test_best = {"das": (10.0, 1000.0), "sam": (0.1, 1.0)}.get(opt.method, (0.0, 0.0))
        val = 1.0 - abs(math.log10(value + 1e-9) - math.log10(best + 1e-9)) / 10
        test = 1.0 - abs(math.log10(value + 1e-9) - math.log10(test_best + 1e-9)) / 10
        record = {"test_acc": test, "val_acc": val + seed / 100, "val_loss": 1 - val, "train_loss": 0.0, "Q": None,
                  "diverged": False, "steps": 1, "step_time_ms": 1.0, "wall_time_s": 0.0}  # fmt: skip
        return RunResult(record=record, curve=[{"step": 0, "v": value}])

    return run_one


def grid_settings(**kw) -> ComparisonSettings:
    return ComparisonSettings(optimizers=("base", "das", "sam"), **kw)


def test_run_grid_picks_each_strength_on_validation_and_resumes_each_candidate(tmp_path):
    settings = grid_settings(alpha=(1.0, 10.0, 1000.0), rho=(0.01, 0.1, 1.0), lr=(0.02, 0.005, 0.01))
    settings.check_options()
    configs = compared_optimizers(settings)
    assert [(c.method, c.strength) for c in configs] == [("base", ("lr", v)) for v in (0.02, 0.005, 0.01)] + [
        ("das", ("alpha", v)) for v in (1.0, 10.0, 1000.0)
    ] + [("sam", ("rho", v)) for v in (0.01, 0.1, 1.0)]
    assert {c.lr for c in configs if c.method != "base"} == {0.01}  # the others train at the list's middle lr
    calls = []
    results = run_grid("t", {}, configs, [0, 1], fake_runs(calls), out_dir=tmp_path, select=ACC)
    assert len(calls) == 2 * 9  # every (method, value, seed)
    records = [r.record for r in results]
    assert [(r["method"], r["seed"]) for r in records] == [(m, s) for s in (0, 1) for m in ("base", "das", "sam")]
    by = {(r["method"], r["seed"]): r for r in records}
    for seed in (0, 1):
        assert by["das", seed]["selected"] == {"alpha": 10.0, "edge": False} and by["das", seed]["alpha"] == 10.0
        assert by["sam", seed]["selected"] == {"rho": 0.1, "edge": False}
        # fake_runs' base validation accuracy falls with lr: the smallest, an edge of its grid
        assert by["base", seed]["selected"] == {"lr": 0.005, "edge": True} and by["base", seed]["lr"] == 0.005
        assert results[[*by].index(("das", seed))].curve == [{"step": 0, "v": 10.0}]  # the picked run's curve
    # reproducible from the records alone
    for r in records:
        i = select_candidate(r["candidates"], "val_acc", ACC.higher_is_better)
        name = {"base": "lr", "das": "alpha", "sam": "rho"}[r["method"]]
        assert r["selected"][name] == r["candidates"][i]["value"]
        assert len(r["candidates"]) == 3
    assert (tmp_path / "runs" / f"{run_key(configs[4], 0)}.json").is_file()
    assert run_key(configs[4], 0) == "das-sgd-alpha10-seed0"
    assert run_key(configs[0], 0) == "base-sgd-lr0.02-seed0"
    again = []
    assert [r.record for r in run_grid("t", {}, configs, [0, 1], fake_runs(again), out_dir=tmp_path, select=ACC)] == (
        records
    )
    assert again == []  # every candidate reused
    lower = run_grid("t", {}, configs, [0], fake_runs([]), select=RMSE_ON_ACC)
    assert lower[1].record["selected"] == {"alpha": 1000.0, "edge": True}  # lower is better: the worst accuracy wins


RMSE_ON_ACC = Metric("test_acc", "accuracy read as a cost", higher_is_better=False)


def test_a_grid_without_a_selection_metric_is_refused():
    settings = ComparisonSettings(optimizers=("das",), alpha=(1.0, 2.0))
    settings.check_options()
    with pytest.raises(ValueError, match="validation metric"):
        run_grid("t", {}, compared_optimizers(settings), [0], fake_runs([]))


def test_an_unequal_tuning_budget_is_refused():
    """Equal budget: every compared method gets as many candidates per seed as every other."""
    settings = grid_settings(alpha=(1.0, 2.0, 3.0, 4.0), rho=0.05)
    settings.check_options()
    with pytest.raises(ValueError, match="unequal tuning budget: candidates per seed are base 1, das 4, sam 1"):
        compared_optimizers(settings)
    with pytest.raises(ValueError, match="unequal tuning budget"):
        NoisyConfig(optimizers=("base", "das", "sam"), alpha=[1, 2, 3], rho=[0.1, 0.2, 0.3])  # the base untuned
    cfg = NoisyConfig(optimizers=("base", "das", "sam", "looksam"), lr=[0.02, 0.05, 0.1], alpha=[1, 2, 3],
                      rho=[0.1, 0.2, 0.3], seeds=(0, 1))  # fmt: skip
    assert TASKS["noisy"].count(cfg) == 4 * 3 * 2  # progress counts every candidate run
    # A LookSAM alpha list is tuned on the middle of the shared rho list: 3 candidates, like SAM's
    both = NoisyConfig(optimizers=("sam", "looksam"), rho=[0.1, 0.2, 0.3], looksam_alpha=[0.5, 0.7, 0.9])
    looksam = [(c.rho, c.looksam_alpha) for c in both.optimizer_configs if c.method == "looksam"]
    assert looksam == [(0.2, 0.5), (0.2, 0.7), (0.2, 0.9)]
    assert [c.rho for c in both.optimizer_configs if c.method == "sam"] == [0.1, 0.2, 0.3]
    keys = {run_key(c, 0) for c in both.optimizer_configs}
    assert len(keys) == 6 and "looksam-sgd-rho0.2-looksam_alpha0.5-seed0" in keys
    with pytest.raises(ValueError, match="sam 3, looksam 2"):
        NoisyConfig(optimizers=("sam", "looksam"), rho=[0.1, 0.2, 0.3], looksam_alpha=[0.5, 0.7])


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"alpha": ()}, "Invalid alpha value: [] (expected at least one value)"),
        ({"rho": (0.1, -0.2)}, "Invalid rho value: -0.2 (expected >= 0)"),
        ({"alpha": (1.0, 1.0)}, "a value is listed twice"),
        ({"das_variant": ("reference", "sam-matched")}, "a list is allowed only for a method's strength"),
        ({"s_min": (0.5, 0.6)}, "Invalid s_min value"),
        ({"alpha": (1.0, 2.0), "validation": 0.0}, "validation must be above 0"),
        ({"validation": 1.0}, "Invalid validation fraction: 1.0"),
    ],
)
def test_bad_strength_lists_are_one_clear_line(kwargs, needle):
    with pytest.raises(ValueError) as info:
        NoisyConfig(**kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_one_run_takes_one_strength_value():
    with pytest.raises(ValueError, match="one run takes one value"):
        OptimizerConfig(method="das", alpha=(1.0, 2.0))


# --- the noisy family, end to end ---------------------------------------------------------------------------
def tiny(**kw) -> NoisyConfig:
    settings = dict(model="tt-mlp", rank=3, hidden=(16, 16), train_size=200, test_size=60, epochs=1, batch_size=50,
                    optimizers=("das", "sam"), alpha=(0.1, 5.0), rho=(0.05, 0.5), seeds=(0,))  # fmt: skip
    return NoisyConfig(**{**settings, **kw})


def test_tuning_never_reads_test_data(monkeypatch):
    """Test inputs made NaN and test labels shuffled change the test accuracy, not one validation number."""
    clean = run_noisy(tiny())
    real = noisy_module.load_classification

    def corrupted(*args, **kwargs):
        data = real(*args, **kwargs)
        y = data.y_test.flip(0)
        return dataclasses.replace(data, x_test=torch.full_like(data.x_test, math.nan), y_test=y)

    monkeypatch.setattr(noisy_module, "load_classification", corrupted)
    spoiled = run_noisy(tiny())
    for a, b in zip(clean, spoiled):
        assert a.record["candidates"] == b.record["candidates"]
        assert a.record["selected"] == b.record["selected"]
        assert a.record["val_acc"] == b.record["val_acc"]
    assert [r.record["test_acc"] for r in clean] != [r.record["test_acc"] for r in spoiled]


def test_the_validation_split_is_carved_from_the_training_part_per_seed():
    cfg = tiny(seeds=(0, 1))
    assert cfg.validation_fraction == 0.2
    exp = noisy_module.NoisyExperiment(cfg)
    for seed in (0, 1):
        data, noisy = exp.data(seed)
        (x, y, true), (xv, yv) = exp.parts(seed)
        assert len(y) + len(yv) == data.n_train and len(yv) == pytest.approx(0.2 * data.n_train, abs=10)
        keep, held = validation_split(noisy.labels, 0.2, seed)
        assert torch.equal(xv, data.x_train[torch.as_tensor(held)]) and not set(keep) & set(held)
        counts = np.bincount(yv.numpy(), minlength=10) / np.bincount(noisy.labels.numpy(), minlength=10)
        assert np.all(np.abs(counts - 0.2) < 0.1)  # stratified by the (noisy) labels
    assert not torch.equal(exp.parts(0)[1][1], exp.parts(1)[1][1])
    untuned = noisy_module.NoisyExperiment(tiny(alpha=0.1, rho=0.1))
    assert untuned.config.validation_fraction == 0
    (x, y, _), held = untuned.parts(0)
    assert held is None and x is untuned.data(0)[0].x_train  # untouched: today's runs


def test_cli_strength_lists_tune_and_bad_lists_are_one_line(tmp_path, capsys):
    args = ["train", "--model", "tt-mlp", "--rank", "3", "--hidden", "16,16", "--train-size", "150", "--test-size",
            "50", "--epochs", "1", "--no-progress"]  # fmt: skip
    assert main([*args, "--optimizer", "das", "--alpha", "0.1,2", "--out", str(tmp_path / "o")]) == 0
    (record,) = json.loads((tmp_path / "o" / "results.json").read_text())["records"]
    assert [c["value"] for c in record["candidates"]] == [0.1, 2.0] and record["selected"]["alpha"] in (0.1, 2.0)
    assert record["validation"] == 0.2 and record["n_val"] + record["n_train"] == 150
    capsys.readouterr()
    for bad, needle in ((["--alpha", "0.1,x"], "'0.1,x'"), (["--rho=-1,2"], "rho value: -1.0"),
                        (["--alpha", "1,2", "--validation", "0"], "validation must be above 0")):  # fmt: skip
        assert main([*args, *bad, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err


# --- LookSAM ---------------------------------------------------------------------------------------------------
def looksam_problem(k: int = 5, lr_lambda=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    config = OptimizerConfig(method="looksam", base="sgd", lr=0.05, momentum=0.9, rho=0.05, looksam_k=k)
    opt = build_optimizer(config, model.parameters())
    sched = None
    if lr_lambda is not None:
        sched = torch.optim.lr_scheduler.LambdaLR(config.spec.schedule_target(opt), lr_lambda)
    calls = []

    def steps(n):
        for _ in range(n):

            def closure():
                calls.append(1)
                opt.zero_grad(set_to_none=True)
                loss = ((model(x) - y) ** 2).mean()
                loss.backward()
                return loss

            optimizer_step(opt, closure, config.spec)
            if sched is not None:
                sched.step()

    return model, opt, sched, calls, steps


@pytest.mark.parametrize("k", [1, 5, 7])
def test_looksam_takes_its_second_pass_every_kth_step(k):
    _, opt, _, calls, steps = looksam_problem(k)
    steps(20)
    assert len(calls) == 20 + math.ceil(20 / k)  # steps 0, k, 2k, ...: (1 + 1/k) passes per step
    assert opt.get_step() == 20 and opt.k == k


def test_looksam_schedule_applies_without_the_order_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "lr_scheduler.step() before optimizer.step()" would raise
        _, opt, _, _, steps = looksam_problem(lr_lambda=lambda t: 0.5**t)
        steps(6)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**6)
    assert opt.base_optimizer.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_looksam_resumes_exactly_from_its_state_dict():
    lam = lambda t: 1 - t / 40  # noqa: E731
    full, opt, sched, _, steps = looksam_problem(lr_lambda=lam)
    steps(7)
    saved = copy.deepcopy((full.state_dict(), opt.state_dict(), sched.state_dict()))
    steps(9)
    model, opt2, sched2, _, steps2 = looksam_problem(lr_lambda=lam)
    model.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    assert opt2.get_step() == 7 and opt2.param_groups is opt2.base_optimizer.param_groups
    steps2(9)
    for a, b in zip(full.parameters(), model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="not saved by LookSAM"):
        opt2.load_state_dict(opt2.base_optimizer.state_dict())


def test_dastrainer_refuses_looksam_with_a_clear_message():
    pytest.importorskip("transformers")
    from tensordas.integrations.trainer import _method_settings

    with pytest.raises(ValueError, match="DASTrainer does not run method 'looksam'"):
        _method_settings("looksam", {})


def test_looksam_is_compared_and_a_missing_pytorch_optimizer_is_one_clear_line(monkeypatch):
    import sys

    from tensordas.optim import looksam
    from tensordas.training import METHODS

    assert "looksam" in td.training.compared_methods()
    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)
    looksam.looksam_class.cache_clear()
    try:
        with pytest.raises(ImportError, match="needs pytorch-optimizer"):
            _ = METHODS["looksam"].wrapper
        assert td.training.method_of(torch.optim.SGD(torch.nn.Linear(1, 1).parameters())).name == "base"
    finally:
        looksam.looksam_class.cache_clear()


# --- label noise in compress and finetune --------------------------------------------------------------------
def test_compress_noise_and_per_seed_split(monkeypatch):
    cfg = CompressConfig(train_dense=True, ratio=2.0, train_size=200, test_size=60, noise=0.4, per_seed_split=True,
                         seeds=(0, 1), alpha=(0.1, 1.0))  # fmt: skip
    exp = CompressExperiment(cfg)
    for seed in (0, 1):
        data, (x, y), (xv, yv) = exp.split(seed)
        clean = compress_module.load_split(cfg, seed)
        assert torch.equal(data.y_test, clean.y_test)  # test labels clean
        assert len(y) + len(yv) == clean.n_train and len(yv) == pytest.approx(0.2 * clean.n_train, abs=10)
    untuned = CompressExperiment(dataclasses.replace(cfg, alpha=0.1))
    _, (x, y), held = untuned.split(0)
    clean = compress_module.load_split(cfg, 0)
    assert held is None and torch.equal(x, clean.x_train)
    assert 0.3 < float((y != clean.y_train).double().mean()) < 0.5  # 40% symmetric noise on the training labels
    assert not torch.equal(exp.split(0)[0].x_test, exp.split(1)[0].x_test)  # the seeds vary the split
    with pytest.raises(ValueError, match="per_seed_split needs train_dense"):
        CompressConfig(checkpoint="x.pt", per_seed_split=True, ratio=2.0)
    with pytest.raises(ValueError, match="noise rate"):
        CompressConfig(train_dense=True, ratio=2.0, noise=1.5)
    fixed = CompressConfig(train_dense=True, ratio=2.0, train_size=200, test_size=60, seeds=(0, 1))
    assert fixed.split_of(1) == 0 and cfg.split_of(1) == 1


def test_finetune_label_noise_and_validation_split():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    split = TextSplit(
        train=TextSet(tuple(f"t{i}" for i in range(400)), labels.copy()),
        test=TextSet(("a", "b"), np.array([0, 1])),
        train_clean_labels=labels.copy(),
        seed=4,
    )
    same, none = noisy_training_labels(split, 3, 0.0, 0.0)
    assert same is split and none is None
    noisy, held = noisy_training_labels(split, 3, 0.3, 0.25)
    assert len(noisy.train) + len(held) == 400 and len(held) == pytest.approx(100, abs=3)
    assert not set(noisy.train.texts) & set(held.texts)
    assert 0.2 < noisy.noise_rate < 0.4  # symmetric flips with probability 0.3 on the kept entries
    assert noisy.test is split.test
    again, _ = noisy_training_labels(split, 3, 0.3, 0.25)
    assert np.array_equal(again.train.labels, noisy.train.labels)  # seeded by the split's seed


def test_a_tuned_and_an_untuned_base_run_are_different_stored_runs(tmp_path):
    """The base trains on 80% of the training data when the others are tuned, on all of it otherwise: its
    stored run must not be reused across the two, or the pairing compares different training sets."""
    from tensordas.tasks.finetune import FinetuneConfig

    tuned = tiny(optimizers=("base", "das"), lr=(0.025, 0.05))
    untuned = tiny(optimizers=("base", "das"), alpha=0.1, rho=0.05)
    assert (tuned.validation_fraction, untuned.validation_fraction) == (0.2, 0.0)
    assert tuned.settings() != untuned.settings()
    assert tuned.settings()["validation"] == 0.2 and untuned.settings()["validation"] == 0.0
    grids = (((0.1, 1.0), (1e-3, 5e-3)), (0.1, 5e-3))
    ft = [FinetuneConfig(optimizers=("base", "das"), alpha=a, lr=lr) for a, lr in grids]
    assert ft[0].settings()["validation"] == 0.2 and ft[1].settings()["validation"] == 0.0
    first = run_noisy(tuned, out_dir=tmp_path)
    again = run_noisy(untuned, out_dir=tmp_path)
    base = [r.record for r in (*first, *again) if r.record["method"] == "base"]
    assert base[0]["n_train"] < base[1]["n_train"]  # recomputed on all the training data, not reused


# --- grid edges and their extension ----------------------------------------------------------------------------
def rising_runs(calls):
    """run_one whose validation accuracy rises with rho (SAM) and peaks at alpha 10 (DAS): SAM's pick sits on
    its grid's top edge, DAS's on its bottom one for a grid starting at 10."""

    def run_one(opt, seed, progress):
        calls.append((opt.method, opt.strength[1], seed))
        value = opt.strength[1]
        val = value if opt.method == "sam" else 1.0 - abs(math.log10(value) - 1.0) / 10
        record = {"test_acc": 0.5, "val_acc": val, "val_loss": 1.0, "train_loss": 0.0, "Q": None, "diverged": False,
                  "steps": 1, "step_time_ms": 1.0, "wall_time_s": 0.0}  # fmt: skip
        return RunResult(record=record, curve=[])

    return run_one


def test_an_edge_pick_is_marked_and_without_extend_kept():
    settings = ComparisonSettings(optimizers=("das", "sam"), alpha=(10.0, 100.0, 1000.0), rho=(0.1, 0.2, 0.3))
    settings.check_options()
    calls = []
    das, sam = (r.record for r in run_grid("t", {}, compared_optimizers(settings), [0], rising_runs(calls), select=ACC))
    assert das["selected"] == {"alpha": 10.0, "edge": True} and len(das["candidates"]) == 3
    assert sam["selected"] == {"rho": 0.3, "edge": True} and "extended" not in sam["selected"]
    assert len(calls) == 6


def test_extend_runs_one_more_value_past_the_edge_and_chooses_again(tmp_path):
    settings = ComparisonSettings(optimizers=("das", "sam"), alpha=(10.0, 100.0, 1000.0), rho=(0.1, 0.2, 0.3))
    settings.check_options()
    configs = compared_optimizers(settings)
    calls = []
    results = run_grid("t", {}, configs, [0], rising_runs(calls), out_dir=tmp_path, select=ACC, extend=True)
    das, sam = (r.record for r in results)
    # DAS: 10 * (10 / 100) = 1 is tried and loses; 10 is then inside the grid 1, 10, 100, 1000
    assert ("das", 1.0, 0) in calls and das["selected"] == {"alpha": 10.0, "edge": False, "extended": True}
    assert [c["value"] for c in das["candidates"]] == [10.0, 100.0, 1000.0, 1.0]
    # SAM: 0.3 * (0.3 / 0.2) = 0.45 is tried and wins, again at the edge
    assert sam["selected"]["rho"] == pytest.approx(0.45) and sam["selected"]["edge"] is True
    assert sam["selected"]["extended"] is True and len(sam["candidates"]) == 4
    assert len(calls) == 8  # one extension per method and seed, not a search
    assert (tmp_path / "runs" / "sam-sgd-rho0.45-seed0.json").is_file()
    again = []
    rerun = run_grid("t", {}, configs, [0], rising_runs(again), out_dir=tmp_path, select=ACC, extend=True)
    assert again == [] and [r.record for r in rerun] == [das, sam]  # the extension is resumed too


def test_a_middle_pick_is_not_an_edge_and_is_not_extended():
    settings = ComparisonSettings(optimizers=("das",), alpha=(1.0, 10.0, 100.0))
    settings.check_options()
    calls = []
    (das,) = run_grid("t", {}, compared_optimizers(settings), [0], rising_runs(calls), select=ACC, extend=True)
    assert das.record["selected"] == {"alpha": 10.0, "edge": False, "extended": False} and len(calls) == 3


# --- checkpoint by validation accuracy ------------------------------------------------------------------------
def test_the_checkpoint_is_the_epoch_of_best_validation_accuracy():
    from tensordas.tasks.tuning import checkpoint_fields

    history = [
        {"epoch": 0, "val_acc": 0.9, "val_loss": 0.1, "test_acc": 0.95},  # before training: never chosen
        {"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "test_acc": 0.50},
        {"epoch": 2, "val_acc": 0.8, "val_loss": 0.6, "test_acc": 0.70},
        {"epoch": 3, "val_acc": 0.8, "val_loss": 0.4, "test_acc": 0.72},  # ties epoch 2, lower loss: chosen
        {"epoch": 4, "val_acc": 0.6, "val_loss": 0.9, "test_acc": 0.90},  # the best test accuracy: not read
    ]
    row, fields = checkpoint_fields(history, ["test_acc"])
    assert row is history[3]
    assert fields == {"test_acc": 0.72, "final_test_acc": 0.90, "checkpoint": "best val_acc", "checkpoint_epoch": 3}
    no_split = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in history]
    assert checkpoint_fields(no_split, ["test_acc"])[1]["checkpoint"] == "final epoch (no validation split)"
    assert checkpoint_fields(no_split, ["test_acc"])[1]["test_acc"] == 0.90
    assert checkpoint_fields(history, ["test_acc"], diverged=True)[1]["checkpoint"] == "final epoch (diverged)"


def test_a_noisy_run_reports_test_accuracy_at_its_best_validation_epoch():
    """End to end: the record's test_acc is the curve's at the epoch the record names, whose validation
    accuracy (the candidate's val_acc) is the run's best; the last epoch's is final_test_acc."""
    (das,) = run_noisy(tiny(optimizers=("das",), alpha=(0.1, 5.0), epochs=4, lr=0.2))
    r = das.record
    by_epoch = {row["epoch"]: row for row in das.curve}
    assert r["checkpoint"] == "best val_acc" and 1 <= r["checkpoint_epoch"] <= 4
    assert r["test_acc"] == by_epoch[r["checkpoint_epoch"]]["test_acc"]
    assert r["final_test_acc"] == by_epoch[4]["test_acc"]
    untuned = run_noisy(tiny(optimizers=("das",), alpha=0.1, rho=0.1, epochs=2))[0].record
    assert untuned["checkpoint"] == "final epoch (no validation split)" and untuned["checkpoint_epoch"] == 2
    assert untuned["test_acc"] == untuned["final_test_acc"]


def test_cli_lr_list_tunes_the_base_and_tune_fills_every_grid(tmp_path, capsys):
    args = ["train", "--model", "tt-mlp", "--rank", "3", "--hidden", "16,16", "--train-size", "150", "--test-size",
            "50", "--epochs", "1", "--no-progress"]  # fmt: skip
    assert main([*args, "--optimizer", "base", "--lr", "0.02,0.05", "--out", str(tmp_path / "o")]) == 0
    (record,) = json.loads((tmp_path / "o" / "results.json").read_text())["records"]
    assert [c["value"] for c in record["candidates"]] == [0.02, 0.05]
    assert record["selected"]["lr"] in (0.02, 0.05) and record["selected"]["edge"] is True  # 2 values: both edges
    assert record["lr"] == record["selected"]["lr"]
    err = capsys.readouterr().err
    assert f"edge of its grid (the optimum may lie outside it): sgd seed 0: lr {record['lr']:g}" in err
    cfg = NoisyConfig(optimizers=("base", "sam", "das", "das-authors", "looksam"), lr=0.05, tune=True)
    assert cfg.lr == (0.025, 0.05, 0.1) and cfg.rho == (0.1, 0.2, 0.3) and cfg.alpha == (10.0, 100.0, 1000.0)
    assert cfg.authors_alpha == (0.03, 0.1, 0.3) and cfg.validation_fraction == 0.2
    counts = {}
    for c in cfg.optimizer_configs:
        counts[c.method] = counts.get(c.method, 0) + 1
        assert c.method == "base" or c.lr == 0.05
    assert counts == dict.fromkeys(cfg.optimizers, 3)
    kept = NoisyConfig(optimizers=("base", "sam"), lr=0.05, rho=[0.05, 0.1, 0.2], tune=True)
    assert kept.rho == (0.05, 0.1, 0.2)  # a list given by the user is kept
    assert NoisyConfig(lr=0.05, tune=True).settings() == NoisyConfig(lr=0.05).settings() | {"validation": 0.2}


def test_the_report_names_looksam_as_pytorch_optimizers_per_tensor_variant_and_lists_edge_picks():
    from tensordas.reproduce.report import methods_note

    records = [
        {"method": "base", "optimizer": "sgd", "seed": 0, "selected": {"lr": 0.05, "edge": False}},
        {"method": "looksam", "optimizer": "looksam(sgd)", "seed": 1, "selected": {"rho": 0.45, "edge": True,
                                                                                   "extended": True}},
    ]  # fmt: skip
    note = methods_note(records)
    assert "pytorch-optimizer's LookSAM (per-tensor rescaling" in note
    (run,) = run_grid("t", {}, [OptimizerConfig(method="looksam")], [0], fake_runs([]))
    assert run.record["method_title"].startswith("pytorch-optimizer's LookSAM (per-tensor rescaling")
    assert "edge of its grid" in note and "looksam(sgd) seed 1: rho 0.45 (after extending the grid)" in note
    assert "sgd seed 0" not in note
