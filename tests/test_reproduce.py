"""`tensordas reproduce` (issue 7): smoke profile end to end, resume after a kill, user configs, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tensordas.cli import main
from tensordas.reproduce import bundled_specs, run_reproduce, select_specs
from tensordas.tasks import TASKS
from tensordas.tasks.completion import CompletionExperiment
from tensordas.training import METHODS


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    return out, run_reproduce(out, profile="smoke", progress=False)


def test_bundled_configs_parse_in_every_profile_and_smoke_and_full_cover_every_family():
    for profile in ("smoke", "quick", "full"):
        for spec in bundled_specs(profile):
            assert spec.settings, spec.name
    for profile in ("smoke", "full"):
        assert {s.family for s in bundled_specs(profile)} == set(TASKS), profile
    # the quick profile is the 20-minute subset: three classifier experiments on ten seeds and the dynamics;
    # completion and fine-tuning run in smoke and full (docs/experiments.md, "The quick profile's budget")
    assert {s.family for s in bundled_specs("quick")} == set(TASKS) - {"finetune", "completion"}
    quick = {s.name: s for s in bundled_specs("quick")}
    assert {"noisy", "noisy-tr", "compress"} <= set(quick)
    full = {s.name: s for s in bundled_specs("full")}
    for name in ("noisy", "noisy-tr", "compress"):
        assert len(quick[name].settings["seeds"]) == 10
        # every method of the full profile but DAS's gradient form, LookSAM and das-authors included
        left_out = set(full[name].settings["optimizers"]) - set(quick[name].settings["optimizers"])
        assert left_out == {"das-gradient"} and {"looksam", "das-authors"} <= set(quick[name].settings["optimizers"])


def test_smoke_reproduction_writes_every_familys_table(smoke):
    out, result = smoke
    report = (out / "report.md").read_text()
    records = json.loads((out / "results.json").read_text())["records"]
    for spec in bundled_specs("smoke"):
        assert f"## {spec.title}" in report
        section = report.split(f"## {spec.title}", 1)[1].split("\n## ", 1)[0]
        assert "| optimizer |" in section  # the family's table
        rows = [r for r in records if r["experiment"] == spec.name]
        assert rows, spec.name
        for fig in result.outcomes[spec.name].figures:
            assert Path(fig).exists()
            assert os.path.relpath(fig, out) in section
    assert "torch" in report and "hardware" in report


def test_the_report_and_results_name_what_the_profile_leaves_out_of_the_full_one(smoke):
    from tensordas.reproduce.specs import left_out_of

    out, _ = smoke
    data = json.loads((out / "results.json").read_text())
    smoke_names = {s.name: s for s in bundled_specs("smoke")}
    full_names = {s.name: s for s in bundled_specs("full")}
    assert data["left_out"]["experiments"] == sorted(set(full_names) - set(smoke_names)) != []
    for name, methods in data["left_out"]["methods"].items():
        full_methods, smoke_methods = (n[name].settings["optimizers"] for n in (full_names, smoke_names))
        assert set(methods) == set(full_methods) - set(smoke_methods)
    line = next(x for x in (out / "report.md").read_text().splitlines() if x.startswith("- left out of the `smoke`"))
    assert all(name in line for name in data["left_out"]["experiments"])
    assert all(m in line for methods in data["left_out"]["methods"].values() for m in methods)
    # the quick profile: completion, the paper's completion protocol and fine-tuning out, and DAS's gradient form
    quick = left_out_of("quick")
    assert quick["experiments"] == ["completion", "completion-paper", "finetune-flora", "finetune-lora"]
    assert quick["methods"] == {name: ["das-gradient"] for name in ("compress", "noisy", "noisy-tr")}
    assert left_out_of("full") == {"experiments": [], "methods": {}}


def test_smoke_report_opens_with_the_summary_and_the_papers_tables(smoke):
    from tensordas.reproduce.paper import PAPER_TABLES
    from tensordas.reproduce.report import Q_FIGURE

    out, result = smoke
    data = json.loads((out / "results.json").read_text())
    compared = [s for s in bundled_specs("smoke") if TASKS[s.family].metrics]
    assert [e["experiment"] for e in data["summary"]] == [s.name for s in compared]  # dynamics has none
    report = (out / "report.md").read_text()
    first_experiment = min(report.index(f"## {s.title}") for s in bundled_specs("smoke"))
    assert report.index("## Summary") < report.index("## The paper's tables") < first_experiment
    summary = report[report.index("## Summary") : report.index("## The paper's tables")]
    for entry in data["summary"]:
        assert f"| {entry['experiment']} |" in summary and entry["verdict"] in summary
    paper = report[report.index("## The paper's tables") : first_experiment]
    assert "ctxGou/Tensor-SAM" in paper
    for table in PAPER_TABLES:
        assert f"paper {table.table}" in paper and all(f"{v:.4g}" in paper for v in table.values.values())
    for spec in compared:  # each compared experiment's Q curves, linked from its section
        assert (out / spec.name / Q_FIGURE).stat().st_size > 0
        section = report.split(f"## {spec.title}", 1)[1].split("\n## ", 1)[0]
        assert f"{spec.name}/{Q_FIGURE}" in section


def test_q_curve_figure_averages_each_optimizers_seeds(tmp_path, monkeypatch):
    from tensordas.reproduce import report
    from tensordas.tasks import display

    (tmp_path / "curves.csv").write_text(
        "optimizer,seed,step,Q\nsgd,0,0,4\nsgd,1,0,6\nsgd,0,10,2\nsgd,1,10,\ndas(sgd),0,0,9\n"
    )
    seen = {}
    monkeypatch.setattr(display, "line_panels", lambda series, *a, **k: seen.update(series) or object())
    monkeypatch.setattr(report, "save_figure", lambda fig, path: path)
    assert report.q_curve_figure(tmp_path, "t") == tmp_path / report.Q_FIGURE
    assert seen == {"sgd": {"step": [0.0, 10.0], "Q": [5.0, 2.0]}, "das(sgd)": {"step": [0.0], "Q": [9.0]}}
    assert report.q_curve_figure(tmp_path / "none", "t") is None


def test_rerun_reuses_every_finished_experiment(smoke, monkeypatch):
    out, _ = smoke

    def boom(*args, **kwargs):
        raise AssertionError("a finished run was recomputed")

    monkeypatch.setattr(CompletionExperiment, "run", boom)
    run_reproduce(out, profile="smoke", progress=False)
    assert (out / "report.md").exists()


def test_interrupted_reproduction_resumes_without_recomputing(tmp_path, monkeypatch):
    from tensordas.tasks.runstore import run_key

    out = tmp_path / "rep"
    calls = []
    real = CompletionExperiment.run

    def crash_on_third(self, optimizer, seed, progress=None):
        calls.append(run_key(optimizer, seed))
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if killed in the middle of the third run
        return real(self, optimizer, seed, progress)

    monkeypatch.setattr(CompletionExperiment, "run", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_reproduce(out, profile="smoke", only=["completion"], progress=False)
    assert not (out / "report.md").exists() and not (out / "results.json").exists()
    finished = {p.stem for p in (out / "completion" / "runs").glob("*.json")}
    assert finished == set(calls[:2])
    crashed = calls[2]

    calls.clear()
    monkeypatch.setattr(
        CompletionExperiment, "run", lambda self, o, s, p=None: calls.append(run_key(o, s)) or real(self, o, s, p)
    )
    run_reproduce(out, profile="smoke", only=["completion"], progress=False)
    assert calls[0] == crashed and not finished & set(calls)  # only the unfinished runs, each once
    assert len(set(calls)) == len(calls)
    records = json.loads((out / "results.json").read_text())["records"]
    (spec,) = [s for s in bundled_specs("smoke") if s.family == "completion"]
    assert {r["optimizer"] for r in records} == {METHODS[m].label("sgd") for m in spec.settings["optimizers"]}


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_killed_process_leaves_no_result_and_rerun_completes(tmp_path):
    out = tmp_path / "rep"
    # --jobs 2: killed while worker processes run
    cmd = [sys.executable, "-m", "tensordas.cli", "reproduce", "--profile", "smoke", "--only", "completion",
           "--out", str(out), "--no-progress", "--jobs", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = out / "completion" / "runs"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not list(runs.glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "results.json").exists()
    before = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").exists()
    for name, mtime in before.items():
        assert (runs / name).stat().st_mtime_ns == mtime  # finished runs were not recomputed


def test_user_config_file(tmp_path):
    cfg = tmp_path / "mine.toml"
    cfg.write_text(
        'family = "completion"\ntitle = "My tensor"\nmetric = "test_r2"\n'
        '[settings]\ndata = "synthetic:shape=8x7x6,rank=2,noise=0.0"\nmodel = "cp"\nrank = 2\n'
        'optimizers = ["base", "das"]\nlr = 0.02\n[profiles.smoke]\nsteps = 20\nseeds = [0, 1]\n'
    )
    result = run_reproduce(tmp_path / "out", profile="smoke", config_files=[cfg], progress=False)
    report = result.report.read_text()
    assert "## My tensor" in report and "das(adam)" in report


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--only", "nosuch"], "nosuch"),
        (["--profile", "huge"], "huge"),
        (["--config", "missing.toml"], "missing.toml"),
        (["--quick", "--profile", "full"], "--quick"),
        (["--device", "tpu"], "tpu"),
    ],
)
def test_cli_bad_input_is_one_line(args, needle, tmp_path, capsys):
    status = main(["reproduce", *args, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert status != 0
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_bad_toml_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("family = \n")
    assert main(["reproduce", "--config", str(bad), "--out", str(tmp_path / "o"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bad.toml" in err


GOOD = (
    'family = "completion"\ntitle = "Mine"\nmetric = "test_r2"\n'
    '[settings]\ndata = "synthetic:shape=6x5x4,rank=2,noise=0.0"\nmodel = "cp"\nrank = 2\n'
    'optimizers = ["base", "das"]\n[profiles.smoke]\nsteps = 5\nseeds = [0]\nals = false\n'
)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (GOOD.replace("steps = 5", "stepz = 5"), ["[profiles.smoke]", "stepz", "steps"]),
        (GOOD.replace("model = ", "modle = "), ["[settings]", "modle", "model"]),
        (GOOD.replace("seeds = [0]", "seeds = 0"), ["seeds", "list"]),
        (GOOD.replace("steps = 5", 'steps = "5"'), ["steps", "integer"]),
        (GOOD.replace('optimizers = ["base", "das"]', 'optimizers = "das"'), ["optimizers", "list"]),
        (GOOD.replace("rank = 2", "rank = [2, 2.5]"), ["rank"]),
        ('family = "completion"\nsettings = 3\n', ["settings", "table"]),
        (GOOD.replace("[profiles.smoke]", "[profiles]\nquick = 3\n[profiles.smoke]"), ["quick", "table"]),
        (GOOD.replace('title = "Mine"', 'titel = "Mine"'), ["titel", "title"]),
        (GOOD.replace('title = "Mine"', "title = 3"), ["title", "string"]),
        (GOOD.replace('metric = "test_r2"', 'metric = "test_acc"'), ["test_acc", "test_r2"]),
        (GOOD.replace('metric = "test_r2"', "metric = 1"), ["metric", "string"]),
        ('family = "dynamics"\n[settings]\nstepz = 3\n', ["stepz", "steps"]),
        (GOOD.replace('family = "completion"', 'family = "dynamics"').split("[settings]")[0], ["dynamics", "metric"]),
        ('in_profiles = ["quick", "fast"]\n' + GOOD, ["in_profiles", "fast"]),
        ("in_profiles = []\n" + GOOD, ["in_profiles"]),
    ],
)
def test_bad_experiment_file_is_one_line_naming_file_and_key(text, needles, tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(text)
    status = main(["reproduce", "--config", str(cfg), "--profile", "smoke", "--out", str(tmp_path / "o"),
                   "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1
    assert len(err.strip().splitlines()) == 1 and "exp.toml" in err, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "o" / "exp").exists()  # rejected before anything ran


def test_a_misspelt_key_in_another_profile_is_caught_too(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(GOOD + "[profiles.full]\nstepz = 9\n")
    with pytest.raises(ValueError, match=r"\[profiles\.full\].*stepz"):
        select_specs("smoke", config_files=[cfg])


def test_in_profiles_restricts_the_bundled_experiments_only(tmp_path):
    from tensordas.reproduce import specs as specs_module

    text = 'in_profiles = ["full"]\n' + GOOD
    spec = specs_module.parse_spec(text, "mine", "smoke")
    assert spec.in_profiles == ("full",)
    assert specs_module.parse_spec(GOOD, "mine", "smoke").in_profiles == specs_module.PROFILES
    cfg = tmp_path / "mine.toml"
    cfg.write_text(text)
    assert [s.name for s in select_specs("smoke", config_files=[cfg])] == ["mine"]  # a user's file always runs
    quick = {s.name for s in bundled_specs("quick")}
    full = {s.name for s in bundled_specs("full")}
    assert quick <= full and {s.name for s in bundled_specs("full") if "quick" not in s.in_profiles} == full - quick


def test_metric_defaults_per_family(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(GOOD.replace('metric = "test_r2"\n', ""))
    result = run_reproduce(tmp_path / "o", profile="smoke", config_files=[cfg], progress=False)
    report = result.report.read_text()
    table = report.split("| optimizer |", 1)[1].split("\n\n", 1)[0]
    assert "test_r2" in table.splitlines()[0] and "—" not in table, table


def test_declared_metrics_are_in_the_records(smoke):
    _, result = smoke
    for spec in bundled_specs("smoke"):
        records = result.outcomes[spec.name].records
        for metric in TASKS[spec.family].metrics:
            assert any(metric.key in r for r in records), (spec.name, metric.key)


def test_two_config_files_with_the_same_name_are_rejected(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "exp.toml").write_text(GOOD)
    with pytest.raises(ValueError, match=r"exp\.toml.*exp\.toml.*same name"):
        select_specs("smoke", config_files=[tmp_path / "a" / "exp.toml", tmp_path / "b" / "exp.toml"])


def test_config_that_is_a_folder_or_not_utf8_is_one_line(tmp_path, capsys):
    latin = tmp_path / "latin.toml"
    latin.write_bytes(GOOD.replace("Mine", "Caf\xe9").encode("latin-1"))
    for path, needle in ((tmp_path, "is a folder"), (latin, "UTF-8")):
        status = main(["reproduce", "--config", str(path), "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err
        assert status == 1
        assert len(err.strip().splitlines()) == 1 and str(path) in err and needle in err, err


def test_config_with_a_byte_order_mark_is_read(tmp_path):
    cfg = tmp_path / "bom.toml"
    cfg.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert select_specs("smoke", config_files=[cfg])[0].title == "Mine"


@pytest.mark.parametrize("stored", ["[1, 2]", '"x"', '{"fingerprint": 3}', "{not json"])
def test_malformed_experiment_json_is_redone(stored, tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(GOOD)
    out = tmp_path / "o"
    run_reproduce(out, profile="smoke", config_files=[cfg], progress=False)
    (out / "exp" / "experiment.json").write_text(stored)
    result = run_reproduce(out, profile="smoke", config_files=[cfg], progress=False)
    assert result.outcomes["exp"].records
    assert isinstance(json.loads((out / "exp" / "experiment.json").read_text()), dict)


def test_the_example_experiment_files_parse_in_every_profile():
    """examples/reproduce/*.toml run with `reproduce --config`: they parse, with disjoint seed sets."""
    files = sorted((Path(__file__).resolve().parents[1] / "examples" / "reproduce").glob("*.toml"))
    assert files
    for profile in ("smoke", "quick", "full"):
        specs = select_specs(profile, config_files=files)
        assert {s.settings["balance"] for s in specs} == {0.1}
        assert all("das-gradient" in s.settings["optimizers"] for s in specs)


def test_time_over_sam_is_each_registered_method_s_mean_over_sam_s():
    from tensordas.reproduce.report import time_over_sam

    rows = [("base", 1.0), ("sam", 4.0), ("sam", 6.0), ("das", 2.0), ("das", 3.0), ("looksam", 3.0), (None, 9.0)]
    records = [{"method": m, "step_time_ms": t, "wall_time_s": 100.0} for m, t in rows]
    assert time_over_sam(records) == ({"das": 0.5, "looksam": 0.6}, "step_time_ms")  # registry order, no reference row
    no_steps = [{**r, "step_time_ms": None} for r in records]
    assert time_over_sam(no_steps) == ({"das": 1.0, "looksam": 1.0}, "wall_time_s")
    assert time_over_sam([r for r in records if r["method"] != "sam"]) is None
