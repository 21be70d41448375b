"""The comparison summary everywhere (docs/design.md section 7): results.json of every command, the
printed verdict table, reproduce's results.json and report, the experiment files' match_tolerance.

Summaries are checked against an independent recomputation from the written records (SciPy's t
quantile), never against the summary code's own output.
"""

import json
import math

import numpy as np
import pytest
from scipy import stats

from tensordas.cli import main
from tensordas.reporting.stats import VERDICTS
from tensordas.reproduce import run_reproduce
from tensordas.reproduce.specs import parse_spec
from tensordas.tasks import TASKS
from tensordas.training import compared_methods

SYNTH = "synthetic:shape=9x8x7,rank=2,noise=0.1,seed=1"
ARGS = ["complete", "--data", SYNTH, "--model", "tucker", "--rank", "2", "--steps", "12", "--eval-every", "6"]


def t_interval(d):
    d = np.asarray(d, dtype=float)
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return d.mean() - half, d.mean() + half


def test_complete_writes_records_and_a_summary_recomputable_from_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "o"
    assert main([*ARGS, "--compare", "--seeds", "0,1,2", "--match-tolerance", "0.5", "--no-progress",
                 "--out", str(out)]) == 0  # fmt: skip
    data = json.loads((out / "results.json").read_text())
    assert list(data) == ["records", "summary"]
    records = data["records"]
    assert any(r["method"] is None for r in records)  # the ALS reference rows are records...
    (entry,) = data["summary"]
    assert entry["experiment"] == "completion" and entry["metric"] == "test_r2" and entry["higher_is_better"]
    assert entry["match_tolerance"] == 0.5 and entry["n_seeds"] == 3
    compared = compared_methods(supplies=())  # completion supplies no loss-term context: no jreg, saf
    assert set(entry["mean"]) == set(compared)  # ...but are not paired
    value = {(r["method"], r["seed"]): r["test_r2"] for r in records if r["method"] is not None}
    for pair in ("sam-base", "das-base", "das-sam", "looksam-base", "looksam-sam"):
        a, b = pair.split("-")
        d = [value[a, s] - value[b, s] for s in (0, 1, 2)]
        assert entry["diff"][pair]["mean"] == pytest.approx(np.mean(d), abs=1e-12)
        assert entry["diff"][pair]["ci95"] == [pytest.approx(x, abs=1e-12) for x in t_interval(d)]
    assert entry["verdict"] in VERDICTS and entry["note"] is None
    assert set(entry["verdicts"]) == set(compared) - {"base", "sam"}
    assert set(entry["verdicts"].values()) <= set(VERDICTS)
    printed = capsys.readouterr().out
    table = printed[printed.index("Verdicts: does each method") : printed.index("\nwrote ")]
    assert all(len(line) <= 80 for line in table.splitlines()), table
    assert "SAM-base" in table and "match tolerance 0.5" in " ".join(table.split())  # the caption may wrap
    rows = [line.split() for line in table.splitlines()]
    for method, decided in entry["verdicts"].items():  # one row per method, its verdict's first word on it
        assert any(method in row and decided.split()[0] in row for row in rows), table


def test_a_single_method_run_is_summarised_as_undecided(tmp_path, capsys):
    out = tmp_path / "o"
    assert main([*ARGS, "--optimizer", "das", "--no-als", "--no-progress", "--out", str(out)]) == 0
    (entry,) = json.loads((out / "results.json").read_text())["summary"]
    assert entry["verdict"] == "undecided" and "no runs of base, sam" in entry["note"]
    assert entry["diff"]["das-sam"] == {"mean": None, "ci95": [None, None]} and entry["recovered"] is None
    assert entry["verdicts"] == {"das": "undecided"}
    assert "undecided" in capsys.readouterr().out


def test_a_negative_match_tolerance_is_a_usage_error(tmp_path, capsys):
    assert main([*ARGS, "--match-tolerance", "-0.1", "--out", str(tmp_path / "o")]) == 2
    assert "--match-tolerance" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_match_tolerance_is_a_metric_default_overridable_per_experiment_file():
    assert TASKS["completion"].metric.match_tolerance == 0.01
    assert TASKS["noisy"].metric.match_tolerance == 0.01
    text = 'family = "completion"\nmatch_tolerance = 0.2\n[settings]\nsteps = 3\n'
    assert parse_spec(text, "c", "smoke").match_tolerance == 0.2
    assert parse_spec(text.replace("match_tolerance = 0.2\n", ""), "c", "smoke").match_tolerance is None
    for bad in ("-0.1", '"0.1"', "true"):
        with pytest.raises(ValueError, match="match_tolerance"):
            parse_spec(text.replace("0.2", bad), "c", "smoke")


