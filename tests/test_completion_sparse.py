"""The completion data path on coordinates (issue 13): bounded-batch prediction, no integer matrix
products, the same numbers on the dense and the sparse path (and on CUDA when there is one), the dense
budget of TensorLy's ALS and warm start, and a run on a tensor whose cells could never be allocated."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tensordas.cli import main
from tensordas.data import (
    Entries,
    EntryPredictor,
    Standardizer,
    dense_budget_note,
    dense_observed,
    dense_peak_bytes,
    evaluate_entries,
    from_array,
    load_tensor,
    save_coordinates,
    split_entries,
)
from tensordas.data import predict as predict_module
from tensordas.models import CPModel, TRModel, TTModel, TuckerModel
from tensordas.tasks import completion as comp
from tensordas.tasks.completion import CompletionConfig, CompletionExperiment, completion_table, run_completion

MODELS = {"cp": (CPModel, 3), "tucker": (TuckerModel, (3, 2, 3)), "tt": (TTModel, 2), "tr": (TRModel, 2)}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
SYNTH = "synthetic:shape=9x8x7,rank=2,noise=0.1,seed=1"


def numpy_tensor(model) -> np.ndarray:
    """The model's full tensor rebuilt from its cores with einsum (independent of TensorLy and entries())."""
    cores = [p.detach().double().cpu().numpy() for p in model.parameters()]
    if isinstance(model, CPModel):
        return np.einsum("ir,jr,kr->ijk", *cores)
    if isinstance(model, TuckerModel):
        return np.einsum("abc,ia,jb,kc->ijk", *cores)
    if isinstance(model, TTModel):  # boundary ranks x = y = 1
        return np.einsum("xia,ajb,bky->ijk", *cores)
    return np.einsum("aib,bjc,cka->ijk", *cores)  # the trace of the ring


# --- EntryPredictor -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_dense_sampled_and_batched_predictions_match_an_independent_reconstruction(name):
    cls, rank = MODELS[name]
    shape = (9, 8, 7)
    model = cls(shape, rank, std="balanced", generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    idx = torch.from_numpy(np.argwhere(np.random.default_rng(0).random(shape) < 0.5))
    want = numpy_tensor(model)[tuple(idx.numpy().T)]
    for dense in (True, False):
        for batch in (1000, 7):
            p = EntryPredictor(model, shape, dense=dense, batch_size=batch)
            with torch.no_grad():
                np.testing.assert_allclose(p(idx).numpy(), want, rtol=1e-10, atol=1e-12)
        out = EntryPredictor(model, shape, dense=dense)(idx)  # with gradients: one batch, differentiable
        assert out.requires_grad
        np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-10, atol=1e-12)


