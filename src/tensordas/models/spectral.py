"""A spectral start for completion: CP and Tucker models estimated from the observed entries alone.

A random start of a low-rank fit to a small share of a tensor's entries ends, for some seeds, in a spurious
minimum: a component localised on a few slices that fits a handful of observed entries and predicts nonsense
elsewhere (docs/design.md, section 6). The spectral start of the completion literature (Jain and Oh, NeurIPS
2014; Montanari and Sun, CPAM 2018) begins next to the signal instead:

1. For every mode k, the top left singular subspace ``U_k`` of the mode-k unfolding of the observed entries
   (zeros elsewhere), by block power iteration on ``A A^T - (1 - p) D``: with a share p of the cells
   observed at random, the off-diagonal entries of ``A A^T`` estimate ``p^2 T T^T`` but its diagonal ``D``
   (each slice's sum of squared observed values) only ``p T T^T`` plus the noise's, so all but a share p of
   it is removed (nothing when every cell is observed, nearly all of it when few are).
2. The core ``W = sum_e v_e U_1[i_1] o ... o U_N[i_N] / p`` over the observed entries ``e`` (``p`` the observed
   share of the cells), the projection of the rescaled observations onto the subspaces.
3. Tucker: ``(W, U_1..U_N)``. CP: a CP-ALS of the small dense ``W`` (TensorLy's ``parafac``), mapped back by
   ``U_k``; every component's weight is shared equally by its N factors.
4. The start is multiplied by the least-squares scalar of its fit to the observed values (never worse than
   zero), and its cores are balanced to equal norms (Norm Deviation Q = 0, like the balanced random start).

Every step costs O(observed entries x rank) time and memory plus the core (``prod_k rank_k`` entries), never
the tensor's cells. The subspaces are reliable once the observed entries are of the order of
``n^(N/2) * rank * log n`` (n the mode size); near that order a fit from either start can still end in a
spurious minimum (docs/design.md, section 6: the completion task's ``restarts``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

from ..formats import get_format, rebalance_
from ._model import TensorModel, check_shape, model_class

__all__ = ["SPECTRAL_FORMATS", "mode_subspace", "spectral_start"]

SPECTRAL_FORMATS = ("cp", "tucker")  # formats whose cores follow from mode subspaces and a core
_CHUNK_ELEMENTS = 1 << 22  # entries x core size per chunk when summing the core (32 MB of float64)
_INT64_MAX = 2**63 - 1


def mode_subspace(
    indices: torch.Tensor,
    values: torch.Tensor,
    shape: Sequence[int],
    mode: int,
    rank: int,
    iterations: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Orthonormal ``(shape[mode], min(rank, shape[mode]))`` basis of the top eigenvectors of ``A A^T - (1-p) D``.

    ``A`` is the mode-``mode`` unfolding of the observed entries (zeros elsewhere), ``D`` the diagonal of
    ``A A^T``, which sampling biases, and ``p`` the observed share of the cells. Block power iteration with
    ``rank + 5`` columns (oversampled), then Rayleigh-Ritz keeps the ``rank`` largest eigenvalues. ``A`` is a
    sparse CSR matrix over the observed columns only: O(entries) memory whatever the number of cells.
    """
    values = values.double()
    rows = indices[:, mode]
    others = [j for j in range(len(shape)) if j != mode]
    cols = _column_ids(indices[:, others], [shape[j] for j in others])
    n_cols = int(cols.max()) + 1
    n_rows = int(shape[mode])
    diag = torch.zeros(n_rows, dtype=values.dtype, device=values.device).index_add_(0, rows, values**2)
    diag *= 1 - len(values) / math.prod(shape)  # the sampling bias of the diagonal (none when all is observed)
    width = min(rank + 5, n_rows)

    a, a_t = _csr_pair(rows, cols, values, (n_rows, n_cols))

    def product(q: torch.Tensor) -> torch.Tensor:  # (A A^T - (1 - p) D) q
        return a @ (a_t @ q) - diag[:, None] * q

    start = torch.randn(n_rows, width, generator=generator, dtype=values.dtype).to(values.device)
    q = torch.linalg.qr(start).Q
    for _ in range(iterations):
        q = torch.linalg.qr(product(q)).Q
    _, vectors = torch.linalg.eigh(q.T @ product(q))  # eigenvalues ascending
    keep = min(rank, n_rows)
    return q @ vectors[:, -keep:].flip(1)


def _csr_pair(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, size: tuple[int, int]):
    """The sparse matrix with ``values`` at ``(rows, cols)`` and its transpose, both in CSR: their products with a
    dense block took 7 ms against 45 ms for gathers and ``index_add_`` (160,000 entries, 10 columns, one thread)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, size, check_invariants=False)
        return coo.coalesce().to_sparse_csr(), coo.t().coalesce().to_sparse_csr()


def _column_ids(indices: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Consecutive ids 0..C-1 of the distinct rows of ``indices`` (the observed columns of an unfolding).

    Their row-major flat positions when those fit in int64 (a 1-D ``unique``: 0.05 s for 160,000 entries
    where ``unique(dim=0)`` took 0.5 s), else the rows themselves."""
    if math.prod(shape) > _INT64_MAX:
        return torch.unique(indices, dim=0, return_inverse=True)[1]
    flat = indices[:, 0]
    for k in range(1, len(shape)):  # Horner's scheme (models sit below data: no data.coords import)
        flat = flat * shape[k] + indices[:, k]
    return torch.unique(flat, return_inverse=True)[1]


