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


# A valid configuration of each comparison family (compress needs a source of its dense model and a size).
COMPARISON_CONFIGS = {
    "completion": {},
    "noisy": {},
    "compress": {"train_dense": True, "ratio": 4.0},
    "finetune": {},
}


@pytest.mark.parametrize("family", COMPARISON_CONFIGS)
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"seeds": (0, 0)}, "seeds are listed twice"),
        ({"seeds": ()}, "no seeds given"),
        ({"seeds": (-1,)}, "Invalid seed -1"),
        ({"device": "tpu"}, "Invalid device 'tpu'"),
        ({"validation": 1.5}, "1.5"),
        ({"alpha": (0.1, 1.0), "validation": 0}, "validation must be above 0"),
        ({"tune": "yes"}, "Invalid tune value"),
    ],
)
def test_every_comparison_family_checks_the_shared_settings_alike(family, bad, message):
    """The shared settings are declared and checked once (tasks/config.py): every family refuses them alike."""
    config = TASKS[family].config
    config(**COMPARISON_CONFIGS[family])  # valid as given
    with pytest.raises(ValueError, match=message):
        config(**COMPARISON_CONFIGS[family], **bad)


@pytest.mark.parametrize("family", COMPARISON_CONFIGS)
def test_a_comparison_config_round_trips_through_to_dict_and_resolves_validation(family):
    from tensordas.tasks import ComparisonConfig

    config = TASKS[family].config
    assert issubclass(config, ComparisonConfig)
    plain = config(**COMPARISON_CONFIGS[family])
    assert config(**plain.to_dict()) == plain
    assert set(plain.to_dict()) == {f.name for f in dataclasses.fields(config)}
    assert plain.validation is None and plain.validation_fraction == 0.0  # one value per strength: no split
    tuned = config(**COMPARISON_CONFIGS[family], alpha=(0.1, 1.0))
    assert tuned.alpha == (0.1, 1.0) and tuned.validation_fraction == 0.2  # a list: 0.2 held out to pick on
