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
    assert set(entry["mean"]) == {"base", "sam", "das", "das-authors", "looksam"}  # ...but are not paired
    value = {(r["method"], r["seed"]): r["test_r2"] for r in records if r["method"] is not None}
    for pair in ("sam-base", "das-base", "das-sam"):
        a, b = pair.split("-")
        d = [value[a, s] - value[b, s] for s in (0, 1, 2)]
        assert entry["diff"][pair]["mean"] == pytest.approx(np.mean(d), abs=1e-12)
        assert entry["diff"][pair]["ci95"] == [pytest.approx(x, abs=1e-12) for x in t_interval(d)]
    assert entry["verdict"] in VERDICTS and entry["note"] is None
    printed = capsys.readouterr().out
    table = printed[printed.index("Does DAS deliver") : printed.index("\nwrote ")]
    assert all(len(line) <= 80 for line in table.splitlines()), table
    assert entry["verdict"].split()[0] in table and "SAM-base" in table and "match tolerance 0.5" in table


def test_a_single_method_run_is_summarised_as_undecided(tmp_path, capsys):
    out = tmp_path / "o"
    assert main([*ARGS, "--optimizer", "das", "--no-als", "--no-progress", "--out", str(out)]) == 0
    (entry,) = json.loads((out / "results.json").read_text())["summary"]
    assert entry["verdict"] == "undecided" and "no runs of base, sam" in entry["note"]
    assert entry["diff"]["das-sam"] == {"mean": None, "ci95": [None, None]} and entry["recovered"] is None
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
    assert row([{"experiment": "mine", "recovered": {"mean": 0.25, "ci95": [0.1, 0.4]}}])[-1] == "0.25"
