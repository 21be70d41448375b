"""The shared classification training loop: resume equals an uninterrupted run, metrics, schedules (issue 4)."""

from __future__ import annotations

import math

import pytest
import torch

import tensordas as td
from tensordas.data import add_label_noise, load_classification
from tensordas.networks import build_network
from tensordas.training import LoopConfig, OptimizerConfig, evaluate, train_classifier

TIMES = ("time_s",)  # wall-clock columns differ between runs


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def digits():
    return load_classification("digits", seed=0, train_size=240, test_size=120)


def tiny(seed: int = 0, dropout: float = 0.0):
    torch.manual_seed(seed)
    return build_network("tt-mlp", (1, 8, 8), 10, rank=3, hidden=(16, 16), dropout=dropout)


def strip_times(history):
    return [{k: v for k, v in row.items() if k not in TIMES} for row in history]


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(
    "optimizer",
    [
        OptimizerConfig(method="das", base="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, alpha=0.5,
                        alpha_schedule="linear", total_steps=1),
        OptimizerConfig(method="sam", base="adam", lr=0.005, rho=0.05, weight_decay=1e-3),
    ],
    ids=["das-sgd", "sam-adam"],
)  # fmt: skip
def test_resume_from_a_checkpoint_equals_uninterrupted_training(digits, optimizer, tmp_path):
    noisy = add_label_noise(digits.y_train, 10, 0.3, seed=0)
    loop = LoopConfig(epochs=3, batch_size=32, lr_schedule="cosine")
    args = ((digits.x_train, noisy.labels), (digits.x_test, digits.y_test))
    kw = dict(loop=loop, seed=7, true_labels=noisy.true_labels, tag="t")

    # dropout draws from the global RNG: the checkpoint must restore it for an exact resume
    torch.manual_seed(123)
    full_model = tiny(dropout=0.2)
    full = train_classifier(full_model, optimizer, *args, checkpoint=tmp_path / "full.pt", **kw)

    torch.manual_seed(123)
    model = tiny(dropout=0.2)
    per_epoch = len(loop.batches(digits.n_train))

    def stop_in_epoch_3(label, done, total):
        if done == 2 * per_epoch + 1:  # the first step of epoch 3 has been taken
            raise Interrupt

    with pytest.raises(Interrupt):
        train_classifier(model, optimizer, *args, checkpoint=tmp_path / "cut.pt", progress=stop_in_epoch_3, **kw)
    torch.manual_seed(999)  # the interrupted process is gone: another global RNG state, a fresh model
    fresh = tiny(seed=5, dropout=0.2)
    resumed = train_classifier(fresh, optimizer, *args, checkpoint=tmp_path / "cut.pt", **kw)

    assert resumed.resumed_from == 2 and full.resumed_from == 0
    assert resumed.steps == full.steps == 3 * per_epoch
    for (name, a), (_, b) in zip(full_model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    assert strip_times(resumed.history) == strip_times(full.history)
    assert len(full.history) == 4 and full.history[-1]["epoch"] == 3


def test_a_finished_checkpoint_is_not_trained_again(digits, tmp_path):
    opt = OptimizerConfig(method="base", lr=0.05)
    loop = LoopConfig(epochs=1, batch_size=64)
    data = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    first = train_classifier(tiny(), opt, *data, loop=loop, checkpoint=tmp_path / "c.pt", tag="a")
    calls = []
    again = train_classifier(
        tiny(seed=3), opt, *data, loop=loop, checkpoint=tmp_path / "c.pt", tag="a",
        progress=lambda *a: calls.append(a),
    )  # fmt: skip
    assert again.resumed_from == 1 and strip_times(again.history) == strip_times(first.history)
    assert calls == [(opt.label, first.steps, first.steps)]  # only the initial progress report


def test_a_checkpoint_interval_skips_the_writes_in_between_but_always_writes_the_last_epoch(digits, tmp_path):
    opt = OptimizerConfig(method="base", lr=0.05, momentum=0.9)
    loop = LoopConfig(epochs=3, batch_size=64)
    args = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    per_epoch = len(loop.batches(digits.n_train))
    full = train_classifier(tiny(), opt, *args, loop=loop, tag="t")

    def stop_in_epoch_3(label, done, total):
        if done == 2 * per_epoch + 1:
            raise Interrupt

    path = tmp_path / "c.pt"
    with pytest.raises(Interrupt):  # two epochs ended, neither 1e9 s after the start: nothing written yet
        train_classifier(tiny(), opt, *args, loop=loop, tag="t", checkpoint=path, checkpoint_every_s=1e9,
                         progress=stop_in_epoch_3)  # fmt: skip
    assert not path.exists()
    done = train_classifier(tiny(), opt, *args, loop=loop, tag="t", checkpoint=path, checkpoint_every_s=1e9)
    assert done.resumed_from == 0 and strip_times(done.history) == strip_times(full.history)
    # the last epoch is always written: the finished run is continued, not trained again
    again = train_classifier(tiny(seed=5), opt, *args, loop=loop, tag="t", checkpoint=path, checkpoint_every_s=1e9)
    assert again.resumed_from == 3 and strip_times(again.history) == strip_times(full.history)


def test_which_epochs_a_checkpoint_interval_writes(digits, tmp_path, monkeypatch):
    from tensordas.training import engine

    written = []
    real_save = engine._save
    monkeypatch.setattr(engine, "_save", lambda path, state: written.append(state["round"]) or real_save(path, state))
    args = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    opt = OptimizerConfig(method="base", lr=0.05)
    for every, expected in ((0.0, [1, 2, 3]), (1e-9, [1, 2, 3]), (1e9, [3])):  # an epoch takes more than 1e-9 s
        written.clear()
        train_classifier(tiny(), opt, *args, loop=LoopConfig(epochs=3), checkpoint=tmp_path / f"{every}.pt",
                         checkpoint_every_s=every)  # fmt: skip
        assert written == expected, every
    # a run that ends early (a non-finite loss in epoch 1 of 3) is written at that epoch, whatever the interval
    written.clear()
    diverged = train_classifier(
        tiny(), OptimizerConfig(method="base", lr=1e30), *args, loop=LoopConfig(epochs=3),
        checkpoint=tmp_path / "nan.pt", checkpoint_every_s=1e9,
    )  # fmt: skip
    assert diverged.diverged and written == [len(diverged.history) - 1] and written[0] < 3


@pytest.mark.parametrize("every", [-1.0, math.nan, math.inf, True, "30"])
@pytest.mark.parametrize("with_file", [True, False])
def test_an_invalid_checkpoint_interval_is_refused(digits, tmp_path, every, with_file):
    opt = OptimizerConfig(method="base", lr=0.05)
    args = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    with pytest.raises(ValueError, match="every_s"):
        train_classifier(tiny(), opt, *args, loop=LoopConfig(epochs=1),
                         checkpoint=tmp_path / "c.pt" if with_file else None, checkpoint_every_s=every)  # fmt: skip
    assert not (tmp_path / "c.pt").exists()


def test_stale_or_corrupted_checkpoints_start_afresh(digits, tmp_path):
    opt = OptimizerConfig(method="base", lr=0.05)
    loop = LoopConfig(epochs=1, batch_size=64)
    data = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    path = tmp_path / "c.pt"
    train_classifier(tiny(), opt, *data, loop=loop, checkpoint=path, tag="old")
    other = train_classifier(tiny(), opt, *data, loop=loop, checkpoint=path, tag="new")
    assert other.resumed_from == 0
    path.write_bytes(b"\x00garbage")
    with pytest.warns(UserWarning, match="cannot read checkpoint"):
        again = train_classifier(tiny(), opt, *data, loop=loop, checkpoint=path, tag="new")
    assert again.resumed_from == 0 and strip_times(again.history) == strip_times(other.history)


def test_short_digits_training_beats_chance_by_a_margin():
    data = load_classification("digits", seed=1)
    torch.manual_seed(0)
    model = build_network("tt-mlp", data.input_shape, 10, rank=4, hidden=(64, 64))
    result = train_classifier(
        model,
        OptimizerConfig(method="das", base="sgd", lr=0.05, momentum=0.9, alpha=0.5),
        (data.x_train, data.y_train),
        (data.x_test, data.y_test),
        loop=LoopConfig(epochs=4, batch_size=64),
    )
    assert result.history[0]["test_acc"] < 0.3
    assert result.final["test_acc"] > 0.8  # chance is 0.1
    assert result.best_row("test_acc")["test_acc"] >= result.final["test_acc"]


def test_metrics_match_an_independent_evaluation(digits):
    noisy = add_label_noise(digits.y_train, 10, 0.5, seed=3)
    model = tiny()
    result = train_classifier(
        model,
        OptimizerConfig(method="base", lr=0.05, momentum=0.9),
        (digits.x_train, noisy.labels),
        (digits.x_test, digits.y_test),
        loop=LoopConfig(epochs=2, batch_size=40),
        true_labels=noisy.true_labels,
    )
    final = result.final
    model.eval()
    with torch.no_grad():
        test_pred = model(digits.x_test).argmax(1)
        bad = noisy.labels != noisy.true_labels
        pred = model(digits.x_train[bad]).argmax(1)
    assert final["test_acc"] == pytest.approx(float((test_pred == digits.y_test).double().mean()))
    assert final["memorized"] == pytest.approx(float((pred == noisy.labels[bad]).double().mean()))
    assert final["recovered"] == pytest.approx(float((pred == noisy.true_labels[bad]).double().mean()))
    assert final["memorized"] + final["recovered"] <= 1.0 + 1e-12
    groups = td.find_core_groups(model)
    qs = [float(td.norm_deviation(g)) for g in groups]
    assert final["Q_sum"] == pytest.approx(sum(qs)) and final["Q"] == pytest.approx(sum(qs) / len(qs))
    assert result.group_q == pytest.approx(dict(zip([g.name for g in groups], qs)))
    assert [r["epoch"] for r in result.history] == [0, 1, 2]
    assert result.history[0]["train_loss"] is None and math.isfinite(final["train_loss"])


def test_lr_schedules_step_per_optimizer_step(digits):
    per_epoch = len(LoopConfig(batch_size=60).batches(digits.n_train))  # 240 / 60 = 4
    assert per_epoch == 4
    data = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    opt = OptimizerConfig(method="base", lr=0.1)
    step = train_classifier(tiny(), opt, *data, loop=LoopConfig(epochs=4, batch_size=60, lr_schedule="step", lr_step=2))
    assert [r["lr"] for r in step.history] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    cos = train_classifier(tiny(), opt, *data, loop=LoopConfig(epochs=2, batch_size=60, lr_schedule="cosine"))
    assert [r["lr"] for r in cos.history] == pytest.approx([0.1, 0.05, 0.0], abs=1e-12)


def test_batches_drop_a_single_trailing_sample_only():
    assert LoopConfig(batch_size=4).batches(10) == [4, 4, 2]
    assert LoopConfig(batch_size=4).batches(9) == [4, 4]
    with pytest.raises(ValueError, match="at least 2"):
        LoopConfig(batch_size=4).batches(1)


def test_das_on_a_dense_network_is_a_clear_error(digits):
    torch.manual_seed(0)
    dense = build_network("mlp", (1, 8, 8), 10, hidden=(8,))
    with pytest.raises(ValueError, match="needs core groups"):
        train_classifier(
            dense, OptimizerConfig(method="das"), (digits.x_train, digits.y_train), (digits.x_test, digits.y_test)
        )


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr_schedule": "exp"}, "exp"),
        ({"lr_gamma": 0.0}, "lr_gamma"),
        ({"lr_step": 0}, "lr_step"),
    ],
)
def test_loop_config_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        LoopConfig(**kwargs)


