"""Classification data (digits, CIFAR-10 folder, .npz) and label noise (issue 4)."""

from __future__ import annotations

import math
import pickle
import sys

import numpy as np
import pytest
import torch

from tensordas.data import (
    NoisyLabels,
    add_label_noise,
    asymmetric_mapping,
    load_classification,
    stratified_split,
)
from tensordas.data.noise import CIFAR10_ASYMMETRIC
from tensordas.tasks.noisy import NoisyConfig, NoisyExperiment


def binomial_bound(n: int, p: float, z: float = 5.0) -> float:
    """z standard deviations of a binomial proportion: a false alarm is ~1e-6."""
    return z * math.sqrt(p * (1 - p) / n)


# --- digits -------------------------------------------------------------------------------------------


def test_digits_split_is_deterministic_stratified_and_standardised():
    a = load_classification("digits", seed=3)
    b = load_classification("digits", seed=3)
    c = load_classification("digits", seed=4)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert a.n_train + a.n_test == 1797
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_test, c.y_test)
    # every class keeps about a quarter of its samples in the test part
    counts = torch.bincount(a.y_test, minlength=10).double()
    totals = counts + torch.bincount(a.y_train, minlength=10).double()
    assert torch.all((counts / totals - 0.25).abs() < 0.02)
    # standardised with the training part's statistics: mean 0, std 1 for every non-constant pixel
    flat = a.x_train.reshape(a.n_train, -1).double()
    assert flat.mean(0).abs().max() < 1e-5
    std = flat.std(0, unbiased=False)
    assert torch.all(((std - 1).abs() < 1e-4) | (std < 1e-6))


def test_stratified_split_partitions_the_indices():
    y = np.repeat(np.arange(4), [10, 3, 2, 25])
    tr, te = stratified_split(y, 0.3, seed=0)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(y)))
    assert set(y[te]) == set(y[tr]) == {0, 1, 2, 3}  # every class (>= 2 samples) on both sides


def test_subsets_keep_the_requested_sizes():
    d = load_classification("digits", seed=0, train_size=100, test_size=50)
    assert (d.n_train, d.n_test) == (100, 50)


# --- label noise --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_symmetric_noise_rate_within_sampling_error_and_uniform(rate):
    n, k = 20000, 10
    labels = torch.arange(n) % k
    before = labels.clone()
    noisy = add_label_noise(labels, k, rate, "symmetric", seed=1)
    assert torch.equal(labels, before)  # the input is not modified
    assert torch.equal(noisy.true_labels, labels)
    realized = float((noisy.labels != labels).double().mean())
    assert realized == pytest.approx(noisy.realized_rate)
    assert abs(realized - rate) <= binomial_bound(n, rate) + 1e-12
    if rate > 0:
        # uniform over the K-1 other classes: each (true, noisy) offset 1..K-1 has probability 1/(K-1)
        offsets = ((noisy.labels - labels) % k)[noisy.corrupted]
        share = torch.bincount(offsets, minlength=k)[1:].double() / offsets.numel()
        assert torch.all((share - 1 / (k - 1)).abs() <= binomial_bound(offsets.numel(), 1 / (k - 1)))


def test_noise_is_reproducible_by_seed():
    labels = torch.arange(1000) % 7
    a = add_label_noise(labels, 7, 0.3, seed=5)
    b = add_label_noise(labels, 7, 0.3, seed=5)
    c = add_label_noise(labels, 7, 0.3, seed=6)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)


def test_asymmetric_noise_follows_the_mapping():
    n, k, rate = 20000, 10, 0.3
    labels = torch.arange(n) % k
    noisy = add_label_noise(labels, k, rate, "asymmetric", seed=2)
    # default: c -> (c + 1) mod K, every class can flip
    assert asymmetric_mapping(k) == [(c + 1) % k for c in range(k)]
    flipped = noisy.corrupted
    assert torch.equal(noisy.labels[flipped], (labels[flipped] + 1) % k)
    assert abs(noisy.realized_rate - rate) <= binomial_bound(n, rate)


def test_cifar10_asymmetric_mapping_flips_only_its_class_pairs():
    mapping = asymmetric_mapping(10, "cifar10")
    # truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog; the others stay
    assert mapping == [0, 1, 0, 5, 7, 3, 6, 7, 8, 1]
    assert {c: mapping[c] for c in range(10) if mapping[c] != c} == CIFAR10_ASYMMETRIC
    n, rate = 20000, 0.4
    labels = torch.arange(n) % 10
    noisy = add_label_noise(labels, 10, rate, "asymmetric", seed=0, mapping=mapping)
    changed = noisy.corrupted
    assert set(labels[changed].unique().tolist()) == {2, 3, 4, 5, 9}
    for c, target in CIFAR10_ASYMMETRIC.items():
        assert torch.all(noisy.labels[changed & (labels == c)] == target)
    # half the classes can flip: the realised rate over all samples is rate / 2
    assert abs(noisy.realized_rate - rate / 2) <= binomial_bound(n, rate / 2)


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, float("nan"), float("inf")])
def test_noise_rate_outside_unit_interval_is_an_error(rate):
    with pytest.raises(ValueError, match="noise rate"):
        add_label_noise(torch.zeros(5, dtype=torch.int64), 3, rate)
    with pytest.raises(ValueError, match="noise rate"):
        NoisyConfig(noise=rate)


