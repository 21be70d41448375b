"""The spectral start of CP and Tucker completion models (models/spectral.py), checked against dense NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensordas.data import synthetic_tensor
from tensordas.models import spectral
from tensordas.models.spectral import mode_subspace, projected_core, spectral_start


def observed(tensor: np.ndarray, share: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A random share of the cells of ``tensor`` as (indices, values)."""
    keep = np.random.default_rng(seed).random(tensor.shape) < share
    return torch.from_numpy(np.argwhere(keep)), torch.from_numpy(tensor[keep])


def projector(basis: np.ndarray) -> np.ndarray:
    return basis @ basis.T


def test_mode_subspace_is_the_top_eigenspace_of_the_debiased_gram_matrix():
    # a rank-2 signal plus noise, 40% of the cells observed; by hand: zero-filled unfolding, Gram matrix,
    # its diagonal scaled by the observed share, the eigenvectors of the two largest eigenvalues
    tensor = synthetic_tensor((9, 8, 7), rank=2, noise=0.2, seed=4)
    indices, values = observed(tensor, 0.4)
    filled = np.zeros(tensor.shape)
    filled[tuple(indices.numpy().T)] = values.numpy()
    share = len(values) / tensor.size
    for mode in range(3):
        unfolded = np.moveaxis(filled, mode, 0).reshape(tensor.shape[mode], -1)
        gram = unfolded @ unfolded.T
        gram -= (1 - share) * np.diag(np.diag(gram))
        eigenvalues, vectors = np.linalg.eigh(gram)
        expected = vectors[:, -2:]
        got = mode_subspace(indices, values, tensor.shape, mode, 2, iterations=300).numpy()
        assert got.shape == (tensor.shape[mode], 2)
        np.testing.assert_allclose(got.T @ got, np.eye(2), atol=1e-10)
        np.testing.assert_allclose(projector(got), projector(expected), atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 5, 4), (4, 3, 5, 2)])
def test_projected_core_matches_a_dense_multilinear_product(shape, monkeypatch):
    monkeypatch.setattr(spectral, "_CHUNK_ELEMENTS", 7)  # many small chunks: the sum over chunks is exact
    rng = np.random.default_rng(1)
    tensor = rng.standard_normal(shape)
    indices, values = observed(tensor, 0.5, seed=2)
    filled = np.zeros(shape)
    filled[tuple(indices.numpy().T)] = values.numpy()
    share = len(values) / tensor.size
    bases = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n, r in zip(shape, (3, 2, 2, 1))]
    letters = "abcd"[: len(shape)]
    expected = np.einsum(
        f"{'ijkl'[: len(shape)]},{','.join(f'{i}{a}' for i, a in zip('ijkl', letters))}->{letters}",
        filled / share,
        *bases,
    )
    got = projected_core(indices, values, [torch.from_numpy(b) for b in bases], share)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize(("format", "rank"), [("cp", 3), ("tucker", (3, 3, 3))])
def test_spectral_start_is_exact_on_a_fully_observed_low_rank_tensor(format, rank):
    tensor = synthetic_tensor((15, 14, 13), rank=3, noise=0.0, seed=1)
    indices, values = observed(tensor, 1.0)
    model = spectral_start(format, tensor.shape, rank, indices, values, dtype=torch.float64)
    with torch.no_grad():
        # Tucker: the subspaces and the core are exact; CP: up to CP-ALS's convergence on the small core
        np.testing.assert_allclose(model().numpy(), tensor, atol=1e-6 * np.abs(tensor).max())


@pytest.mark.parametrize(("format", "rank"), [("cp", 4), ("tucker", (4, 3, 4))])
def test_spectral_start_is_scaled_by_least_squares_and_balanced(format, rank):
    tensor = synthetic_tensor((20, 18, 16), rank=4, noise=0.3, seed=2)
    indices, values = observed(tensor, 0.2)
    gen = torch.Generator().manual_seed(0)
    model = spectral_start(format, tensor.shape, rank, indices, values, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        pred = model.entries(indices)
    # the least-squares scalar: the residual is orthogonal to the prediction
    assert abs(float(pred @ (values - pred))) < 1e-8 * float(values @ values)
    norms = [float(c.detach().norm()) for c in model.core_groups()[0].cores]
    np.testing.assert_allclose(norms, norms[0], rtol=1e-10)  # Norm Deviation Q = 0, like the balanced start
    # better than nothing on the held-out cells: R^2 of the start against the noiseless signal is positive
    signal = synthetic_tensor((20, 18, 16), rank=4, noise=0.0, seed=2)
    with torch.no_grad():
        full = model().numpy()
    assert 1 - ((full - signal) ** 2).sum() / ((signal - signal.mean()) ** 2).sum() > 0.3


def test_cp_rank_above_a_mode_size_still_starts():
    tensor = synthetic_tensor((3, 12, 11), rank=2, noise=0.1, seed=0)
    indices, values = observed(tensor, 0.6)
    model = spectral_start("cp", tensor.shape, 5, indices, values, generator=torch.Generator().manual_seed(0))
    assert [tuple(f.shape) for f in model.factors] == [(3, 5), (12, 5), (11, 5)]
    assert all(bool(torch.isfinite(f).all()) for f in model.factors)


@pytest.mark.parametrize(
    ("format", "indices", "values", "match"),
    [
        ("tt", torch.zeros(3, 3, dtype=torch.long), torch.ones(3), "spectral start .*cp, tucker"),
        ("cp", torch.zeros(3, 2, dtype=torch.long), torch.ones(3), r"indices \(M, 3\)"),
        ("cp", torch.zeros(3, 3, dtype=torch.long), torch.ones(2), r"values \(M,\)"),
        ("cp", torch.zeros(0, 3, dtype=torch.long), torch.ones(0), "M >= 1"),
    ],
)
def test_bad_input_is_a_one_line_error(format, indices, values, match):
    with pytest.raises(ValueError, match=match) as caught:
        spectral_start(format, (4, 4, 4), 2, indices, values)
    assert len(str(caught.value).splitlines()) == 1


@pytest.mark.parametrize("fits_int64", [True, False])
def test_column_ids_number_the_distinct_rows_in_order(fits_int64, monkeypatch):
    if not fits_int64:  # the fallback for unfoldings with more than 2**63 - 1 columns
        monkeypatch.setattr(spectral, "_INT64_MAX", 0)
    rows = torch.from_numpy(np.random.default_rng(3).integers(0, 4, size=(200, 2)))
    _, expected = np.unique(rows.numpy(), axis=0, return_inverse=True)
    np.testing.assert_array_equal(spectral._column_ids(rows, (4, 4)).numpy(), expected.ravel())