def projected_core(indices: torch.Tensor, values: torch.Tensor, bases: Sequence[torch.Tensor], share: float):
    """``sum_e values_e * U_1[i_1] o ... o U_N[i_N] / share``: a dense tensor of shape ``(r_1, ..., r_N)``,
    summed over the entries in chunks so that no (entries x core size) array exceeds 32 MB."""
    values = values.double()
    sizes = [b.shape[1] for b in bases]
    leading = math.prod(sizes[:-1])
    core = torch.zeros(leading, sizes[-1], dtype=values.dtype, device=values.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, leading))
    for lo in range(0, len(values), chunk):
        idx = indices[lo : lo + chunk]
        rows = bases[0][idx[:, 0]]
        for k in range(1, len(bases) - 1):  # row-wise Kronecker product of the leading modes
            rows = (rows[:, :, None] * bases[k][idx[:, k]][:, None, :]).reshape(len(idx), -1)
        core += rows.T @ (values[lo : lo + chunk, None] * bases[-1][idx[:, -1]])
    return (core / share).reshape(sizes)


def spectral_start(
    format: str,
    shape: Sequence[int],
    rank: int | Sequence[int],
    indices: torch.Tensor,
    values: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    iterations: int = 10,
) -> TensorModel:
    """A CP or Tucker model of ``shape`` and ``rank`` estimated from observed ``indices`` (M, N) and ``values`` (M,).

    See the module's docstring for the method. ``generator`` seeds the power iterations' random blocks (and
    CP-ALS's random start when the rank exceeds a subspace); ``dtype`` is the parameters' dtype (default:
    torch's). The computation runs in float64 where the entries are (completion passes them on the CPU; no GPU
    run has checked it yet); the model is returned on the CPU.
    """
    fmt = get_format(format)
    if fmt.name not in SPECTRAL_FORMATS:
        raise ValueError(
            f"Invalid format {format!r} for a spectral start (expected one of {', '.join(SPECTRAL_FORMATS)})"
        )
    dims = check_shape(shape, "a spectral start")
    if indices.dim() != 2 or indices.shape[1] != len(dims) or values.shape != indices.shape[:1] or not len(values):
        raise ValueError(
            f"a spectral start needs indices (M, {len(dims)}) and values (M,) with M >= 1, "
            f"got {tuple(indices.shape)} and {tuple(values.shape)}"
        )
    model = model_class(fmt.name)(dims, rank, std="balanced", generator=generator, dtype=dtype)
    ranks = model._ranks
    mode_ranks = ranks * len(dims) if fmt.name == "cp" else ranks
    values = values.double()
    share = len(values) / math.prod(dims)
    bases = [mode_subspace(indices, values, dims, k, r, iterations, generator) for k, r in enumerate(mode_ranks)]
    core = projected_core(indices, values, bases, share)
    if fmt.name == "tucker":
        cores = [core, *bases]
    else:  # CP of the small core, factor by factor mapped back through the subspaces
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        init = "svd" if all(b.shape[1] >= ranks[0] for b in bases) else "random"
        small = fmt.decompose(core.cpu().numpy(), ranks, init=init, n_iter_max=200, random_state=seed)
        cores = [b @ torch.as_tensor(f).to(b) for b, f in zip(bases, small)]
        _share_component_weights_(cores)
    with torch.no_grad():
        for param, value in zip(model._core_params(), cores):
            param.copy_(value.to(device=param.device, dtype=param.dtype))
        _fit_scale_(model, indices.to(model._core_params()[0].device), values)
    return model


def _share_component_weights_(factors: list[torch.Tensor]) -> None:
    """Give every CP component's N factor columns the same norm (positive factors: product and signs unchanged)."""
    norms = torch.stack([f.norm(dim=0) for f in factors])  # (N, R)
    if not bool((norms > 0).all()):
        return
    target = norms.log().mean(dim=0).exp()
    for f, n in zip(factors, norms):
        f.mul_(target / n)


@torch.no_grad()
def _fit_scale_(model: TensorModel, indices: torch.Tensor, values: torch.Tensor) -> None:
    """Multiply the model by the least-squares scalar of its fit to ``values`` at ``indices``; balance its cores."""
    pred = model.entries(indices).double()
    power = float(pred @ pred)
    if power > 0 and math.isfinite(power):
        scale = float(pred @ values.to(pred)) / power
        cores = model._core_params()
        cores[0].mul_(scale)
        if scale != 0:
            rebalance_(cores)
