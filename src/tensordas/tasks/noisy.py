"""Noisy-label training: tensorized networks trained on corrupted labels; clean test accuracy.

Every (optimizer, seed) run of one seed shares the seed's data split, label noise and initial
weights (``torch.manual_seed(seed)`` before the network is built), so the optimizers differ only
in how they train. Each run goes through :func:`tensordas.training.train_classifier` with a
checkpoint in ``OUT/checkpoints/`` (written at most every ``RUN_CHECKPOINT_EVERY_S`` seconds and after
the last epoch); an interrupted experiment resumes finished runs from ``OUT/runs/`` and the unfinished
one from its last checkpoint.

Records (``results.json``, one per optimizer and seed; the shared keys of :mod:`tensordas.tasks.records`):
``test_acc`` (clean test accuracy at the epoch of best validation accuracy, the checkpoint every
method is reported at; the last epoch without a validation split: ``checkpoint``, ``checkpoint_epoch``),
``final_test_acc`` (at the last epoch), ``val_acc``/``val_loss`` (at the checkpoint),
``best_test_acc`` (of the best epoch by test accuracy, reported, never used to select), ``train_acc``
(on the noisy labels, at the end), ``noise_rate_realized``, memorisation on the corrupted training
samples at the end (``memorized``: predicted as their noisy label; ``recovered``: predicted as their
true label), ``Q`` (the norm deviation, mean over core groups, at the end), times and the settings.

The CLI command that runs this family is ``tensordas train``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import ClassificationData, NoisyLabels, corrupt_labels, load_classification, validation_split
from ..formats import RankLike
from ..layers import TensorizedLayer, weight_format
from ..networks import build_network, parse_network_name
from ..reporting import ProgressFn
from ..training import OptimizerConfig, Strength, train_classifier
from .config import ClassifierConfig
from .display import curve_figure, summary_table
from .grid import run_comparison
from .protocol import TRAIN_LOSS, Metric, Q, Task
from .runstore import RUN_CHECKPOINT_EVERY_S, RunResult, data_digest, fingerprint, run_key
from .tuning import checkpoint_fields, validation_fields

__all__ = [
    "TASK",
    "CURVE_COLUMNS",
    "NoisyConfig",
    "NoisyExperiment",
    "hold_out",
    "load_split",
    "noisy_table",
    "plot_noisy",
    "run_noisy",
    "write_noisy",
]

NAME = "noisy"
TITLE = "noisy-label training of tensorized classifiers"
CURVE_COLUMNS = [
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "memorized",
    "recovered",
    "Q",
    "Q_sum",
    "time_s",
]
CHECKPOINTS_DIR = "checkpoints"
# The default metric, at the epoch of best validation accuracy (the final one without a split): tuning
# selects by val_acc at that epoch.
TEST_ACC = Metric("test_acc", "clean test accuracy at the best-validation epoch")


@dataclass(frozen=True)
class NoisyConfig(ClassifierConfig):
    """Settings of a noisy-label experiment (validated on construction)."""

    noise: float = 0.4
    model: str = "tt-mlp"
    rank: RankLike | None = None
    hidden: tuple[int, ...] | None = None  # MLP hidden sizes (None: the network's default)
    lr: Strength = 0.05

    def check_settings(self) -> None:
        super().check_settings()
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ValueError(f"Invalid {name} value: {value} (expected at least 2 samples)")
        fmt, base = parse_network_name(self.model)
        if fmt is None and self.rank is not None:
            raise ValueError(f"model {self.model!r} is dense; --rank needs a tensorized one (e.g. 'tt-{base}')")
        if self.hidden is not None and (base != "mlp" or not self.hidden or min(self.hidden) < 1):
            raise ValueError(f"Invalid hidden sizes {self.hidden!r} for model {self.model!r} (MLPs only, positive)")

    def settings(self) -> dict[str, Any]:
        """What determines a run besides its optimizer and seed (for resume fingerprints).

        Includes the device (timings depend on it) and digests of a data file's contents or a data folder.
        """
        out = self.run_settings("download")
        out["validation"] = self.validation_fraction  # the split used: a tuned and an untuned base differ
        out["data_digest"] = data_digest(self.data)
        out["data_dir_digest"] = data_digest(self.data_dir)
        return out


def load_split(config: Any, seed: int) -> ClassificationData:
    """The classification data a config names, split by ``seed`` (its data settings: source, sizes, test share)."""
    return load_classification(
        config.data,
        data_dir=config.data_dir,
        download=config.download,
        seed=seed,
        test_fraction=config.test_fraction,
        train_size=config.train_size,
        test_size=config.test_size,
    )


def hold_out(
    fraction: float, seed: int, x: torch.Tensor, y: torch.Tensor, *more: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, torch.Tensor] | None]:
    """``((x, y, *more) kept, (x, y) held out)``: a stratified share ``fraction`` of the training samples
    held out for validation (by ``y``, drawn from ``seed``); with ``fraction == 0`` all are kept, untouched."""
    if fraction == 0:
        return (x, y, *more), None
    keep, held = (torch.as_tensor(i) for i in validation_split(y, fraction, seed))
    return tuple(t[keep] for t in (x, y, *more)), (x[held], y[held])


def network_kwargs(hidden: Sequence[int] | None) -> dict[str, Any]:
    return {} if hidden is None else {"hidden": tuple(hidden)}


def check_rank(model: str, input_shape: Sequence[int], num_classes: int, rank: RankLike | None, **kwargs: Any) -> None:
    """``ValueError`` when ``rank`` gives tensorized layers more parameters than their dense weights.

    The layers cap an int rank at what each one can use, so a huge rank silently became a full-rank
    "tensorized" network larger than the dense one (or, for CP/TR, an allocation that cannot succeed).
    The network is built on the meta device: nothing is allocated. ``rank=None`` (the network's
    defaults) is not checked.
    """
    if rank is None:
        return
    with torch.device("meta"):
        net = build_network(model, tuple(input_shape), num_classes, rank=rank, **kwargs)
    layers = [m for m in net.modules() if isinstance(m, TensorizedLayer)]
    cores = sum(m.num_core_params for m in layers)
    dense = sum(m.layout.dense_numel for m in layers)
    if cores <= dense:
        return

    def total(r: int) -> int:
        return sum(
            weight_format(m.format).num_params(m.layout, weight_format(m.format).resolve_rank(m.layout, r))
            for m in layers
        )

    hint = ""
    if total(1) <= dense:
        low, high = 1, 2
        while total(high) <= dense:
            low, high = high, 2 * high
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if total(mid) <= dense else (low, mid)
        hint = f"; the largest int rank that keeps it smaller is {low}"
    raise ValueError(
        f"rank {rank!r} does not compress {model!r}: its tensorized layers would hold {cores} parameters, "
        f"more than the {dense} of their dense weights{hint}"
    )


@dataclass
class NoisyExperiment:
    """Per-seed data and label noise shared by every run of one experiment."""

    config: NoisyConfig
    out_dir: Path | None = None
    resume: bool = True
    _data: dict[int, tuple[ClassificationData, NoisyLabels]] = field(default_factory=dict)

    def data(self, seed: int) -> tuple[ClassificationData, NoisyLabels]:
        """The seed's split (clean test set) and its noisy labels of the whole training part (the
        validation split included: :meth:`parts` carves it)."""
        if seed not in self._data:
            cfg = self.config
            data = load_split(cfg, seed)
            noisy = corrupt_labels(data.y_train, data.num_classes, cfg.noise, cfg.noise_type, seed=seed,
                                   dataset=data.name)  # fmt: skip
            self._data[seed] = (data, noisy)
        return self._data[seed]

    def parts(self, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], Any]:
        """``(inputs, noisy labels, true labels)`` trained on, and ``(inputs, noisy labels)`` of the
        validation split (None without one), carved per seed from the training part (stratified)."""
        data, noisy = self.data(seed)
        return hold_out(self.config.validation_fraction, seed, data.x_train, noisy.labels, noisy.true_labels)

    def build_model(self, data: ClassificationData, seed: int) -> nn.Module:
        """The seed's initial network (the same for every optimizer)."""
        cfg = self.config
        torch.manual_seed(seed)
        model = build_network(
            cfg.model, data.input_shape, data.num_classes, rank=cfg.rank, **network_kwargs(cfg.hidden)
        )
        return model.to(torch.device(cfg.device))

    def check_rank(self) -> None:
        """``ValueError`` for a rank that makes the tensorized network larger than the dense one."""
        cfg = self.config
        data, _ = self.data(cfg.seeds[0])
        check_rank(cfg.model, data.input_shape, data.num_classes, cfg.rank, **network_kwargs(cfg.hidden))

    def run(self, optimizer: OptimizerConfig, seed: int, progress: ProgressFn | None = None) -> RunResult:
        """Train one network with ``optimizer`` on the seed's noisy labels; final metrics and curves."""
        cfg = self.config
        data, noisy = self.data(seed)
        (x_train, y_train, y_true), validation = self.parts(seed)
        model = self.build_model(data, seed)
        key = run_key(optimizer, seed)
        checkpoint = None if self.out_dir is None else self.out_dir / CHECKPOINTS_DIR / f"{key}.pt"
        result = train_classifier(
            model,
            optimizer,
            (x_train, y_train),
            (data.x_test, data.y_test),
            loop=cfg.loop,
            family=NAME,
            seed=seed,
            true_labels=y_true,
            validation=validation,
            checkpoint=checkpoint,
            checkpoint_every_s=RUN_CHECKPOINT_EVERY_S,
            resume=self.resume,
            tag=fingerprint(NAME, cfg.settings(), optimizer.as_dict(), seed),
            meta={
                "architecture": cfg.model,
                "input_shape": list(data.input_shape),
                "num_classes": data.num_classes,
                "model_kwargs": {k: list(v) for k, v in network_kwargs(cfg.hidden).items()},
                # which samples were trained on: compress refuses this model on another split of the data
                "data_split": {
                    "data": cfg.data,
                    "data_digest": data_digest(cfg.data),
                    "test_fraction": cfg.test_fraction,
                    "train_size": cfg.train_size,
                    "test_size": cfg.test_size,
                    "split_seed": seed,
                },
            },
            progress=progress,
            label=f"{optimizer.label} s{seed}",
        )
        final, best = result.final, result.best_row("test_acc")
        chosen, checkpoint = checkpoint_fields(result.history, ["test_acc"], diverged=result.diverged)
        record = {
            "model": cfg.model,
            "rank": cfg.rank,
            "data": data.name,
            "n_train": len(y_train),
            "n_test": data.n_test,
            "noise": cfg.noise,
            "noise_type": cfg.noise_type,
            "noise_rate_realized": noisy.realized_rate,
            "n_corrupted": noisy.n_corrupted,
            "params": sum(p.numel() for p in model.parameters()),
            **checkpoint,  # test_acc at the epoch of best validation accuracy, final_test_acc at the end
            "best_test_acc": best["test_acc"],
            "best_epoch": best["epoch"],
            "train_acc": final["train_acc"],
            "memorized": final["memorized"],
            "recovered": final["recovered"],
            "epochs": final["epoch"],
            "resumed_from_epoch": result.resumed_from,
            **result.record_fields(),  # wall time: training and per-epoch evaluation, over resumed sessions too
        }
        if validation is not None:
            record.update(validation_fields(chosen, cfg.validation_fraction, len(validation[1])))
        return RunResult(record=record, curve=[{k: row[k] for k in CURVE_COLUMNS} for row in result.history])


