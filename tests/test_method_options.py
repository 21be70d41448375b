"""The method options are written out (issue 19, point 6): the fields of ``MethodOptions`` are the single source of
the options, their help and bounds; every command's flags, defaults and help follow them."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest
import typer

from tensordas.cli import app
from tensordas.cli._options import optimizer_options, run_options
from tensordas.tasks import TASKS
from tensordas.training import METHODS, OPTIONS, STRENGTHS, MethodOptions, Strength

COMMANDS = {"complete": "completion", "train": "noisy", "compress": "compress", "finetune": "finetune"}
GRID_NOTE = " A comma list (e.g. 0.01,0.1,1) is a grid: each method picks its value on --validation data."


def _click(command: str):
    return typer.main.get_command(app).commands[command]


def _flags(params) -> set[str]:
    return {flag for p in params for flag in (*p.opts, *p.secondary_opts) if flag.startswith("--")}


def test_the_options_are_the_written_out_fields_of_method_options():
    fields = dataclasses.fields(MethodOptions)
    source = inspect.getsource(MethodOptions)
    assert [f.name for f in fields] == list(OPTIONS)
    hints = typing.get_type_hints(MethodOptions)
    for f in fields:
        option = OPTIONS[f.name]
        assert f"\n    {f.name}: " in source  # written in the class body, where an IDE reads it
        assert option.default == f.default and option.help == f.metadata["option"]["help"] and option.help
        assert hints[f.name] == (Strength if f.name in STRENGTHS else type(f.default)), f.name
    assert str(inspect.signature(MethodOptions)).count("=") == len(OPTIONS)  # help() shows every default


def test_every_method_names_fields_and_every_field_is_some_method_s():
    used = {name for m in METHODS.values() for name in m.options}
    assert used == set(OPTIONS)
    tuned = dict.fromkeys(name for m in METHODS.values() for name in m.tuned_options)
    assert tuple(tuned) == STRENGTHS  # the list-capable fields are exactly the tuned ones (and the base's lr)
    for method in METHODS.values():
        assert all(isinstance(name, str) for name in method.options), method.name


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_one_flag_per_option_with_the_field_s_help_and_the_family_s_default(command):
    params = {p.name: p for p in _click(command).params}
    config = TASKS[COMMANDS[command]].config
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for option in OPTIONS.values():
        param = params[option.name]
        assert option.flag in param.opts, option.name
        if option.type is bool:
            assert param.secondary_opts == [f"--no-{option.flag[2:]}"] and param.default is defaults[option.name]
            assert param.help == option.help
        elif option.name in STRENGTHS:
            assert param.help == option.help + GRID_NOTE and float(param.default) == defaults[option.name]
        else:
            assert param.help == option.help and param.default == defaults[option.name], option.name


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_s_flags_are_its_own_the_shared_written_out_ones_and_the_options(command, capsys):
    shared = {p.name for f in (optimizer_options, run_options) for p in inspect.signature(f).parameters.values()}
    params = _click(command).params
    names = {p.name for p in params}
    assert shared <= names and set(OPTIONS) <= names
    option_flags = _flags(p for p in params if p.name in OPTIONS)
    assert option_flags == {o.flag for o in OPTIONS.values()} | {f"--no-{o.flag[2:]}" for o in OPTIONS.values() if
                                                                 o.type is bool}  # fmt: skip
    from tensordas.cli import main

    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in _flags(p for p in params if not p.hidden))  # --help lists every flag


def test_a_command_s_signature_shows_every_option_to_help():
    from tensordas.cli.train import train_command

    signature = inspect.signature(train_command)
    assert set(OPTIONS) <= set(signature.parameters) and {"seeds", "optimizer", "model"} <= set(signature.parameters)
    assert signature.parameters["alpha"].default == "0.1"  # the noisy family's default, as its flag takes it
