"""The dynamics study (tensordas.tasks.dynamics), checked against hand-written numpy oracles.

The oracles compute the Tucker-2 reconstruction ``A G B^T``, its gradients, one GD step and
Q, C, ||g|| straight from docs/design.md, section 1 with numpy, never through tensordas' metrics,
autograd or optimizers.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from tensordas.tasks import dynamics as dyn
from tensordas.tasks.dynamics import CSV_COLUMNS, DynamicsConfig, make_problem, run_dynamics, write_dynamics

SMALL = {"size": (12, 10), "rank": (3, 3)}  # fast settings for tests that do not need the default size


def _cores(problem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = problem.model
    return m.core.detach().numpy().copy(), m.factors[0].detach().numpy().copy(), m.factors[1].detach().numpy().copy()


def _grads(g, a, b, y):
    """Loss and gradients of 0.5 ||A G B^T - Y||_F^2 by hand: dG = A^T R B, dA = R B G^T, dB = R^T A G."""
    r = a @ g @ b.T - y
    return 0.5 * float((r**2).sum()), [a.T @ r @ b, r @ b @ g.T, r.T @ a @ g]


def _q_c_norm(cores, grads):
    n = np.array([float((c**2).sum()) for c in cores])
    gamma = np.array([float((d**2).sum()) for d in grads])
    q = float(((n - n.mean()) ** 2).mean())
    c = float(((n - n.mean()) * (gamma - gamma.mean())).mean())
    return q, c, math.sqrt(gamma.sum())


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"steps": 0}, "0"),
        ({"steps": 2.5}, "2.5"),
        ({"steps": True}, "True"),
        ({"noise": -1.0}, "-1.0"),
        ({"noise": float("nan")}, "nan"),
        ({"eta": 0.0}, "0.0"),
        ({"eta": float("inf")}, "inf"),
        ({"rho": -0.1}, "-0.1"),
        ({"alpha": -2.0}, "-2.0"),
        ({"seed": -1}, "-1"),
        ({"size": (0, 5)}, "0"),
        ({"size": (4, 5, 6)}, "(4, 5, 6)"),
        ({"size": 10, "rank": (11, 2)}, "11"),
        ({"size": 10, "rank": 4, "target_rank": 11}, "11"),
        ({"core_scales": (1.0, 2.0)}, "(1.0, 2.0)"),
        ({"core_scales": (1.0, 0.0, 1.0)}, "0.0"),
        ({"init_rms": 0}, "0"),
    ],
)
def test_config_rejects_invalid_values_naming_them(kwargs, needle):
    with pytest.raises(ValueError, match="Invalid") as info:
        DynamicsConfig(**kwargs)
    assert needle in str(info.value)


def test_config_normalises_and_round_trips():
    cfg = DynamicsConfig(size=[20, 16], rank=3, rho=0.02)
    assert cfg.size == (20, 16) and cfg.rank == (3, 3)
    assert cfg.das_alpha == 0.02 and cfg.clean_rank == 3
    d = cfg.to_dict()
    assert d["alpha"] == 0.02 and d["target_rank"] == 3
    assert DynamicsConfig(**d).to_dict() == d


# ----------------------------------------------------------------------------------- problem
def test_problem_target_and_unbalanced_initialisation():
    cfg = DynamicsConfig(size=(20, 16), rank=(4, 3), target_rank=2, noise=0.0)
    p = make_problem(cfg)
    g, a, b = _cores(p)
    assert g.shape == (4, 3) and a.shape == (20, 4) and b.shape == (16, 3)
    np.testing.assert_allclose(p.model().detach().numpy(), a @ g @ b.T, rtol=1e-12, atol=1e-14)
    assert p.target.dtype == torch.float64
    assert np.linalg.matrix_rank(p.target.numpy()) == 2  # noise 0: the clean rank-2 target
    noisy = make_problem(DynamicsConfig(size=(20, 16), rank=(4, 3), target_rank=2, noise=0.5))
    assert np.linalg.matrix_rank(noisy.target.numpy()) == 16
    np.testing.assert_allclose(noisy.clean.numpy(), p.clean.numpy())  # same seed, same clean part
    # core_scales (2, 1, 0.5) around a balanced start: G's squared norm clearly largest, B's smallest
    n = [float((c**2).sum()) for c in (g, a, b)]
    assert n[0] > 1.5 * n[1] > 1.5 * 1.5 * n[2]


# --------------------------------------------------------------------------- curves vs oracle
def test_initial_stats_and_first_gd_step_match_numpy_oracle():
    cfg = DynamicsConfig(steps=1, seed=3, **SMALL)
    p = make_problem(cfg)
    g, a, b = _cores(p)
    y = p.target.numpy()
    loss0, grads0 = _grads(g, a, b, y)
    q0, c0, norm0 = _q_c_norm((g, a, b), grads0)
    new = [w - cfg.eta * d for w, d in zip((g, a, b), grads0)]
    loss1, grads1 = _grads(*new, y)
    q1, c1, _ = _q_c_norm(new, grads1)

    res = run_dynamics(cfg)
    for name in ("GD", "SAM", "DAS"):  # all start from the same initialisation
        curve = res.curves[name]
        assert curve.step == [0, 1]
        assert curve.loss[0] == pytest.approx(loss0, rel=1e-12)
        assert curve.Q[0] == pytest.approx(q0, rel=1e-12)
        assert curve.C[0] == pytest.approx(c0, rel=1e-10)
        assert curve.grad_norm[0] == pytest.approx(norm0, rel=1e-12)
    gd = res.curves["GD"]
    assert gd.loss[1] == pytest.approx(loss1, rel=1e-12)
    assert gd.Q[1] == pytest.approx(q1, rel=1e-12)
    assert gd.C[1] == pytest.approx(c1, rel=1e-10)
    pred = 4 * cfg.eta * cfg.rho * c0 / norm0
    assert res.first_step.predicted["SAM"] == pytest.approx(pred, rel=1e-10)
    assert res.first_step.measured["SAM"] == pytest.approx(res.curves["SAM"].Q[1] - q1, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_dq_ratio_matches_first_order_theory_for_small_eta_and_rho(seed):
    res = run_dynamics(DynamicsConfig(steps=1, seed=seed, eta=1e-4, rho=1e-3))
    assert res.first_step.C < 0  # large cores, small gradients: SAM must shrink Q
    assert res.first_step.measured["SAM"] < 0
    assert res.dq_ratio == pytest.approx(1.0, abs=0.05)
    assert res.first_step.dq_ratio["DAS"] == pytest.approx(1.0, abs=0.05)


def test_dq_ratio_for_das_uses_alpha_and_sam_ignores_it():
    base = run_dynamics(DynamicsConfig(steps=1, eta=1e-4, rho=1e-3, **SMALL))
    other = run_dynamics(DynamicsConfig(steps=1, eta=1e-4, rho=1e-3, alpha=3e-3, **SMALL))
    assert other.curves["SAM"].Q == base.curves["SAM"].Q
    # DAS's drift scales with alpha: three times the measured change, ratio still ~1
    assert other.first_step.measured["DAS"] == pytest.approx(3 * base.first_step.measured["DAS"], rel=0.02)
    assert other.first_step.dq_ratio["DAS"] == pytest.approx(1.0, abs=0.05)


def test_sam_and_das_end_with_smaller_norm_deviation_than_gd():
    res = run_dynamics(DynamicsConfig(steps=300))
    q = {name: c.Q[-1] for name, c in res.curves.items()}
    q0 = res.first_step.Q
    assert q["SAM"] < 0.95 * q["GD"]
    assert q["DAS"] < 0.95 * q["GD"]
    # GD nearly conserves Q (only an O(eta^2) drift); SAM and DAS move it much more
    assert q0 - q["GD"] < 0.5 * (q0 - q["SAM"])
    assert all(math.isfinite(x) for c in res.curves.values() for x in c.loss + c.Q + c.C)


def test_rho_and_alpha_zero_reduce_to_gd():
    res = run_dynamics(DynamicsConfig(steps=5, rho=0.0, **SMALL))
    gd = res.curves["GD"]
    for name in ("SAM", "DAS"):
        np.testing.assert_allclose(res.curves[name].Q, gd.Q, rtol=1e-12)
        np.testing.assert_allclose(res.curves[name].loss, gd.loss, rtol=1e-12)
    assert math.isnan(res.dq_ratio)  # no prediction to compare with


def test_divergence_is_a_clear_error():
    with pytest.raises(ValueError, match="diverged.*eta"):
        run_dynamics(DynamicsConfig(steps=50, eta=10.0, **SMALL))


def test_progress_callback_and_thread_count_restored():
    calls = []
    threads = torch.get_num_threads()
    run_dynamics(DynamicsConfig(steps=4, **SMALL), progress=lambda *a: calls.append(a))
    assert torch.get_num_threads() == threads
    for name in ("GD", "SAM", "DAS"):
        assert [c for c in calls if c[0] == name] == [(name, t, 4) for t in range(1, 5)]


# ------------------------------------------------------------------------------------ output
def test_written_files_have_expected_keys_columns_and_values(tmp_path):
    cfg = DynamicsConfig(steps=6, **SMALL)
    res = run_dynamics(cfg)
    paths = write_dynamics(res, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"dynamics.json", "dynamics.csv", "dynamics.png"}
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["figure"].stat().st_size > 10_000

    data = json.loads(paths["results"].read_text())
    assert {"config", "curves", "dq_ratio", "first_step", "summary"} <= set(data)
    assert data["config"]["steps"] == 6 and data["config"]["alpha"] == cfg.rho
    assert set(data["curves"]) == {"GD", "SAM", "DAS"}
    for curve in data["curves"].values():
        assert {"loss", "Q", "C"} <= set(curve)
        assert all(len(curve[k]) == 7 for k in ("step", "loss", "Q", "C", "grad_norm"))
    # the recorded dq_ratio is the measured first-step difference over the prediction, from the curves
    c = data["curves"]
    measured = c["SAM"]["Q"][1] - c["GD"]["Q"][1]
    predicted = 4 * cfg.eta * cfg.rho * c["GD"]["C"][0] / c["GD"]["grad_norm"][0]
    assert data["dq_ratio"] == pytest.approx(measured / predicted, rel=1e-9)
    assert data["summary"]["GD"]["dq_ratio"] is None

    with open(paths["curves"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 3 * 7
    for row in rows:
        curve = data["curves"][row["optimizer"]]
        step = int(row["step"])
        assert float(row["Q"]) == curve["Q"][step]  # exact round trip
        assert float(row["C"]) == curve["C"][step]
        assert float(row["loss"]) == curve["loss"][step]


def test_same_seed_gives_identical_json_and_another_seed_does_not(tmp_path):
    cfg = DynamicsConfig(steps=15, **SMALL)
    a = write_dynamics(run_dynamics(cfg), tmp_path / "a")["results"].read_bytes()
    b = write_dynamics(run_dynamics(cfg), tmp_path / "b")["results"].read_bytes()
    c = write_dynamics(run_dynamics(DynamicsConfig(steps=15, seed=1, **SMALL)), tmp_path / "c")["results"].read_bytes()
    assert a == b
    assert a != c


def test_failed_rewrite_leaves_no_complete_looking_result(tmp_path, monkeypatch):
    res = run_dynamics(DynamicsConfig(steps=3, **SMALL))
    write_dynamics(res, tmp_path)
    assert (tmp_path / "dynamics.json").exists()

    def broken(fig, path, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(dyn, "save_figure", broken)
    with pytest.raises(OSError, match="disk full"):
        write_dynamics(res, tmp_path)
    # the old JSON (the completion marker) is gone, and no temporary files are left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamics.csv", "dynamics.png"]