def test_reproduce_summary_uses_the_experiment_files_metric_and_tolerance(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        'family = "completion"\nmetric = "test_rmse"\nmatch_tolerance = 0.3\n[settings]\n'
        f'data = "{SYNTH}"\nrank = 2\nsteps = 6\neval_every = 3\nseeds = [0, 1]\nals = false\n'
        'optimizers = ["base", "sam", "das"]\n'
    )
    result = run_reproduce(tmp_path / "rep", profile="smoke", config_files=[config], progress=False)
    data = json.loads(result.results.read_text())
    (entry,) = data["summary"]
    assert (entry["experiment"], entry["metric"], entry["higher_is_better"]) == ("tiny", "test_rmse", False)
    assert entry["match_tolerance"] == 0.3 and entry["n_seeds"] == 2
    # the experiment's own results.json carries the same summary
    assert json.loads((tmp_path / "rep" / "tiny" / "results.json").read_text())["summary"] == [entry]
    report = result.report.read_text()
    assert report.index("## Summary") < report.index("## The paper's tables") < report.index("## tiny")
    assert "| tiny | test_rmse ↓ | 2 |" in report
    summary = report[report.index("## Summary") : report.index("## The paper's tables")]
    assert "| das |" in summary and "| sam |" not in summary and "| base |" not in summary


def test_the_summary_is_computed_once_per_command_and_per_reproduced_experiment(tmp_path, capsys, monkeypatch):
    """Computed once and passed on: the command writes and prints the same entry; reproduce writes one entry
    per experiment into both results.json files, also for an experiment finished earlier (resumed)."""
    from tensordas.tasks import Task

    calls = []
    summary = Task.summary

    def counted(self, records, **options):
        calls.append((self.name, options.get("experiment")))
        return summary(self, records, **options)

    monkeypatch.setattr(Task, "summary", counted)
    out = tmp_path / "o"
    assert main([*ARGS, "--optimizer", "base,das", "--no-als", "--no-progress", "--out", str(out)]) == 0
    assert calls == [("completion", None)]
    (entry,) = json.loads((out / "results.json").read_text())["summary"]
    assert entry["verdicts"]["das"].split()[0] in capsys.readouterr().out

    config = tmp_path / "tiny.toml"
    config.write_text(
        f'family = "completion"\n[settings]\ndata = "{SYNTH}"\nrank = 2\nsteps = 6\neval_every = 3\n'
        'seeds = [0, 1]\nals = false\noptimizers = ["base", "das"]\n'
    )
    for _ in ("run", "finished earlier"):
        calls.clear()
        result = run_reproduce(tmp_path / "rep", profile="smoke", config_files=[config], progress=False)
        assert calls == [("completion", "tiny")]
        (entry,) = json.loads(result.results.read_text())["summary"]
        assert json.loads((tmp_path / "rep" / "tiny" / "results.json").read_text())["summary"] == [entry]


def test_our_share_beside_the_papers_is_the_summarys_and_only_where_sams_gain_is_significant():
    from tensordas.reproduce.families import FamilyOutcome
    from tensordas.reproduce.report import paper_section

    text = 'family = "noisy"\ntitle = "Mine"\n[settings]\ndata = "digits"\n'
    spec = parse_spec(text, "mine", "quick")
    # SAM - base = 0.001, DAS - base = 0.05: the ratio of the means (50) is noise, not a share
    records = [
        {"method": m, "seed": s, "test_acc": v + 0.01 * s}
        for s in (0, 1, 2)
        for m, v in (("base", 0.5), ("sam", 0.501), ("das", 0.55))
    ]
    outcomes = {"mine": FamilyOutcome(records)}

    def row(summary):
        section = paper_section([spec], outcomes, summary)
        (line,) = [ln for ln in section.splitlines() if ln.startswith("| ours: mine")]
        return [cell.strip() for cell in line.strip("|").split("|")]

    assert row([{"experiment": "mine", "recovered": None}])[-1] == "—"
    assert row([{"experiment": "mine", "recovered": {"mean": 0.25, "ci95": [0.1, 0.4], "unbounded": False}}])[-1] == (
        "0.25"
    )
    unbounded = {"mean": 0.25, "ci95": [None, None], "unbounded": True}  # SAM's gain not significant
    assert row([{"experiment": "mine", "recovered": unbounded}])[-1] == "—"


