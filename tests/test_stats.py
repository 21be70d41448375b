"""Paired statistics of comparisons (docs/design.md section 7): intervals, recovered share, verdicts, summary entries.

Intervals are checked against SciPy's paired t-test and a hand-computed textbook example, the
recovered share against constructed cases whose ratio is known exactly, and the verdict rule on
constructed intervals for every branch and at its boundaries.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from tensordas.reporting import json_ready
from tensordas.reporting.stats import VERDICTS, PairedDiff, paired_difference, recovered_share, summary_entry, verdict


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
def test_recovered_share_is_exact_when_das_recovers_a_fixed_share_on_every_seed(share, higher):
    sign = 1 if higher else -1
    base, sam = [sign * v for v in BASE], [sign * v for v in SAM]
    das = [b + share * (s - b) for b, s in zip(base, sam)]
    out = recovered_share(base, sam, das, higher_is_better=higher)
    assert out["mean"] == pytest.approx(share, abs=1e-12)
    assert out["ci95"] == [pytest.approx(share, abs=1e-12), pytest.approx(share, abs=1e-12)]


def test_recovered_share_interval_is_deterministic_and_within_the_exhaustive_bootstrap():
    das = [0.62, 0.70, 0.66, 0.64]
    first = recovered_share(BASE, SAM, das, higher_is_better=True, seed=3)
    assert first == recovered_share(BASE, SAM, das, higher_is_better=True, seed=3)
    gain_das, gain_sam = np.subtract(das, BASE), np.subtract(SAM, BASE)
    assert first["mean"] == pytest.approx(gain_das.mean() / gain_sam.mean())
    # every resample of the 4 seeds, enumerated: the interval lies within their ratios' range
    ratios = [gain_das[list(p)].mean() / gain_sam[list(p)].mean() for p in itertools.product(range(4), repeat=4)]
    low, high = first["ci95"]
    assert min(ratios) <= low < first["mean"] < high <= max(ratios)
    # and approximates the exact bootstrap percentiles (every resample equally likely)
    exact_low, exact_high = np.percentile(ratios, [2.5, 97.5])
    assert low == pytest.approx(exact_low, abs=0.05) and high == pytest.approx(exact_high, abs=0.05)


def test_recovered_share_is_none_unless_sam_gain_is_significant():
    noisy_sam = [0.70, 0.55, 0.73, 0.58]  # SAM - base: +0.10, -0.07, +0.08, -0.03: interval contains 0
    assert recovered_share(BASE, noisy_sam, BASE, higher_is_better=True) is None
    assert recovered_share(BASE, SAM, BASE, higher_is_better=False) is None  # SAM is worse on that orientation
    assert recovered_share(BASE[:1], SAM[:1], BASE[:1], higher_is_better=True) is None  # one seed


def test_recovered_share_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_boot"):
        recovered_share(BASE, SAM, BASE, higher_is_better=True, n_boot=0)
    with pytest.raises(ValueError, match="per seed"):
        recovered_share(BASE, SAM, BASE[:3], higher_is_better=True)


# ------------------------------------------------------------------------------------ verdicts
def iv(low: float, high: float) -> PairedDiff:
    return PairedDiff((low + high) / 2, low, high, 3)


SIG = iv(0.05, 0.15)  # a significant SAM gain
TOL = 0.01


@pytest.mark.parametrize(
    ("sam_base", "das_sam", "das_base", "expected"),
    [
        # 1. SAM's gain not above 0 -> undecided, whatever DAS did
        (iv(-0.02, 0.10), iv(0.5, 0.6), iv(0.5, 0.6), "undecided"),
        (iv(0.0, 0.10), iv(-0.001, 0.001), iv(0.05, 0.1), "undecided"),  # touching 0 is not above it
        (iv(-0.3, -0.1), iv(0.2, 0.3), iv(0.1, 0.2), "undecided"),
        (PairedDiff(0.1, math.nan, math.nan, 1), iv(0.2, 0.3), iv(0.1, 0.2), "undecided"),
        # 2. DAS - SAM inside +-tolerance -> matches SAM (bounds included)
        (SIG, iv(-0.005, 0.008), iv(0.05, 0.15), "matches SAM"),
        (SIG, iv(-TOL, TOL), iv(0.05, 0.15), "matches SAM"),
        (SIG, iv(0.002, 0.009), iv(0.05, 0.15), "matches SAM"),  # above 0 but within tolerance: checked first
        # 3. DAS - SAM above 0 (and not within tolerance) -> better than SAM
        (SIG, iv(0.001, 0.02), iv(0.1, 0.2), "better than SAM"),
        (SIG, iv(0.02, 0.05), iv(0.1, 0.2), "better than SAM"),
        # 4. DAS - SAM contains 0 (bounds included) -> not distinguishable
        (SIG, iv(-TOL - 1e-9, TOL), iv(0.05, 0.15), "not distinguishable from SAM"),
        (SIG, iv(-0.05, 0.03), iv(0.0, 0.1), "not distinguishable from SAM"),
        (SIG, iv(0.0, 0.02), iv(0.0, 0.1), "not distinguishable from SAM"),  # touching 0 from above
        (SIG, iv(-0.02, 0.0), iv(0.0, 0.1), "not distinguishable from SAM"),  # touching 0 from below
        # 5. DAS below SAM, above base -> between base and SAM
        (SIG, iv(-0.08, -0.02), iv(0.01, 0.05), "between base and SAM"),
        # 6. DAS below SAM, not above base -> no better than base
        (SIG, iv(-0.08, -0.02), iv(0.0, 0.05), "no better than base"),  # touching 0 is not above it
        (SIG, iv(-0.15, -0.05), iv(-0.02, 0.01), "no better than base"),
        (SIG, iv(-0.2, -0.1), iv(-0.1, -0.05), "no better than base"),
        (SIG, PairedDiff(math.nan, math.nan, math.nan, 3), iv(math.nan, math.nan), "no better than base"),
    ],
)
def test_verdict_every_branch_and_boundary(sam_base, das_sam, das_base, expected):
    assert verdict(sam_base, das_sam, das_base, TOL) == expected


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
        "recovered", "step_time_das_over_sam", "selected", "verdict", "note",
    ]  # fmt: skip
    assert entry["note"] is None
    assert entry["n_seeds"] == 3
    assert entry["mean"] == pytest.approx({"base": 0.62, "sam": 0.72, "das": 0.65, "looksam": 0.68666666})
    assert list(entry["diff"]) == ["sam-base", "das-base", "das-sam", "looksam-sam"]
    ci = stats.ttest_rel([0.63, 0.66, 0.66], [0.70, 0.71, 0.75]).confidence_interval(0.95)
    assert entry["diff"]["das-sam"]["mean"] == pytest.approx(-0.07)
    assert entry["diff"]["das-sam"]["ci95"] == [pytest.approx(ci.low), pytest.approx(ci.high)]
    assert entry["recovered"]["mean"] == pytest.approx(0.03 / 0.10)
    assert entry["step_time_das_over_sam"] == pytest.approx(0.55)
    assert entry["selected"]["das"] == [
        {"seed": 0, "alpha": 10.0},
        {"seed": 1, "alpha": 20.0},
        {"seed": 2, "alpha": 30.0},
    ]
    assert "base" not in entry["selected"]
    assert entry["verdict"] == "between base and SAM"
    assert entry["verdict"] in VERDICTS
    json.dumps(json_ready(entry))  # writable as JSON


def test_summary_entry_lower_is_better_keeps_the_metric_direction_and_orients_the_verdict():
    rmse = {"base": [2.0, 2.1, 2.2], "sam": [1.5, 1.6, 1.6], "das": [1.5, 1.6, 1.61]}
    entry = summary_entry(
        records("rmse", rmse), experiment="c", metric="rmse", higher_is_better=False, match_tolerance=0.05
    )
    assert entry["diff"]["sam-base"]["mean"] == pytest.approx(-1.6 / 3)  # own direction: SAM lowers RMSE
    assert entry["diff"]["sam-base"]["ci95"][1] < 0
    assert entry["recovered"]["mean"] == pytest.approx((-1.59 / 3) / (-1.6 / 3))
    assert entry["verdict"] == "matches SAM"


def test_summary_entry_with_one_seed_is_undecided():
    one = {"base": [0.6], "sam": [0.9], "das": [0.9]}
    entry = summary_entry(records("acc", one, seeds=(7,)), experiment="x", metric="acc", higher_is_better=True,
                          match_tolerance=0.01)  # fmt: skip
    assert entry["n_seeds"] == 1 and entry["verdict"] == "undecided" and entry["recovered"] is None
    assert json_ready(entry)["diff"]["sam-base"]["ci95"] == [None, None]


def test_summary_entry_pairs_on_common_seeds_and_says_which_were_left_out():
    recs = [r for r in records() if not (r["method"] == "das" and r["seed"] == 1)]
    entry = summary_entry(recs, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert entry["n_seeds"] == 2 and "seed(s) [1] left out" in entry["note"]
    ci = stats.ttest_rel([0.63, 0.66], [0.60, 0.64]).confidence_interval(0.95)  # seeds 0 and 2 only
    assert entry["diff"]["das-base"]["ci95"] == [pytest.approx(ci.low), pytest.approx(ci.high)]
    assert entry["mean"]["base"] == pytest.approx(0.62)
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
    written = json.loads(json.dumps(json_ready(entry)))  # undefined intervals are null
    assert written["diff"]["das-sam"]["ci95"] == ([None, None] if not {"das", "sam"} <= set(kept) else
                                                  written["diff"]["das-sam"]["ci95"])  # fmt: skip
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
    # one diverged DAS seed: no verdict is guessed from the others, and the note says why
    assert math.isnan(entry["diff"]["das-sam"]["mean"]) and entry["verdict"] == "undecided"
    assert entry["note"] == "acc not finite for das seed 0: no verdict" and entry["recovered"] is None
    unstored = [{k: v for k, v in r.items() if k != "acc"} if r["method"] == "das" and r["seed"] == 0 else r
                for r in records()]  # fmt: skip
    again = summary_entry(unstored, experiment="x", metric="acc", higher_is_better=True, match_tolerance=0.01)
    assert again["note"] == "no acc for das seed 0; acc not finite for das seed 0: no verdict"
    same = [json.dumps(json_ready({k: v for k, v in e.items() if k != "note"})) for e in (again, entry)]
    assert same[0] == same[1]


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