def test_evaluate_restores_training_mode(digits):
    model = tiny()
    model.train()
    loss, acc, pred = evaluate(model, digits.x_test, digits.y_test, batch_size=7)
    assert model.training and pred.shape == digits.y_test.shape and 0 <= acc <= 1 and math.isfinite(loss)


def test_alpha_schedule_spans_all_steps_of_the_run(digits, monkeypatch):
    import tensordas.training.engine as loop_module

    seen = {}
    real = loop_module.build_optimizer

    def spy(config, params, core_groups=None):
        seen["config"] = config
        return real(config, params, core_groups)

    monkeypatch.setattr(loop_module, "build_optimizer", spy)
    loop = LoopConfig(epochs=3, batch_size=50)  # 240 samples: batches of 50, 50, 50, 50, 40
    opt = OptimizerConfig(method="das", alpha=0.1, alpha_schedule="cosine", total_steps=1)
    result = train_classifier(tiny(), opt, (digits.x_train, digits.y_train), (digits.x_test, digits.y_test), loop=loop)
    assert seen["config"].total_steps == result.steps == 3 * 5


def test_a_checkpoint_of_other_settings_is_not_continued(digits, tmp_path):
    # Without a tag, a checkpoint left by a run with another seed or schedule was continued (or,
    # finished, returned as this run's result): resuming must never mix settings.
    opt = OptimizerConfig(method="base", lr=0.05)
    data = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))
    path = tmp_path / "c.pt"
    train_classifier(tiny(), opt, *data, loop=LoopConfig(epochs=1, batch_size=64), checkpoint=path)
    other_seed = train_classifier(tiny(), opt, *data, loop=LoopConfig(epochs=1, batch_size=64), seed=1, checkpoint=path)
    assert other_seed.resumed_from == 0
    model, ref_model = tiny(), tiny()
    longer = train_classifier(model, opt, *data, loop=LoopConfig(epochs=2, batch_size=64), checkpoint=path)
    reference = train_classifier(ref_model, opt, *data, loop=LoopConfig(epochs=2, batch_size=64))
    assert longer.resumed_from == 0 and strip_times(longer.history) == strip_times(reference.history)
    noisy = add_label_noise(digits.y_train, 10, 0.3, seed=0)  # other labels, same everything else
    relabelled = train_classifier(
        tiny(), opt, (digits.x_train, noisy.labels), data[1], loop=LoopConfig(epochs=2, batch_size=64), checkpoint=path
    )
    assert relabelled.resumed_from == 0