def hand_entry(experiment: str, sam_base: tuple[float, float, float], methods: dict) -> dict:
    """A summary entry written by hand: ``methods`` maps a name to (m-base, m-SAM, share, time, verdict)."""

    def d(mean, low, high):
        return {"mean": mean, "ci95": [low, high]}

    entry = {"experiment": experiment, "metric": "test_acc", "higher_is_better": True, "n_seeds": 5,
             "match_tolerance": 0.01, "diff": {"sam-base": d(*sam_base)}, "verdicts": {}, "shares": {},
             "step_time_over_sam": {}, "note": None}  # fmt: skip
    for m, (m_base, m_sam, share, time, decided) in methods.items():
        entry["diff"][f"{m}-base"], entry["diff"][f"{m}-sam"] = d(*m_base), d(*m_sam)
        entry["shares"][m], entry["step_time_over_sam"][m], entry["verdicts"][m] = share, time, decided
    entry["verdict"] = entry["verdicts"].get("das", "undecided")
    return entry


HAND = [
    hand_entry(
        "completion-paper",
        (0.2134, 0.1801, 0.2467),
        {
            "das": (
                (0.0312, 0.0101, 0.0523),
                (-0.1822, -0.2101, -0.1543),
                {"mean": 0.1462, "ci95": [0.0451, 0.2578], "unbounded": False},
                0.5123,
                "between base and SAM",
            ),
            "das-gradient": (
                (0.0012, -0.0301, 0.0325),
                (-0.2122, -0.2451, -0.1793),
                {"mean": 0.0056, "ci95": [-0.1412, 0.1522], "unbounded": False},
                0.5311,
                "no better than base",
            ),
            "looksam": (
                (0.2011, 0.1502, 0.2520),
                (-0.0123, -0.0601, 0.0355),
                {"mean": 0.9424, "ci95": [0.7012, 1.1845], "unbounded": False},
                0.6502,
                "not distinguishable from SAM",
            ),
        },
    ),  # fmt: skip
    hand_entry(
        "finetune-flora",
        (0.0101, -0.0202, 0.0404),
        {
            "das": (
                (-0.0051, -0.0423, 0.0321),
                (-0.0152, -0.0611, 0.0307),
                {"mean": -0.505, "ci95": [-math.inf, math.inf], "unbounded": True},
                0.5512,
                "undecided",
            )
        },
    ),  # fmt: skip
    hand_entry("noisy", (0.2101, 0.1802, 0.2400), {}),  # base and SAM only: one row of dashes
]


def test_the_verdict_table_has_a_row_per_method_and_fits_80_columns():
    from rich.console import Console

    from tensordas.reporting.verdicts import verdict_table

    console = Console(width=80, record=True)
    console.print(verdict_table(HAND))
    text = console.export_text()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    words = text.split()
    # nothing cropped or folded: every verdict's words, method and experiment name whole
    for word in ("distinguishable", "between", "better", "undecided", "unbounded", "das-gradient", "looksam",
                 "completion-paper", "finetune-flora", "noisy"):  # fmt: skip
        assert word in words, (word, text)
    assert sum(line.split()[:1] == ["SAM-base"] for line in lines) == 3  # once per experiment, under its name
    assert words.count("+0.213") == 1 and "±0.033" in words  # completion's SAM-base: mean, half-width
    # a row per method: its name, m-base, m-SAM, share, time and verdict's first word on one line
    first = {line.split()[0]: line.split()[1:] for line in lines if line.split()}
    assert first["das-gradient"][:5] == ["+0.0012", "-0.212", "0.0056", "0.531", "no"]
    assert first["looksam"][:5] == ["+0.201", "-0.0123", "0.942", "0.65", "not"]
    assert first["completion-paper"][:6] == ["das", "+0.0312", "-0.182", "0.146", "0.512", "between"]
    assert first["finetune-flora"][:6] == ["das", "-0.0051", "-0.0152", "-0.505", "0.551", "undecided"]
    assert "[0.045," in words and "0.26]" in words


def test_the_reports_summary_has_a_row_per_method_and_sam_base_once():
    from tensordas.reproduce.report import summary_section

    section = summary_section(HAND)
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert header[:5] == ["experiment", "metric", "seeds", "SAM − base", "method"] and header[-1] == "verdict"
    assert [r[4] for r in body] == ["das", "das-gradient", "looksam", "das", "—"]
    assert [r[0] for r in body] == ["completion-paper", "", "", "finetune-flora", "noisy"]
    assert [r[3] for r in body] == ["+0.213 ±0.033", "", "", "+0.0101 ±0.03", "+0.21 ±0.03"]
    assert body[0][5:] == ["+0.0312 ±0.021", "-0.182 ±0.028", "0.146 [0.045, 0.26]", "0.512", "between base and SAM"]
    assert body[3][7] == "-0.505 unbounded" and body[4][5:] == ["—"] * 5
