"""Paired statistics of comparisons (docs/design.md section 7): intervals, shares of SAM's gain, verdicts,
summary entries.

Intervals are checked against SciPy's paired t-test and a hand-computed textbook example; the share's
Fieller interval against the textbook quadratic solved with numpy.roots, the paired t-test it inverts,
cases whose ratio is known exactly and a simulation of its coverage; the verdict rule on constructed
intervals for every branch and at its boundaries.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from tensordas.reporting import json_ready
from tensordas.reporting.stats import (
    VERDICTS,
    PairedDiff,
    fieller_interval,
    paired_difference,
    recovered_share,
    summary_entry,
    verdict,
)


# ------------------------------------------------------------------------------------ intervals
@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_paired_interval_matches_scipy_ttest_rel(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(0.8, 0.05, n), rng.normal(0.75, 0.05, n)
    d = paired_difference(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert d.n == n
    assert d.mean == pytest.approx(float(np.mean(a - b)), abs=1e-15)
    assert (d.low, d.high) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))


def test_paired_interval_textbook_example():
    # d = 1..5: mean 3, sd sqrt(2.5), se sqrt(0.5); t_{0.975, 4} = 2.7764451051977987 (tables: 2.776)
    d = paired_difference([2, 4, 6, 8, 10], [1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(0.5)
    assert d.mean == 3.0
    assert (d.low, d.high) == (pytest.approx(3 - half, abs=1e-12), pytest.approx(3 + half, abs=1e-12))
    assert d.low == pytest.approx(1.0368, abs=1e-4)


def test_one_seed_gives_an_undefined_interval_and_an_undecided_verdict():
    d = paired_difference([0.9], [0.5])
    assert d.mean == pytest.approx(0.4) and math.isnan(d.low) and math.isnan(d.high)
    assert not d.above_zero
    assert json.loads(json.dumps(json_ready(d.to_dict()))) == {"mean": pytest.approx(0.4), "ci95": [None, None]}
    good = PairedDiff(0.5, 0.4, 0.6, 1)
    assert verdict(d, good, good, 0.01) == "undecided"


def test_equal_differences_give_a_zero_width_interval():
    d = paired_difference([0.7, 0.8, 0.9], [0.6, 0.7, 0.8])
    assert d.low == pytest.approx(0.1) and d.high == pytest.approx(0.1) and d.above_zero


def test_a_non_finite_value_makes_the_difference_undefined():
    d = paired_difference([0.7, math.nan, 0.9], [0.6, 0.7, 0.8])
    assert math.isnan(d.mean) and math.isnan(d.low) and not d.above_zero


def test_orientation_flips_a_lower_is_better_difference():
    d = paired_difference([1.0, 1.2, 1.1], [2.0, 2.1, 2.3])  # e.g. RMSE: the first method is better
    o = d.oriented(higher_is_better=False)
    assert (o.mean, o.low, o.high) == (-d.mean, -d.high, -d.low)
    assert o.above_zero and not d.above_zero
    assert d.oriented(higher_is_better=True) == d


@pytest.mark.parametrize(("a", "b"), [([1, 2], [1]), ([], []), (["x", 1], [1, 2]), ([[1, 2]], [[1, 2]])])
def test_paired_difference_rejects_unpaired_or_bad_values(a, b):
    with pytest.raises(ValueError, match="per seed|per-seed|numbers"):
        paired_difference(a, b)


# ------------------------------------------------------------------------------- recovered share
BASE = [0.60, 0.62, 0.65, 0.61]
SAM = [0.70, 0.74, 0.73, 0.72]


@pytest.mark.parametrize(("share", "higher"), [(0.0, True), (0.5, True), (1.0, True), (0.25, False)])
def test_recovered_share_is_exact_when_a_method_recovers_a_fixed_share_on_every_seed(share, higher):
    sign = 1 if higher else -1
    base, sam = [sign * v for v in BASE], [sign * v for v in SAM]
    das = [b + share * (s - b) for b, s in zip(base, sam)]
    out = recovered_share(base, sam, das, higher_is_better=higher)
    assert out["mean"] == pytest.approx(share, abs=1e-12) and out["unbounded"] is False
    assert out["ci95"] == [pytest.approx(share, abs=1e-12), pytest.approx(share, abs=1e-12)]


def fieller_by_hand(x, y, confidence=0.95):
    """The Fieller set {rho: (mean(x) - rho mean(y))^2 <= t^2 var_mean(x - rho y)} from the textbook quadratic,
    solved with numpy.roots (an independent route: plain covariances, no rewriting of the discriminant)."""
    x, y, n = np.asarray(x, float), np.asarray(y, float), len(x)
    cov = np.cov(x, y, ddof=1) / n
    t2 = stats.t.ppf(0.5 + confidence / 2, n - 1) ** 2
    a, b = x.mean(), y.mean()
    # (b^2 - t^2 s_bb) rho^2 - 2 (a b - t^2 s_ab) rho + (a^2 - t^2 s_aa) <= 0
    coefficients = [b * b - t2 * cov[1, 1], -2 * (a * b - t2 * cov[0, 1]), a * a - t2 * cov[0, 0]]
    roots = np.roots(coefficients)
    return (sorted(roots.real) if np.isreal(roots).all() else roots), coefficients[0] > 0


def test_fieller_interval_matches_the_quadratic_solved_by_hand_and_inverts_the_paired_t_test():
    gain_das = np.subtract([0.63, 0.70, 0.66, 0.64], BASE)
    gain_sam = np.subtract(SAM, BASE)
    (low, high), bounded = fieller_by_hand(gain_das, gain_sam)
    assert bounded
    got = fieller_interval(gain_das, gain_sam)
    assert got == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert got[0] < gain_das.mean() / gain_sam.mean() < got[1]
    # at each bound the paired t-test of x - rho y against 0 sits exactly on its 95% critical value
    crit = stats.t.ppf(0.975, len(BASE) - 1)
    for rho in got:
        assert abs(stats.ttest_1samp(gain_das - rho * gain_sam, 0.0).statistic) == pytest.approx(crit, rel=1e-9)
    # and recovered_share reports it for the same data: gains 0.03+0.08+0.01+0.03 over 0.10+0.12+0.08+0.11
    share = recovered_share(BASE, SAM, [0.63, 0.70, 0.66, 0.64], higher_is_better=True)
    assert share["mean"] == pytest.approx(0.15 / 0.41) and share["ci95"] == [pytest.approx(low), pytest.approx(high)]


def test_fieller_interval_is_unbounded_when_the_denominator_is_not_significant():
    x, y = [0.02, 0.05, -0.01], [0.10, -0.06, 0.08]  # y's t-interval contains 0
    roots, bounded = fieller_by_hand(x, y)
    assert not bounded and not isinstance(roots, list)  # complex roots, A < 0: the set is the whole line
    assert fieller_interval(x, y) == (-math.inf, math.inf)
    # the complement of an interval (exclusive set) is unbounded too: y not significant, x strongly so
    x, y = [1.0, 1.1, 0.9], [0.10, -0.02, 0.15]
    roots, bounded = fieller_by_hand(x, y)
    assert not bounded and isinstance(roots, list)  # real roots, A < 0: the set is (-inf, low] U [high, inf)
    assert fieller_interval(x, y) == (-math.inf, math.inf)
    base = [0.0, 0.0, 0.0]
    share = recovered_share(base, y, x, higher_is_better=True)
    assert share["unbounded"] is True and share["mean"] == pytest.approx(3.0 / 0.23)
    assert json.loads(json.dumps(json_ready(share)))["ci95"] == [None, None]


def test_fieller_interval_of_one_value_or_a_non_finite_value_is_undefined():
    assert all(math.isnan(v) for v in fieller_interval([0.1], [0.2]))
    assert all(math.isnan(v) for v in fieller_interval([0.1, math.nan], [0.2, 0.3]))
    with pytest.raises(ValueError, match="per seed"):
        fieller_interval([0.1, 0.2], [0.3])


@pytest.mark.parametrize("n", [3, 5])
def test_fieller_share_interval_covers_the_true_share_at_least_93_percent(n):
    # paired normal per-seed gains: SAM's 0.10 ± 0.02 (significant on almost every draw at n = 3),
    # the method's a true 0.4 of it, correlated 0.5 with SAM's; an unbounded interval covers
    rng = np.random.default_rng(20)
    true_share, draws, covered = 0.4, 2000, 0
    for _ in range(draws):
        z = rng.standard_normal((2, n))
        gain_sam = 0.10 + 0.02 * z[0]
        gain = true_share * 0.10 + 0.02 * (0.5 * z[0] + math.sqrt(0.75) * z[1])
        low, high = fieller_interval(gain, gain_sam)
        covered += low <= true_share <= high
    assert covered / draws >= 0.93


def test_recovered_share_is_none_without_a_gain_of_sam_or_without_two_finite_seeds():
    assert recovered_share(BASE, SAM, BASE, higher_is_better=False) is None  # SAM is worse on that orientation
    assert recovered_share(BASE, BASE, SAM, higher_is_better=True) is None  # SAM gains nothing: no share
    assert recovered_share(BASE[:1], SAM[:1], BASE[:1], higher_is_better=True) is None  # one seed
    assert recovered_share(BASE, SAM, [0.6, math.nan, 0.6, 0.6], higher_is_better=True) is None  # diverged
    noisy_sam = [0.70, 0.55, 0.73, 0.64]  # SAM - base: +0.10, -0.07, +0.08, +0.03: mean > 0, interval contains 0
    out = recovered_share(BASE, noisy_sam, BASE, higher_is_better=True)
    assert out["unbounded"] and out["mean"] == 0.0 and out["ci95"] == [-math.inf, math.inf]


def test_recovered_share_rejects_unpaired_values():
    with pytest.raises(ValueError, match="per seed"):
        recovered_share(BASE, SAM, BASE[:3], higher_is_better=True)


# ------------------------------------------------------------------------------------ verdicts
def iv(low: float, high: float) -> PairedDiff:
    return PairedDiff((low + high) / 2, low, high, 3)


SIG = iv(0.05, 0.15)  # a significant SAM gain
TOL = 0.01


@pytest.mark.parametrize(
    ("sam_base", "m_sam", "m_base", "expected"),
    [
        # 1. SAM's gain not above 0 -> undecided, whatever m did
        (iv(-0.02, 0.10), iv(0.5, 0.6), iv(0.5, 0.6), "undecided"),
        (iv(0.0, 0.10), iv(-0.001, 0.001), iv(0.05, 0.1), "undecided"),  # touching 0 is not above it
        (iv(-0.3, -0.1), iv(0.2, 0.3), iv(0.1, 0.2), "undecided"),
        (PairedDiff(0.1, math.nan, math.nan, 1), iv(0.2, 0.3), iv(0.1, 0.2), "undecided"),
        # 2. m gains over the base; m - SAM inside +-tolerance -> matches SAM (bounds included)
        (SIG, iv(-0.005, 0.008), iv(0.05, 0.15), "matches SAM"),
        (SIG, iv(-TOL, TOL), iv(0.05, 0.15), "matches SAM"),
        (SIG, iv(0.002, 0.009), iv(0.05, 0.15), "matches SAM"),  # above 0 but within tolerance: checked first
        # ... m - SAM above 0 (and not within tolerance) -> better than SAM
        (SIG, iv(0.001, 0.02), iv(0.1, 0.2), "better than SAM"),
        (SIG, iv(0.02, 0.05), iv(0.1, 0.2), "better than SAM"),
        # ... m - SAM contains 0 (bounds included) -> not distinguishable
        (SIG, iv(-TOL - 1e-9, TOL), iv(0.05, 0.15), "not distinguishable from SAM"),
        (SIG, iv(-0.05, 0.03), iv(0.001, 0.1), "not distinguishable from SAM"),
        (SIG, iv(0.0, 0.02), iv(0.01, 0.1), "not distinguishable from SAM"),  # touching 0 from above
        (SIG, iv(-0.02, 0.0), iv(0.01, 0.1), "not distinguishable from SAM"),  # touching 0 from below
        # ... m below SAM, above base -> between base and SAM
        (SIG, iv(-0.08, -0.02), iv(0.01, 0.05), "between base and SAM"),
        # 3. no gain over the base shown: m - SAM below 0 -> no better than base
        (SIG, iv(-0.08, -0.02), iv(0.0, 0.05), "no better than base"),  # touching 0 is not above it
        (SIG, iv(-0.15, -0.05), iv(-0.02, 0.01), "no better than base"),
        (SIG, iv(-0.2, -0.1), iv(-0.1, -0.05), "no better than base"),
        # ... else inconclusive: a wide m - SAM that contains 0 (or tolerance) says nothing without a gain
        (iv(0.01, 0.09), iv(-0.09, 0.01), iv(-0.03, 0.05), "inconclusive"),  # issue 20's example
        (SIG, iv(-0.005, 0.005), iv(-0.01, 0.2), "inconclusive"),  # inside the tolerance, but no gain shown
        (SIG, iv(-0.05, 0.0), iv(0.0, 0.1), "inconclusive"),  # m - SAM touching 0 from below
        (SIG, iv(0.01, 0.3), iv(-0.01, 0.3), "inconclusive"),
        (SIG, PairedDiff(math.nan, math.nan, math.nan, 3), iv(math.nan, math.nan), "inconclusive"),
    ],
)
def test_verdict_every_branch_and_boundary(sam_base, m_sam, m_base, expected):
    assert verdict(sam_base, m_sam, m_base, TOL) == expected
    assert expected in VERDICTS


def test_verdict_with_zero_tolerance_needs_an_exact_match():
    assert verdict(SIG, iv(0.0, 0.0), SIG, 0.0) == "matches SAM"
    assert verdict(SIG, iv(-1e-12, 0.0), SIG, 0.0) == "not distinguishable from SAM"


@pytest.mark.parametrize("tol", [-0.01, math.nan, math.inf, "0.01", None])
def test_verdict_rejects_a_bad_tolerance(tol):
    with pytest.raises(ValueError, match="match_tolerance"):
        verdict(SIG, SIG, SIG, tol)


# -------------------------------------------------------------------------------- summary entries
def records(metric: str = "acc", per_method: dict | None = None, seeds=(0, 1, 2)) -> list[dict]:
    per_method = per_method or {
        "base": [0.60, 0.62, 0.64],
        "sam": [0.70, 0.71, 0.75],
        "das": [0.63, 0.66, 0.66],
        "looksam": [0.66, 0.70, 0.70],
    }
    times = {"base": 1.0, "sam": 2.0, "das": 1.1, "looksam": 1.3}
    out = []
    for method, vals in per_method.items():
        for seed, v in zip(seeds, vals):
            selected = {"alpha": 10.0 * (seed + 1)} if method == "das" else ({"rho": 0.05} if method != "base" else {})
            out.append(dict(method=method, seed=seed, **{metric: v}, step_time_ms=times[method], selected=selected))
    return out[::-1]  # order must not matter


def test_summary_entry_holds_design_fields_and_numbers():
    entry = summary_entry(records(), experiment="noisy", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert list(entry) == [
        "experiment", "metric", "higher_is_better", "n_seeds", "match_tolerance", "mean", "diff",
        "recovered", "step_time_das_over_sam", "selected", "verdict", "verdicts", "shares", "step_time_over_sam",
        "step_time_over_base", "note",
    ]  # fmt: skip
    assert entry["note"] is None
    assert entry["n_seeds"] == 3
    assert entry["mean"] == pytest.approx({"base": 0.62, "sam": 0.72, "das": 0.65, "looksam": 0.68666666})
    assert list(entry["diff"]) == ["sam-base", "das-base", "das-sam", "looksam-base", "looksam-sam"]
    ci = stats.ttest_rel([0.63, 0.66, 0.66], [0.70, 0.71, 0.75]).confidence_interval(0.95)
    assert entry["diff"]["das-sam"]["mean"] == pytest.approx(-0.07)
    assert entry["diff"]["das-sam"]["ci95"] == [pytest.approx(ci.low), pytest.approx(ci.high)]
    ci = stats.ttest_rel([0.66, 0.70, 0.70], [0.60, 0.62, 0.64]).confidence_interval(0.95)
    assert entry["diff"]["looksam-base"]["ci95"] == [pytest.approx(ci.low), pytest.approx(ci.high)]
    assert entry["recovered"]["mean"] == pytest.approx(0.03 / 0.10)
    assert entry["shares"]["das"] == entry["recovered"]
    assert entry["shares"]["looksam"]["mean"] == pytest.approx((0.2 / 3) / 0.10)
    (low, high), _ = fieller_by_hand(np.subtract([0.66, 0.70, 0.70], [0.60, 0.62, 0.64]), [0.10, 0.09, 0.11])
    assert entry["shares"]["looksam"]["ci95"] == [pytest.approx(low), pytest.approx(high)]
    assert entry["step_time_das_over_sam"] == pytest.approx(0.55)
    assert entry["step_time_over_sam"] == {"das": pytest.approx(0.55), "looksam": pytest.approx(0.65)}
    assert entry["step_time_over_base"] == {"das": pytest.approx(1.1), "looksam": pytest.approx(1.3)}
    assert entry["selected"]["das"] == [
        {"seed": 0, "alpha": 10.0},
        {"seed": 1, "alpha": 20.0},
        {"seed": 2, "alpha": 30.0},
    ]
    assert "base" not in entry["selected"]
    # das: +0.03 [+0.005, +0.055] over base, below SAM; looksam: +0.067 over base, -0.033 [-0.085, +0.018] to SAM
    assert entry["verdicts"] == {"das": "between base and SAM", "looksam": "not distinguishable from SAM"}
    assert entry["verdict"] == entry["verdicts"]["das"]
    json.dumps(json_ready(entry))  # writable as JSON


def test_summary_entry_gives_every_method_a_verdict_by_its_own_name():
    per_method = {
        "base": [0.60, 0.62, 0.64],
        "sam": [0.70, 0.71, 0.75],
        "msam": [0.60, 0.63, 0.63],  # no gain over the base, clearly below SAM
        "das-gradient": [0.58, 0.75, 0.62],  # wide: neither a gain nor a loss shown
        "saf": [0.70, 0.715, 0.75],  # SAM's level
    }
    recs = [dict(method=m, seed=s, acc=v) for m, vals in per_method.items() for s, v in enumerate(vals)]
    entry = summary_entry(recs, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert entry["verdicts"] == {
        "das-gradient": "inconclusive",
        "msam": "no better than base",
        "saf": "matches SAM",
    }
    assert list(entry["verdicts"]) == ["das-gradient", "msam", "saf"]  # by name (DAS first when it runs)
    # without DAS: its verdict is undecided and the note says why; no times recorded: no ratios
    assert entry["verdict"] == "undecided" and entry["recovered"] is None and "no runs of das" in entry["note"]
    assert entry["step_time_over_sam"] == {"das-gradient": None, "msam": None, "saf": None}
    assert set(entry["shares"]) == {"das-gradient", "msam", "saf"}
    for m in entry["verdicts"]:
        d = np.subtract(per_method[m], per_method["sam"])
        ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
        assert entry["diff"][f"{m}-sam"]["ci95"] == [pytest.approx(ci.low), pytest.approx(ci.high)]


def test_summary_entry_orients_every_verdict_for_a_lower_is_better_metric():
    rmse = {"base": [2.0, 2.1, 2.2], "sam": [1.5, 1.6, 1.6], "das": [1.5, 1.6, 1.61], "looksam": [2.1, 2.2, 2.3]}
    entry = summary_entry(
        records("rmse", rmse), experiment="c", metric="rmse", higher_is_better=False, match_tolerance=0.05
    )
    assert entry["diff"]["sam-base"]["mean"] == pytest.approx(-1.6 / 3)  # own direction: SAM lowers RMSE
    assert entry["diff"]["sam-base"]["ci95"][1] < 0
    assert entry["recovered"]["mean"] == pytest.approx((-1.59 / 3) / (-1.6 / 3))
    assert entry["verdicts"] == {"das": "matches SAM", "looksam": "no better than base"}


def test_summary_entry_with_one_seed_is_undecided():
    one = {"base": [0.6], "sam": [0.9], "das": [0.9]}
    entry = summary_entry(records("acc", one, seeds=(7,)), experiment="x", metric="acc", higher_is_better=True,
                          match_tolerance=0.01)  # fmt: skip
    assert entry["n_seeds"] == 1 and entry["verdict"] == "undecided" and entry["recovered"] is None
    assert json_ready(entry)["diff"]["sam-base"]["ci95"] == [None, None]


def test_summary_entry_pairs_each_method_on_the_seeds_base_sam_and_it_ran():
    recs = [r for r in records() if not (r["method"] == "das" and r["seed"] == 1)]
    entry = summary_entry(recs, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert entry["n_seeds"] == 3 and "seed(s) [1] left out: not run by every one of base, sam, das" in entry["note"]
    ci = stats.ttest_rel([0.63, 0.66], [0.60, 0.64]).confidence_interval(0.95)  # seeds 0 and 2 only
    assert entry["diff"]["das-base"]["ci95"] == [pytest.approx(ci.low), pytest.approx(ci.high)]
    ci = stats.ttest_rel([0.70, 0.71, 0.75], [0.60, 0.62, 0.64]).confidence_interval(0.95)  # every seed
    assert entry["diff"]["sam-base"]["ci95"] == [pytest.approx(ci.low), pytest.approx(ci.high)]
    assert entry["mean"]["base"] == pytest.approx(0.62) and entry["mean"]["das"] == pytest.approx(0.645)
    assert entry["shares"]["das"]["mean"] == pytest.approx((0.03 + 0.02) / (0.10 + 0.11))  # seeds 0 and 2
    recs = records() + [dict(method="looksam", seed=5, acc=0.7)]
    entry = summary_entry(recs, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert entry["n_seeds"] == 3 and "seed(s) [5] left out" in entry["note"]
    assert entry["mean"]["looksam"] == pytest.approx(np.mean([0.66, 0.70, 0.70]))


@pytest.mark.parametrize("kept", [("base",), ("das",), ("base", "das"), ("sam", "das"), ("base", "sam")])
def test_summary_entry_without_base_sam_or_das_is_undecided_with_a_note(kept):
    recs = [r for r in records() if r["method"] in kept]
    entry = summary_entry(recs, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert entry["verdict"] == "undecided" and entry["recovered"] is None
    assert "no runs of" in entry["note"] and all(m in entry["note"] for m in {"base", "sam", "das"} - set(kept))
    assert set(entry["mean"]) == set(kept)
    assert set(entry["verdicts"].values()) <= {"undecided"}
    written = json.loads(json.dumps(json_ready(entry)))  # undefined intervals are null
    if "das" in kept and not {"base", "sam"} <= set(kept):
        assert written["diff"]["das-sam"]["ci95"] == [None, None] or "sam" in kept
        assert written["diff"]["das-base"]["ci95"] == [None, None] or "base" in kept
    if {"base", "sam"} <= set(kept):  # a pair that exists is still reported
        ci = stats.ttest_rel([0.70, 0.71, 0.75], [0.60, 0.62, 0.64]).confidence_interval(0.95)
        assert written["diff"]["sam-base"]["ci95"] == [pytest.approx(ci.low), pytest.approx(ci.high)]


def test_summary_entry_leaves_out_reference_rows_and_treats_a_missing_metric_as_undefined():
    als = [dict(method=None, seed=s, acc=0.99, optimizer="als") for s in (0, 1, 2)]  # completion's ALS rows
    plain = summary_entry(records(), experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    with_als = summary_entry(records() + als, experiment="x", metric="acc", higher_is_better=True,
                             match_tolerance=0.01)  # fmt: skip
    assert with_als == plain
    diverged = [dict(r, acc=None) if r["method"] == "das" and r["seed"] == 0 else r for r in records()]
    entry = summary_entry(diverged, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    # one diverged DAS seed: no verdict is guessed for DAS from the others, and the note says why...
    assert math.isnan(entry["diff"]["das-sam"]["mean"]) and entry["verdict"] == "undecided"
    assert entry["note"] == "acc not finite for das seed 0: no verdict for das" and entry["recovered"] is None
    # ...while the other methods keep theirs
    assert entry["verdicts"]["looksam"] == plain["verdicts"]["looksam"] == "not distinguishable from SAM"
    assert entry["shares"]["looksam"] == plain["shares"]["looksam"]
    unstored = [{k: v for k, v in r.items() if k != "acc"} if r["method"] == "das" and r["seed"] == 0 else r
                for r in records()]  # fmt: skip
    again = summary_entry(unstored, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert again["note"] == "no acc for das seed 0; acc not finite for das seed 0: no verdict for das"
    same = [json.dumps(json_ready({k: v for k, v in e.items() if k != "note"})) for e in (again, entry)]
    assert same[0] == same[1]


@pytest.mark.parametrize("method", ["base", "sam"])
def test_summary_entry_with_a_diverged_base_or_sam_run_decides_nothing(method):
    diverged = [dict(r, acc=math.inf) if r["method"] == method and r["seed"] == 2 else r for r in records()]
    entry = summary_entry(diverged, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert entry["verdicts"] == {"das": "undecided", "looksam": "undecided"} and entry["verdict"] == "undecided"
    assert entry["shares"] == {"das": None, "looksam": None}
    assert entry["note"] == f"acc not finite for {method} seed 2: no verdict"


def test_summary_entry_names_choices_at_the_edge_of_their_grid():
    recs = records()
    for r in recs:
        if r["method"] == "sam":
            r["selected"] = {"rho": 0.3, "edge": True}
        if r["method"] == "das":
            r["selected"] = {"alpha": 1000.0, "edge": True} if r["seed"] != 1 else {"alpha": 10.0}
        if r["method"] == "base":
            r["selected"] = {"lr": 0.1, "edge": True} if r["seed"] == 1 else {"lr": 0.03}
    entry = summary_entry(recs, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert entry["selected"]["sam"] == [{"seed": s, "rho": 0.3, "edge": True} for s in (0, 1, 2)]
    assert entry["selected"]["das"][1] == {"seed": 1, "alpha": 10.0}
    notes = entry["note"].split("; ")
    assert "sam: rho 0.3 at the edge of its grid on seeds 0, 1, 2" in notes
    assert "das: alpha 1000 at the edge of its grid on seeds 0, 2" in notes
    assert "base: lr 0.1 at the edge of its grid on seed 1" in notes
    assert len(notes) == 3
    assert entry["verdicts"] == summary_entry(records(), experiment="x", metric="acc", higher_is_better=True,
                                              match_tolerance=0.01)["verdicts"]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rs: rs + [dict(rs[0])], "two records for seed"),
        (lambda rs: [{k: v for k, v in r.items() if k != "acc"} for r in rs], "no record has the metric 'acc'"),
        (lambda rs: [{k: v for k, v in r.items() if k != "seed"} for r in rs], "has no 'seed'"),
    ],
)
def test_summary_entry_refuses_malformed_records(change, message):
    with pytest.raises(ValueError, match=message):
        summary_entry(change(records()), experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)


def test_summary_entry_rejects_a_bad_tolerance():
    with pytest.raises(ValueError, match="match_tolerance"):
        summary_entry(records(), experiment="x", metric="acc", higher_is_better=True, match_tolerance=-1)


def test_summary_entry_rejects_a_non_bool_direction():
    with pytest.raises(ValueError, match="higher_is_better"):
        summary_entry(records(), experiment="x", metric="acc", higher_is_better="yes", match_tolerance=0.01)