def test_a_double_model_trains_and_evaluates_on_float32_data(digits):
    model = tiny().double()
    x_test = digits.x_test.float()
    result = train_classifier(
        model, OptimizerConfig(method="base", lr=0.05), (digits.x_train.float(), digits.y_train),
        (x_test, digits.y_test), loop=LoopConfig(epochs=1, batch_size=64),
    )  # fmt: skip
    assert math.isfinite(result.final["test_loss"])
    loss, acc, _ = evaluate(model, x_test, digits.y_test)
    assert loss == pytest.approx(result.final["test_loss"]) and acc == result.final["test_acc"]


def test_step_time_includes_the_device_wait_of_every_step(digits, monkeypatch):
    """On CUDA a step's kernels run after optimizer_step returns: the timer waits for them
    (``synchronize``) before it reads the clock, else ms/step measures the launches only."""
    import time

    import tensordas.training.engine as loop_module

    waits = []

    def slow_synchronize(device):
        waits.append(device)
        time.sleep(0.02)

    monkeypatch.setattr(loop_module, "synchronize", slow_synchronize)
    loop = LoopConfig(epochs=1, batch_size=80)  # 240 samples: 3 steps
    train, test = (digits.x_train, digits.y_train), (digits.x_test, digits.y_test)
    result = train_classifier(tiny(), OptimizerConfig(method="sam"), train, test, loop=loop)
    assert len(waits) == result.steps == 3
    assert result.step_time_ms >= 20


def test_int32_labels_train_and_float_labels_are_a_clear_error(digits):
    """Any integer label dtype is accepted (cross-entropy needs int64: the loop converts); float
    labels are refused with a message naming the dtype."""
    loop = LoopConfig(epochs=1, batch_size=80)
    test = (digits.x_test, digits.y_test)
    as_int64 = train_classifier(
        tiny(), OptimizerConfig(method="base"), (digits.x_train, digits.y_train), test, loop=loop
    )
    as_int32 = train_classifier(
        tiny(), OptimizerConfig(method="base"), (digits.x_train, digits.y_train.to(torch.int32)), test, loop=loop
    )
    assert as_int32.history[-1]["train_loss"] == as_int64.history[-1]["train_loss"]
    with pytest.raises(ValueError, match="float32"):
        train_classifier(tiny(), OptimizerConfig(method="base"), (digits.x_train, digits.y_train.float()), test)
