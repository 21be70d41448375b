"""Model compression task and `tensordas compress` (issue 4)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tensordas.cli import main
from tensordas.layers.from_dense import dense_layout
from tensordas.networks import build_network
from tensordas.tasks.compress import (
    CompressConfig,
    CompressExperiment,
    load_dense_model,
    run_compress,
    save_dense_model,
    select_layers,
)

HIDDEN = (32, 32)
# parameters of the dense MLP 64 -> 32 -> 32 -> 10, counted by hand
DENSE_PARAMS = 64 * 32 + 32 + 32 * 32 + 32 + 32 * 10 + 10
SMALL = ["--train-size", "600", "--test-size", "150", "--batch-size", "20", "--lr", "0.05"]
SMALL_CONFIG = dict(train_size=600, test_size=150, batch_size=20, lr=0.05)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One end-to-end CLI run: train a tiny dense MLP, TT-decompose at ratio 4, fine-tune with base and DAS."""
    out = tmp_path_factory.mktemp("compress")
    args = ["compress", "--train-dense", "--hidden", "32,32", "--dense-epochs", "3", "--format", "tt", "--ratio", "4",
            "--epochs", "2", "--optimizer", "base,das", "--seeds", "0", *SMALL, "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    return out


def test_end_to_end_reports_accuracy_before_and_after_and_the_achieved_ratio(trained, capsys):
    records = json.loads((trained / "results.json").read_text())["records"]
    assert [r["optimizer"] for r in records] == ["sgd", "das(sgd)"]
    for r in records:
        assert r["layer_ratio"] >= 4.0  # each decomposed layer: dense weight entries / core entries >= ratio
        assert r["params_dense"] == DENSE_PARAMS
        assert r["params_compressed"] < r["params_dense"]
        assert r["model_ratio"] == pytest.approx(r["params_dense"] / r["params_compressed"])
        assert r["layers"] == ["features.0", "features.2"]  # the output layer stays dense by default
        assert 0 <= r["decomposed_test_acc"] <= 1 and 0 <= r["test_acc"] <= r["best_test_acc"] <= 1
        assert r["dense_test_acc"] > 0.6  # the dense model learned in three epochs (chance: 0.1)
        assert r["best_test_acc"] > r["decomposed_test_acc"] + 0.1  # fine-tuning recovers what decomposition lost
    assert len({r["decomposed_test_acc"] for r in records}) == 1  # one decomposition, shared
    with open(trained / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    first = [row for row in rows if row["epoch"] == "0"]
    assert [float(row["test_acc"]) for row in first] == [r["decomposed_test_acc"] for r in records]
    assert (trained / "compress.png").stat().st_size > 0 and (trained / "dense.pt").is_file()


def test_achieved_layer_ratio_by_hand(trained):
    """TT-matrix cores (r_{k-1}, m_k, n_k, r_k): count their entries from the reported ranks and a rebuilt layout."""
    records = json.loads((trained / "results.json").read_text())["records"]
    model, _ = load_dense_model(trained / "dense.pt", (1, 8, 8), 10)
    weights = cores = 0
    for name, ranks in records[0]["layer_ranks"].items():
        layer = model.get_submodule(name)
        layout = dense_layout(layer, None, "tt")
        pairs = list(zip(layout.in_factors, layout.out_factors))
        cores += sum(ranks[k] * m * n * ranks[k + 1] for k, (m, n) in enumerate(pairs))
        weights += layer.weight.numel()
    assert records[0]["layer_ratio"] == pytest.approx(weights / cores)


def test_a_saved_dense_model_compresses_from_its_checkpoint(trained, tmp_path):
    cfg = CompressConfig(
        checkpoint=str(trained / "dense.pt"), format="tucker", rank=3, epochs=1, optimizers=("sam",), **SMALL_CONFIG
    )
    (res,) = run_compress(cfg, out_dir=tmp_path)
    before = json.loads((trained / "results.json").read_text())["records"][0]
    assert res.record["dense_test_acc"] == before["dense_test_acc"]  # same model, same split
    assert res.record["format"] == "tucker" and res.record["optimizer"] == "sam(sgd)"
    # a finished run is reused, the dense model and the decomposition are checked again
    (again,) = run_compress(cfg, out_dir=tmp_path)
    assert again.record == res.record


def test_resumed_compression_does_not_retrain_the_dense_model(trained, monkeypatch):
    cfg = CompressConfig(
        train_dense=True, hidden=HIDDEN, dense_epochs=3, ratio=4.0, epochs=2, optimizers=("base", "das"), **SMALL_CONFIG
    )

    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(CompressExperiment, "run", boom)
    results = run_compress(cfg, out_dir=trained)
    assert [r.record["optimizer"] for r in results] == ["sgd", "das(sgd)"]


def test_select_layers_defaults_and_patterns():
    torch.manual_seed(0)
    cnn = build_network("cnn", (1, 8, 8), 10)
    assert select_layers(cnn) == ["stem", "conv2", "conv3", "conv4"]
    assert select_layers(cnn, ["conv*"], exclude=["conv4"]) == ["conv2", "conv3"]
    with pytest.raises(ValueError, match="no layer matches 'fc'"):
        select_layers(cnn, ["fc"])


def _dense_file(tmp_path, architecture="mlp", **kwargs):
    torch.manual_seed(0)
    model = build_network(architecture, (1, 8, 8), 10, **kwargs)
    return save_dense_model(tmp_path / "m.pt", model, architecture, (1, 8, 8), 10, kwargs), model


def test_load_dense_model_round_trip_and_bare_state_dict(tmp_path):
    path, model = _dense_file(tmp_path, hidden=(8,))
    loaded, arch = load_dense_model(path, (1, 8, 8), 10)
    assert arch == "mlp"
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(ValueError, match="no architecture name"):
        load_dense_model(bare, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="does not match architecture 'mlp'"):
        load_dense_model(bare, (1, 8, 8), 10, "mlp")  # hidden (8,) is not the default (256, 256)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ratio", "1e6"], "cannot be reached"),
        (["--format", "tr", "--rank", "1000"], "does not fit layer"),
        (["--format", "cp", "--rank", "2,3"], "does not fit layer"),
        (["--rank", "0"], "rank 0"),
        (["--ratio", "4", "--model", "cnn"], "architecture mismatch"),
        (["--ratio", "4", "--layers", "conv*"], "no layer matches 'conv*'"),
        (["--ratio", "4", "--format", "svd"], "svd"),
        (["--ratio", "4", "--method", "svd"], "svd"),
        (["--ratio", "4", "--rank", "3"], "exactly one of ratio and rank"),
        (["--ratio", "-2"], "-2"),
        (["--ratio", "4", "--data", "cifar10"], "--data-dir"),
    ],
)
def test_cli_bad_input_with_a_checkpoint_is_one_line_and_nonzero(args, needle, tmp_path, capsys):
    path, _ = _dense_file(tmp_path, hidden=(16, 16))
    status = main(["compress", "--checkpoint", str(path), *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status != 0
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "results.json").exists()


def test_cli_missing_corrupted_and_mismatched_checkpoints(tmp_path, capsys):
    def fails(*args: str) -> str:
        assert main(["compress", *args, "--out", str(tmp_path / "o")]) != 0
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        return err

    assert "checkpoint not found" in fails("--checkpoint", str(tmp_path / "nope.pt"), "--ratio", "4")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    assert "corrupted" in fails("--checkpoint", str(junk), "--ratio", "4")
    torch.save({"something": "else"}, tmp_path / "other.pt")
    assert "not a model checkpoint" in fails("--checkpoint", str(tmp_path / "other.pt"), "--ratio", "4")
    torch.manual_seed(0)
    tt = build_network("tt-mlp", (1, 8, 8), 10, hidden=(8,))
    save_dense_model(tmp_path / "tt.pt", tt, "tt-mlp", (1, 8, 8), 10, {"hidden": (8,)})
    assert "tensorized 'tt-mlp' model" in fails("--checkpoint", str(tmp_path / "tt.pt"), "--ratio", "4")
    other_data, _ = _dense_file(tmp_path, hidden=(8,))
    npz = tmp_path / "d.npz"
    np.savez(npz, X=np.random.default_rng(0).normal(size=(40, 5)), y=np.arange(40) % 2)
    assert "the data has inputs (5,)" in fails("--checkpoint", str(other_data), "--data", str(npz), "--ratio", "4")
    assert "exactly one source" in fails("--ratio", "4")
    assert "exactly one source" in fails("--checkpoint", str(other_data), "--train-dense", "--ratio", "4")


def test_cli_unreachable_ratio_fails_before_training_the_dense_model(tmp_path, capsys, monkeypatch):
    import tensordas.tasks.compress as compress

    def boom(*args, **kwargs):
        raise AssertionError("trained before checking the ratio")

    monkeypatch.setattr(compress, "train_classifier", boom)
    assert main(["compress", "--train-dense", "--ratio", "1e6", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "layer 'features.0'" in err and "cannot be reached" in err


def test_a_changed_npz_file_retrains_the_dense_model_and_reruns(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "c.npz"
    y = np.arange(80) % 4
    np.savez(path, X=rng.normal(size=(80, 16)), y=y)
    cfg = CompressConfig(
        data=str(path), train_dense=True, hidden=(16,), dense_epochs=1, format="tt", ratio=2.0, epochs=1,
        batch_size=20,
    )  # fmt: skip
    (first,) = run_compress(cfg, out_dir=tmp_path / "o")
    np.savez(path, X=rng.normal(size=(80, 16)) + 4 * y[:, None], y=y)
    (second,) = run_compress(cfg, out_dir=tmp_path / "o")
    assert second.record["dense_test_acc"] != first.record["dense_test_acc"]


def test_a_checkpoint_trained_on_another_split_is_refused(trained, tmp_path):
    # Another split of the same data puts the dense model's training samples into this test set.
    cfg = dict(format="tucker", rank=3, epochs=1, optimizers=("base",), **SMALL_CONFIG)
    with pytest.raises(ValueError, match="split_seed=0 \\(here 1\\)"):
        run_compress(CompressConfig(checkpoint=str(trained / "dense.pt"), split_seed=1, **cfg))
    # a `tensordas train` checkpoint of seed 1 compresses on split seed 1, not on split seed 0
    from tensordas.tasks.noisy import NoisyConfig, run_noisy

    train = NoisyConfig(
        model="mlp", hidden=HIDDEN, noise=0.0, epochs=1, optimizers=("base",), seeds=(1,), **SMALL_CONFIG
    )
    run_noisy(train, out_dir=tmp_path / "train")
    checkpoint = str(tmp_path / "train" / "checkpoints" / "base-sgd-seed1.pt")
    with pytest.raises(ValueError, match="another split"):
        run_compress(CompressConfig(checkpoint=checkpoint, **cfg))
    (res,) = run_compress(CompressConfig(checkpoint=checkpoint, split_seed=1, **cfg))
    assert res.record["dense_test_acc"] > 0
