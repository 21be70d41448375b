"""CP, Tucker, TT and TR models: reconstruction against TensorLy (NumPy backend) and hand einsums,
scale invariance, sampled entries, initialisation, TensorLy warm starts and rank validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorly as tl
import torch
from tensorly.cp_tensor import cp_to_tensor
from tensorly.tr_tensor import tr_to_tensor
from tensorly.tt_tensor import tt_to_tensor
from tensorly.tucker_tensor import tucker_to_tensor

from tensordas.core_groups import find_core_groups
from tensordas.models import CPModel, TRModel, TTModel, TuckerModel

F64 = torch.float64

# (model class, shape, rank) cases covering 2, 3 and 4 modes and int / per-mode ranks.
CASES = [
    (CPModel, (4, 5, 6), 3),
    (CPModel, (3, 7), 2),
    (CPModel, (2, 3, 4, 5), 4),
    (TuckerModel, (4, 5, 6), [2, 3, 4]),
    (TuckerModel, (6, 7), 3),
    (TuckerModel, (2, 3, 4, 5), 2),
    (TTModel, (4, 5, 6), [2, 3]),
    (TTModel, (3, 7), 2),
    (TTModel, (2, 3, 4, 5), [1, 2, 3, 4, 1]),
    (TRModel, (4, 5, 6), [2, 3, 2]),
    (TRModel, (3, 7), 2),
    (TRModel, (2, 3, 4, 5), [2, 3, 1, 2]),
]
IDS = [f"{c.__name__}-{'x'.join(map(str, s))}" for c, s, _ in CASES]


def make(cls, shape, rank, seed=0, **kw):
    return cls(shape, rank, generator=torch.Generator().manual_seed(seed), dtype=F64, **kw)


def cores(model) -> list[torch.Tensor]:
    return list(model.core_groups()[0].cores)


def numpy_oracle(model) -> np.ndarray:
    """TensorLy's reconstruction on NumPy copies of the cores, with the NumPy backend."""
    arrays = [c.detach().numpy().copy() for c in cores(model)]
    with tl.backend_context("numpy", local_threadsafe=True):
        if isinstance(model, CPModel):
            return cp_to_tensor((None, arrays))
        if isinstance(model, TuckerModel):
            return tucker_to_tensor((arrays[0], arrays[1:]))
        if isinstance(model, TTModel):
            return tt_to_tensor(arrays)
        return tr_to_tensor(arrays)


def einsum_oracle(model) -> torch.Tensor:
    """Independent hand-written reconstruction (3-mode models only)."""
    c = [t.detach() for t in cores(model)]
    if isinstance(model, CPModel):
        return torch.einsum("ir,jr,kr->ijk", *c)
    if isinstance(model, TuckerModel):
        return torch.einsum("abc,ia,jb,kc->ijk", *c)
    if isinstance(model, TTModel):
        return torch.einsum("xia,ajb,bky->ijk", *c).reshape(model.shape)
    return torch.einsum("aib,bjc,cka->ijk", *c)


def random_indices(shape, n, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, s, (n,), generator=g) for s in shape], dim=1)


@pytest.mark.parametrize(("cls", "shape", "rank"), CASES, ids=IDS)
def test_reconstruction_matches_tensorly_numpy(cls, shape, rank):
    model = make(cls, shape, rank)
    out = model()
    assert out.shape == torch.Size(shape)
    np.testing.assert_allclose(out.detach().numpy(), numpy_oracle(model), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("cls", "shape", "rank"), [c for c in CASES if len(c[1]) == 3], ids=[i for i in IDS if i.count("x") == 2]
)
def test_reconstruction_matches_hand_einsum(cls, shape, rank):
    model = make(cls, shape, rank)
    torch.testing.assert_close(model().detach(), einsum_oracle(model), rtol=1e-10, atol=1e-10)


def test_forward_leaves_global_backend_alone():
    before = tl.get_backend()
    for cls, shape, rank in CASES[::3]:
        make(cls, shape, rank)()
    assert tl.get_backend() == before


@pytest.mark.parametrize(("cls", "shape", "rank"), CASES, ids=IDS)
def test_rescaling_with_unit_product_leaves_output_unchanged(cls, shape, rank):
    model = make(cls, shape, rank)
    idx = random_indices(shape, 20)
    before, before_entries = model().detach().clone(), model.entries(idx).detach().clone()
    group = cores(model)
    scales = [2.0, 0.25, 3.0, -0.5, 1.5][: len(group) - 1]
    scales.append(1.0 / math.prod(scales))
    with torch.no_grad():
        for c, s in zip(group, scales):
            c.mul_(s)
    torch.testing.assert_close(model().detach(), before, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.entries(idx).detach(), before_entries, rtol=1e-10, atol=1e-10)
    # ...and a product other than 1 does change it (the check above can fail).
    with torch.no_grad():
        group[0].mul_(2.0)
    assert not torch.allclose(model().detach(), before)


