"""The format registry: every registered format through one table of checks against oracles written here
(hand einsums, dense indexing, exact round trips), the rank rules' errors, the CUDA-safety of ``entries``, the
deprecated ``method=`` keywords, and a toy fifth format that works in a model and a layer by registration only."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import tensordas as td
from tensordas import formats
from tensordas.core_groups import find_core_groups
from tensordas.formats import FORMATS, TensorFormat, get_format, register_format, unregister_format
from tensordas.layers import TensorizedConv2d, TensorizedLinear, from_dense, rank_for_ratio, resolve_layout, tensorize
from tensordas.models import CPModel, TRModel, TTModel, TuckerModel, model_class

F64 = torch.float64
LOWER = "abcdefghijklm"
UPPER = "NOPQRSTUVWXYZ"


# --- oracles: the full tensor from the cores by einsum, from each format's documented core layout -----------------


def einsum_tensor(name: str, cores: list[torch.Tensor]) -> torch.Tensor:
    if name == "cp":  # X = sum_r A_1[:, r] o ... o A_N[:, r]
        n = len(cores)
        return torch.einsum(",".join(f"{LOWER[k]}Z" for k in range(n)) + "->" + LOWER[:n], *cores)
    if name == "tucker":  # X = G x_1 U_1 ... x_N U_N
        n = len(cores) - 1
        spec = UPPER[:n] + "," + ",".join(f"{LOWER[k]}{UPPER[k]}" for k in range(n)) + "->" + LOWER[:n]
        return torch.einsum(spec, *cores)
    n = len(cores)  # TT and TR: G_k of shape (r_k, I_k, r_{k+1}); the ring closes with a trace
    right = [UPPER[k + 1] for k in range(n)]
    if name == "tr":
        right[-1] = UPPER[0]
    spec = ",".join(f"{UPPER[k]}{LOWER[k]}{right[k]}" for k in range(n)) + "->" + LOWER[:n]
    if name == "tt":  # boundary bonds of size 1 are summed over
        spec = spec.replace("->", f"->{UPPER[0]}{UPPER[n]}")
        return torch.einsum(spec, *cores).reshape([c.shape[1] for c in cores])
    return torch.einsum(spec, *cores)


# (format, shape, rank): 2, 3 and 4 modes, int and per-mode/bond ranks
CASES = [
    ("cp", (4, 5, 6), 3),
    ("cp", (3, 7), 2),
    ("cp", (2, 3, 4, 5), 4),
    ("tucker", (4, 5, 6), [2, 3, 4]),
    ("tucker", (6, 7), 3),
    ("tucker", (2, 3, 4, 5), 2),
    ("tt", (4, 5, 6), [2, 3]),
    ("tt", (3, 7), 2),
    ("tt", (2, 3, 4, 5), [1, 2, 3, 4, 1]),
    ("tr", (4, 5, 6), [2, 3, 2]),
    ("tr", (3, 7), 2),
    ("tr", (2, 3, 4, 5), [2, 3, 1, 2]),
]
IDS = [f"{f}-{'x'.join(map(str, s))}" for f, s, _ in CASES]


def random_cores(fmt: TensorFormat, shape, rank, seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ranks = fmt.ranks(shape, rank)
    return [torch.randn(s, generator=g, dtype=F64, requires_grad=True) for s in fmt.core_shapes(shape, ranks)]


def random_indices(shape, n, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, s, (n,), generator=g) for s in shape], dim=1)


def test_the_four_formats_are_registered_in_order():
    assert tuple(FORMATS) == ("cp", "tucker", "tt", "tr")
    assert FORMATS == ("cp", "tucker", "tt", "tr") and "tt" in FORMATS and "svd" not in FORMATS
    assert dict(formats.DEFAULT_RANKS) == {"cp": 32, "tucker": 8, "tt": 8, "tr": 8}
    assert td.layers.FORMATS is FORMATS
    assert get_format("TT") is get_format("tt")
    with pytest.raises(ValueError, match=r"Unknown tensor format 'qr' \(known: cp, tucker, tt, tr\)"):
        get_format("qr")


@pytest.mark.parametrize(("name", "shape", "rank"), CASES, ids=IDS)
def test_reconstruction_matches_independent_einsum(name, shape, rank):
    fmt = get_format(name)
    cores = random_cores(fmt, shape, rank)
    full = fmt.to_tensor(cores)
    assert tuple(full.shape) == shape
    torch.testing.assert_close(full.detach(), einsum_tensor(name, [c.detach() for c in cores]), rtol=1e-12, atol=1e-12)
    # the number of product terms is what the entries sum: P products of one entry per core
    assert fmt.n_terms(fmt.ranks(shape, rank)) == math.prod(fmt.ranks(shape, rank))


@pytest.mark.parametrize(("name", "shape", "rank"), CASES, ids=IDS)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_entries_match_dense_indexing(name, shape, rank, index_dtype):
    fmt = get_format(name)
    cores = random_cores(fmt, shape, rank)
    idx = random_indices(shape, 50)
    dense = fmt.to_tensor(cores)[tuple(idx.T)]
    sampled = fmt.entries(cores, idx.to(index_dtype))
    torch.testing.assert_close(sampled, dense, rtol=1e-12, atol=1e-12)
    g_dense = torch.autograd.grad(dense.pow(2).sum(), cores)
    g_sampled = torch.autograd.grad(fmt.entries(cores, idx).pow(2).sum(), cores)
    for a, b in zip(g_sampled, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


class _MatrixProducts(TorchDispatchMode):
    """Records the dtypes of every matrix-product op dispatched (``mm``, ``bmm``, ``addmv``, ...)."""

    PRODUCTS = ("mm", "bmm", "mv", "addmm", "addmv", "addbmm", "baddbmm", "dot", "matmul", "tensordot", "einsum")

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, list[torch.dtype]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.PRODUCTS:
            self.seen.append((name, [a.dtype for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("name", "shape", "rank"), CASES, ids=IDS)
def test_entries_have_no_integer_matrix_product(name, shape, rank):
    # addmv/mm are not implemented for Long on CUDA: the indices may only select rows, never enter a product
    model = model_class(name)(shape, rank, dtype=F64)
    idx = random_indices(shape, 20)
    with _MatrixProducts() as mode:
        model.entries(idx).sum().backward()
    assert all(dt.is_floating_point for _, dtypes in mode.seen for dt in dtypes), mode.seen
    # ...and the check can fail: an integer product is seen
    with _MatrixProducts() as mode:
        idx[:, :2].t() @ idx[:, :2]
    assert any(not dt.is_floating_point for _, dtypes in mode.seen for dt in dtypes)


@pytest.mark.parametrize(
    ("name", "shape", "rank", "cap", "expected"),
    [
        ("cp", (3, 4), 10, False, (10,)),  # CP ranks are not bounded by the modes
        ("cp", (3, 4), np.int64(2), True, (2,)),
        ("tucker", (4, 5, 6), 5, True, (4, 5, 5)),  # an int caps each mode at its size
        ("tucker", (4, 5, 6), [4, 2, 6], False, (4, 2, 6)),
        ("tt", (3, 4, 5), 100, True, (1, 3, 5, 1)),  # each bond capped at its unfolding rank
        ("tt", (3, 4, 5), [2, 3], False, (1, 2, 3, 1)),
        ("tt", (3, 4, 5), [1, 2, 3, 1], False, (1, 2, 3, 1)),
        ("tr", (3, 4, 5), 7, True, (7, 7, 7)),  # TR has no bound
        ("tr", (3, 4, 5), [2, 3, 4, 2], False, (2, 3, 4)),
    ],
)
def test_rank_rules(name, shape, rank, cap, expected):
    assert get_format(name).ranks(shape, rank, cap=cap) == expected


@pytest.mark.parametrize(
    ("name", "shape", "rank", "cap", "match"),
    [
        ("cp", (3, 4), 0, False, "Invalid CP rank 0"),
        ("cp", (3, 4), [2, 2], True, r"Invalid CP rank \[2, 2\]"),
        ("cp", (3, 4), True, False, "Invalid CP rank True"),
        ("cp", (3, 4), 2.0, False, "Invalid CP rank 2.0"),
        ("tucker", (4, 5, 6), 5, False, r"rank 5 of mode 0 exceeds its size 4"),
        ("tucker", (4, 5, 6), [5, 2, 2], True, r"rank 5 of mode 0 exceeds its size 4"),  # a list is exact
        ("tucker", (4, 5, 6), [2, 3], False, r"expected an int or 3 ranks, got 2"),
        ("tucker", (4, 5, 6), 0, True, "Invalid Tucker rank 0"),
        ("tt", (3, 4, 5), 5, False, "rank 5 between modes 0 and 1 exceeds its maximum 3"),
        ("tt", (3, 4, 5), [50, 2], True, "rank 50 between modes 0 and 1"),  # a list is exact
        ("tt", (3, 4, 5), [1, 2, 2, 2], False, "boundary ranks"),
        ("tt", (3, 4, 5), -1, True, "Invalid TT rank -1"),
        ("tr", (3, 4, 5), [2, 2], False, "expected an int or 3 or 4 ranks, got 2"),
        ("tr", (3, 4, 5), [2, 2, 2, 3], False, "first and last must be equal"),
        ("tr", (3, 4, 5), 0, True, "Invalid TR rank 0"),
    ],
)
def test_rank_rule_errors(name, shape, rank, cap, match):
    with pytest.raises(ValueError, match=match):
        get_format(name).ranks(shape, rank, cap=cap)


def test_max_int_rank_is_where_the_cap_saturates():
    for name, shape in [("tucker", (4, 5, 6)), ("tt", (3, 4, 5)), ("tt", (2, 3, 4, 5))]:
        fmt = get_format(name)
        high = fmt.max_int_rank(shape)
        assert fmt.ranks(shape, high, cap=True) == fmt.ranks(shape, 10 * high, cap=True)
        assert fmt.ranks(shape, high - 1, cap=True) != fmt.ranks(shape, high, cap=True)
    assert get_format("cp").max_int_rank((3, 4)) is None and get_format("tr").max_int_rank((3, 4)) is None


# (format, shape, full rank, algorithm, options): every decomposition is exact at full rank
ROUND_TRIPS = [
    ("cp", (4, 6), 4, "als", {}),  # a matrix at full rank: the SVD start is already exact
    ("tucker", (3, 4, 5), [3, 4, 5], "hooi", {}),
    ("tt", (3, 4, 5), [3, 5], "svd", {}),
    ("tr", (3, 4, 5), [1, 3, 5], "svd", {}),  # TR-SVD with r_0 = 1 is TT-SVD
    ("tr", (3, 4), [2, 3], "als", {"n_iter_max": 500, "tol": 1e-15}),
]


@pytest.mark.filterwarnings("ignore:Determining the TR-rank for the trivial case")  # TensorLy, on the matrix case
@pytest.mark.parametrize(("name", "shape", "rank", "algorithm", "options"), ROUND_TRIPS, ids=lambda v: str(v))
def test_decomposition_round_trip_at_full_rank(name, shape, rank, algorithm, options):
    fmt = get_format(name)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=F64)
    ranks = fmt.ranks(shape, rank)
    arrays = fmt.decompose(x.numpy(), ranks, algorithm, random_state=0, **options)
    assert [tuple(a.shape) for a in arrays] == [tuple(s) for s in fmt.core_shapes(shape, ranks)]
    assert all(a.dtype == np.float64 for a in arrays)
    back = fmt.to_tensor([torch.from_numpy(a) for a in arrays])
    torch.testing.assert_close(back, x, rtol=1e-8, atol=1e-8)


def test_unknown_algorithm_and_mask_on_an_unmasked_format():
    with pytest.raises(ValueError, match=r"Unknown TR algorithm 'qr' \(known: als, svd\)"):
        get_format("tr").algorithm("qr")
    assert get_format("tt").algorithm(None).__name__ == "tensor_train"
    with pytest.raises(ValueError, match="takes no mask"):
        get_format("tt").decompose(np.ones((3, 4)), (1, 3, 1), mask=np.ones((3, 4), dtype=bool))


def test_model_classes_are_the_registered_formats():
    assert [model_class(f) for f in FORMATS] == [CPModel, TuckerModel, TTModel, TRModel]
    with pytest.raises(TypeError, match="has no format"):
        td.models.TensorModel((3, 4), 2)


# --- the deprecated method= keywords (format / algorithm) ----------------------------------------------------------


def test_method_keyword_still_works_with_a_deprecation_warning():
    x = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    new = TRModel.from_tensor(x, [1, 2, 3], algorithm="svd")
    with pytest.warns(DeprecationWarning, match=re.escape("TRModel.from_tensor(): the keyword method= is deprecated")):
        old = TRModel.from_tensor(x, [1, 2, 3], method="svd")
    assert all(torch.equal(a, b) for a, b in zip(new.cores, old.cores))
    positional = TRModel.from_tensor(x, [1, 2, 3], None, "svd")  # positional calls are unchanged
    assert all(torch.equal(a, b) for a, b in zip(new.cores, positional.cores))
    with pytest.raises(TypeError, match="both method= and algorithm="):
        TRModel.from_tensor(x, 2, method="svd", algorithm="als")

    torch.manual_seed(0)
    dense = nn.Linear(12, 10).double()
    with pytest.warns(DeprecationWarning, match="method= is deprecated, use format="):
        old_layer = from_dense(dense, method="tucker", rank=2)
    assert old_layer.format == "tucker"
    assert torch.equal(old_layer.dense_weight(), from_dense(dense, format="tucker", rank=2).dense_weight())
    with pytest.warns(DeprecationWarning, match="method= is deprecated, use format="):
        _, report = tensorize(nn.Sequential(dense), method="cp", rank=2)
    assert report.format == "cp"
    with pytest.warns(DeprecationWarning, match="TensorizeReport.method"):
        assert report.method == "cp"
    layout = resolve_layout(12, 10, None, 1, "tt")
    with pytest.warns(DeprecationWarning):
        assert rank_for_ratio(method="tt", layout=layout, ratio=2.0) == rank_for_ratio("tt", layout, 2.0)


# --- a toy fifth format, registered here only -----------------------------------------------------------------------


def _matrix_svd(x: np.ndarray, rank: int) -> list[np.ndarray]:
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return [u[:, :rank] * s[:rank], vt[:rank].T]


class Matrix(TensorFormat):
    """A two-mode tensor ``X = A B^T`` with factors ``A`` of shape ``(I, R)`` and ``B`` of shape ``(J, R)``."""

    name = "matrix"
    label = "Matrix"
    algorithms = {"svd": _matrix_svd}
    default_rank = 3

    def ranks(self, shape, rank, *, cap=False):
        if len(shape) != 2:
            raise ValueError(f"a Matrix tensor has two modes, got shape {shape}")
        r = formats._ranks.positive_int(rank, "Matrix")
        if r > min(shape) and not cap:
            raise ValueError(f"Invalid Matrix rank {rank!r} for shape {shape}: exceeds {min(shape)}")
        return (min(r, *shape),)

    def max_int_rank(self, shape):
        return min(shape)

    def core_shapes(self, shape, ranks):
        return [(shape[0], ranks[0]), (shape[1], ranks[0])]

    def to_tensor(self, cores):
        return cores[0] @ cores[1].T

    def entries(self, cores, indices):
        return (cores[0].index_select(0, indices[:, 0]) * cores[1].index_select(0, indices[:, 1])).sum(dim=1)

    def decompose(self, tensor, ranks, algorithm=None, mask=None, **kwargs):
        self._no_mask(mask)
        return self.algorithm(algorithm)(tensor, ranks[0])


@pytest.fixture
def matrix_format():
    fmt = register_format(Matrix())
    yield fmt
    unregister_format("matrix")


def test_toy_format_needs_only_its_registration(matrix_format):
    assert "matrix" in FORMATS and formats.DEFAULT_RANKS["matrix"] == 3

    # a completion model
    cls = model_class("matrix")
    assert cls is model_class("matrix") and cls.format == "matrix"
    model = cls((6, 5), 2, std="balanced", generator=torch.Generator().manual_seed(0), dtype=F64)
    a, b = model.cores
    torch.testing.assert_close(model(), a @ b.T)
    idx = random_indices((6, 5), 30)
    torch.testing.assert_close(model.entries(idx), model()[tuple(idx.T)])
    norms = torch.stack([c.detach().pow(2).sum() for c in model.cores])
    torch.testing.assert_close(norms, norms.mean().expand(2))  # balanced: equal norms
    (group,) = find_core_groups(model)
    assert group.name == "matrix" and len(group.cores) == 2
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(cls.from_tensor(x, 5)(), x)  # full rank: exact
    with pytest.raises(ValueError, match="Invalid Matrix rank 6"):
        cls((6, 5), 6)
    # ... which `tensordas complete --model matrix` trains like the built-in ones
    from tensordas.tasks.completion import CompletionConfig, run_completion

    cfg = CompletionConfig(data="synthetic:shape=12x10,rank=2,noise=0.0", model="matrix", rank=2, steps=3, missing=0.3,
                           optimizers=("das",), als=False, dtype="float64")  # fmt: skip
    (run,) = run_completion(cfg)
    assert run.record["model"] == "matrix" and math.isfinite(run.record["test_r2"])
    # ... with a TensorLy warm start too (the dense budget reads the format's default dense_copies)
    (warm,) = run_completion(dataclasses.replace(cfg, init="tensorly"))
    assert warm.record["test_r2"] > run.record["test_r2"] + 0.5  # the SVD start, not the random one

    # a linear layer over the modes (12, 10): weight W[in, out] = A B^T
    torch.manual_seed(0)
    layer = TensorizedLinear(12, 10, "matrix", 4, factorization=((12,), (10,)), dtype=F64)
    a, b = layer.cores
    inp = torch.randn(2, 12, dtype=F64)
    torch.testing.assert_close(layer(inp), inp @ (a @ b.T) + layer.bias)
    assert layer.rank == (4,) and layer.core_groups()[0].name == "matrix"
    dense = nn.Linear(12, 10).double()
    fitted = from_dense(dense, "matrix", rank=100, factorization=((12,), (10,)))  # an int rank caps at full rank
    torch.testing.assert_close(fitted.dense_weight(), dense.weight)
    _, report = tensorize(nn.Sequential(dense), "matrix", ratio=2.0, factorization=((12,), (10,)))
    assert report.layers[0].rank == (2,)  # 2 * 22 <= 60 < 3 * 22
    with pytest.raises(ValueError, match="two modes"):
        TensorizedLinear(12, 10, "matrix", 2)  # the automatic factorization has more modes

    # a 1x1 convolution over the modes (in, out) = (4, 6)
    conv = TensorizedConv2d(4, 6, 1, format="matrix", rank=2, factorization=((4,), (6,)), dtype=F64)
    a, b = conv.cores
    img = torch.randn(1, 4, 5, 5, dtype=F64)
    w = (a @ b.T).t().reshape(6, 4, 1, 1)
    torch.testing.assert_close(conv(img), torch.nn.functional.conv2d(img, w, conv.bias))


def test_registry_rejects_malformed_and_duplicate_formats():
    with pytest.raises(ValueError, match="already registered"):
        register_format(get_format("tt"))
    assert register_format(get_format("tt"), replace=True) is get_format("tt")
    bad = Matrix()
    bad.name = "my-format"  # the '-' would break network names such as 'tt-mlp'
    with pytest.raises(ValueError, match="Invalid format name 'my-format'"):
        register_format(bad)
    with pytest.raises(ValueError, match="expects a TensorFormat"):
        register_format("tt")
    assert "matrix" not in FORMATS  # the fixture removed the toy
