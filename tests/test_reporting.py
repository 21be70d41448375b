"""The shared reporting layer: atomic writers, tables with mean ± std, figures, progress."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics

import numpy as np
import pytest
import torch
from rich.console import Console

from tensordas.reporting import (
    MeanStd,
    atomic_open,
    ensure_dir,
    format_value,
    json_ready,
    line_panels,
    mean_std,
    progress_bar,
    results_table,
    save_figure,
    summarize,
    write_csv,
    write_json,
)


# ---------------------------------------------------------------------------------- atomic io
def test_atomic_open_writes_only_on_success(tmp_path):
    target = tmp_path / "r.txt"
    with atomic_open(target) as f:
        f.write("hello")
        assert not target.exists()  # nothing visible while writing
    assert target.read_text() == "hello"
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~_umask()
    assert os.listdir(tmp_path) == ["r.txt"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_open_leaves_no_partial_file_when_the_writer_raises(tmp_path, error):
    target = tmp_path / "r.json"
    with pytest.raises(type(error)), atomic_open(target) as f:
        f.write('{"half": ')
        raise error
    assert os.listdir(tmp_path) == []  # neither the target nor a temporary file


def test_atomic_open_keeps_the_old_file_when_a_rewrite_fails(tmp_path):
    target = tmp_path / "r.csv"
    target.write_text("old,complete\n")
    with pytest.raises(ValueError), atomic_open(target) as f:
        f.write("new,par")
        raise ValueError("interrupted")
    assert target.read_text() == "old,complete\n"
    assert os.listdir(tmp_path) == ["r.csv"]


def test_atomic_open_rejects_bad_mode_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="'a'"), atomic_open(tmp_path / "x", "a"):
        pass
    with pytest.raises(FileNotFoundError, match="does not exist"), atomic_open(tmp_path / "no" / "x"):
        pass


def test_ensure_dir(tmp_path):
    assert ensure_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        ensure_dir(tmp_path / "file")
    with pytest.raises(NotADirectoryError):
        ensure_dir(tmp_path / "file" / "sub")


def test_write_json_converts_values_and_round_trips_floats(tmp_path):
    x = 0.1 + 0.2  # not exactly representable in few digits
    obj = {
        "f": x,
        "nan": float("nan"),
        "inf": [1.0, float("-inf")],
        "np": np.float32(1.5),
        "npi": np.int64(7),
        "arr": np.arange(3),
        "t": torch.tensor([1.0, 2.0], dtype=torch.float64),
        "t0": torch.tensor(3.0),
        "path": tmp_path,
        "nested": [{"a": (1, 2)}],
    }
    path = write_json(tmp_path / "r.json", obj)
    text = path.read_text()
    data = json.loads(text)
    assert data["f"] == x
    assert data["nan"] is None and data["inf"] == [1.0, None]
    assert data["np"] == 1.5 and data["npi"] == 7 and data["arr"] == [0, 1, 2]
    assert data["t"] == [1.0, 2.0] and data["t0"] == 3.0
    assert data["path"] == str(tmp_path) and data["nested"] == [{"a": [1, 2]}]
    assert '"arr": [0, 1, 2]' in text  # lists of numbers stay on one line
    with pytest.raises(TypeError, match="object"):
        json_ready({"bad": object()})


def test_write_csv(tmp_path):
    rows = [{"opt": "GD", "loss": 0.1 + 0.2, "Q": None}, {"opt": "SAM", "loss": float("nan"), "Q": 2}]
    path = write_csv(tmp_path / "r.csv", rows, ["opt", "loss", "Q"])
    with open(path, newline="") as f:
        back = list(csv.DictReader(f))
    assert back == [{"opt": "GD", "loss": repr(0.1 + 0.2), "Q": ""}, {"opt": "SAM", "loss": "", "Q": "2"}]
    with pytest.raises(ValueError):
        write_csv(tmp_path / "bad.csv", [{"opt": "GD", "extra": 1}], ["opt"])
    assert not (tmp_path / "bad.csv").exists()


def test_save_figure_is_atomic(tmp_path):
    fig = line_panels({"GD": {"step": [0, 1, 2], "Q": [3.0, 2.0, 1.0]}}, "step", ["Q"])
    path = save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"

    class Broken:
        def savefig(self, f, **kw):
            f.write(b"\x89PNG half")
            raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        save_figure(Broken(), tmp_path / "g.png")
    assert os.listdir(tmp_path) == ["f.png"]


# ------------------------------------------------------------------------------------- plots
def test_line_panels_draws_one_line_per_series_in_each_panel():
    series = {
        "GD": {"step": [0, 1, 2], "Q": [3.0, 2.0, 1.0], "C": [-1.0, -0.5, 0.0]},
        "SAM": {"step": [0, 1, 2], "Q": [3.0, 1.5, 0.5], "C": [-1.0, -0.2, 0.0]},
    }
    fig = line_panels(series, "step", ["Q", "C"], yscales={"C": "symlog"}, title="t")
    axes = fig.get_axes()
    assert len(axes) == 2
    assert [len(ax.get_lines()) for ax in axes] == [2, 2]
    assert list(axes[0].get_lines()[1].get_ydata()) == [3.0, 1.5, 0.5]
    assert axes[1].get_yscale() == "symlog"
    with pytest.raises(ValueError):
        line_panels(series, "step", [])


# ------------------------------------------------------------------------------------ tables
def test_mean_std_matches_statistics_module():
    xs = [0.91, 0.87, 0.93, 0.9]
    ms = mean_std(xs)
    assert ms.mean == pytest.approx(statistics.mean(xs), rel=1e-15)
    assert ms.std == pytest.approx(statistics.stdev(xs), rel=1e-12)
    assert ms.n == 4
    assert mean_std([2.5]) == MeanStd(2.5, 0.0, 1)
    assert mean_std([0.1, 0.1, 0.1]) == MeanStd(0.1, 0.0, 3)  # fsum/3 would leave a 1e-17 residue
    assert math.isnan(mean_std([1.0, float("nan")]).mean)
    with pytest.raises(ValueError):
        mean_std([])


def test_summarize_groups_records_by_key_over_seeds():
    records = [
        {"optimizer": "SGD", "seed": 0, "acc": 0.80},
        {"optimizer": "SAM", "seed": 0, "acc": 0.85},
        {"optimizer": "SGD", "seed": 1, "acc": 0.84},
        {"optimizer": "SAM", "seed": 1, "acc": 0.87, "time": 2.0},
    ]
    rows = summarize(records, by=["optimizer"], metrics=["acc", "time"])
    assert [r["optimizer"] for r in rows] == ["SGD", "SAM"]
    assert rows[0]["acc"].mean == pytest.approx(0.82) and rows[0]["acc"].std == pytest.approx(
        statistics.stdev([0.8, 0.84])
    )
    assert rows[0]["time"] is None and rows[1]["time"] == MeanStd(2.0, 0.0, 1)


def test_results_table_renders_values_and_mean_std():
    rows = [
        {"optimizer": "SGD", "acc": MeanStd(0.823456, 0.0123, 3), "loss": 1.23456789},
        {"optimizer": "DAS", "acc": MeanStd(0.9, 0.0, 1), "loss": None},
    ]
    table = results_table(rows, {"optimizer": "optimizer", "acc": "accuracy", "loss": "loss"}, title="T")
    con = Console(record=True, width=100, file=io.StringIO())
    con.print(table)
    text = con.export_text()
    assert "accuracy" in text and "0.8235 ± 0.012" in text and "1.235" in text
    assert "0.9 " in text and "—" in text
    assert format_value(float("nan")) == "—" and format_value(3) == "3" and format_value("x") == "x"


# ---------------------------------------------------------------------------------- progress
def test_progress_bar_draws_on_a_terminal_and_is_silent_elsewhere():
    buf = io.StringIO()
    with progress_bar(Console(file=buf, force_terminal=True, width=80)) as update:
        for t in range(1, 4):
            update("SAM", t, 3)
    assert "SAM" in buf.getvalue() and "3/3" in buf.getvalue()
    quiet = io.StringIO()
    with progress_bar(Console(file=quiet)) as update:  # not a terminal: nothing drawn
        update("SAM", 1, 3)
    assert quiet.getvalue() == ""


def test_task_labels_get_their_method_colour_and_style_from_the_registry():
    from tensordas.training import METHODS

    names = ("sgd", "sam(sgd)", "das(sgd)", "SAM", "GD")
    fig = line_panels({n: {"step": [0, 1], "Q": [1.0, 0.5]} for n in names}, "step", ["Q"])
    styles = {line.get_label(): (line.get_color(), line.get_linestyle()) for line in fig.axes[0].get_lines()}
    sam, das, base = (METHODS[m] for m in ("sam", "das", "base"))
    assert styles == {
        "sgd": (base.color, "-"),
        "sam(sgd)": (sam.color, sam.linestyle),
        "das(sgd)": (das.color, das.linestyle),
        "SAM": (sam.color, sam.linestyle),  # the dynamics study's curve labels
        "GD": (base.color, "-"),
    }
    assert len({sam.color, das.color, base.color}) == 3 and {sam.linestyle, das.linestyle} == {"--", ":"}


def test_a_method_without_a_colour_of_its_own_gets_one_from_its_name_not_the_base_s():
    from tensordas.training import METHODS

    names = ("sgd", "looksam(sgd)", "looksam(adam)", "msam(sgd)", "MSAM", "DAS-gradient", "das-gradient(sgd)")
    fig = line_panels({n: {"step": [0, 1], "Q": [1.0, 0.5]} for n in names}, "step", ["Q"])
    colours = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
    assert METHODS["looksam"].color is None and METHODS["msam"].color is None
    assert colours["looksam(sgd)"] == colours["looksam(adam)"]  # one method, one colour in every figure
    assert colours["looksam(sgd)"] not in (colours["sgd"], METHODS["sam"].color, METHODS["das"].color)
    assert colours["msam(sgd)"] == colours["MSAM"] != METHODS["base"].color
    assert colours["DAS-gradient"] == colours["das-gradient(sgd)"] != colours["sgd"]


def test_an_explicit_style_overrides_the_method_s():
    fig = line_panels(
        {"das(sgd)": {"step": [0, 1], "Q": [1.0, 0.5]}}, "step", ["Q"], styles={"das(sgd)": ("#000000", "-.")}
    )
    (line,) = fig.axes[0].get_lines()
    assert (line.get_color(), line.get_linestyle()) == ("#000000", "-.")


def test_summary_table_marks_diverged_runs():
    from rich.console import Console

    from tensordas.tasks.display import summary_table
    from tensordas.tasks.runstore import RunResult

    results = [
        RunResult({"optimizer": "sgd", "seed": 0, "loss": 0.5, "diverged": False}),
        RunResult({"optimizer": "das(sgd)", "seed": 0, "loss": None, "diverged": True}),
        RunResult({"optimizer": "das(sgd)", "seed": 1, "loss": 0.4, "diverged": False}),
    ]
    con = Console(width=120, record=True)
    con.print(summary_table(results, {"loss": "loss"}, title="t"))
    lines = con.export_text().splitlines()
    assert "diverged" in next(line for line in lines if "optimizer" in line)
    assert "1/2" in next(line for line in lines if "das(sgd)" in line)
    clean = [RunResult({"optimizer": "sgd", "seed": 0, "loss": 0.5, "diverged": False})]
    con = Console(width=120, record=True)
    con.print(summary_table(clean, {"loss": "loss"}, title="t"))
    assert "diverged" not in con.export_text()  # no column when nothing diverged


def test_mean_std_of_diverged_or_huge_values_never_raises():
    # math.fsum raised on inf + -inf and on an intermediate overflow; inf gave an "inf" mean
    for values in ([math.inf, -math.inf], [math.inf, 1.0], [math.inf], [math.nan]):
        ms = mean_std(values)
        assert math.isnan(ms.mean) and math.isnan(ms.std) and ms.n == len(values)
    huge = [1e308, 1e308, -1e308]
    ms = mean_std(huge)
    ref = [x / 1e308 for x in huge]  # the same numbers, scaled into range
    assert ms.mean == pytest.approx(statistics.mean(ref) * 1e308, rel=1e-12)
    assert ms.std == pytest.approx(statistics.stdev(ref) * 1e308, rel=1e-12)


def test_format_value_and_csv_cells_handle_numpy_and_torch_scalars(tmp_path):
    assert format_value(np.float32("nan")) == "—" and format_value(torch.tensor(float("nan"))) == "—"
    assert format_value(np.float32(1 / 3)) == "0.3333" and format_value(torch.tensor(0.5)) == "0.5"
    assert format_value(np.int64(7)) == "7" and format_value(torch.tensor(3)) == "3"
    path = write_csv(
        tmp_path / "r.csv",
        [{"a": np.float32("nan"), "b": torch.tensor(float("inf")), "c": torch.tensor(0.25), "d": np.float32(0.5)}],
        ["a", "b", "c", "d"],
    )
    with open(path, newline="") as f:
        assert list(csv.DictReader(f)) == [{"a": "", "b": "", "c": "0.25", "d": "0.5"}]


def test_line_panels_leaves_out_a_series_without_the_panel_column():
    series = {
        "sgd": {"step": [0, 1, 2], "loss": [1.0, math.nan, math.inf], "Q": [1.0, 0.5, 0.2]},
        "das(sgd)": {"step": [0, 1, 2], "Q": [1.0, 0.4, 0.1]},  # no loss recorded (e.g. diverged at once)
        "sam(sgd)": {"step": [0, 1], "loss": None, "Q": [1.0, 0.6]},
    }
    fig = line_panels(series, "step", ["loss", "Q"], yscales={"loss": "log"})
    assert [len(ax.get_lines()) for ax in fig.get_axes()] == [1, 3]
    assert fig.get_axes()[0].get_legend() is not None
    only_missing = line_panels({"das(sgd)": {"step": [0, 1]}}, "step", ["loss"])
    assert fig is not only_missing and only_missing.get_axes()[0].get_lines() == []


def test_curve_figure_draws_one_panel_per_column_with_the_mean_over_seeds():
    from tensordas.tasks.display import curve_figure
    from tensordas.tasks.runstore import RunResult

    def run(optimizer, seed, accs):
        curve = [{"epoch": e, "acc": a, "Q": 1.0 + seed} for e, a in enumerate(accs)]
        return RunResult({"optimizer": optimizer, "seed": seed}, curve)

    results = [run("sgd", 0, [0.1, 0.5]), run("sgd", 1, [0.3, math.nan]), run("sam(sgd)", 0, [0.2, 0.4])]
    fig = curve_figure(results, "epoch", {"acc": "accuracy", "Q": "norm deviation"}, yscales={"Q": "log"})
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["accuracy", "norm deviation"]
    assert fig.axes[1].get_yscale() == "log"
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["sgd"].get_ydata()) == pytest.approx([0.2, 0.5])  # (0.1 + 0.3) / 2; NaN left out
    assert list(lines["sam(sgd)"].get_xdata()) == [0, 1]
    q = {line.get_label(): list(line.get_ydata()) for line in fig.axes[1].get_lines()}
    assert q["sgd"] == pytest.approx([1.5, 1.5])