@pytest.mark.parametrize(("cls", "shape", "rank"), CASES, ids=IDS)
def test_entries_match_dense_indexing_values_and_gradients(cls, shape, rank):
    model = make(cls, shape, rank)
    idx = random_indices(shape, 64, seed=1)
    target = torch.randn(64, generator=torch.Generator().manual_seed(2), dtype=F64)

    dense = model()[tuple(idx.T)]
    sampled = model.entries(idx)
    torch.testing.assert_close(sampled, dense, rtol=1e-10, atol=1e-10)

    ((dense - target) ** 2).sum().backward()
    grads_dense = [c.grad.clone() for c in cores(model)]
    model.zero_grad()
    ((model.entries(idx) - target) ** 2).sum().backward()
    for g_dense, c in zip(grads_dense, cores(model)):
        torch.testing.assert_close(c.grad, g_dense, rtol=1e-10, atol=1e-10)


def test_entries_of_every_entry_equals_forward():
    model = make(TRModel, (3, 4, 5), 2)
    idx = torch.cartesian_prod(*(torch.arange(s) for s in model.shape))
    torch.testing.assert_close(model.entries(idx).reshape(model.shape), model().detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [CPModel, TuckerModel, TTModel, TRModel])
@pytest.mark.parametrize(
    "bad",
    [torch.zeros(5, 2, dtype=torch.long), torch.zeros(5, 3), torch.zeros(5, dtype=torch.long), [[0, 0, 0]]],
    ids=["wrong-width", "float", "1d", "list"],
)
def test_entries_rejects_bad_indices(cls, bad):
    model = make(cls, (3, 4, 5), 2)
    with pytest.raises(ValueError, match="indices"):
        model.entries(bad)


@pytest.mark.parametrize(("cls", "shape", "rank"), CASES, ids=IDS)
def test_core_groups_hold_every_parameter_once(cls, shape, rank):
    model = make(cls, shape, rank)
    groups = model.core_groups()
    assert len(groups) == 1
    assert {id(p) for p in groups[0].cores} == {id(p) for p in model.parameters()}
    assert len(groups[0].cores) == len(list(model.parameters()))
    assert len(find_core_groups(model)) == 1


@pytest.mark.parametrize(
    ("cls", "shape", "rank"),
    [
        (CPModel, (20, 30, 40), 5),
        (TuckerModel, (20, 30, 40), [3, 4, 5]),
        (TTModel, (20, 30, 40), [4, 6]),
        (TRModel, (20, 30, 40), 4),
        (TTModel, (6, 7, 8, 9), 5),
    ],
    ids=["cp", "tucker", "tt", "tr", "tt4"],
)
def test_balanced_init_equal_norms_unit_variance(cls, shape, rank):
    model = make(cls, shape, rank, std="balanced")
    norms = torch.stack([c.detach().pow(2).sum() for c in cores(model)])
    torch.testing.assert_close(norms, norms.mean().expand_as(norms), rtol=1e-10, atol=0)
    var = model().detach().var().item()
    assert 0.4 < var < 2.5, var


@pytest.mark.parametrize("cls", [CPModel, TuckerModel, TTModel, TRModel])
def test_core_scales_unbalance_norms_and_scale_output_by_their_product(cls):
    shape, rank = (5, 6, 7), 2
    base = make(cls, shape, rank, std="balanced")
    n = len(cores(base))
    scales = [3.0] + [0.5] * (n - 1)
    scaled = make(cls, shape, rank, std="balanced", core_scales=scales)
    for c0, c1, s in zip(cores(base), cores(scaled), scales):
        torch.testing.assert_close(c1.detach(), s * c0.detach())
    torch.testing.assert_close(scaled().detach(), math.prod(scales) * base().detach())
    with pytest.raises(ValueError, match="core_scales"):
        make(cls, shape, rank, core_scales=[1.0] * (n + 1))


def test_float_std_keeps_iid_gaussian_entries():
    g = torch.Generator().manual_seed(0)
    model = CPModel((50, 60), 40, std=0.3, generator=g, dtype=F64)
    values = torch.cat([f.detach().flatten() for f in model.factors])
    assert abs(values.std().item() - 0.3) < 0.02
    with pytest.raises(ValueError, match="std"):
        CPModel((3, 4), 2, std=-1.0)
    with pytest.raises(ValueError, match="std"):
        CPModel((3, 4), 2, std="unit")


# --- warm starts from TensorLy's decompositions ------------------------------------------------


def low_rank(cls, shape, rank, seed=3) -> torch.Tensor:
    return make(cls, shape, rank, seed=seed, std="balanced")().detach()


