"""Observed entries as coordinates (issue 13): loading every input kind, one-line errors for bad files,
flat indices, synthetic coordinate tensors, dense views and splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tensordas.cli import main
from tensordas.data import (
    TensorData,
    flat_index,
    from_array,
    from_coordinates,
    from_sparse,
    load_tensor,
    save_coordinates,
    split_entries,
    synthetic_tensor,
)

SHAPE = (7, 5, 6)


def observed(seed: int = 0, frac: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dense tensor with NaN at unknown cells, and its known entries listed independently (nested loops)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPE)
    x[rng.random(SHAPE) > frac] = np.nan
    coords = [(i, j, k) for i in range(SHAPE[0]) for j in range(SHAPE[1]) for k in range(SHAPE[2])]
    coords = [c for c in coords if np.isfinite(x[c])]  # row-major order by construction
    return x, np.array(coords, dtype=np.int64), np.array([x[c] for c in coords])


def assert_entries(data: TensorData, indices: np.ndarray, values: np.ndarray, shape=SHAPE) -> None:
    assert data.shape == tuple(shape)
    assert data.indices.dtype == torch.int64
    np.testing.assert_array_equal(data.indices.numpy(), indices)
    np.testing.assert_allclose(data.values.double().numpy(), values, rtol=1e-6)


def shuffled(indices: np.ndarray, values: np.ndarray, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(len(values))
    return indices[perm], values[perm]


def table(indices: np.ndarray, values: np.ndarray, names=("user", "item", "time", "rating")) -> pd.DataFrame:
    cols = {names[k]: indices[:, k] for k in range(indices.shape[1])}
    return pd.DataFrame({**cols, names[-1]: values})


# --- every input kind gives the same known entries ----------------------------------------------


def test_every_input_kind_gives_the_same_entries_in_row_major_order(tmp_path):
    x, idx, vals = observed()
    sidx, svals = shuffled(idx, vals)  # files and tensors in any row order
    np.savez(tmp_path / "c.npz", indices=sidx, values=svals, shape=np.array(SHAPE))
    table(sidx, svals).to_csv(tmp_path / "c.csv", index=False)
    table(sidx, svals).to_parquet(tmp_path / "c.parquet")
    coo = torch.sparse_coo_tensor(torch.from_numpy(sidx.T), torch.from_numpy(svals), SHAPE)  # uncoalesced
    np.save(tmp_path / "d.npy", x)
    sources = {
        "dense file": tmp_path / "d.npy",
        "dense array": x,
        "npz": tmp_path / "c.npz",
        "csv": str(tmp_path / "c.csv"),
        "parquet": tmp_path / "c.parquet",
        "sparse coo": coo,
        "coalesced coo": coo.coalesce(),
        "sparse csr": coo.coalesce()[0].to_sparse_csr(),
        "numpy triple": (sidx, svals, SHAPE),
        "torch triple": (torch.from_numpy(sidx), torch.from_numpy(svals), torch.Size(SHAPE)),
    }
    for kind, source in sources.items():
        data = load_tensor(source, dtype=torch.float64)
        if kind == "sparse csr":  # a 2-D slice of the same entries
            keep = idx[:, 0] == 0
            assert_entries(data, idx[keep][:, 1:], vals[keep], SHAPE[1:])
            continue
        assert_entries(data, idx, vals)
    assert load_tensor(tmp_path / "c.npz").name == "c.npz" and load_tensor(tmp_path / "c.csv").name == "c.csv"


def test_value_column_selects_the_values_and_the_rest_are_modes(tmp_path):
    _, idx, vals = observed(seed=2)
    frame = pd.DataFrame({"rating": vals, "user": idx[:, 0], "item": idx[:, 1], "time": idx[:, 2]})
    frame.to_csv(tmp_path / "r.csv", index=False)
    data = load_tensor(tmp_path / "r.csv", value_column="rating", dtype=torch.float64)
    # the shape comes from the largest index of each mode
    assert_entries(data, idx, vals, tuple(int(m) + 1 for m in idx.max(axis=0)))
    with pytest.raises(ValueError, match=r"r\.csv: no column 'score' \(columns: rating, user, item, time\)"):
        load_tensor(tmp_path / "r.csv", value_column="score")
    with pytest.raises(ValueError, match="value column applies to .csv/.parquet"):
        load_tensor("covid19", value_column="rating")


def test_dense_inputs_keep_the_entries_and_order_of_torch_nonzero():
    # What split_entries used before coordinates: torch.nonzero of the mask, values in the same order.
    x, _, _ = observed(seed=3, frac=0.7)
    data = from_array(x, "x")
    known = torch.isfinite(torch.from_numpy(x))
    assert torch.equal(data.indices, torch.nonzero(known))
    assert torch.equal(data.values, torch.from_numpy(x)[known].to(torch.get_default_dtype()))


def test_split_of_coordinates_partitions_the_entries_whatever_their_file_order(tmp_path):
    _, idx, vals = observed(seed=4, frac=0.6)
    a = from_coordinates(idx, vals, SHAPE)
    b = from_coordinates(*shuffled(idx, vals, seed=9), SHAPE)
    sa, sb = split_entries(a, 0.3, seed=5, validation=0.2), split_entries(b, 0.3, seed=5, validation=0.2)
    for pa, pb in ((sa.train, sb.train), (sa.test, sb.test), (sa.val, sb.val)):
        assert torch.equal(pa.indices, pb.indices) and torch.equal(pa.values, pb.values)
    lookup = {tuple(i): v for i, v in zip(idx.tolist(), vals.tolist())}
    rows = [tuple(r) for p in (sa.train, sa.test, sa.val) for r in p.indices.tolist()]
    assert sorted(rows) == sorted(lookup)  # every observed entry exactly once
    for p in (sa.train, sa.test, sa.val):
        got = p.values.double().numpy()
        want = np.array([lookup[tuple(r)] for r in p.indices.tolist()])
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_saved_coordinates_load_back(tmp_path):
    data = load_tensor("synthetic:shape=40x30x20,rank=2,nnz=500,seed=3")
    back = load_tensor(save_coordinates(data, tmp_path / "s.npz"))
    assert torch.equal(back.indices, data.indices) and torch.equal(back.values, data.values)
    assert back.shape == data.shape


# --- synthetic coordinate tensors ---------------------------------------------------------------


def test_synthetic_entries_are_the_dense_signal_at_distinct_cells():
    data = load_tensor("synthetic:shape=9x8x7,rank=3,seed=5,nnz=100", dtype=torch.float64)
    dense = synthetic_tensor((9, 8, 7), 3, noise=0.0, seed=5)  # same factors, formed densely by TensorLy
    idx = data.indices.numpy()
    assert len({tuple(r) for r in idx.tolist()}) == 100
    assert (np.diff(np.ravel_multi_index(idx.T, (9, 8, 7))) > 0).all()  # row-major order
    np.testing.assert_allclose(data.values.numpy(), dense[tuple(idx.T)], rtol=1e-12)
    assert data.name == "synthetic:shape=9x8x7,rank=3,noise=0,seed=5,nnz=100"
    again = load_tensor("synthetic:shape=9x8x7,rank=3,seed=5,nnz=100", dtype=torch.float64)
    other = load_tensor("synthetic:shape=9x8x7,rank=3,seed=6,nnz=100", dtype=torch.float64)
    assert torch.equal(again.values, data.values) and not torch.equal(other.indices, data.indices)


def test_synthetic_entries_of_a_huge_tensor_cost_only_their_number():
    data = load_tensor("synthetic:shape=100000x100000x100000,rank=2,noise=0.1,nnz=2000")  # 1e15 cells
    assert data.n_known == 2000 and data.n_cells == 10**15
    noisy = load_tensor("synthetic:shape=100000x100000x100000,rank=2,noise=0.1,nnz=2000", dtype=torch.float64)
    clean = load_tensor("synthetic:shape=100000x100000x100000,rank=2,noise=0,nnz=2000", dtype=torch.float64)
    rel = float((noisy.values - clean.values).norm() / clean.values.norm())
    assert 0.08 < rel < 0.12  # noise relative to the signal's RMS at the drawn entries
    with pytest.raises(ValueError, match="dense copy"):
        data.to_dense()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("synthetic:shape=3x3,rank=2,nnz=10", "Invalid synthetic nnz 10"),
        ("synthetic:shape=3x3,rank=2,nnz=0", "Invalid synthetic nnz 0"),
        ("synthetic:shape=3x3,rank=2,nnz=x", "Invalid synthetic spec"),
        ("synthetic:shape=100000x100000,rank=2", "add nnz=N"),
    ],
)
def test_synthetic_nnz_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        load_tensor(spec)


# --- flat indices and dense views ---------------------------------------------------------------


def test_flat_index_matches_numpy_ravel_multi_index_for_numpy_and_torch():
    rng = np.random.default_rng(0)
    shape = (13, 1, 7, 300)
    idx = np.stack([rng.integers(0, s, 50) for s in shape], axis=1)
    expected = np.ravel_multi_index(idx.T, shape)
    np.testing.assert_array_equal(flat_index(idx, shape), expected)
    got = flat_index(torch.from_numpy(idx), shape)
    assert got.dtype == torch.int64 and np.array_equal(got.numpy(), expected)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        flat_index(idx[:, :3], (2**40, 2**40, 2))


def test_more_cells_than_int64_still_sorts_and_finds_duplicates():
    shape = (2**40, 2**40, 3)
    idx = np.array([[5, 2**39, 2], [5, 7, 0], [0, 2**40 - 1, 1]], dtype=np.int64)
    data = from_coordinates(idx, np.array([1.0, 2.0, 3.0]), shape)
    np.testing.assert_array_equal(data.indices.numpy(), idx[[2, 1, 0]])
    with pytest.raises(ValueError, match=r"duplicate coordinates \(5, 7, 0\) at rows 1 and 3"):
        from_coordinates(np.vstack([idx, idx[1:2]]), np.arange(4.0), shape)


def test_dense_view_of_coordinates():
    x, idx, vals = observed(seed=6)
    data = from_coordinates(*shuffled(idx, vals), SHAPE, dtype=torch.float64)
    tensor, known = data.to_dense()
    np.testing.assert_array_equal(known.numpy(), np.isfinite(x))
    np.testing.assert_allclose(tensor.numpy()[np.isfinite(x)], x[np.isfinite(x)])
    assert torch.isnan(tensor[~known]).all()
    assert torch.equal(data.known, known) and torch.equal(torch.isnan(data.tensor), ~known)


# --- bad inputs: one line naming the file and the problem ---------------------------------------

GOOD_IDX = np.array([[0, 1, 2], [3, 4, 5], [6, 0, 1]])
GOOD_VALS = np.array([1.0, 2.0, 3.0])


def _npz(**overrides):
    arrays = {"indices": GOOD_IDX, "values": GOOD_VALS, "shape": np.array(SHAPE)}
    arrays.update(overrides)
    return {k: v for k, v in arrays.items() if v is not None}


BAD_NPZ = {
    "out of range": (
        _npz(indices=np.array([[0, 1, 2], [7, 0, 0], [1, 1, 1]])),
        r"index 7 in mode 0 \(row 1\) is out of range for size 7",
    ),
    "negative": (_npz(indices=np.array([[0, 1, 2], [1, -1, 0], [1, 1, 1]])), r"negative index -1 in mode 1 \(row 1\)"),
    "duplicate": (
        _npz(indices=np.array([[3, 4, 5], [0, 1, 2], [3, 4, 5]])),
        r"duplicate coordinates \(3, 4, 5\) at rows 0 and 2",
    ),
    "nan": (_npz(values=np.array([1.0, np.nan, 3.0])), "NaN value at row 1"),
    "inf": (_npz(values=np.array([1.0, 2.0, -np.inf])), "infinite value at row 2"),
    "too many modes": (_npz(indices=np.zeros((3, 4), dtype=int)), r"indices have shape \(3, 4\), expected \(nnz, 3\)"),
    "torch layout": (_npz(indices=GOOD_IDX[:, :2].T.copy(), shape=np.array([7, 5])), "transpose"),
    "float indices": (_npz(indices=GOOD_IDX.astype(float)), "indices must be integers, got dtype float64"),
    "values length": (_npz(values=np.ones(4)), r"values have shape \(4,\), expected \(3,\)"),
    "values 2-D": (_npz(values=np.ones((3, 1))), r"values have shape \(3, 1\)"),
    "string values": (_npz(values=np.array(["a", "b", "c"])), "values must be real numbers"),
    "no shape": (_npz(shape=None), "missing shape"),
    "1-mode shape": (_npz(shape=np.array([7])), "shape must be at least 2 positive integers"),
    "zero shape": (_npz(shape=np.array([7, 0, 6])), "shape must be at least 2 positive integers"),
    "float shape": (_npz(shape=np.array([7.0, 5.0, 6.0])), "shape must be at least 2 positive integers"),
    "empty": (_npz(indices=np.zeros((0, 3), dtype=int), values=np.zeros(0)), "no entries"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_coordinate_npz_is_one_line_naming_the_file(case, tmp_path):
    arrays, match = BAD_NPZ[case]
    path = tmp_path / f"bad_{case.replace(' ', '_')}.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match) as err:
        load_tensor(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


BAD_TABLES = {
    "missing value column": ("a,b,c\n0,1,2.0\n", {"value_column": "rating"}, "no column 'rating'"),
    "float index": ("a,b,v\n0,1.5,2.0\n1,0,1.0\n", {}, "index column 'b' has missing or non-integer values"),
    "missing index": ("a,b,v\n0,,2.0\n1,0,1.0\n", {}, "index column 'b' has missing or non-integer values"),
    "text index": ("a,b,v\n0,x,2.0\n", {}, "index column 'b' has dtype"),
    "text value": ("a,b,v\n0,1,high\n", {}, "value column 'v' is not numeric"),
    "nan value": ("a,b,v\n0,1,2.0\n1,1,\n", {}, "NaN value at row 1"),
    "negative": ("a,b,v\n0,1,2.0\n-1,1,3.0\n", {}, "negative index -1 in mode 0"),
    "duplicate": ("a,b,v\n0,1,2.0\n0,1,3.0\n", {}, r"duplicate coordinates \(0, 1\)"),
    "no header": ("0,1,2.0\n1,1,3.0\n", {}, "add a header row"),
    "one index column": ("a,v\n0,2.0\n", {}, "need at least 2 index columns and a value column"),
    "no rows": ("a,b,v\n", {}, "no entries"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_bad_coordinate_table_is_one_line_naming_the_file(case, suffix, tmp_path):
    text, kwargs, match = BAD_TABLES[case]
    path = tmp_path / f"bad{suffix}"
    (tmp_path / "bad.csv").write_text(text)
    if suffix == ".parquet":
        if case == "no header":
            pytest.skip("parquet columns always have names")
        pd.read_csv(tmp_path / "bad.csv").to_parquet(path)
    with pytest.raises(ValueError, match=match) as err:
        load_tensor(path, **kwargs)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


def test_unreadable_coordinate_files_name_the_file(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"could not read .*junk\.parquet"):
        load_tensor(tmp_path / "junk.parquet")
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        load_tensor(tmp_path / "nothere.csv")


def test_bad_in_memory_coordinates_and_sparse_tensors():
    idx = torch.tensor([[0, 1], [2, 3], [0, 1]])
    coo = torch.sparse_coo_tensor(idx.T, torch.tensor([1.0, 2.0, 3.0]), (4, 4))  # uncoalesced, repeated (0, 1)
    with pytest.raises(ValueError, match=r"sparse tensor: duplicate coordinates \(0, 1\) at rows 0 and 2"):
        from_sparse(coo)
    hybrid = torch.sparse_coo_tensor(idx[:2].T, torch.ones(2, 3), (4, 4, 3))
    with pytest.raises(ValueError, match="hybrid sparse"):
        load_tensor(hybrid)
    with pytest.raises(ValueError, match=r"coordinates: index 4 in mode 1 \(row 1\) is out of range for size 4"):
        load_tensor((torch.tensor([[0, 1], [2, 4]]), torch.ones(2), (4, 4)))
    with pytest.raises(ValueError, match="values overflow torch.float32"):
        load_tensor((np.array([[0, 1]]), np.array([1e300]), (4, 4)))
    with pytest.raises(ValueError, match="cannot load a tensor from dict"):
        load_tensor({"indices": idx})


@pytest.mark.parametrize(
    ("write", "args", "needle"),
    [
        (lambda p: np.savez(p / "d.npz", **_npz(values=np.array([1.0, np.nan, 3.0]))), ["--data", "{p}/d.npz"], "NaN"),
        (lambda p: (p / "t.csv").write_text("a,b,c\n0,1,2\n"), ["--data", "{p}/t.csv", "--value-column", "z"], "'z'"),
        (lambda p: None, ["--data", "covid19", "--value-column", "z"], "value column"),
    ],
)
def test_cli_bad_coordinate_input_is_one_line_and_nonzero(write, args, needle, tmp_path, capsys):
    write(tmp_path)
    args = [a.format(p=tmp_path) for a in args]
    status = main(["complete", *args, "--steps", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status != 0
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_completion_reads_a_table_through_its_value_column(tmp_path):
    from tensordas.tasks.completion import CompletionConfig, run_completion

    _, idx, vals = observed(seed=7, frac=0.9)
    frame = table(idx, vals)[["user", "rating", "item", "time"]]  # the values are not the last column
    frame.to_parquet(tmp_path / "r.parquet")
    cfg = CompletionConfig(data=str(tmp_path / "r.parquet"), value_column="rating", model="cp", rank=2, steps=3)
    assert cfg.settings()["value_column"] == "rating"
    assert "value_column" not in CompletionConfig().settings()  # runs stored before the option stay valid
    records = [r.record for r in run_completion(cfg)]
    assert [r["optimizer"] for r in records] == ["das(adam)", "als (tensorly)"]
    assert records[0]["data"] == "r.parquet" and all(np.isfinite(r["test_r2"]) for r in records)
    with pytest.raises(ValueError, match="no column 'nope'"):
        run_completion(CompletionConfig(data=str(tmp_path / "r.parquet"), value_column="nope"))
    with pytest.raises(ValueError, match="index column 'rating' has missing or non-integer values"):
        run_completion(CompletionConfig(data=str(tmp_path / "r.parquet")))  # the last column is not the value
