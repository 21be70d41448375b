"""Tensor loaders, observed/held-out splits, standardisation and held-out metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tensordas.data import (
    DATASETS,
    Entries,
    Standardizer,
    from_array,
    load_tensor,
    split_entries,
    unobserved_slices,
)
from tensordas.metrics import r2_score, rmse


def with_nans(shape=(6, 7, 8), frac=0.2, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x[rng.random(shape) < frac] = np.nan
    return x


def assert_same_with_nans(data, x: np.ndarray) -> None:
    finite = np.isfinite(x)
    assert data.shape == x.shape
    np.testing.assert_array_equal(data.known.numpy(), finite)
    assert torch.isnan(data.tensor[~data.known]).all()
    np.testing.assert_allclose(data.tensor.numpy()[finite], x[finite], rtol=1e-6)


# --- loaders ------------------------------------------------------------------------------------


def test_covid19_and_il2_shapes_and_missing_entries():
    covid = load_tensor("covid19")
    assert covid.shape == (438, 6, 11) and covid.name == "covid19"
    assert covid.known.all() and covid.tensor.dtype == torch.get_default_dtype()
    il2 = load_tensor("IL2")
    assert il2.shape == (13, 4, 12, 8)
    assert il2.n_known == 13 * 4 * 12 * 8 - 192
    assert torch.equal(il2.known, torch.isfinite(il2.tensor))
    assert set(DATASETS) >= {"covid19", "il2"}


def test_dtype_option():
    assert load_tensor("il2", dtype=torch.float64).tensor.dtype == torch.float64


def test_synthetic_is_deterministic_low_rank_and_noisy_as_specified():
    a = load_tensor("synthetic:shape=12x13x14,rank=3,noise=0.1,seed=7", dtype=torch.float64)
    b = load_tensor("synthetic:shape=12x13x14,rank=3,noise=0.1,seed=7", dtype=torch.float64)
    c = load_tensor("synthetic:shape=12x13x14,rank=3,noise=0.1,seed=8", dtype=torch.float64)
    assert a.shape == (12, 13, 14) and a.known.all()
    assert torch.equal(a.tensor, b.tensor)
    assert not torch.allclose(a.tensor, c.tensor)
    assert a.name == "synthetic:shape=12x13x14,rank=3,noise=0.1,seed=7"
    clean = load_tensor("synthetic:shape=12x13x14,rank=3,seed=7", dtype=torch.float64).tensor
    assert np.linalg.matrix_rank(clean.reshape(12, -1).numpy(), tol=1e-8) == 3  # the CP rank shows in unfoldings
    rel = ((a.tensor - clean).norm() / clean.norm()).item()
    assert 0.08 < rel < 0.12, rel  # noise is relative to the signal's RMS
    assert 0.3 < clean.var().item() < 3.0  # unit-scale signal


def test_npy_round_trip_with_nans(tmp_path):
    x = with_nans()
    np.save(tmp_path / "t.npy", x)
    data = load_tensor(tmp_path / "t.npy")
    assert_same_with_nans(data, x)
    assert data.name == "t.npy"


def test_npz_single_array_and_named_key(tmp_path):
    x, y = with_nans(seed=1), with_nans((3, 4), seed=2)
    np.savez(tmp_path / "one.npz", data=x)
    assert_same_with_nans(load_tensor(str(tmp_path / "one.npz")), x)
    np.savez(tmp_path / "two.npz", x=x, y=y)
    assert_same_with_nans(load_tensor(f"{tmp_path / 'two.npz'}:y"), y)
    with pytest.raises(ValueError, match=r"several arrays \(x, y\)"):
        load_tensor(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="no array named 'z'"):
        load_tensor(f"{tmp_path / 'two.npz'}:z")


def test_mat_round_trip_single_array_and_key(tmp_path):
    from scipy.io import savemat

    x, y = with_nans(seed=3), with_nans((4, 5), seed=4)
    savemat(tmp_path / "one.mat", {"X": x, "label": "a string beside the data"})
    assert_same_with_nans(load_tensor(tmp_path / "one.mat"), x)
    savemat(tmp_path / "two.mat", {"X": x, "Y": y})
    assert_same_with_nans(load_tensor(f"{tmp_path / 'two.mat'}:Y"), y)
    with pytest.raises(ValueError, match="several arrays"):
        load_tensor(tmp_path / "two.mat")


def test_infinite_entries_count_as_missing():
    x = np.arange(12.0).reshape(3, 4)
    x[0, 1], x[2, 3] = np.inf, -np.inf
    data = from_array(x, "x")
    assert data.n_known == 10 and torch.isnan(data.tensor[0, 1]) and torch.isnan(data.tensor[2, 3])


@pytest.mark.parametrize(
    ("spec", "exc", "match"),
    [
        ("nosuchdata", ValueError, r"unknown dataset 'nosuchdata' \(known: covid19, il2"),
        ("missing_file.npy", FileNotFoundError, "tensor file not found"),
        ("table.tsv", ValueError, r"unsupported tensor file .*\.tsv"),
        ("x.npy:key", ValueError, "holds one array"),
        ("synthetic:shape=3x3", ValueError, "missing rank="),
        ("synthetic:shape=3,rank=2", ValueError, "need >= 2 modes"),
        ("synthetic:shape=3x3,rank=2,nois=1", ValueError, "unknown key 'nois'"),
        ("synthetic:shape=3x3,rank=0", ValueError, "Invalid synthetic rank 0"),
        ("synthetic:shape=3x3,rank=2,noise=-1", ValueError, "Invalid synthetic noise"),
    ],
)
def test_loader_errors(spec, exc, match):
    with pytest.raises(exc, match=match):
        load_tensor(spec)


def test_file_errors(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="no finite entries"):
        load_tensor(tmp_path / "nan.npy")
    np.save(tmp_path / "vec.npy", np.ones(5))
    with pytest.raises(ValueError, match="at least 2 modes"):
        load_tensor(tmp_path / "vec.npy")
    (tmp_path / "junk.npz").write_text("not a zip file")
    with pytest.raises(ValueError, match="could not read"):
        load_tensor(tmp_path / "junk.npz")
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="unsupported tensor file"):
        load_tensor(tmp_path / "data.txt")


# --- splits -------------------------------------------------------------------------------------


def as_set(indices: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(r) for r in indices.tolist()}


@pytest.mark.parametrize("source", ["il2", "file"])
def test_split_uses_known_entries_only_and_partitions_them(source, tmp_path):
    if source == "file":
        x = with_nans((10, 11, 12), frac=0.3, seed=5)
        np.save(tmp_path / "t.npy", x)
        data = load_tensor(tmp_path / "t.npy")
    else:
        data = load_tensor("il2")
    split = split_entries(data, missing=0.5, seed=3, validation=0.2)
    parts = [split.train, split.val, split.test]
    known = as_set(torch.nonzero(data.known))
    sets = [as_set(p.indices) for p in parts]
    assert set().union(*sets) == known  # every known entry is used...
    assert sum(len(s) for s in sets) == len(known)  # ...exactly once
    for p in parts:
        assert p.indices.dtype == torch.long and p.indices.shape[1] == len(data.shape)
        assert torch.isfinite(p.values).all()  # NaN never reaches a set
        assert torch.equal(p.values, data.tensor[tuple(p.indices.T)])


@pytest.mark.parametrize(("missing", "validation"), [(0.7, 0.0), (0.3, 0.1), (0.9, 0.25)])
def test_split_sizes_match_the_ratios(missing, validation):
    data = load_tensor("synthetic:shape=20x20x20,rank=2")
    split = split_entries(data, missing, seed=0, validation=validation)
    m = data.n_known
    assert len(split.test) == round(missing * m)
    assert (len(split.val) if split.val is not None else 0) == round(validation * (m - len(split.test)))
    assert len(split.train) + len(split.test) + (len(split.val) if split.val is not None else 0) == m
    assert (split.val is None) == (validation == 0)


def test_split_is_deterministic_by_seed():
    data = load_tensor("synthetic:shape=10x10x10,rank=2")
    a, b, c = (split_entries(data, 0.5, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.test.indices, b.test.indices) and torch.equal(a.train.values, b.train.values)
    assert not torch.equal(a.test.indices, c.test.indices)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"missing": 0.0}, r"Invalid missing ratio 0\.0"),
        ({"missing": 1.0}, r"Invalid missing ratio 1\.0"),
        ({"missing": -0.2}, "Invalid missing ratio"),
        ({"missing": float("nan")}, "Invalid missing ratio"),
        ({"missing": "0.5"}, "Invalid missing ratio"),
        ({"missing": 0.01}, "held-out set would be empty"),
        ({"missing": 0.99}, "observed set would be empty"),
        ({"missing": 0.5, "validation": 1.0}, "Invalid validation fraction"),
        ({"missing": 0.5, "validation": 0.01}, "validation set would be empty"),
        ({"missing": 0.5, "empty_slices": "maybe"}, "Invalid empty_slices"),
    ],
)
def test_split_errors(kwargs, match):
    data = from_array(np.arange(20.0).reshape(4, 5), "small")
    with pytest.raises(ValueError, match=match):
        split_entries(data, **kwargs)


def test_heldout_entries_in_unobserved_slices():
    x = np.ones((4, 5))
    x[2, :] = np.nan
    x[2, 0] = 5.0  # row 2 has one known entry: held out, it has no observed neighbour in its row
    data = from_array(x, "x")
    found = None
    for seed in range(50):
        split = split_entries(data, 0.3, seed=seed, empty_slices="ignore")
        if (split.test.indices[:, 0] == 2).any():
            found = seed
            break
    assert found is not None
    bad = unobserved_slices(split.train.indices, split.test.indices, data.shape)
    assert 2 in bad[0]
    with pytest.raises(ValueError, match="mode 0"):
        split_entries(data, 0.3, seed=found)
    with pytest.warns(UserWarning, match="mode 0"):
        split_entries(data, 0.3, seed=found, empty_slices="warn")


# --- standardisation and metrics ----------------------------------------------------------------


def test_global_standardizer_uses_training_values_and_inverts():
    train = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    s = Standardizer.fit(train, "global")
    assert s.mean == pytest.approx(3.0) and s.std == pytest.approx(float(np.std([1, 2, 3, 6])))
    z = s.transform(train)
    assert z.mean().abs() < 1e-12 and (z.std(unbiased=False) - 1).abs() < 1e-12
    other = torch.tensor([10.0, -4.0], dtype=torch.float64)
    torch.testing.assert_close(s.inverse(s.transform(other)), other)
    entries = Entries(torch.zeros(4, 2, dtype=torch.long), train)
    torch.testing.assert_close(s.apply(entries).values, z)


def test_none_standardizer_is_identity_and_constant_values_do_not_divide_by_zero():
    v = torch.tensor([3.0, 4.0])
    none = Standardizer.fit(v, "none")
    assert torch.equal(none.transform(v), v) and torch.equal(none.inverse(v), v)
    const = Standardizer.fit(torch.full((5,), 2.0), "global")
    assert const.std == 1.0 and torch.isfinite(const.transform(v)).all()
    with pytest.raises(ValueError, match="Unknown standardisation 'zscore'"):
        Standardizer.fit(v, "zscore")


def test_r2_and_rmse():
    rng = np.random.default_rng(0)
    t, p = rng.standard_normal(50), rng.standard_normal(50)
    tt, pp = torch.tensor(t), torch.tensor(p)
    expected_r2 = 1 - np.sum((t - p) ** 2) / np.sum((t - t.mean()) ** 2)
    assert r2_score(pp, tt).item() == pytest.approx(expected_r2)
    assert rmse(pp, tt).item() == pytest.approx(np.sqrt(np.mean((t - p) ** 2)))
    assert r2_score(tt, tt).item() == 1.0 and rmse(tt, tt).item() == 0.0
    assert r2_score(torch.full_like(tt, t.mean()), tt).item() == pytest.approx(0.0, abs=1e-12)
    const = torch.ones(4)
    assert r2_score(const, const).item() == 1.0 and r2_score(const * 2, const).item() == 0.0
    with pytest.raises(ValueError, match="shape"):
        rmse(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="empty"):
        r2_score(torch.ones(0), torch.ones(0))


def test_metrics_on_original_scale_through_standardizer():
    data = load_tensor("synthetic:shape=8x9x10,rank=2,noise=0.05", dtype=torch.float64)
    shifted = from_array(data.tensor.numpy() * 100.0 + 50.0, "shifted", dtype=torch.float64)
    split = split_entries(shifted, 0.5, seed=0)
    s = Standardizer.fit(split.train.values, "global")
    # a perfect model on the standardised scale is perfect on the original scale after inverse
    pred = s.inverse(s.transform(split.test.values))
    assert r2_score(pred, split.test.values).item() == pytest.approx(1.0)
    assert rmse(pred, split.test.values).item() < 1e-9


def test_masked_and_bfloat16_arrays_keep_their_missing_entries():
    # np.asarray dropped a masked array's mask, so masked fill values were used as observed data
    data = np.ma.masked_array(np.arange(12.0).reshape(3, 4), mask=np.zeros((3, 4), bool))
    data.mask[1, 2] = data.mask[0, 0] = True
    t = from_array(data, "m")
    assert t.n_known == 10 and not t.known[1, 2] and not t.known[0, 0]
    assert math.isnan(float(t.tensor[1, 2])) and float(t.tensor[2, 3]) == 11.0
    b = from_array(torch.tensor([[1.5, float("nan")], [2.0, 3.0]], dtype=torch.bfloat16), "b")
    assert b.n_known == 3 and float(b.tensor[0, 0]) == 1.5
