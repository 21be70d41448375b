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
    assert set(data["curves"]) == {"GD", "SAM", "DAS", "DAS-gradient"}
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
    assert len(rows) == 4 * 7
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


# ------------------------------------------------------------- bases, balance, late phase
def _oracle(problem, cfg, method, steps, beta=None):
    """Losses and Q of ``steps`` steps by hand (numpy float64, docs/design.md, section 1): the base
    (plain GD, heavy-ball, or Adam with torch's defaults), SAM on it, DAS (sam-matched, group norm,
    clamp [0.5, 2]) on it, with the balance factor when ``beta`` is given, DAS in gradient form
    (``g_k + c_k w_k``, ``c_k = -alpha (gamma_k - gamma_bar) / (||g|| n_k)``) and MSAM (the step's gradient
    at ``w - rho m / ||m||``, m the momentum buffer, Adam's first moment or, on plain GD, the last step's
    gradient; the curve at ``w``)."""
    w = list(_cores(problem))
    y = problem.target.numpy()
    eta, mu, (b1, b2, eps) = cfg.eta, 0.9, (0.9, 0.999, 1e-8)
    buf = [np.zeros_like(x) for x in w]
    m1, m2 = [np.zeros_like(x) for x in w], [np.zeros_like(x) for x in w]
    last = [np.zeros_like(x) for x in w]  # plain GD's last step gradient (MSAM's direction there)
    losses, qs = [], []
    for t in range(steps + 1):
        loss, g = _grads(*w, y)
        losses.append(loss)
        qs.append(_q_c_norm(w, g)[0])
        if t == steps:
            break
        gnorm = math.sqrt(sum(float((d**2).sum()) for d in g))
        if method == "SAM":  # the base steps with the gradient at w + rho g / ||g||
            g = _grads(*[x + cfg.rho * d / gnorm for x, d in zip(w, g)], y)[1]
        if method == "MSAM" and t > 0:  # the gradient at w - rho m / ||m||
            m = {"momentum": buf, "adam": m1}.get(cfg.base, last)
            mnorm = math.sqrt(sum(float((x**2).sum()) for x in m))
            g = _grads(*[x - cfg.msam_radius * d / (mnorm + 1e-12) for x, d in zip(w, m)], y)[1]
        if method == "DAS-gradient":
            n = np.array([float((x**2).sum()) for x in w])
            gam = np.array([float((d**2).sum()) for d in g])
            c = np.clip(-cfg.das_alpha * (gam - gam.mean()) / (gnorm * n), -3 / (2 * eta), 0.75 / (2 * eta))
            g = [d + ck * x for d, ck, x in zip(g, c, w)]
        if method == "DAS":
            n = np.array([float((x**2).sum()) for x in w])
            gam = np.array([float((d**2).sum()) for d in g])
            s2 = np.clip(1 + 2 * cfg.das_alpha * eta * (gam - gam.mean()) / (gnorm * n), 0.25, 4.0)
            if beta is not None:
                s2 = np.clip(s2 * np.exp(-beta * eta * (np.log(n) - np.log(n).mean())), 0.25, 4.0)
            w = [math.sqrt(s) * x for s, x in zip(s2, w)]
        last = g
        for k in range(3):
            if cfg.base == "sgd":
                step = g[k]
            elif cfg.base == "momentum":
                buf[k] = mu * buf[k] + g[k]
                step = buf[k]
            else:
                m1[k] = b1 * m1[k] + (1 - b1) * g[k]
                m2[k] = b2 * m2[k] + (1 - b2) * g[k] ** 2
                mhat, vhat = m1[k] / (1 - b1 ** (t + 1)), m2[k] / (1 - b2 ** (t + 1))
                step = mhat / (np.sqrt(vhat) + eps)
            w[k] = w[k] - eta * step
    return losses, qs


def test_default_study_matches_an_independent_float64_recomputation():
    # The default settings (base sgd, no balance): today's output, pinned to the hand-written oracle.
    cfg = DynamicsConfig(steps=3)
    assert cfg.base == "sgd" and cfg.balance is None
    res = run_dynamics(cfg)
    assert list(res.curves) == ["GD", "SAM", "DAS", "DAS-gradient"]
    p = make_problem(cfg)
    for name in ("GD", "SAM", "DAS", "DAS-gradient"):
        losses, qs = _oracle(p, cfg, name, 3)
        np.testing.assert_allclose(res.curves[name].loss, losses, rtol=1e-12)
        np.testing.assert_allclose(res.curves[name].Q, qs, rtol=1e-10)
    assert res.setup["base_optimizer"] == "SGD (lr=eta, no momentum)"
    assert [r["base"] for r in res.records()] == ["sgd"] * 4
    assert [r["method"] for r in res.records()] == ["base", "sam", "das", "das-gradient"]
    assert {r["momentum"] for r in res.records()} == {0.0}