def test_noise_never_touches_the_test_set():
    cfg = NoisyConfig(noise=0.6, train_size=400, seeds=(0,))
    exp = NoisyExperiment(cfg)
    data, noisy = exp.data(0)
    clean = load_classification("digits", seed=0, train_size=400)
    assert torch.equal(data.y_test, clean.y_test) and torch.equal(data.x_test, clean.x_test)
    assert torch.equal(data.y_train, clean.y_train)  # the data keeps clean labels; the noisy ones are separate
    assert torch.equal(noisy.true_labels, clean.y_train)
    assert isinstance(noisy, NoisyLabels) and noisy.labels.shape == clean.y_train.shape
    assert abs(noisy.realized_rate - 0.6) <= binomial_bound(400, 0.6)


# --- .npz ---------------------------------------------------------------------------------------------


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def test_npz_loads_with_its_own_test_part_and_maps_labels(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), rng.choice([3, 7], size=40)
    xt, yt = rng.normal(size=(10, 5)), rng.choice([3, 7], size=10)
    d = load_classification(_npz(tmp_path, X=x, y=y.astype(float), X_test=xt, y_test=yt))
    assert d.classes == (3, 7) and d.num_classes == 2
    assert torch.equal(d.y_test, torch.from_numpy((yt == 7).astype(np.int64)))
    mean, std = x.mean(0), x.std(0)
    torch.testing.assert_close(d.x_test.double(), torch.from_numpy((xt - mean) / std), rtol=1e-5, atol=1e-5)


def test_npz_without_test_part_is_split_by_seed(tmp_path):
    rng = np.random.default_rng(1)
    path = _npz(tmp_path, X=rng.normal(size=(60, 2, 3)), y=np.arange(60) % 3)
    d = load_classification(path, seed=0, test_fraction=0.5)
    assert d.input_shape == (2, 3) and (d.n_train, d.n_test) == (30, 30)


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"X": np.zeros((4, 2))}, "no array 'y'"),
        ({"y": np.zeros(4)}, "no array 'X'"),
        ({"X": np.zeros((4, 2)), "y": np.array([0, 1, 0.5, 1])}, "not integers"),
        ({"X": np.zeros((4, 2)), "y": np.array(["a", "b", "a", "b"])}, "not integers"),
        ({"X": np.zeros((4, 2)), "y": np.array([0, 1, 0])}, "4 samples but y has 3"),
        ({"X": np.array([[0.0, np.nan]] * 4), "y": np.array([0, 1, 0, 1])}, "NaN"),
        ({"X": np.zeros(4), "y": np.array([0, 1, 0, 1])}, "samples first"),
        ({"X": np.zeros((4, 2)), "y": np.zeros(4, dtype=int)}, "1 class"),
        ({"X": np.zeros((4, 2)), "y": np.array([0, 1, 0, 1]), "X_test": np.zeros((2, 2))}, "together"),
    ],
)
def test_npz_errors_are_clear(tmp_path, arrays, needle):
    with pytest.raises(ValueError, match=needle):
        load_classification(_npz(tmp_path, **arrays))


def test_npz_missing_or_unreadable_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_classification(str(tmp_path / "nope.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="cannot read"):
        load_classification(str(bad))
    with pytest.raises(ValueError, match="Unknown data set"):
        load_classification("mnist")


# --- CIFAR-10 folder ------------------------------------------------------------------------------------


def _fake_cifar(root, n=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([*(f"data_batch_{j}" for j in range(1, 6)), "test_batch"]):
        batch = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": [(i + j) % 10 for j in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def test_cifar10_is_read_from_a_torchvision_folder_without_torchvision(tmp_path):
    folder = _fake_cifar(tmp_path)
    d = load_classification("cifar10", data_dir=tmp_path)
    assert d.x_train.shape == (30, 3, 32, 32) and d.x_test.shape == (6, 3, 32, 32)
    assert d.num_classes == 10 and d.y_test.tolist() == [(5 + j) % 10 for j in range(6)]
    # per-channel standardisation with training statistics
    assert d.x_train.double().mean(dim=(0, 2, 3)).abs().max() < 1e-5
    # the folder itself works as --data-dir too
    assert torch.equal(load_classification("cifar10", data_dir=folder).x_test, d.x_test)


def test_cifar10_never_downloads_unless_asked(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="--download"):
        load_classification("cifar10", data_dir=tmp_path)
    with pytest.raises(ValueError, match="--data-dir"):
        load_classification("cifar10")
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if torchvision were not installed
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(ValueError, match="torchvision"):
        load_classification("cifar10", data_dir=tmp_path, download=True)


def test_cifar10_corrupted_batch_is_a_clear_error(tmp_path):
    folder = _fake_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="data_batch_3"):
        load_classification("cifar10", data_dir=tmp_path)


def test_npy_file_instead_of_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="single array, not an .npz"):
        load_classification(str(path))


def test_label_noise_refuses_labels_that_are_not_one_per_sample():
    with pytest.raises(ValueError, match="1-D"):
        add_label_noise(torch.zeros(4, 2, dtype=torch.int64), 3, 0.2, seed=0)