@pytest.mark.parametrize(
    ("cls", "shape", "rank", "kwargs", "tol"),
    [
        (CPModel, (6, 7, 8), 3, {"n_iter_max": 500, "tol": 1e-14}, 1e-6),
        (TuckerModel, (6, 7, 8), [2, 3, 4], {}, 1e-10),
        (TTModel, (6, 7, 8), [3, 4], {}, 1e-10),
        (TTModel, (3, 4, 5, 6), 3, {}, 1e-10),
        (TRModel, (6, 7, 8), [1, 2, 3], {"algorithm": "svd"}, 1e-10),  # TR-SVD is exact only for r_0 = 1
        # TR-ALS from a random start can stall in a local minimum (TensorLy's algorithm, seed-dependent);
        # with this target and random_state it converges. Fidelity for any seed: the test below.
        (TRModel, (6, 7, 8), 2, {"n_iter_max": 200, "tol": 1e-12, "seed": 4}, 1e-6),
    ],
    ids=["cp-als", "tucker-hooi", "tt-svd", "tt-svd-4", "tr-svd", "tr-als"],
)
def test_from_tensor_reconstructs_exact_low_rank(cls, shape, rank, kwargs, tol):
    kwargs = dict(kwargs)
    target = low_rank(cls, shape, rank, seed=kwargs.pop("seed", 3))
    model = cls.from_tensor(target, rank, **kwargs)
    assert model.shape == shape
    assert cores(model)[0].dtype == F64
    err = ((model().detach() - target).norm() / target.norm()).item()
    assert err < tol, err


@pytest.mark.parametrize(
    ("cls", "rank", "kwargs"),
    [
        (CPModel, 2, {"n_iter_max": 1000, "tol": 1e-14}),
        # HOOI from the SVD start stalls on this target; a random start converges (TensorLy's algorithm).
        (TuckerModel, 2, {"n_iter_max": 500, "tol": 1e-12, "init": "random"}),
    ],
    ids=["cp", "tucker"],
)
def test_from_tensor_with_mask_fits_observed_and_recovers_missing(cls, rank, kwargs):
    shape = (10, 11, 12)
    target = low_rank(cls, shape, rank)
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.6
    data = target.clone()
    data[~mask] = float("nan")  # the hidden entries must not matter, NaN included
    model = cls.from_tensor(data, rank, mask=mask, **kwargs)
    pred = model().detach()
    assert torch.isfinite(pred).all()
    err_missing = ((pred - target)[~mask].norm() / target[~mask].norm()).item()
    assert err_missing < 1e-3, err_missing


@pytest.mark.parametrize(
    ("cls", "rank", "fn", "kwargs"),
    [
        (CPModel, 3, "parafac", {"n_iter_max": 7}),
        (TuckerModel, [2, 3, 2], "tucker", {"n_iter_max": 3}),
        (TTModel, [2, 3], "tensor_train", {}),
        (TRModel, [2, 3, 2], "tensor_ring_als", {"n_iter_max": 5}),
        (TRModel, [1, 2, 3], "tensor_ring", {"algorithm": "svd"}),
    ],
    ids=["cp", "tucker", "tt", "tr-als", "tr-svd"],
)
def test_from_tensor_holds_tensorlys_result(cls, rank, fn, kwargs):
    """Whatever TensorLy converges to, the model reproduces its decomposition exactly (same seed)."""
    import tensorly.decomposition as tld

    x = torch.randn(5, 6, 7, generator=torch.Generator().manual_seed(0), dtype=F64)
    model = cls.from_tensor(x, rank, random_state=5, **kwargs)
    tl_kwargs = {k: v for k, v in kwargs.items() if k != "algorithm"}
    if cls is TTModel:
        ranks = [1, *rank, 1]
    elif cls is TRModel:
        ranks = [*rank, rank[0]]
    else:
        ranks = rank
    with tl.backend_context("numpy", local_threadsafe=True):
        dec = getattr(tld, fn)(x.numpy(), ranks, random_state=5, **tl_kwargs)
        expected = tl.cp_to_tensor(dec) if cls is CPModel else dec.to_tensor()
    np.testing.assert_allclose(model().detach().numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [TTModel, TRModel])
def test_from_tensor_without_mask_support_imputes_and_stays_finite(cls):
    target = low_rank(cls, (5, 6, 7), 2)
    data = target.clone()
    data[0, 0, 0] = float("nan")
    model = cls.from_tensor(data, 2, mask=torch.rand(5, 6, 7, generator=torch.Generator().manual_seed(1)) < 0.9)
    assert all(torch.isfinite(c).all() for c in cores(model))