@pytest.mark.parametrize("base", ["momentum", "adam"])
def test_base_choice_is_the_optimizer_actually_used(base):
    cfg = DynamicsConfig(steps=4, base=base, eta=5e-3, **SMALL)
    res = run_dynamics(cfg)
    first = {"momentum": "momentum", "adam": "Adam"}[base]
    names = [first, "SAM", "DAS", "DAS-gradient", "MSAM"]
    assert list(res.curves) == names
    p = make_problem(cfg)
    for name, method in zip(names, ["GD", *names[1:]]):
        losses, qs = _oracle(p, cfg, method, 4)
        np.testing.assert_allclose(res.curves[name].loss, losses, rtol=1e-10)
        np.testing.assert_allclose(res.curves[name].Q, qs, rtol=1e-8)
    # plain GD from the same start differs: the base really changed
    gd, _ = _oracle(p, DynamicsConfig(steps=4, eta=5e-3, **SMALL), "GD", 4)
    assert abs(res.curves[first].loss[-1] - gd[-1]) > 1e-6 * gd[-1]
    # the base optimizer's own state is present in every wrapper
    model = p.model
    (group,) = model.core_groups()
    for name in names:
        opt = dyn._optimizer(name, model, group, cfg)
        p.loss(model).backward()
        if name == "SAM":
            opt.first_step(zero_grad=True)
            p.loss(model).backward()
            opt.second_step()
        else:
            opt.step()
        state = opt.state[group.cores[0]]
        assert ("exp_avg" in state) == (base == "adam")
        assert ("momentum_buffer" in state and state["momentum_buffer"] is not None) == (base == "momentum")
        opt.zero_grad()
    assert [r["base"] for r in res.records()] == ["adam" if base == "adam" else "sgd"] * 5


def test_invalid_base_is_one_clear_line():
    with pytest.raises(ValueError, match=r"Invalid base value: 'rmsprop' \(expected one of sgd, momentum, adam\)"):
        DynamicsConfig(base="rmsprop")
    with pytest.raises(ValueError, match="Invalid balance value: -0.1"):
        DynamicsConfig(balance=-0.1)


