"""80-column terminals (issue 15): help and result tables never cut a number, a word or an option value;
``--version`` works; ``complete`` tells the data's own missing share from the held-out share."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tensordas import __version__
from tensordas.cli import app
from tensordas.reporting import format_value, mean_std, results_table
from tensordas.tasks.completion import CompletionConfig, completion_table, plot_completion, run_completion

NARROW = {"COLUMNS": "80", "TERM": "dumb"}
COMMANDS = ["train", "complete", "compress", "finetune", "reproduce", "dynamics"]


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=NARROW)


def _fits(text: str, width: int = 80) -> None:
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help_fits_80_columns_without_cut_values(command):
    result = _invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    _fits(result.output)
    assert "<bool>" not in result.output  # a flag takes no value
    if command == []:  # the command list shows each summary whole (click would end it with "...")
        text = " ".join(result.output.split())
        assert "fitted to T + a*N." in text and "ratio or rank, then fine-tune it." in text
    if command == ["reproduce"]:
        assert "completion,noisy,compress,finetune,dynamics" in result.output


def test_version_prints_the_version_and_exits_0():
    result = _invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"tensordas {__version__}"


def test_wide_table_is_split_not_cut():
    values = {"a": [0.123456, 0.2345], "b": [1234.5678, 12.1], "c": [0.000123, 0.5], "d": [1.0, 2.0]}
    row = {"optimizer": "das(adamw)", **{k: mean_std(v) for k, v in values.items()}}
    headers = {"optimizer": "optimizer", "a": "test RMSE", "b": "test R²", "c": "val loss", "d": "ms/step"}
    for width in (30, 50, 80, 200):
        con = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        con.print(results_table([row], headers, title="t", caption="c"))
        text = con.export_text()
        _fits(text, width)
        cells = text.replace("│", " ").replace("┃", " ")
        for k, v in values.items():  # every number whole, and every header word
            m = mean_std(v)
            assert format_value(m.mean) in cells.split() and format_value(m.std, 2) in cells.split()
            assert all(word in cells.split() for word in headers[k].split())
        assert "das(adamw)" in cells.split()


def test_complete_table_at_80_columns_prints_whole_numbers(tmp_path):
    out = tmp_path / "run"
    args = ["--steps", "4", "--eval-every", "2", "--compare", "--seeds", "0,1", "--model", "cp", "--rank", "2"]
    result = _invoke("complete", "--data", "synthetic:shape=8x7x6,rank=2,noise=0.1", *args, "--out", str(out))
    assert result.exit_code == 0, result.output
    _fits(result.output)
    records = json.loads((out / "results.json").read_text())["records"]
    words = set(result.output.replace("│", " ").replace("┃", " ").split())
    assert "Q" in words  # how far the norms moved: the final Q of each method
    for name in {r["optimizer"] for r in records}:
        mine = [r["test_r2"] for r in records if r["optimizer"] == name]
        assert format_value(mean_std(mine).mean) in words, name


def _nan_file(tmp_path, share_nan: int) -> str:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 10, 5))
    x.reshape(-1)[rng.choice(500, share_nan, replace=False)] = np.nan
    path = tmp_path / "holes.npy"
    np.save(path, x)
    return str(path)


def test_complete_reports_the_datas_own_missing_share(tmp_path):
    cfg = CompletionConfig(data=_nan_file(tmp_path, 104), model="cp", rank=2, steps=2, optimizers=("base",), als=False)
    results = run_completion(cfg)
    assert results[0].record["data_missing"] == pytest.approx(104 / 500)
    title = str(completion_table(results, cfg).title)
    assert "20.8% missing in the data" in title and "70% of the observed entries held out" in title
    fig = plot_completion(results, cfg)
    assert "20.8% missing in the data; 70% of the observed entries held out" in fig._suptitle.get_text()


def test_complete_missing_share_of_coordinates_is_one_minus_nnz_over_cells(tmp_path):
    rng = np.random.default_rng(1)
    flat = np.sort(rng.choice(4 * 5 * 6, 90, replace=False))
    path = tmp_path / "entries.npz"
    np.savez(path, indices=np.stack(np.unravel_index(flat, (4, 5, 6)), 1), values=rng.standard_normal(90),
             shape=np.array([4, 5, 6]))  # fmt: skip
    cfg = CompletionConfig(data=str(path), model="cp", rank=2, steps=2, optimizers=("base",), missing=0.5, als=False)
    results = run_completion(cfg)
    assert results[0].record["data_missing"] == pytest.approx(1 - 90 / 120)
    assert re.search(
        r"25\.0% missing in the data; 50% of the observed entries held out", completion_table(results, cfg).title
    )