def run_noisy(
    config: NoisyConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: ProgressFn | None = None,
) -> list[RunResult]:
    """Run every optimizer on every seed; reuse finished runs (and resume checkpoints) in ``out_dir``."""
    exp = NoisyExperiment(config, None if out_dir is None else Path(out_dir), resume)
    exp.check_rank()
    return run_comparison(
        NAME, config, config.optimizer_configs, exp.run, TEST_ACC, out_dir=out_dir, resume=resume, progress=progress
    )


def _title(config: NoisyConfig) -> str:
    return f"{config.model} on {config.data}, {config.noise:.0%} {config.noise_type} label noise"


def plot_noisy(results: Sequence[RunResult], config: NoisyConfig):
    """Clean test accuracy, memorised fraction and Q against epochs, mean over seeds, one line per optimizer."""
    panels = {
        "test_acc": "clean test accuracy",
        "memorized": "corrupted samples fitted to noisy label",
        "Q": "norm deviation Q (mean over groups)",
    }
    return curve_figure(results, "epoch", panels, yscales={"Q": "log"}, title=_title(config))


def noisy_table(results: Sequence[RunResult], config: NoisyConfig):
    """Mean ± std over seeds: clean test accuracy at the checkpoint (best validation accuracy), at the end
    and at its best, memorisation, realised noise, Q, times."""
    return summary_table(
        results,
        {
            "test_acc": "test acc (checkpoint)",
            "final_test_acc": "final test acc",
            "best_test_acc": "best test acc",
            "recovered": "true-label acc (corrupted)",
            "memorized": "memorized",
            "noise_rate_realized": "noise",
        },
        title=f"Noisy labels: {_title(config)}, {config.epochs} epochs, {len(config.seeds)} seed(s)",
    )


# The record fields a comparison may be decided on, the default first.
METRICS = (
    TEST_ACC,
    Metric("final_test_acc", "clean test accuracy at the last epoch"),
    Metric("best_test_acc", "best clean test accuracy"),
    Metric("train_acc", "accuracy on the noisy training labels"),
    TRAIN_LOSS,
    Metric("memorized", "corrupted samples fitted to their noisy label", higher_is_better=False),
    Metric("recovered", "corrupted samples predicted as their true label"),
    Q,
)
TASK = Task(NAME, TITLE, NoisyConfig, run_noisy, noisy_table, plot_noisy, METRICS, CURVE_COLUMNS, command="train")
write_noisy = TASK.write_outcome  # curves.csv, noisy.png, config.json and, last, results.json