def test_cli_invalid_base_exits_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from tensordas.cli import app

    result = CliRunner().invoke(app, ["dynamics", "--base", "rmsprop", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    text = result.output
    assert "rmsprop" in text and "Traceback" not in text
    assert sum("rmsprop" in line for line in text.splitlines()) == 1
    assert not (tmp_path / "o" / "dynamics.json").exists()


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_balance_zero_curve_equals_das(base):
    res = run_dynamics(DynamicsConfig(steps=6, base=base, balance=0.0, **SMALL))
    assert list(res.curves)[-1] == dyn.BALANCED
    assert res.curves[dyn.BALANCED].loss == res.curves["DAS"].loss
    assert res.curves[dyn.BALANCED].Q == res.curves["DAS"].Q


@pytest.mark.parametrize("base", ["sgd", "momentum"])
def test_balance_curve_matches_the_oracle_and_moves_q(base):
    cfg = DynamicsConfig(steps=3, base=base, balance=5.0, **SMALL)
    res = run_dynamics(cfg)
    losses, qs = _oracle(make_problem(cfg), cfg, "DAS", 3, beta=5.0)
    np.testing.assert_allclose(res.curves[dyn.BALANCED].loss, losses, rtol=1e-10)
    np.testing.assert_allclose(res.curves[dyn.BALANCED].Q, qs, rtol=1e-8)
    assert res.curves[dyn.BALANCED].Q[-1] < res.curves["DAS"].Q[-1]  # towards equal norms
    rec = {r["optimizer"]: r for r in res.records()}
    assert rec[dyn.BALANCED]["balance"] == 5.0 and rec["DAS"]["balance"] is None
    assert rec[dyn.BALANCED]["method"] == "das"


def test_loss_min_is_eckart_young_and_converged_step_uses_it():
    cfg = DynamicsConfig(**SMALL)
    p = make_problem(cfg)
    sv = np.linalg.svd(p.target.numpy(), compute_uv=False)
    assert p.loss_min() == pytest.approx(0.5 * float((sv[3:] ** 2).sum()), rel=1e-12)
    # initial excess 100 above the optimum 10: converged at excess <= 1e-4 * 100 = 0.01
    assert dyn.converged_step([110.0, 20.0, 10.02, 10.01, 10.0], 10.0) == 3
    assert dyn.converged_step([110.0, 20.0], 10.0) is None


def test_late_phase_summary_and_round_trip(tmp_path):
    cfg = DynamicsConfig(steps=200, base="momentum", balance=0.5, eta=5e-3, **SMALL)
    res = run_dynamics(cfg)
    rows = {r["optimizer"]: r for r in res.summary()}
    for name, row in rows.items():
        t = row["converged_step"]
        assert t is not None and t < 200  # heavy-ball converges well within the run
        curve = res.curves[name]
        assert row["Q_converged"] == curve.Q[t]
        assert curve.loss[t] - res.loss_min <= 1e-4 * (curve.loss[0] - res.loss_min)
        assert curve.loss[t - 1] - res.loss_min > 1e-4 * (curve.loss[0] - res.loss_min)
    write_dynamics(res, tmp_path)
    again = run_dynamics(cfg, out_dir=tmp_path)  # resumed from the written files
    assert again.summary() == res.summary()
    assert again.setup["base_optimizer"].startswith("SGD (lr=eta, heavy-ball momentum 0.9")
    data = json.loads((tmp_path / "dynamics.json").read_text())
    assert data["config"]["base"] == "momentum" and data["config"]["balance"] == 0.5
    assert data["loss_min"] == pytest.approx(res.loss_min)


def test_balance_curve_has_its_own_line_style():
    res = run_dynamics(DynamicsConfig(steps=2, balance=0.1, **SMALL))
    fig = dyn.plot_dynamics(res)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"GD", "SAM", "DAS", "DAS-gradient", dyn.BALANCED}
    assert (lines[dyn.BALANCED].get_color(), lines[dyn.BALANCED].get_linestyle()) == dyn.BALANCE_STYLE
    assert lines[dyn.BALANCED].get_color() != lines["GD"].get_color()
    assert "balance" in fig.get_suptitle() and "0.1" in fig.get_suptitle()


# ------------------------------------------------------------------ curves from the method registry
def test_optimizers_name_registry_methods_and_old_labels_name_the_same_curves():
    cfg = DynamicsConfig(steps=3, optimizers=("base", "sam", "msam"), **SMALL)
    assert cfg.curves == ("GD", "SAM", "MSAM") and cfg.to_dict()["optimizers"] == ["base", "sam", "msam"]
    old = DynamicsConfig(steps=3, optimizers=["GD", "SAM", "MSAM"], **SMALL)
    assert old.optimizers == ("base", "sam", "msam") and old.to_dict() == cfg.to_dict()
    assert DynamicsConfig(**cfg.to_dict()).to_dict() == cfg.to_dict()
    # the default set, written out, is the default study (an old dynamics.json without the key reads back as it)
    assert DynamicsConfig().to_dict() == DynamicsConfig(optimizers=("base", "sam", "das", "das-gradient")).to_dict()
    assert DynamicsConfig(base="adam").methods[-1] == "msam"
    res = run_dynamics(cfg)
    losses, qs = _oracle(make_problem(cfg), cfg, "MSAM", 3)  # MSAM on plain SGD: its direction is the last gradient
    np.testing.assert_allclose(res.curves["MSAM"].Q, qs, rtol=1e-10)
    np.testing.assert_allclose(res.curves["MSAM"].loss, losses, rtol=1e-10)
    assert set(res.first_step.dq_ratio) == {"SAM"}  # MSAM has no first-order prediction: no check, no error
    assert [r["method"] for r in res.records()] == ["base", "sam", "msam"]


def test_a_method_without_an_old_label_is_a_curve_under_its_registry_name():
    cfg = DynamicsConfig(steps=2, optimizers=("base", "das-authors"), **SMALL)
    res = run_dynamics(cfg)
    assert list(res.curves) == ["GD", "das-authors"] and res.first_step.dq_ratio == {}
    assert math.isnan(res.dq_ratio)
    assert "das-authors" in res.setup and "authors" in res.setup["das-authors"]
    model = make_problem(cfg).model
    opt = dyn._optimizer("das-authors", model, model.core_groups()[0], cfg)
    assert (opt.variant, opt.alpha_schedule, opt.total_steps) == ("reference", "cosine", 2)


@pytest.mark.parametrize(
    ("optimizers", "needle"),
    [
        (("sam", "das"), "add base"),
        (("base", "nope"), "Invalid optimizer: 'nope'"),
        (("base", "jreg"), "'jreg' adds a loss term"),
        (("base", "sam", "SAM"), "named twice"),
        (("base", "DAS+balance"), "set balance=BETA"),
        ("base,sam", "expected a list"),
        ((), "expected a list"),
    ],
)
def test_invalid_optimizers_are_one_clear_line(optimizers, needle):
    with pytest.raises(ValueError, match=needle):
        DynamicsConfig(optimizers=optimizers)


def test_the_balance_curve_is_das_with_the_registry_s_balance_option(monkeypatch):
    seen = []
    real = dyn.build_optimizer
    monkeypatch.setattr(dyn, "build_optimizer", lambda config, *a, **k: seen.append(config) or real(config, *a, **k))
    run_dynamics(DynamicsConfig(steps=1, balance=0.3, **SMALL))
    assert [c.method for c in seen] == ["base", "sam", "das", "das-gradient", "das"]
    assert [c.balance for c in seen] == [0.0, 0.0, 0.0, 0.0, 0.3]


def test_cli_optimizer_option_picks_the_curves(tmp_path):
    from tensordas.cli import main

    out = tmp_path / "o"
    assert main(["dynamics", "--steps", "2", "--optimizer", "base,msam", "--out", str(out), "--size", "12x10",
                 "--rank", "3", "--no-progress"]) == 0  # fmt: skip
    data = json.loads((out / "dynamics.json").read_text())
    assert list(data["curves"]) == ["GD", "MSAM"] and data["config"]["optimizers"] == ["base", "msam"]
    assert main(["dynamics", "--optimizer", "sam,das", "--out", str(tmp_path / "bad")]) == 2