def test_prediction_without_gradients_never_exceeds_the_batch_size():
    model = CPModel((50, 40, 30), 2, std="balanced")
    sizes = []
    real = model.entries
    model.entries = lambda idx: sizes.append(idx.shape[0]) or real(idx)
    idx = torch.from_numpy(np.argwhere(np.random.default_rng(1).random((50, 40, 30)) < 0.1))
    p = EntryPredictor(model, model.shape, batch_size=500)
    assert p.uses_dense(idx.shape[0])  # 10% of 60,000 cells: would reconstruct by default
    p.dense = False
    with torch.no_grad():
        out = p(idx)
    assert out.shape == (idx.shape[0],) and max(sizes) <= 500 and sum(sizes) == idx.shape[0]
    assert not p.uses_dense(idx.shape[0]) and not EntryPredictor(model, model.shape).uses_dense(60_000 // 65)
    assert not EntryPredictor(model, (3000, 3000, 1000)).uses_dense(10**9)  # 9e9 cells: never dense
    with pytest.raises(ValueError, match="batch_size"):
        EntryPredictor(model, model.shape, batch_size=0)


@pytest.mark.parametrize("batch", [1000, 7])
def test_batched_metrics_match_numpy_on_the_original_scale(batch):
    shape = (9, 8, 7)
    model = TRModel(shape, 2, std="balanced", generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    data = load_tensor(SYNTH, dtype=torch.float64)
    test = split_entries(data, 0.5, seed=0).test
    std = Standardizer(method="global", mean=3.0, std=2.5)
    pred = numpy_tensor(model)[tuple(test.indices.numpy().T)] * 2.5 + 3.0
    t = test.values.numpy()
    r2, err = evaluate_entries(EntryPredictor(model, shape, dense=False, batch_size=batch), test, std)
    assert r2 == pytest.approx(1 - np.sum((t - pred) ** 2) / np.sum((t - t.mean()) ** 2), rel=1e-10)
    assert err == pytest.approx(np.sqrt(np.mean((t - pred) ** 2)), rel=1e-10)
    const = Entries(test.indices, torch.full_like(test.values, 3.0))  # a constant target: sklearn's rule
    zero = TRModel(shape, 2, std=1e-30, dtype=torch.float64)  # predicts ~0 on the model scale: 3.0 after inverse
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    assert evaluate_entries(EntryPredictor(zero, shape, batch_size=batch), const, std) == (1.0, 0.0)


# --- no integer matrix product anywhere in the completion path ----------------------------------

_PRODUCTS = {"mm", "mv", "addmv", "addmm", "bmm", "baddbmm", "dot", "vdot", "matmul", "addbmm", "addr", "outer"}


class NoIntegerProducts(TorchDispatchMode):
    """Fails on any aten matrix/vector product with an integer operand (none has a CUDA kernel)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _PRODUCTS:
            for a in args:
                if isinstance(a, torch.Tensor) and not (a.is_floating_point() or a.is_complex()):
                    raise AssertionError(f"integer {name} on {a.dtype}: no CUDA kernel")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("batch_size", [None, 64])
def test_completion_runs_without_integer_matrix_products(name, batch_size):
    cfg = CompletionConfig(
        data=SYNTH, model=name, rank=MODELS[name][1], steps=4, eval_every=2, batch_size=batch_size, als=False
    )
    exp = CompletionExperiment.load(cfg)
    with NoIntegerProducts():
        res = exp.run(cfg.optimizer_configs[0], 0)
    assert math.isfinite(res.record["test_r2"])


def test_the_integer_product_guard_can_fail():
    with pytest.raises(AssertionError, match="integer mv"), NoIntegerProducts():
        torch.tensor([[1, 2]]) @ torch.tensor([3, 4])


# --- dense and sparse paths: same numbers, on CPU and CUDA --------------------------------------


def run_record(cfg: CompletionConfig, data, dense_limit: int, monkeypatch) -> dict:
    monkeypatch.setattr(predict_module, "DENSE_LIMIT", dense_limit)
    exp = CompletionExperiment(cfg, data)
    rec = exp.run(cfg.optimizer_configs[0], 0).record
    return {k: rec[k] for k in ("test_r2", "test_rmse", "train_loss", "Q")}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(MODELS))
def test_sparse_path_on_device_matches_the_dense_path_on_cpu_in_float64(name, device, tmp_path, monkeypatch):
    dense_input = load_tensor(SYNTH, dtype=torch.float64)
    rng = np.random.default_rng(0)
    keep = rng.random(dense_input.n_known) < 0.8  # a partly observed tensor, as coordinates
    x = dense_input.to_dense()[0].numpy()
    x[tuple(dense_input.indices[~torch.from_numpy(keep)].numpy().T)] = np.nan
    sparse_file = save_coordinates(from_array(x, "x", torch.float64), tmp_path / "x.npz")
    np.save(tmp_path / "x.npy", x)
    kw = dict(model=name, rank=MODELS[name][1], steps=30, eval_every=10, dtype="float64", als=False, lr=0.02)
    ref_cfg = CompletionConfig(data=str(tmp_path / "x.npy"), device="cpu", **kw)
    reference = run_record(ref_cfg, CompletionExperiment.load(ref_cfg).data, 10**9, monkeypatch)  # dense path
    for source in (sparse_file, tmp_path / "x.npy"):
        cfg = CompletionConfig(data=str(source), device=device, **kw)
        got = run_record(cfg, CompletionExperiment.load(cfg).data, 0, monkeypatch)  # sparse path
        for key, value in reference.items():
            assert got[key] == pytest.approx(value, rel=1e-7, abs=1e-9), (source, key)


def test_dense_inputs_split_as_before_coordinates():
    """The split of a dense data set is the one of torch.nonzero on its mask (the data path before issue 13)."""
    data = load_tensor("il2")
    tensor, known = data.to_dense()
    split = split_entries(data, 0.5, seed=3, validation=0.2)
    indices, values = torch.nonzero(known), tensor[known]
    perm = torch.randperm(len(values), generator=torch.Generator().manual_seed(3))
    n_test = round(0.5 * len(values))
    n_val = round(0.2 * (len(values) - n_test))
    for part, pos in ((split.test, perm[:n_test]), (split.val, perm[n_test : n_test + n_val])):
        pos = pos.sort().values
        assert torch.equal(part.indices, indices[pos]) and torch.equal(part.values, values[pos])


# --- TensorLy's dense computations: the budget ---------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_dense_allocations_stay_within_the_estimate_of_the_budget(name):
    data = load_tensor("synthetic:shape=40x30x20,rank=2,noise=0.1")
    split = split_entries(data, 0.7, seed=0)
    cls, rank = MODELS[name]
    # Fewer iterations than the default: every iteration allocates the same, so the peak is reached early.
    fewer = {"cp": {"n_iter_max": 2, "svd_mask_repeats": 1}, "tucker": {"n_iter_max": 2}}
    tracemalloc.start()
    observed = dense_observed(data.shape, split.train.indices, split.train.values)
    cls.from_tensor(observed, rank, **fewer.get(name, {"n_iter_max": 2} if name == "tr" else {}))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # NumPy's allocations (LAPACK workspaces are not traced: the benchmark measures RSS) stay under the estimate.
    assert peak <= dense_peak_bytes(data.shape, name), (peak, dense_peak_bytes(data.shape, name))


@pytest.mark.parametrize("name", list(MODELS))
def test_tensorly_warm_start_is_unchanged(name):
    cfg = CompletionConfig(data="synthetic:shape=30x20x10,rank=2,noise=0.1", model=name, rank=2, init="tensorly")
    exp = CompletionExperiment.load(cfg)
    split = exp.split(0)
    model = comp.make_model(cfg, exp.data, split, 0)
    # The previous construction: a dense torch tensor with NaN, standardised, and an explicit mask.
    observed = torch.full(exp.data.shape, float("nan"), dtype=torch.float64)
    observed[tuple(split.train.indices.T)] = split.train.values.double()
    std = Standardizer.fit(split.train.values, cfg.standardize)
    old = type(model).from_tensor(
        std.transform(observed).numpy(), 2, mask=~torch.isnan(observed), random_state=0, dtype=torch.float32
    )
    for a, b in zip(model.parameters(), old.parameters()):
        assert torch.equal(a, b)


def test_dense_observed_places_values_and_nan():
    idx = torch.tensor([[0, 1], [2, 0]])
    out = dense_observed((3, 2), idx, torch.tensor([5.0, 7.0]))
    want = np.full((3, 2), np.nan)
    want[0, 1], want[2, 0] = 5.0, 7.0
    np.testing.assert_array_equal(out, want)


def test_budget_note_is_one_line_and_scales_with_cells():
    assert dense_budget_note((438, 6, 11), "tucker", 2.0, "masked ALS") is None
    note = dense_budget_note((3000, 3000, 1000), "cp", 2.0, "masked ALS")
    assert note.startswith("masked ALS skipped:") and "3000x3000x1000" in note and "2 GB" in note
    assert "\n" not in note
    assert dense_peak_bytes((20, 20, 20), "cp") == 8 * dense_peak_bytes((10, 10, 10), "cp")


def test_als_over_the_budget_is_a_skipped_row_with_a_note(tmp_path, capsys):
    cfg = CompletionConfig(data=SYNTH, model="cp", rank=2, steps=3, optimizers=("base",), dense_budget_gb=1e-6)
    results = run_completion(cfg, out_dir=tmp_path)
    (als,) = [r.record for r in results if r.record.get("algorithm") == "als"]
    assert als["skipped"].startswith("masked ALS skipped") and als["test_r2"] is None
    assert completion_table(results, cfg).caption == als["skipped"]
    fine = CompletionConfig(data=SYNTH, model="cp", rank=2, steps=3, optimizers=("base",))
    assert completion_table(run_completion(fine), fine).caption is None
    # The skipped row is not stored as a finished run: a larger budget computes it.
    again = run_completion(fine, out_dir=tmp_path)
    assert [r.record.get("skipped") for r in again] == [None, None]
    assert math.isfinite(again[-1].record["test_r2"])
    # tensorly init over the budget: a clear error, not an allocation.
    big = CompletionConfig(data=SYNTH, model="cp", rank=2, init="tensorly", dense_budget_gb=1e-6)
    exp = CompletionExperiment.load(big)
    with pytest.raises(ValueError, match="init='tensorly' skipped: TensorLy needs a dense copy"):
        comp.make_model(big, exp.data, exp.split(0), 0)
    with pytest.raises(ValueError, match="dense_budget_gb"):
        CompletionConfig(dense_budget_gb=-1.0)


# --- a tensor whose cells could never be allocated ----------------------------------------------


def test_cli_completes_a_tensor_of_1e12_cells_from_a_coordinate_file(tmp_path, capsys):
    # 30 entries per slice of each mode: every held-out entry has observed neighbours in its slices.
    data = load_tensor("synthetic:shape=1000x1000x1000x1000,rank=2,noise=0.1,nnz=30000,seed=2")
    path = save_coordinates(data, tmp_path / "huge.npz")
    out = tmp_path / "o"
    args = ["complete", "--data", str(path), "--model", "cp", "--rank", "2", "--optimizer", "base,das"]
    args += ["--missing", "0.2", "--steps", "5", "--batch-size", "256", "--eval-every", "2", "--no-progress"]
    status = main([*args, "--out", str(out)])
    text = capsys.readouterr()
    assert status == 0, text.err
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["optimizer"] for r in records] == ["adam", "das(adam)", "als (tensorly)"]
    assert all(math.isfinite(r["test_rmse"]) for r in records[:2])
    assert records[2]["skipped"] and records[2]["test_r2"] is None
    assert "masked ALS skipped" in " ".join(text.out.split())  # the note under the table
