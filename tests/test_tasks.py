"""The task protocol and registry, the record schema, and the CLI built from them."""

from __future__ import annotations

import dataclasses

import pytest

from tensordas.cli import app, main
from tensordas.tasks import RECORD_KEYS, TASKS, check_record
from tensordas.training import METHODS, OPTIONS

COMPARISON_COMMANDS = ("complete", "train", "compress", "finetune")


def test_every_family_is_one_task_with_a_config_metrics_and_a_command():
    import typer

    commands = {c.name for c in typer.main.get_command(app).commands.values()}
    for name, task in TASKS.items():
        assert task.name == name and dataclasses.is_dataclass(task.config)
        assert task.command in commands, name
        for metric in task.metrics:
            assert isinstance(metric.higher_is_better, bool) and metric.label
        assert task.get_metric(None) is task.metric
        if task.metrics:
            assert {"optimizers", "seeds", *OPTIONS} <= set(task.settings_fields()), name
    assert TASKS["noisy"].command == "train"  # `tensordas train` runs the noisy-label family
    assert not TASKS["dynamics"].metrics and TASKS["dynamics"].record_columns
    with pytest.raises(ValueError, match="'nope'.*test_r2"):
        TASKS["completion"].get_metric("nope")


@pytest.mark.parametrize("command", COMPARISON_COMMANDS)
def test_comparison_commands_take_every_method_and_option_of_the_registry(command, capsys):
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for option in OPTIONS.values():
        assert option.flag in out, (command, option.flag)
    for flag in ("--optimizer", "--compare", "--base", "--seeds", "--device", "--threads", "--out", "--resume"):
        assert flag in out, (command, flag)
    for method in METHODS:
        assert method in out


def test_an_invalid_option_value_is_a_one_line_usage_error(tmp_path, capsys):
    status = main(["complete", "--das-variant", "authors", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "'authors'" in err
    assert not (tmp_path / "o").exists()


def test_check_record_names_missing_keys():
    record = dict.fromkeys(RECORD_KEYS)
    check_record(record)
    del record["Q"], record["selected"]
    with pytest.raises(ValueError, match="Q, selected|selected, Q"):
        check_record(record, "mine")
