"""The one data-set registry: a registered tensor, classification or text set is found by the loaders and the
commands by its name alone, and bad registrations are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tensordas.cli import main
from tensordas.data import (
    DATASETS,
    Dataset,
    dataset_names,
    load_classification,
    load_tensor,
    load_text_data,
    register_dataset,
    unregister_dataset,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _blobs(*, seed: int, test_fraction: float, data_dir=None, download=False):
    """Three Gaussian blobs in 6 dimensions (a fixed draw; the split follows ``seed``)."""
    rng = np.random.default_rng(123)
    y = np.repeat(np.arange(3), 60)
    x = rng.normal(size=(180, 6)) + 3.0 * np.eye(6)[y]
    order = np.random.default_rng(seed).permutation(180)
    n_test = int(round(test_fraction * 180))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


@pytest.fixture
def blobs():
    register_dataset(Dataset("blobs", "classification", _blobs, "three Gaussian blobs (a test set)"))
    yield
    unregister_dataset("blobs")


def test_the_built_in_sets_are_registered_once_by_kind():
    assert {"covid19", "il2", "kinetic", "indian_pines"} <= set(dataset_names("tensor"))
    assert dataset_names("classification")[:2] == ("digits", "cifar10")
    assert dataset_names("text")[:2] == ("vader", "vader-noisy")
    assert all(DATASETS[n].kind == "tensor" for n in dataset_names("tensor"))


def test_a_registered_classification_set_trains_through_the_train_command(blobs, tmp_path, capsys):
    data = load_classification("blobs", seed=1)
    x_train, y_train, x_test, _ = _blobs(seed=1, test_fraction=0.25)
    assert data.name == "blobs" and data.num_classes == 3 and len(data.y_test) == len(x_test) == 45
    np.testing.assert_array_equal(data.y_train.numpy(), y_train)
    np.testing.assert_allclose(data.x_train.double().mean(0).numpy(), 0, atol=1e-6)  # standardised per feature
    out = tmp_path / "run"
    args = ["train", "--data", "blobs", "--model", "tt-mlp", "--rank", "2", "--hidden", "8,8", "--epochs", "1"]
    assert main([*args, "--optimizer", "base,das", "--seeds", "0", "--no-progress", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())["records"]
    assert {r["method"] for r in records} == {"base", "das"} and all(0 <= r["test_acc"] <= 1 for r in records)


def test_a_registered_tensor_and_text_set_load_by_name():
    cube = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    cube[0, 0, 0] = np.nan
    register_dataset(Dataset("cube", "tensor", lambda: cube.copy(), "a 2x3x4 test tensor"))
    try:
        data = load_tensor("cube")
        assert data.shape == (2, 3, 4) and data.name == "cube" and len(data.values) == 23
    finally:
        unregister_dataset("cube")
    vader = load_text_data("vader")
    register_dataset(Dataset("tiny-text", "text", lambda: vader, "VADER again"))
    try:
        assert load_text_data("tiny-text") is vader
    finally:
        unregister_dataset("tiny-text")


@pytest.mark.parametrize(
    ("dataset", "needle"),
    [
        (Dataset("digits", "classification", _blobs, "again"), "already registered"),
        (Dataset("My Set", "classification", _blobs, "bad name"), "Invalid dataset name 'My Set'"),
        (Dataset("x", "images", _blobs, "bad kind"), "Invalid dataset kind 'images'"),
        (Dataset("x", "tensor", None, "no loader"), "load must be callable"),
    ],
)
def test_bad_registrations_are_refused(dataset, needle):
    with pytest.raises(ValueError, match=needle):
        register_dataset(dataset)


def test_a_name_of_another_kind_says_which_kind_it_is():
    with pytest.raises(ValueError, match="'covid19' is a tensor data set, not a classification one"):
        load_classification("covid19")
    with pytest.raises(ValueError, match="Unknown data set 'nope'.*digits, cifar10"):
        load_classification("nope")
