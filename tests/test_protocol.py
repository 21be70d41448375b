"""Issue 20, points 3 and 8: exploration vs confirmation seeds in every experiment file, and `reproduce --jobs N`
(parallel runs whose records equal a serial run's)."""

import csv
import json
import multiprocessing
import time

import pytest
import torch

from tensordas.cli import main
from tensordas.reproduce import bundled_specs, run_reproduce, select_specs
from tensordas.reproduce.specs import parse_spec
from tensordas.tasks import TASKS
from tensordas.tasks.parallel import check_jobs
from tensordas.tasks.runstore import RunStore

GOOD = (
    'family = "completion"\ntitle = "Mine"\nmetric = "test_r2"\n'
    '[settings]\ndata = "synthetic:shape=6x5x4,rank=2,noise=0.0"\nmodel = "cp"\nrank = 2\n'
    'optimizers = ["base", "das"]\nexploration_seeds = [0, 1]\nseeds = [7, 8]\n'
    "[profiles.smoke]\nsteps = 5\nals = false\n"
)


# ------------------------------------------------------------------ seed sets


def test_every_bundled_comparison_names_disjoint_exploration_and_confirmation_seeds():
    for profile in ("smoke", "quick", "full"):
        for spec in bundled_specs(profile):
            if not TASKS[spec.family].metrics:
                continue  # dynamics: one seed, no comparison
            seeds, explore = set(spec.settings["seeds"]), set(spec.exploration_seeds)
            assert explore and not seeds & explore, (profile, spec.name)


def test_quick_profile_reports_at_least_5_confirmation_seeds_that_chose_nothing():
    for spec in bundled_specs("quick"):
        if TASKS[spec.family].metrics:
            # the earlier choices were made on test accuracy of seeds 0-4 at most (docs/experiments.md)
            assert len(spec.settings["seeds"]) >= 5 and min(spec.settings["seeds"]) >= 100, spec.name
            assert set(range(5)) & set(spec.exploration_seeds), spec.name


