"""Paired comparisons over seeds: intervals, DAS's share of SAM's gain, verdicts and summary entries.

Every comparison decides from the same numbers (docs/design.md section 7). Runs with the same seed share
initialisation, split and data order, so methods are compared through their per-seed differences:

- :func:`paired_difference`: the mean of the per-seed differences ``a - b`` and its 95% t-interval
  (``mean ± t_{0.975, n-1} * sd / sqrt(n)``). With one seed the interval is undefined and both
  bounds are NaN (written as ``null`` to JSON); so is everything computed from a non-finite value
  (a diverged run), which makes the verdict ``undecided`` rather than a guess.
- :func:`recovered_share`: ``mean(DAS - base) / mean(SAM - base)`` with a paired bootstrap interval
  over seeds (seeded, so deterministic), reported only where SAM's gain over the base is significant.
- :func:`verdict`: docs/design.md section 7's rule, on intervals oriented so that positive is better.
- :func:`summary_entry`: one ``"summary"`` entry of a ``results.json`` from flat per-run records.

Differences are kept in the metric's own direction (a lower-is-better metric such as RMSE has a
negative ``sam-base`` when SAM helps); :meth:`PairedDiff.oriented` flips them for the verdict.
Only NumPy and SciPy are used: these are pure functions of the recorded numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "CONFIDENCE",
    "VERDICTS",
    "PairedDiff",
    "paired_difference",
    "recovered_share",
    "summary_entry",
    "verdict",
]

CONFIDENCE = 0.95  # docs/design.md section 7: 95% intervals
VERDICTS = (
    "undecided",
    "matches SAM",
    "better than SAM",
    "not distinguishable from SAM",
    "between base and SAM",
    "no better than base",
)
CORE_METHODS = ("base", "sam", "das")


@dataclass(frozen=True)
class PairedDiff:
    """Mean of per-seed differences and its 95% t-interval ``[low, high]`` (NaN bounds: undefined)."""

    mean: float
    low: float
    high: float
    n: int

    def oriented(self, higher_is_better: bool) -> PairedDiff:
        """The same difference with positive meaning better (negated when lower is better)."""
        if higher_is_better:
            return self
        return PairedDiff(-self.mean, -self.high, -self.low, self.n)

    @property
    def above_zero(self) -> bool:
        """The whole interval is above 0 (False when it is undefined or touches 0)."""
        return self.low > 0  # NaN compares False

    def to_dict(self) -> dict[str, Any]:
        """``{"mean": m, "ci95": [low, high]}`` (NaN stays NaN; the JSON writer turns it into null)."""
        return {"mean": self.mean, "ci95": [self.low, self.high]}


def _values(values: Iterable[float], what: str) -> np.ndarray:
    try:
        out = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected numbers, got {values!r}") from None
    if out.ndim != 1 or out.size == 0:
        raise ValueError(f"{what}: expected a non-empty list of per-seed values, got {values!r}")
    return out


def _paired(a: Iterable[float], b: Iterable[float]) -> np.ndarray:
    """Per-seed differences ``a - b`` (both in the same seed order)."""
    a, b = _values(a, "first method"), _values(b, "second method")
    if a.shape != b.shape:
        raise ValueError(f"paired values need one value per seed for both methods, got {a.size} and {b.size}")
    return a - b


def paired_difference(a: Iterable[float], b: Iterable[float]) -> PairedDiff:
    """Mean of ``a[i] - b[i]`` over seeds ``i`` and its 95% t-interval (paired t-test's interval).

    One seed, or any non-finite value, gives NaN bounds (and a NaN mean for non-finite values):
    the interval is undefined, not zero-width.
    """
    d = _paired(a, b)
    n = d.size
    if not np.isfinite(d).all():
        return PairedDiff(math.nan, math.nan, math.nan, n)
    mean = float(d.mean())
    if n < 2:
        return PairedDiff(mean, math.nan, math.nan, n)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return PairedDiff(mean, mean - half, mean + half, n)


def recovered_share(
    base: Iterable[float],
    sam: Iterable[float],
    das: Iterable[float],
    *,
    higher_is_better: bool,
    n_boot: int = 10_000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """DAS's share of SAM's gain, ``mean(das - base) / mean(sam - base)``, with a 95% bootstrap interval.

    Returns None unless SAM's gain over the base is significant (its oriented interval is above 0):
    a share of a gain that may be zero means nothing. The interval resamples seeds with replacement
    (the three methods' values of a seed stay together), draws from ``numpy.random.default_rng(seed)``
    and takes the 2.5% and 97.5% percentiles; resamples whose SAM gain is exactly 0 have no ratio and
    are left out. The ratio does not depend on the metric's direction. With few seeds (3 give only
    10 distinct resamples) the interval is coarse.
    """
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"Invalid n_boot value: {n_boot!r} (expected a positive integer)")
    gain_sam, gain_das = _paired(sam, base), _paired(das, base)
    if gain_sam.shape != gain_das.shape:
        raise ValueError(
            f"paired values need one value per seed for every method, got {gain_sam.size} and {gain_das.size}"
        )
    if not paired_difference(sam, base).oriented(higher_is_better).above_zero:
        return None
    if not np.isfinite(gain_das).all():
        return {"mean": math.nan, "ci95": [math.nan, math.nan]}
    n = gain_sam.size
    picks = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    num, den = gain_das[picks].mean(axis=1), gain_sam[picks].mean(axis=1)
    ratios = num[den != 0] / den[den != 0]
    low, high = np.percentile(ratios, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return {"mean": float(gain_das.mean() / gain_sam.mean()), "ci95": [float(low), float(high)]}


def verdict(sam_base: PairedDiff, das_sam: PairedDiff, das_base: PairedDiff, match_tolerance: float) -> str:
    """docs/design.md section 7's verdict, in its order, from intervals oriented so that positive is better.

    1. SAM - base not above 0 (touching 0 or undefined included) -> ``undecided``;
    2. DAS - SAM inside ``[-match_tolerance, match_tolerance]`` (bounds included) -> ``matches SAM``;
    3. DAS - SAM above 0 -> ``better than SAM``;
    4. DAS - SAM contains 0 (bounds included) -> ``not distinguishable from SAM``;
    5. DAS - base above 0 -> ``between base and SAM``;
    6. otherwise -> ``no better than base``.

    Undefined (NaN) intervals fail every test above; :func:`summary_entry` does not call this rule when a
    base, SAM or DAS metric is not finite (a diverged run): that comparison is ``undecided``, with a note.
    """
    if not (isinstance(match_tolerance, (int, float)) and math.isfinite(match_tolerance) and match_tolerance >= 0):
        raise ValueError(f"Invalid match_tolerance value: {match_tolerance!r} (expected a finite number >= 0)")
    if not sam_base.above_zero:
        return "undecided"
    if -match_tolerance <= das_sam.low and das_sam.high <= match_tolerance:
        return "matches SAM"
    if das_sam.above_zero:
        return "better than SAM"
    if das_sam.low <= 0 <= das_sam.high:
        return "not distinguishable from SAM"
    if das_base.above_zero:
        return "between base and SAM"
    return "no better than base"


def _by_method_and_seed(records: Iterable[Mapping[str, Any]], metric: str) -> dict[str, dict[Any, Mapping[str, Any]]]:
    """Records by method and seed; reference rows (``method`` None, e.g. completion's ALS) are left out."""
    table: dict[str, dict[Any, Mapping[str, Any]]] = {}
    for record in records:
        for key in ("method", "seed"):
            if key not in record:
                raise ValueError(f"record {dict(record)!r} has no {key!r}")
        if record["method"] is None:
            continue
        runs = table.setdefault(str(record["method"]), {})
        seed = record["seed"]
        if seed in runs:
            raise ValueError(f"method {record['method']!r} has two records for seed {seed!r}")
        runs[seed] = record
    return table


def _sorted(seeds: Iterable[Any]) -> list[Any]:
    seeds = list(seeds)
    return sorted(seeds, key=str) if any(not isinstance(s, int) for s in seeds) else sorted(seeds)


def _paired_seeds(table: Mapping[str, Mapping[Any, Any]], methods: Sequence[str], notes: list[str]) -> list[Any]:
    """The seeds every one of ``methods`` ran (sorted); a note names the seeds left out for lack of a pair."""
    runs = [set(table[m]) for m in methods if m in table]
    if not runs:
        return []
    common = set.intersection(*runs)
    left_out = set.union(*runs) - common
    if left_out:
        notes.append(f"seed(s) {_sorted(left_out)} left out: not run by every one of {', '.join(methods)}")
    return _sorted(common)


def _number(value: Any) -> float:
    """A record's metric value as a float; None (a diverged run's missing metric) is NaN."""
    return math.nan if value is None else float(value)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if all(math.isfinite(v) for v in values) else math.nan


UNDEFINED = PairedDiff(math.nan, math.nan, math.nan, 0)


def summary_entry(
    records: Iterable[Mapping[str, Any]],
    *,
    experiment: str,
    metric: str,
    higher_is_better: bool,
    match_tolerance: float,
    n_boot: int = 10_000,
    boot_seed: int = 0,
) -> dict[str, Any]:
    """One docs/design.md section 7 ``summary`` entry from flat per-run records of one experiment.

    Each record holds ``method`` (``base``, ``sam``, ``das`` and any competitor, e.g. ``looksam``; None
    for a reference row, which is left out), ``seed``, the ``metric`` (None or absent: undefined, as for
    a diverged run; ``note`` names the absent ones), and optionally ``step_time_ms`` and ``selected``
    (the tuned value, e.g. ``{"alpha": 0.1}``). Records are
    paired by seed. ``diff`` holds ``sam-base``, ``das-base``, ``das-sam`` and ``<competitor>-sam`` in
    the metric's own direction; the verdict and ``recovered`` use them oriented so that positive is better.

    A comparison that cannot decide is still summarised, never refused: without a run of base, SAM or
    DAS, or with fewer than 2 paired seeds, the verdict is ``undecided``, the undefined intervals are NaN
    (null in JSON) and ``note`` says why; seeds some method lacks are left out of the pairing and named
    in ``note`` (None when there is nothing to say); a non-finite base, SAM or DAS metric on a paired
    seed (a diverged run) makes the verdict ``undecided`` and is named in ``note``. Malformed records
    (no method or seed, a seed twice, the metric in no record) are a ``ValueError``.
    """
    if not isinstance(higher_is_better, bool):
        raise ValueError(f"Invalid higher_is_better value: {higher_is_better!r} (expected True or False)")
    verdict(UNDEFINED, UNDEFINED, UNDEFINED, match_tolerance)  # checks the tolerance up front
    table = _by_method_and_seed(records, metric)
    notes: list[str] = []
    lacking = [f"{m} seed {s}" for m, runs in table.items() for s, r in runs.items() if metric not in r]
    if lacking and len(lacking) == sum(len(runs) for runs in table.values()):
        raise ValueError(f"no record has the metric {metric!r}")
    if lacking:  # e.g. a diverged run that stored no metric: undefined, like a NaN
        notes.append(f"no {metric} for {', '.join(lacking)}")
    present = [m for m in CORE_METHODS if m in table]
    missing = [m for m in CORE_METHODS if m not in table]
    if missing:
        notes.append(f"no runs of {', '.join(missing)}: a verdict needs base, sam and das")
    seeds = _paired_seeds(table, present, notes)
    if len(seeds) < 2:
        notes.append(f"{len(seeds)} paired seed(s): an interval needs at least 2")
    others = [m for m in table if m not in CORE_METHODS]
    values = {m: [_number(table[m][s].get(metric)) for s in seeds] for m in present}

    def diff(a: str, b: str, vals: Mapping[str, list[float]]) -> PairedDiff:
        ok = a in vals and b in vals and vals[a]
        return paired_difference(vals[a], vals[b]) if ok else UNDEFINED

    diffs = {"sam-base": diff("sam", "base", values), "das-base": diff("das", "base", values)}
    diffs["das-sam"] = diff("das", "sam", values)
    means = {m: _mean(v) if v else math.nan for m, v in values.items()}
    for m in others:  # a competitor is paired with SAM on the seeds both ran
        own = _paired_seeds(table, [m, "sam"], notes) if "sam" in table else _sorted(table[m])
        vals = {m: [_number(table[m][s].get(metric)) for s in own]}
        if "sam" in table:
            vals["sam"] = [_number(table["sam"][s].get(metric)) for s in own]
        means[m] = _mean(vals[m]) if own else math.nan
        diffs[f"{m}-sam"] = diff(m, "sam", vals)
    oriented = {k: d.oriented(higher_is_better) for k, d in diffs.items()}

    def step_time(method: str) -> float | None:
        times = [table[method][s].get("step_time_ms") for s in seeds] if method in table else [None]
        return None if not times or any(t is None for t in times) else _mean([float(t) for t in times])

    das_time, sam_time = step_time("das"), step_time("sam")
    selected = {
        m: [{"seed": s, **(runs[s].get("selected") or {})} for s in _sorted(runs)]
        for m, runs in table.items()
        if any(r.get("selected") for r in runs.values())
    }
    nonfinite = [f"{m} seed {s}" for m in present for s, v in zip(seeds, values[m]) if not math.isfinite(v)]
    if nonfinite:  # a diverged run: its intervals are undefined, and no verdict is guessed from the rest
        notes.append(f"{metric} not finite for {', '.join(nonfinite)}: no verdict")
    decidable = not missing and seeds and not nonfinite
    ratio = das_time / sam_time if das_time and sam_time and math.isfinite(das_time / sam_time) else None
    return {
        "experiment": experiment,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "n_seeds": len(seeds),
        "match_tolerance": match_tolerance,
        "mean": means,
        "diff": {k: d.to_dict() for k, d in diffs.items()},
        "recovered": recovered_share(
            values["base"],
            values["sam"],
            values["das"],
            higher_is_better=higher_is_better,
            n_boot=n_boot,
            seed=boot_seed,
        )
        if decidable
        else None,
        "step_time_das_over_sam": ratio,
        "selected": selected,
        "verdict": verdict(oriented["sam-base"], oriented["das-sam"], oriented["das-base"], match_tolerance)
        if decidable
        else "undecided",
        "note": "; ".join(notes) or None,
    }
