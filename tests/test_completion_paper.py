"""Completion's ``protocol="paper"``: the DAS paper's Table 1 protocol (the authors' src/td_study/run.py).

The split, the initialisation, the summed loss and the training-entry R² are checked against
independent re-computations written as the authors' script does them (global torch seed, TensorLy's
``tucker`` called directly, a plain Adam loop, NumPy norms).
"""

import json

import numpy as np
import pytest
import tensorly as tl
import torch

from tensordas.cli import main
from tensordas.data import load_tensor
from tensordas.tasks.completion import (
    PAPER_PROTOCOL,
    CompletionConfig,
    CompletionExperiment,
    make_model,
    paper_split,
    run_completion,
    training_r2,
)


@pytest.fixture(scope="module")
def covid():
    data = load_tensor("covid19", dtype=torch.float64)
    dense = np.full(data.shape, np.nan)
    dense[tuple(data.indices.T.numpy())] = data.values.numpy()
    return data, dense


def authors_mask(shape, seed):
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        return (torch.rand(shape) < 0.3).numpy()
    finally:
        torch.set_rng_state(state)


def paper_config(**kw):
    return CompletionConfig(**{**PAPER_PROTOCOL, "als": False, **kw})


def test_the_protocols_settings_are_the_papers():
    cfg = paper_config()
    assert (cfg.data, cfg.model, cfg.rank, cfg.missing, cfg.standardize, cfg.dtype) == (
        "covid19", "tucker", (8, 6, 8), 0.7, "none", "float64",
    )  # fmt: skip
    assert (cfg.base, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.rho, cfg.alpha) == ("adam", 1e-3, 0, 0, 0.01, 0.001)
    assert (cfg.alpha_schedule, cfg.steps, cfg.seeds) == ("linear", 50_000, (42, 87, 100))
    for bad in ({"standardize": "global"}, {"model": "cp"}, {"validation": 0.2}, {"init": "balanced"}):
        with pytest.raises(ValueError, match="protocol 'paper' needs"):
            paper_config(**bad)
    with pytest.raises(ValueError, match="Invalid protocol"):
        CompletionConfig(protocol="authors")


def test_paper_split_is_the_authors_mask_and_leaves_the_global_rng_alone(covid):
    data, dense = covid
    state = torch.get_rng_state()
    split = paper_split(data, 0.7, 42)
    assert torch.equal(torch.get_rng_state(), state)
    mask = authors_mask(data.shape, 42) & np.isfinite(dense)
    train = np.zeros(data.shape, bool)
    train[tuple(split.train.indices.T.numpy())] = True
    test = np.zeros(data.shape, bool)
    test[tuple(split.test.indices.T.numpy())] = True
    assert np.array_equal(train, mask) and np.array_equal(test, np.isfinite(dense) & ~mask)
    assert np.allclose(split.train.values.numpy(), dense[tuple(split.train.indices.T.numpy())])


def test_training_r2_is_the_papers_uncentred_masked_r2(covid):
    data, dense = covid
    cfg = paper_config()
    exp = CompletionExperiment(cfg, data)
    split = exp.split(42)
    model = make_model(cfg, data, split, 42)
    from tensordas.data import EntryPredictor, Standardizer

    r2 = training_r2(EntryPredictor(model, data.shape), split.train, Standardizer.fit(split.train.values, "none"))
    with torch.no_grad():
        xhat = model().numpy()
    m = authors_mask(data.shape, 42)
    x = np.nan_to_num(dense)
    expected = 1 - np.linalg.norm((xhat - x) * m) ** 2 / np.linalg.norm(x * m) ** 2
    assert r2 == pytest.approx(expected, rel=1e-12)


def test_initialisation_is_tensorlys_random_tucker_as_the_authors_call_it(covid):
    data, dense = covid
    cfg = paper_config()
    model = make_model(cfg, data, CompletionExperiment(cfg, data).split(87), 87)
    m = authors_mask(data.shape, 87).astype(float)
    core, factors = tl.decomposition.tucker(np.nan_to_num(dense), rank=[8, 6, 8], init="random", n_iter_max=0,
                                            tol=1e-5, mask=m, random_state=np.random.RandomState(seed=87))  # fmt: skip
    with torch.no_grad():
        np.testing.assert_allclose(model().numpy(), tl.tucker_to_tensor((core, factors)), rtol=1e-12)


def test_a_few_adam_iterations_match_the_authors_loop(covid):
    data, dense = covid
    cfg = paper_config(steps=3, eval_every=3, seeds=(42,), optimizers=("base",))
    (run,) = run_completion(cfg)
    m = torch.as_tensor(authors_mask(data.shape, 42)).double()
    x = torch.as_tensor(np.nan_to_num(dense))
    model = make_model(cfg, data, CompletionExperiment(cfg, data).split(42), 42)
    opt = torch.optim.Adam(model.parameters())  # torch's defaults
    for _ in range(3):
        opt.zero_grad()
        loss = torch.sum(((model() - x) * m) ** 2)  # summed, raw values
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = torch.sum(((model() - x) * m) ** 2).item()
        xhat = model().numpy()
    assert run.record["train_loss"] == pytest.approx(final, rel=1e-10)
    expected_r2 = 1 - np.linalg.norm((xhat - x.numpy()) * m.numpy()) ** 2 / np.linalg.norm(x.numpy() * m.numpy()) ** 2
    assert run.record["train_r2"] == pytest.approx(expected_r2, rel=1e-10)
    assert run.curve[-1]["train_r2"] == pytest.approx(expected_r2, rel=1e-10) and "test_r2" in run.record


def test_cli_protocol_paper_takes_the_papers_settings_unless_given(tmp_path):
    out = tmp_path / "o"
    args = ["complete", "--protocol", "paper", "--steps", "2", "--eval-every", "1", "--seeds", "42"]
    assert main([*args, "--optimizer", "base", "--no-als", "--lr", "0.002", "--no-progress", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["protocol"] == "paper" and config["steps"] == 2 and config["lr"] == 0.002  # given: kept
    for key in ("data", "model", "standardize", "dtype", "base", "rho", "alpha", "alpha_schedule", "init"):
        assert config[key] == PAPER_PROTOCOL[key], key
    assert config["rank"] == [8, 6, 8]
    (record,) = json.loads((out / "results.json").read_text())["records"]
    assert "train_r2" in record and "test_r2" in record
    assert main(["complete", "--protocol", "paper", "--standardize", "global", "--out", str(tmp_path / "b")]) == 2


def test_the_full_reproduction_runs_the_papers_protocol_and_the_report_says_how_many_iterations():
    from tensordas.reproduce import bundled_specs
    from tensordas.reproduce.families import FamilyOutcome, family_config
    from tensordas.reproduce.report import _protocol_note

    (spec,) = [s for s in bundled_specs("full") if s.name == "completion-paper"]
    config = family_config(spec, "cpu")
    for key, value in PAPER_PROTOCOL.items():
        assert getattr(config, key) == value, key
    assert "50,000 iterations as in the paper" in _protocol_note(spec, FamilyOutcome([], config=config.to_dict()))
    fewer = FamilyOutcome([], config={**config.to_dict(), "steps": 2000})
    assert "**2,000 iterations** (the paper ran 50,000)" in _protocol_note(spec, fewer)
