"""Paired comparisons over seeds: intervals, shares of SAM's gain, verdicts and summary entries.

Every comparison decides from the same numbers (docs/design.md section 7). Runs with the same seed share
initialisation, split and data order, so methods are compared through their per-seed differences:

- :func:`paired_difference`: the mean of the per-seed differences ``a - b`` and its 95% t-interval
  (``mean ± t_{0.975, n-1} * sd / sqrt(n)``). With one seed the interval is undefined and both
  bounds are NaN (written as ``null`` to JSON); so is everything computed from a non-finite value
  (a diverged run), which makes the verdict ``undecided`` rather than a guess.
- :func:`fieller_interval`: Fieller's 95% interval for a ratio of paired means (unbounded when the
  denominator's interval touches 0); :func:`recovered_share` uses it for a method's share of SAM's
  gain, ``mean(m - base) / mean(sam - base)``.
- :func:`verdict`: docs/design.md section 7's rule for one method, on intervals oriented so that
  positive is better.
- :func:`summary_entry`: one ``"summary"`` entry of a ``results.json`` from flat per-run records, with
  a verdict, a share and a step-time ratio for every method other than base and SAM.

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
    "fieller_interval",
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
    "inconclusive",
)


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


def fieller_interval(numerator: Iterable[float], denominator: Iterable[float]) -> tuple[float, float]:
    """95% Fieller interval for ``mean(numerator) / mean(denominator)`` of paired per-seed values.

    Derivation. Let ``x_i, y_i`` (``i = 1..n``) be the paired values, ``a, b`` their means, and
    ``s_aa, s_bb, s_ab`` the (co)variances of the means (sample covariances, ``ddof=1``, over ``n``).
    For a candidate ratio ``rho`` the per-seed values ``x_i - rho * y_i`` are i.i.d. with mean
    ``a_true - rho * b_true``, so at the true ratio ``(a - rho b) / sqrt(s_aa - 2 rho s_ab + rho^2 s_bb)``
    has Student's t distribution with ``n - 1`` degrees of freedom (for bivariate normal seeds; no
    approximation in ``rho``). The 95% set is every ``rho`` this paired t-test does not reject:

        (a - rho b)^2 <= t^2 (s_aa - 2 rho s_ab + rho^2 s_bb),   t = t_{0.975, n-1},

    i.e. ``A rho^2 - 2 B rho + C <= 0`` with ``A = b^2 - t^2 s_bb``, ``B = a b - t^2 s_ab`` and
    ``C = a^2 - t^2 s_aa``. When ``A > 0`` (the denominator's own t-interval excludes 0) the set is the
    interval between the roots ``(B -+ sqrt(B^2 - A C)) / A``, which contains ``a / b``. Otherwise it is
    unbounded: the whole line (``B^2 < A C``) or the complement of an interval (``B^2 >= A C``); both
    are returned as ``(-inf, inf)``. The discriminant is evaluated as

        B^2 - A C = t^2 V - t^4 D,   V = a^2 s_bb - 2 a b s_ab + b^2 s_aa = var(b x_i - a y_i) / n,
                                     D = s_aa s_bb - s_ab^2 = sum_{i<j} (x'_i y'_j - x'_j y'_i)^2 / (n (n-1))^2

    (``x', y'`` centred; Lagrange's identity), two sums of squares without the cancellation of the
    textbook form, so a share that is exactly the same on every seed gets an interval of width ~0.

    Hand-written: SciPy and statsmodels offer no paired Fieller interval. Fewer than 2 values or a
    non-finite value give ``(nan, nan)`` (undefined).
    """
    x, y = _values(numerator, "numerator"), _values(denominator, "denominator")
    if x.shape != y.shape:
        raise ValueError(f"paired values need one value per seed for both, got {x.size} and {y.size}")
    n = x.size
    if n < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan, math.nan
    a, b = float(x.mean()), float(y.mean())
    xc, yc = x - a, y - b
    scale = (n - 1) * n  # sample covariance of the means: sum of products / ((n - 1) n)
    s_bb, s_ab = float(yc @ yc) / scale, float(xc @ yc) / scale
    t2 = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) ** 2
    A = b * b - t2 * s_bb
    if not A > 0:
        return -math.inf, math.inf
    B = a * b - t2 * s_ab
    u = b * xc - a * yc
    V = float(u @ u) / scale
    minors = np.outer(xc, yc) - np.outer(yc, xc)
    D = float((minors * minors).sum()) / 2 / scale**2
    root = math.sqrt(max(t2 * V - t2 * t2 * D, 0.0))
    return (B - root) / A, (B + root) / A


def recovered_share(
    base: Iterable[float],
    sam: Iterable[float],
    method: Iterable[float],
    *,
    higher_is_better: bool,
) -> dict[str, Any] | None:
    """A method's share of SAM's gain, ``mean(method - base) / mean(sam - base)``, with Fieller's 95% interval.

    Both differences are per seed and paired; the ratio does not depend on the metric's direction.
    Returns ``{"mean", "ci95": [low, high], "unbounded"}``; ``unbounded`` is True, and ``ci95`` is
    ``[-inf, inf]`` (``[null, null]`` in JSON), when SAM's gain is not significant at 95% (its
    t-interval touches 0): then any share is compatible with the data (:func:`fieller_interval`).
    Returns None when there is no share to speak of: fewer than 2 seeds, a non-finite value (a
    diverged run), or no mean gain of SAM over the base in the metric's good direction.
    """
    gain_sam, gain = _paired(sam, base), _paired(method, base)
    if gain_sam.shape != gain.shape:
        raise ValueError(f"paired values need one value per seed for every method, got {gain_sam.size} and {gain.size}")
    sign = 1.0 if higher_is_better else -1.0
    finite = np.isfinite(gain_sam).all() and np.isfinite(gain).all()
    if gain.size < 2 or not finite or not sign * gain_sam.mean() > 0:
        return None
    low, high = fieller_interval(gain, gain_sam)
    return {
        "mean": float(gain.mean() / gain_sam.mean()),
        "ci95": [low, high],
        "unbounded": not (math.isfinite(low) and math.isfinite(high)),
    }


def verdict(sam_base: PairedDiff, m_sam: PairedDiff, m_base: PairedDiff, match_tolerance: float) -> str:
    """docs/design.md section 7's verdict of a method m, from intervals oriented so that positive is better.

    1. SAM - base not above 0 (touching 0 or undefined included) -> ``undecided``;
    2. m - base above 0 (m gains over the base):
       m - SAM inside ``[-match_tolerance, match_tolerance]`` (bounds included) -> ``matches SAM``;
       else m - SAM above 0 -> ``better than SAM``;
       else m - SAM contains 0 (bounds included) -> ``not distinguishable from SAM``;
       else ``between base and SAM``;
    3. otherwise (no gain over the base shown): m - SAM entirely below 0 -> ``no better than base``;
       else ``inconclusive`` (m may be anywhere from below the base to SAM's level).

    A method must show a gain over the base before it can match SAM: an m - SAM interval that contains
    0 only because it is wide says nothing. Undefined (NaN) intervals fail every test above;
    :func:`summary_entry` does not call this rule when a metric is not finite (a diverged run): that
    comparison is ``undecided``, with a note.
    """
    if not (isinstance(match_tolerance, (int, float)) and math.isfinite(match_tolerance) and match_tolerance >= 0):
        raise ValueError(f"Invalid match_tolerance value: {match_tolerance!r} (expected a finite number >= 0)")
    if not sam_base.above_zero:
        return "undecided"
    if m_base.above_zero:
        if -match_tolerance <= m_sam.low and m_sam.high <= match_tolerance:
            return "matches SAM"
        if m_sam.above_zero:
            return "better than SAM"
        if m_sam.low <= 0 <= m_sam.high:
            return "not distinguishable from SAM"
        return "between base and SAM"
    if m_sam.high < 0:
        return "no better than base"
    return "inconclusive"


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
    return math.fsum(values) / len(values) if values and all(math.isfinite(v) for v in values) else math.nan


def _seed_list(seeds: Sequence[Any]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def _edge_notes(method: str, runs: Mapping[Any, Mapping[str, Any]]) -> list[str]:
    """``"sam: rho 0.3 at the edge of its grid on seeds 0, 1, 2"`` for the seeds whose ``selected`` has
    ``"edge": true`` (one phrase per selected value)."""
    by_value: dict[str, list[Any]] = {}
    for seed in _sorted(runs):
        chosen = runs[seed].get("selected") or {}
        if chosen.get("edge"):
            value = ", ".join(
                f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in chosen.items() if k != "edge"
            )
            by_value.setdefault(value or "its value", []).append(seed)
    return [f"{method}: {value} at the edge of its grid on {_seed_list(seeds)}" for value, seeds in by_value.items()]


def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` when both are defined and the ratio is finite, else None."""
    if a is None or not b:
        return None
    ratio = a / b
    return ratio if math.isfinite(ratio) else None


UNDEFINED = PairedDiff(math.nan, math.nan, math.nan, 0)
REQUIRED = ("base", "sam")  # every verdict compares a method with these two


def _compared(table: Mapping[str, Any]) -> list[str]:
    """The methods that get a verdict: every one but base and SAM, DAS first, then by name."""
    others = [m for m in table if m not in REQUIRED]
    return sorted(others, key=lambda m: (m != "das", m))


def summary_entry(
    records: Iterable[Mapping[str, Any]],
    *,
    experiment: str,
    metric: str,
    higher_is_better: bool,
    match_tolerance: float,
) -> dict[str, Any]:
    """One docs/design.md section 7 ``summary`` entry from flat per-run records of one experiment.

    Each record holds ``method`` (``base``, ``sam`` and any compared method: ``das``, ``looksam``, ...;
    None for a reference row, which is left out), ``seed``, the ``metric`` (None or absent: undefined,
    as for a diverged run; ``note`` names the absent ones), and optionally ``step_time_ms`` and
    ``selected`` (the tuned value, e.g. ``{"alpha": 0.1}``, with ``"edge": true`` when it lies at the
    edge of its grid; ``note`` names those). Records are paired by seed.

    ``diff`` holds ``sam-base`` (on the seeds base and SAM both ran; ``n_seeds`` of them) and, for every
    other method m, ``<m>-base`` and ``<m>-sam`` (on the seeds base, SAM and m all ran), in the metric's
    own direction. Each m gets ``verdicts[m]`` (:func:`verdict` on the three intervals of its seeds,
    oriented so that positive is better), ``shares[m]`` (:func:`recovered_share`) and
    ``step_time_over_sam[m]`` and ``step_time_over_base[m]`` (its mean step time over SAM's and over
    the base's, on the seeds they share). ``verdict``, ``recovered`` and
    ``step_time_das_over_sam`` repeat DAS's for the schema's older readers.

    A comparison that cannot decide is still summarised, never refused: without a run of base or SAM
    every verdict is ``undecided`` (without DAS, ``verdict`` is), undefined intervals are NaN (null in
    JSON) and ``note`` says why; seeds a method lacks are left out of its pairing and named; a
    non-finite metric on a paired seed (a diverged run) makes that method's verdict ``undecided``
    (every verdict, for base or SAM) and is named. Malformed records (no method or seed, a seed twice,
    the metric in no record) are a ``ValueError``.
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
    missing = [m for m in (*REQUIRED, "das") if m not in table]
    if missing:
        why = "a verdict needs base and sam" if set(missing) & set(REQUIRED) else "das has no verdict"
        notes.append(f"no runs of {', '.join(missing)}: {why}")
    paired = all(m in table for m in REQUIRED)

    def values(method: str, seeds: Sequence[Any]) -> list[float]:
        return [_number(table[method][s].get(metric)) for s in seeds]

    def diff(a: str, b: str, seeds: Sequence[Any]) -> PairedDiff:
        ok = a in table and b in table and seeds
        return paired_difference(values(a, seeds), values(b, seeds)) if ok else UNDEFINED

    def step_time(method: str, seeds: Sequence[Any]) -> float | None:
        times = [table[method][s].get("step_time_ms") for s in seeds]
        return None if not times or any(t is None for t in times) else _mean([float(t) for t in times])

    def not_finite(method: str, seeds: Sequence[Any]) -> list[str]:
        return [f"{method} seed {s}" for s, v in zip(seeds, values(method, seeds)) if not math.isfinite(v)]

    seeds = _paired_seeds(table, REQUIRED, notes) if paired else []
    if paired and len(seeds) < 2:
        notes.append(f"{len(seeds)} paired seed(s): an interval needs at least 2")
    means = {m: _mean(values(m, seeds if paired else _sorted(table[m]))) for m in REQUIRED if m in table}
    diffs = {"sam-base": diff("sam", "base", seeds)}
    diverged = [*not_finite("base", seeds), *not_finite("sam", seeds)] if paired else []
    if diverged:  # a diverged base or SAM run: no verdict is guessed from the rest
        notes.append(f"{metric} not finite for {', '.join(diverged)}: no verdict")
    verdicts: dict[str, str] = {}
    shares: dict[str, dict[str, Any] | None] = {}
    times: dict[str, float | None] = {}
    base_times: dict[str, float | None] = {}
    for m in _compared(table):
        own = _paired_seeds(table, [*(r for r in REQUIRED if r in table), m], notes)
        means[m] = _mean(values(m, own))
        diffs[f"{m}-base"], diffs[f"{m}-sam"] = diff(m, "base", own), diff(m, "sam", own)
        bad = not_finite(m, own)
        if bad:
            notes.append(f"{metric} not finite for {', '.join(bad)}: no verdict for {m}")
        if paired and seeds and len(own) < 2 <= len(seeds):
            notes.append(f"{m}: {len(own)} paired seed(s): an interval needs at least 2")
        decidable = paired and own and not diverged and not bad
        oriented = [d.oriented(higher_is_better) for d in (diff("sam", "base", own), diffs[f"{m}-sam"])]
        m_base = diffs[f"{m}-base"].oriented(higher_is_better)
        verdicts[m] = verdict(*oriented, m_base, match_tolerance) if decidable else "undecided"
        shares[m] = (
            recovered_share(values("base", own), values("sam", own), values(m, own), higher_is_better=higher_is_better)
            if decidable
            else None
        )
        m_time, sam_time = (step_time(m, own), step_time("sam", own)) if "sam" in table and own else (None, None)
        times[m] = _ratio(m_time, sam_time)
        base_time = step_time("base", own) if "base" in table and own else None
        base_times[m] = _ratio(step_time(m, own) if own else None, base_time)
    selected = {
        m: [{"seed": s, **(runs[s].get("selected") or {})} for s in _sorted(runs)]
        for m, runs in table.items()
        if any(r.get("selected") for r in runs.values())
    }
    for m, runs in table.items():
        notes.extend(_edge_notes(m, runs))
    return {
        "experiment": experiment,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "n_seeds": len(seeds),
        "match_tolerance": match_tolerance,
        "mean": means,
        "diff": {k: d.to_dict() for k, d in diffs.items()},
        "recovered": shares.get("das"),
        "step_time_das_over_sam": times.get("das"),
        "selected": selected,
        "verdict": verdicts.get("das", "undecided"),
        "verdicts": verdicts,
        "shares": shares,
        "step_time_over_sam": times,
        "step_time_over_base": base_times,
        "note": "; ".join(notes) or None,
    }
