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
from tensordas.reproduce import FAMILIES, bundled_specs, run_reproduce
from tensordas.tasks.completion import CompletionExperiment


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    start = time.perf_counter()
    result = run_reproduce(out, profile="smoke", progress=False)
    return out, result, time.perf_counter() - start


def test_bundled_configs_cover_every_family_and_parse_in_every_profile():
    for profile in ("smoke", "quick", "full"):
        specs = bundled_specs(profile)
        assert {s.family for s in specs} == set(FAMILIES)
        for spec in specs:
            assert spec.settings, spec.name


def test_smoke_reproduction_writes_every_familys_table(smoke):
    out, result, elapsed = smoke
    assert elapsed < 120
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


def test_rerun_reuses_every_finished_experiment(smoke, monkeypatch):
    out, _, _ = smoke

    def boom(*args, **kwargs):
        raise AssertionError("a finished run was recomputed")

    monkeypatch.setattr(CompletionExperiment, "run", boom)
    run_reproduce(out, profile="smoke", progress=False)
    assert (out / "report.md").exists()


def test_interrupted_reproduction_resumes_without_recomputing(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    calls = []
    real = CompletionExperiment.run

    def crash_on_third(self, optimizer, seed, progress=None):
        calls.append((optimizer.method, seed))
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if killed in the middle of the third run
        return real(self, optimizer, seed, progress)

    monkeypatch.setattr(CompletionExperiment, "run", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_reproduce(out, profile="smoke", only=["completion"], progress=False)
    assert not (out / "report.md").exists() and not (out / "results.json").exists()
    finished = sorted(p.name for p in (out / "completion" / "runs").glob("*.json"))
    assert len(finished) == 2

    calls.clear()
    monkeypatch.setattr(
        CompletionExperiment, "run", lambda self, o, s, p=None: calls.append(o.method) or real(self, o, s, p)
    )
    run_reproduce(out, profile="smoke", only=["completion"], progress=False)
    assert calls == ["das"]  # only the unfinished run
    records = json.loads((out / "results.json").read_text())["records"]
    assert {r["optimizer"] for r in records} == {"sgd", "sam(sgd)", "das(sgd)"}


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_killed_process_leaves_no_result_and_rerun_completes(tmp_path):
    out = tmp_path / "rep"
    cmd = [sys.executable, "-m", "tensordas.cli", "reproduce", "--profile", "smoke", "--only", "completion",
           "--out", str(out), "--no-progress"]  # fmt: skip
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
