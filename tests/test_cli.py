"""The ``tensordas`` command line: a working run, and one-line errors with the right exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tensordas.cli import main
from tensordas.tasks import TASKS

FAST = ["--size", "12x10", "--rank", "3"]


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """Run the installed console script (or ``python -m tensordas.cli`` if it is not on this venv)."""
    script = Path(sys.executable).with_name("tensordas")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "tensordas.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, **kw)


def test_dynamics_command_writes_results_and_prints_a_table(tmp_path, capsys):
    assert main(["dynamics", "--steps", "5", "--out", str(tmp_path / "run"), *FAST]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    for word in ("optimizer", "final loss", "final Q", "dq_ratio", "GD", "SAM", "DAS"):
        assert word in out
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert files == {"dynamics.json", "dynamics.csv", "dynamics.png"}
    data = json.loads((tmp_path / "run" / "dynamics.json").read_text())
    assert data["config"]["steps"] == 5 and data["config"]["size"] == [12, 10] and data["config"]["rank"] == [3, 3]
    assert len(data["curves"]["SAM"]["Q"]) == 6


def test_console_script_end_to_end(tmp_path):
    proc = _cli("dynamics", "--steps", "5", "--out", str(tmp_path), *FAST)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar when standard error is not a terminal
    assert "dq_ratio" in proc.stdout
    assert (tmp_path / "dynamics.json").exists()


def test_console_script_misuse_is_one_line_without_traceback():
    proc = _cli("dynamics", "--stepz", "5")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("tensordas: error:")
    assert "--stepz" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["dynamics", "--unknown"], "--unknown"),
        (["dynamics", "--steps", "0"], "steps value: 0"),
        (["dynamics", "--noise", "-1"], "noise value: -1"),
        (["dynamics", "--eta", "0"], "eta value: 0"),
        (["dynamics", "--steps", "many"], "--steps"),
        (["dynamics", "--eta", "fast"], "--eta"),
        (["dynamics", "--size", "3x"], "3x"),
        (["dynamics", "--rank", "40"], "exceeds"),
        (["dynamics", "extra-argument"], "extra-argument"),
        (["dynamic"], "dynamic"),
    ],
)
def test_usage_errors_print_one_line_and_exit_2(args, needle, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "o")] if args[0] == "dynamics" else args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("tensordas: error:")
    assert needle in err
    assert not (tmp_path / "o").exists()  # nothing was run or written


def test_unusable_output_folder_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["dynamics", "--steps", "2", "--out", str(tmp_path / "file"), *FAST]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "not a folder" in err


def test_runtime_value_error_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["dynamics", "--steps", "50", "--eta", "10", "--out", str(tmp_path), *FAST]) == 1
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "diverged" in err
    assert not (tmp_path / "dynamics.json").exists()


def test_help_and_version_still_work(capsys):
    assert main(["dynamics", "--help"]) == 0
    out, _ = capsys.readouterr()
    for option in ("--steps", "--noise", "--seed", "--out", "--eta", "--rho", "--alpha", "--rank", "--size"):
        assert option in out
    assert main([]) == 0  # bare command shows help
    assert "dynamics" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("tensordas ")


def test_ctrl_c_exits_130_with_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(TASKS, "dynamics", dataclasses.replace(TASKS["dynamics"], run=interrupted))
    assert main(["dynamics", "--out", str(tmp_path)]) == 130
    out, err = capsys.readouterr()
    assert err == "tensordas: error: interrupted\n"
    assert not (tmp_path / "dynamics.json").exists()


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_sigint_during_a_real_run_leaves_no_result(tmp_path):
    out = tmp_path / "run"
    script = Path(sys.executable).with_name("tensordas")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "tensordas.cli"]
    proc = subprocess.Popen(
        [*cmd, "dynamics", "--steps", "1000000", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # the folder is created just before the run starts
        assert out.exists(), proc.stderr.read() if proc.poll() is not None else "run did not start"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["tensordas: error: interrupted"]
    assert list(out.iterdir()) == []


def test_python_dash_m_tensordas_runs_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "tensordas", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("tensordas ")