@pytest.mark.parametrize(
    ("cls", "rank"), [(CPModel, 2), (TuckerModel, 2), (TTModel, 2), (TRModel, 2)], ids=["cp", "tucker", "tt", "tr"]
)
def test_from_tensor_balance_equalises_norms_and_keeps_output(cls, rank):
    target = low_rank(cls, (5, 6, 7), rank)
    plain = cls.from_tensor(target, rank, algorithm="svd") if cls is TRModel else cls.from_tensor(target, rank)
    balanced = (
        cls.from_tensor(target, rank, algorithm="svd", balance=True)
        if cls is TRModel
        else cls.from_tensor(target, rank, balance=True)
    )
    norms = torch.stack([c.detach().norm() for c in cores(balanced)])
    torch.testing.assert_close(norms, norms.mean().expand_as(norms), rtol=1e-8, atol=0)
    torch.testing.assert_close(balanced().detach(), plain().detach(), rtol=1e-8, atol=1e-10)


def test_from_tensor_errors():
    x = torch.randn(3, 4, 5, dtype=F64)
    with pytest.raises(ValueError, match="Unknown TR algorithm 'nope'.*als, svd"):
        TRModel.from_tensor(x, 2, algorithm="nope")
    with pytest.raises(ValueError, match="rank"):
        TRModel.from_tensor(x, [2, 3, 2], algorithm="svd")  # r0*r1 = 6 > 3: TensorLy's TR-SVD refuses
    with pytest.raises(ValueError, match="returned core 1 of shape"):
        TTModel.from_tensor(torch.randn(10, 2, 10, dtype=F64), [1, 2, 5, 1])  # 5 > r_1 * I_2 = 4
    with pytest.raises(ValueError, match="no finite entry"):
        CPModel.from_tensor(torch.full((3, 4), float("nan")), 2)
    with pytest.raises(ValueError, match="mask shape"):
        CPModel.from_tensor(x, 2, mask=torch.ones(3, 4, dtype=torch.bool))


# --- rank and shape validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "shape", "rank", "match"),
    [
        (CPModel, (3, 4), 0, "Invalid CP rank 0"),
        (CPModel, (3, 4), [2, 2], r"Invalid CP rank \[2, 2\]"),
        (CPModel, (3, 4), True, "Invalid CP rank True"),
        (CPModel, (3, 4), 2.0, "Invalid CP rank 2.0"),
        (CPModel, (3,), 2, r"Invalid shape \(3,\)"),
        (CPModel, (3, 0), 2, r"Invalid shape \(3, 0\)"),
        (TuckerModel, (438, 6, 11), 8, "rank 8 of mode 1 exceeds its size 6"),
        (TuckerModel, (4, 5, 6), [2, 3], r"Invalid Tucker rank \[2, 3\]: expected an int or 3 ranks, got 2"),
        (TuckerModel, (4, 5), [2, -1], "every rank must be a positive int"),
        (TuckerModel, (4, 5), "3", "Invalid Tucker rank '3'"),
        (TTModel, (3, 4, 5), 5, "rank 5 between modes 0 and 1 exceeds its maximum 3"),
        (TTModel, (3, 4, 5), [1, 2, 2, 2], "boundary ranks"),
        (TTModel, (3, 4, 5), [2, 2, 2], "expected an int or 2 or 4 ranks, got 3"),
        (TTModel, (3, 4, 5), [0, 2], "every rank must be a positive int"),
        (TRModel, (3, 4, 5), [2, 2], "expected an int or 3 or 4 ranks, got 2"),
        (TRModel, (3, 4, 5), [2, 2, 2, 3], "first and last must be equal"),
        (TRModel, (3, 4, 5), 0, "Invalid TR rank 0"),
    ],
)
def test_bad_ranks_and_shapes_raise(cls, shape, rank, match):
    with pytest.raises(ValueError, match=match):
        cls(shape, rank)


def test_rank_conventions():
    assert TTModel((3, 4, 5), 2).rank == (1, 2, 2, 1)
    assert TTModel((3, 4, 5), [2, 3]).rank == TTModel((3, 4, 5), [1, 2, 3, 1]).rank == (1, 2, 3, 1)
    assert TRModel((3, 4, 5), [2, 3, 4]).rank == TRModel((3, 4, 5), [2, 3, 4, 2]).rank == (2, 3, 4)
    assert [tuple(c.shape) for c in TRModel((3, 4, 5), [2, 3, 4]).cores] == [(2, 3, 3), (3, 4, 4), (4, 5, 2)]
    assert TuckerModel((3, 4, 5), np.int64(3)).rank == [3, 3, 3]
    assert TuckerModel((6, 6), [6, 6]).rank == [6, 6]  # rank equal to the mode is allowed
    assert CPModel((3, 4), 10).rank == 10  # CP ranks are not bounded by the modes