def test_overlapping_seed_sets_are_an_error_naming_file_and_seeds(tmp_path, capsys):
    text = GOOD.replace("seeds = [7, 8]", "seeds = [1, 7, 0]")
    with pytest.raises(ValueError, match=r"exp\.toml.*smoke.*\[0, 1\].*exploration_seeds"):
        parse_spec(text, "exp", "smoke", source="exp.toml")
    cfg = tmp_path / "exp.toml"
    cfg.write_text(text.replace("[settings]", "[profiles.full]\nseeds = [3]\n[settings]", 1))  # another profile
    status = main(["reproduce", "--config", str(cfg), "--profile", "full", "--out", str(tmp_path / "o"),
                   "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and len(err.strip().splitlines()) == 1 and "exp.toml" in err and "[0, 1]" in err, err


def test_the_familys_default_seeds_count_when_a_file_gives_none():
    text = GOOD.replace("seeds = [7, 8]\n", "").replace("exploration_seeds = [0, 1]", "exploration_seeds = [0]")
    with pytest.raises(ValueError, match=r"\[0\].*exploration_seeds"):  # completion's default seeds are (0,)
        parse_spec(text, "exp", "smoke", source="exp.toml")


@pytest.mark.parametrize("bad", ["3", "[0, 0]", "[-1]", '["0"]'])
def test_bad_exploration_seeds_are_named(bad):
    text = GOOD.replace("exploration_seeds = [0, 1]", f"exploration_seeds = {bad}")
    with pytest.raises(ValueError, match=r"exp\.toml.*exploration_seeds"):
        parse_spec(text, "exp", "smoke", source="exp.toml")


def test_explore_runs_the_exploration_seeds_and_records_say_which_set(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(GOOD)
    for seed_set, seeds in (("exploration", {0, 1}), ("confirmation", {7, 8})):
        result = run_reproduce(tmp_path / seed_set, profile="smoke", config_files=[cfg], progress=False,
                               seed_set=seed_set)  # fmt: skip
        stored = json.loads(result.results.read_text())
        assert stored["seed_set"] == seed_set
        assert {r["seed"] for r in stored["records"]} == seeds
        assert {r["seed_set"] for r in stored["records"]} == {seed_set}
        assert f"seeds: each experiment's {'`exploration_seeds`' if seed_set == 'exploration' else 'confirmation'}" in (
            result.report.read_text()
        )


def test_explore_needs_exploration_seeds(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(GOOD.replace("exploration_seeds = [0, 1]\n", ""))
    assert select_specs("smoke", config_files=[cfg])[0].exploration_seeds == ()
    with pytest.raises(ValueError, match=r"exp\.toml.*no exploration_seeds"):
        select_specs("smoke", config_files=[cfg], seed_set="exploration")
    assert {s.family for s in select_specs("smoke", seed_set="exploration")} == set(TASKS)  # dynamics keeps its seed


# ------------------------------------------------------------------ --jobs

TINY = {
    "noisy": 'family = "noisy"\n[settings]\ndata = "digits"\nnoise = 0.4\nmodel = "tt-mlp"\nrank = 4\n'
    "train_size = 160\ntest_size = 60\nepochs = 2\nalpha = [10.0, 100.0]\nrho = [0.1, 0.3]\nlr = [0.05, 0.1]\n"
    'tune = true\noptimizers = ["base", "sam", "das"]\nseeds = [100, 101]\n',  # tune: the edges' second wave
    # per-seed dense models: runs of one seed in different workers train the same dense model
    "compress": 'family = "compress"\n[settings]\ndata = "digits"\ntrain_dense = true\nmodel = "mlp"\nformat = "tt"\n'
    "ratio = 2.0\nnoise = 0.4\nper_seed_split = true\ntrain_size = 160\ntest_size = 60\ndense_epochs = 1\n"
    'epochs = 1\nalpha = [10.0, 100.0]\nrho = [0.1, 0.3]\nlr = [0.05, 0.1]\noptimizers = ["base", "sam", "das"]\n'
    "seeds = [100, 101]\n",
    "completion": 'family = "completion"\n[settings]\ndata = "synthetic:shape=8x7x6,rank=2,noise=0.1"\nmodel = "cp"\n'
    'rank = 2\nsteps = 30\neval_every = 10\nalpha = [10.0, 1000.0]\noptimizers = ["base", "das", "looksam"]\n'
    "rho = [0.1, 0.5]\nlr = [0.01, 0.02]\nseeds = [100, 101]\nals = false\n",
}


def _tiny_configs(folder):
    paths = []
    for name, text in TINY.items():
        path = folder / f"tiny-{name}.toml"
        path.write_text(text)
        paths.append(path)
    return paths


def _timeless(row):
    """A record or curve row without the measured times and memory (they differ between any two runs)."""
    return {k: v for k, v in row.items() if "time" not in k and "memory" not in k}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting: serial and parallel then round alike
    yield
    torch.set_num_threads(threads)


def test_parallel_runs_give_the_serial_records_bit_for_bit(tmp_path, one_thread):
    configs = _tiny_configs(tmp_path)
    serial = run_reproduce(tmp_path / "serial", profile="quick", config_files=configs, progress=False, jobs=1)
    parallel = run_reproduce(tmp_path / "parallel", profile="quick", config_files=configs, progress=False, jobs=2)
    a, b = (json.loads(r.results.read_text()) for r in (serial, parallel))
    assert len(a["records"]) == len(b["records"]) > 0
    assert [_timeless(r) for r in a["records"]] == [_timeless(r) for r in b["records"]]
    assert any(r["selected"].get("extended") for r in b["records"])  # extensions past an edge ran in the workers
    assert (a["environment"]["jobs"], b["environment"]["jobs"]) == (1, 2)
    for name in (p.stem for p in configs):
        rows = [list(csv.DictReader((r.out_dir / name / "curves.csv").open())) for r in (serial, parallel)]
        assert [_timeless(r) for r in rows[0]] == [_timeless(r) for r in rows[1]] and rows[0], name
        runs = sorted(p.name for p in (serial.out_dir / name / "runs").glob("*.json"))
        assert runs == sorted(p.name for p in (parallel.out_dir / name / "runs").glob("*.json"))


def test_interrupt_while_collecting_parallel_runs_stops_the_workers_and_a_rerun_resumes(tmp_path, monkeypatch):
    cfg = tmp_path / "tiny-completion.toml"
    cfg.write_text(TINY["completion"])
    out = tmp_path / "o"
    real, saved = RunStore.save, []

    def interrupted(self, key, print_, result):
        if len(saved) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the parent collects the third run
        saved.append(key)
        real(self, key, print_, result)

    monkeypatch.setattr(RunStore, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_reproduce(out, profile="quick", config_files=[cfg], progress=False, jobs=2)
    deadline = time.monotonic() + 60  # a loaded machine may take a while to reap a terminated worker
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not multiprocessing.active_children()  # no worker left running
    assert not (out / "results.json").exists() and not (out / "tiny-completion" / "results.json").exists()
    runs = out / "tiny-completion" / "runs"
    assert sorted(p.stem for p in runs.glob("*.json")) == sorted(saved)  # only whole runs, no temporary file
    before = {p.name: p.stat().st_mtime_ns for p in runs.glob("*.json")}

    monkeypatch.setattr(RunStore, "save", real)
    result = run_reproduce(out, profile="quick", config_files=[cfg], progress=False, jobs=2)
    assert result.results.exists()
    for name, mtime in before.items():
        assert (runs / name).stat().st_mtime_ns == mtime  # finished runs were reused
    assert len(list(runs.glob("*.json"))) == 2 * (2 + 2 + 2)  # 2 seeds x (base, das, looksam) x 2 candidates


def test_bad_jobs_is_an_error(tmp_path, capsys):
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="jobs"):
            check_jobs(bad)
    status = main(["reproduce", "--jobs", "0", "--out", str(tmp_path / "o"), "--no-progress"])
    assert status != 0 and "--jobs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_comparison_command_takes_jobs_with_the_serial_records(tmp_path, one_thread):
    args = ["complete", "--data", "synthetic:shape=9x8x7,rank=2,noise=0.1,seed=1", "--model", "tucker", "--rank", "2",
            "--steps", "12", "--eval-every", "6", "--optimizer", "base,sam,das", "--alpha", "10,1000",
            "--rho", "0.1,0.2", "--lr", "0.01,0.02", "--seeds", "0,1",
            "--no-progress"]  # fmt: skip
    records = []
    for jobs in ("1", "2"):
        out = tmp_path / jobs
        assert main([*args, "--jobs", jobs, "--threads", "1", "--out", str(out)]) == 0
        records.append([_timeless(r) for r in json.loads((out / "results.json").read_text())["records"]])
    assert records[0] == records[1] and len(records[0]) >= 8


def test_a_run_function_that_cannot_go_to_a_worker_runs_serially_with_a_warning(tmp_path):
    from test_tuning import fake_runs

    from tensordas.tasks.grid import run_grid
    from tensordas.tasks.parallel import parallel_runs
    from tensordas.tasks.protocol import Metric
    from tensordas.training import ComparisonSettings, compared_optimizers

    settings = ComparisonSettings(optimizers=("base", "das"), alpha=(1.0, 10.0), lr=(0.01, 0.02))
    configs, acc = compared_optimizers(settings), Metric("test_acc", "accuracy")
    calls, serial_calls = [], []
    with parallel_runs(2), pytest.warns(UserWarning, match="serially"):
        results = run_grid("t", {}, configs, [0, 1], fake_runs(calls), out_dir=tmp_path / "a", select=acc)
    serial = run_grid("t", {}, configs, [0, 1], fake_runs(serial_calls), out_dir=tmp_path / "b", select=acc)
    assert calls == serial_calls and len(calls) == 2 * 4  # the closure ran here, in order
    assert [r.record for r in results] == [r.record for r in serial]
