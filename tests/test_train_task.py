"""Noisy-label training task and `tensordas train` (issue 4)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tensordas.cli import main
from tensordas.data import load_classification
from tensordas.tasks.noisy import NoisyConfig, NoisyExperiment, run_noisy, write_noisy
from tensordas.training import METHODS, compared_methods

SMALL = ["--hidden", "16,16", "--train-size", "200", "--test-size", "100"]
FAST = ["--model", "tt-mlp", "--rank", "3", *SMALL]


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def tiny_config(**kw) -> NoisyConfig:
    settings = dict(
        model="tt-mlp", rank=3, hidden=(16, 16), train_size=200, test_size=100, epochs=2, batch_size=50,
        optimizers=("base", "sam", "das"), seeds=(0, 1),
    )  # fmt: skip
    return NoisyConfig(**{**settings, **kw})


def test_records_curves_and_the_realised_noise(tmp_path):
    cfg = tiny_config(noise=0.4)
    results = run_noisy(cfg, out_dir=tmp_path)
    write_noisy(results, cfg, tmp_path)
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert [(r["optimizer"], r["seed"]) for r in records] == [
        (o, s) for s in (0, 1) for o in ("sgd", "sam(sgd)", "das(sgd)")
    ]
    required = ("optimizer", "seed", "best_test_acc", "test_acc", "noise_rate_realized", "wall_time_s", "epochs")
    for r in records:
        assert all(k in r for k in required)
        assert r["epochs"] == 2 and r["steps"] == 8
        assert 0 <= r["test_acc"] <= r["best_test_acc"] <= 1
        assert r["memorized"] is not None and r["recovered"] is not None
    # the realised rate is the changed share of the seed's training labels, the same for every optimizer
    exp = NoisyExperiment(cfg)
    for seed in (0, 1):
        _, noisy = exp.data(seed)
        by_hand = float((noisy.labels != noisy.true_labels).double().mean())
        assert {r["noise_rate_realized"] for r in records if r["seed"] == seed} == {by_hand}
    with open(tmp_path / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 3  # 6 runs x epochs 0..2
    assert {"test_acc", "memorized", "recovered", "Q", "train_loss"} <= set(rows[0])
    assert (tmp_path / "noisy.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(
        f"{m}-sgd-seed{s}.pt" for m in ("base", "sam", "das") for s in (0, 1)
    )


def test_optimizers_share_the_seed_s_data_noise_and_initial_model():
    cfg = tiny_config(epochs=1, optimizers=("base", "das"), seeds=(0,))
    (base, das) = run_noisy(cfg)
    assert base.curve[0]["test_acc"] == das.curve[0]["test_acc"] and base.curve[0]["Q"] == das.curve[0]["Q"]


def test_a_finished_experiment_is_reused_and_an_interrupted_run_resumes(tmp_path, monkeypatch):
    cfg = tiny_config(optimizers=("das",), seeds=(0,), epochs=3)
    (done,) = run_noisy(cfg, out_dir=tmp_path)

    def boom(*args, **kwargs):
        raise AssertionError("a finished run was recomputed")

    with monkeypatch.context() as m:
        m.setattr(NoisyExperiment, "run", boom)
        (again,) = run_noisy(cfg, out_dir=tmp_path)
    assert again.record == done.record
    # lose the finished run's record: its checkpoint (after epoch 3) is continued, not retrained
    (tmp_path / "runs" / "das-sgd-seed0.json").unlink()
    (resumed,) = run_noisy(cfg, out_dir=tmp_path)
    assert resumed.record["resumed_from_epoch"] == 3
    assert resumed.record["test_acc"] == done.record["test_acc"]
    # --no-resume trains afresh, to the same numbers
    (fresh,) = run_noisy(cfg, out_dir=tmp_path, resume=False)
    assert fresh.record["resumed_from_epoch"] == 0
    assert fresh.record["test_acc"] == done.record["test_acc"]


def test_asymmetric_noise_on_an_npz_file(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 6)) * 3
    y = np.arange(300) % 3
    path = tmp_path / "blobs.npz"
    np.savez(path, X=centers[y] + rng.normal(size=(300, 6)), y=y)
    cfg = NoisyConfig(
        data=str(path), model="tt-mlp", rank=2, hidden=(8, 8), noise=0.3, noise_type="asymmetric", epochs=3,
        batch_size=32, optimizers=("das",),
    )  # fmt: skip
    data, noisy = NoisyExperiment(cfg).data(0)
    assert data.input_shape == (6,)
    bad = noisy.corrupted
    assert torch.equal(noisy.labels[bad], (noisy.true_labels[bad] + 1) % 3)
    (res,) = run_noisy(cfg)
    assert res.record["best_test_acc"] > 0.6  # three well separated blobs


def test_cli_train_compare_writes_results_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *FAST, "--noise", "0.4", "--epochs", "1", "--compare", "--seeds", "0,1", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    methods = [METHODS[m].label("sgd") for m in compared_methods()]
    for word in (*methods, "best test acc", "final test acc", "±"):
        assert word in printed
    assert "final test acc" in printed
    records = json.loads((out / "results.json").read_text())["records"]
    assert len(records) == 2 * len(compared_methods()) and {r["noise_type"] for r in records} == {"symmetric"}
    assert json.loads((out / "config.json").read_text())["noise"] == 0.4


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--noise", "1.0"], "noise rate: 1.0"),
        (["--noise", "-0.1"], "-0.1"),
        (["--noise-type", "pairwise"], "pairwise"),
        (["--model", "tt-transformer"], "tt-transformer"),
        (["--model", "mlp", "--rank", "4"], "dense"),
        (["--optimizer", "lbfgs"], "lbfgs"),
        (["--seeds", "a,b"], "a,b"),
        (["--seeds", "-1"], "--seeds"),
        (["--seeds", "0,0"], "--seeds"),
        (["--seeds", str(2**32)], "--seeds"),
        (["--model", "tt-mlp", "--rank", "100000"], "rank 100000"),
        (["--model", "cp-mlp", "--rank", "100000"], "rank 100000"),
        (["--epochs", "0"], "epochs"),
        (["--lr-schedule", "exp"], "exp"),
        (["--data", "missing.npz"], "missing.npz"),
        (["--data", "cifar10"], "--data-dir"),
        (["--rank", "0"], "rank 0"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(args, needle, tmp_path, capsys):
    epochs = [] if "--epochs" in args else ["--epochs", "1"]
    status = main(["train", *SMALL, *args, *epochs, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status != 0
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "results.json").exists()


def test_cli_bad_npz_labels_and_das_on_a_dense_model(tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.zeros((10, 3)), y=np.linspace(0, 1, 10))
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not integers" in err
    assert main(["train", "--model", "mlp", "--optimizer", "das", "--epochs", "1", "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "needs core groups" in err


def test_digits_test_set_is_the_clean_split():
    cfg = tiny_config(noise=0.8)
    data, _ = NoisyExperiment(cfg).data(1)
    assert torch.equal(data.y_test, load_classification("digits", seed=1, train_size=200, test_size=100).y_test)


def test_a_changed_npz_file_is_rerun_not_reused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "c.npz"
    y = np.arange(60) % 3
    np.savez(path, X=rng.normal(size=(60, 6)), y=y)
    cfg = NoisyConfig(data=str(path), model="tt-mlp", rank=2, hidden=(8, 8), epochs=1, batch_size=20)
    (first,) = run_noisy(cfg, out_dir=tmp_path / "o")
    np.savez(path, X=rng.normal(size=(60, 6)) + 5 * y[:, None], y=y)
    (second,) = run_noisy(cfg, out_dir=tmp_path / "o")
    assert second.record["train_loss"] != first.record["train_loss"]


def test_duplicate_seeds_are_rejected_by_the_library_too():
    with pytest.raises(ValueError, match="twice"):
        run_noisy(tiny_config(seeds=(0, 0), optimizers=("base",), epochs=1))
