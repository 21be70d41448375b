"""Tensor completion: CP, Tucker, TT and TR models fitted by gradient methods to the observed entries.

Every (optimizer, seed) run shares the seed's observed/held-out split and initialisation, minimises
the mean squared error on the observed entries (standardised), and is evaluated on the held-out
entries on the original scale (R^2, RMSE). TensorLy's masked ALS (``parafac``/``tucker`` with
``mask=``) is the non-gradient reference row for CP and Tucker.

The data are coordinates of the known entries (``TensorData``), never a dense mask: splits, mini-batches
and evaluation (in bounded batches, ``data.EntryPredictor``) cost O(observed entries + parameters); only
small tensors are reconstructed densely (full batch). TensorLy's dense computations (the ALS row,
``init="tensorly"``) run only within ``dense_budget_gb``; otherwise the ALS row is skipped with a note.

``protocol="paper"`` runs the DAS paper's Table 1 protocol exactly as the authors' script
(ctxGou/Tensor-SAM ``src/td_study/run.py``) does: the training entries are ``torch.rand(shape) < 0.3``
after seeding with the run's seed (the other known entries are held out), the model starts from
TensorLy's random Tucker initialisation (``tucker(..., init="random", n_iter_max=0, mask=...)``), and
the loss is the SUMMED squared error on the raw training values. :data:`PAPER_PROTOCOL` holds the
paper's other settings (Adam with torch's defaults, SAM rho 0.01, DAS alpha 0.001 decayed linearly,
50,000 iterations). Every run records the paper's metric, ``train_r2`` (``1 - ||(X̂ - X)M||² /
||XM||²`` over the training entries M, uncentred, original scale), beside the held-out ``test_r2``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core_groups import find_core_groups
from ..data import (
    DEFAULT_DENSE_BUDGET_GB,
    CompletionSplit,
    Entries,
    EntryPredictor,
    Standardizer,
    TensorData,
    dense_budget_note,
    dense_observed,
    evaluate_entries,
    load_tensor,
    split_entries,
)
from ..formats import available_formats
from ..models import SPECTRAL_FORMATS, model_class, spectral_start
from ..reporting import ProgressFn
from ..training import Monitor, OptimizerConfig, Steps, compared_optimizers, engine
from ..training.engine import Convergence, q_stats
from .config import ComparisonConfig
from .display import curve_figure, summary_table
from .grid import run_comparison
from .protocol import TRAIN_LOSS, Metric, Q, Task
from .records import check_record
from .runstore import RunResult, data_digest, fingerprint, run_store

NAME = "completion"
TITLE = "tensor completion by gradient methods"
# The model class of each tensor format (to be read from the format registry once it holds the models).
# "auto": the spectral start where the format has one (CP, Tucker), else "balanced" (TT, TR)
INITS = ("auto", "spectral", "balanced", "unbalanced", "tensorly")
ALS_MODELS = ("cp", "tucker")  # TensorLy has a masked ALS for these
TEST_R2 = Metric("test_r2", "held-out R²")  # the default metric: tuning selects by val_r2
CURVE_COLUMNS = ["step", "train_loss", "test_r2", "test_rmse", "val_r2", "train_r2", "Q", "lr"]
PROTOCOLS = ("task", "paper")
# The paper's Table 1 (the authors' src/td_study/run.py and run.sh): raw covid19 values in float64, Tucker
# rank (8, 6, 8), 30% of the entries for training, Adam with torch's defaults (lr 1e-3), SAM rho 0.01,
# DAS alpha 0.001 decayed linearly to 0 over the run as the authors' gBAR does (their scale
# 1 + alpha lr (gamma_k - mean) / (||G_k||^2 ||g||) equals DAS's "sam-matched" one to first order),
# 50,000 iterations, their seeds 42, 87, 100.
PAPER_PROTOCOL: dict[str, Any] = {
    "protocol": "paper",
    "data": "covid19",
    "model": "tucker",
    "rank": (8, 6, 8),
    "missing": 0.7,
    "standardize": "none",
    "init": "tensorly",
    "dtype": "float64",
    "base": "adam",
    "lr": 1e-3,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "rho": 0.01,
    "alpha": 0.001,
    "alpha_schedule": "linear",
    "das_variant": "sam-matched",
    "steps": 50_000,
    "eval_every": 1000,
    "seeds": (42, 87, 100),
}
# What protocol="paper" fixes (its mechanics depend on them), with the value it needs.
_PAPER_FIXED = {"model": "tucker", "standardize": "none", "init": "tensorly", "batch_size": None,
                "patience": None, "restarts": 1}  # fmt: skip


@dataclass(frozen=True)
class CompletionConfig(ComparisonConfig):
    """Settings of a completion experiment (validated on construction). Its ``validation`` share of the
    observed entries also serves early stopping (``patience``) and convergence."""

    data: str = "covid19"
    model: str = "tucker"
    rank: int | tuple[int, ...] = 4
    missing: float = 0.7
    standardize: str = "global"
    init: str = "auto"
    steps: int = 1000  # the upper bound: a run stops earlier once its objective has converged (tol)
    batch_size: int | None = None
    eval_every: int = 50
    patience: int | None = None
    tol: float = 1e-3  # convergence: relative decrease per evaluation below this twice in a row (0: off)
    init_scale: float = 0.1  # initial reconstruction RMS / training values' RMS (model scale)
    restarts: int = 1  # starts per run (the first init's, the others random); the lowest objective is kept
    base: str = "adam"
    als: bool = True
    dtype: str = "float32"
    value_column: str | None = None
    dense_budget_gb: float = DEFAULT_DENSE_BUDGET_GB
    protocol: str = "task"

    def check_settings(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"Invalid protocol {self.protocol!r} (expected one of {', '.join(PROTOCOLS)})")
        if self.protocol == "paper":
            for key, needed in _PAPER_FIXED.items():
                if getattr(self, key) != needed:
                    raise ValueError(
                        f"protocol 'paper' needs {key}={needed!r} (got {getattr(self, key)!r}): the paper's "
                        "Table 1 protocol fits a Tucker model from TensorLy's random start to raw values"
                    )
            if self.validation_fraction:
                raise ValueError(
                    f"protocol 'paper' needs validation=0 (got {self.validation_fraction!r}): the paper trains on "
                    "all its training entries, so it takes single alpha/rho values, not lists to tune"
                )
        if self.model not in available_formats():  # every registered tensor format is a completion model
            raise ValueError(f"Invalid model {self.model!r} (expected one of {', '.join(available_formats())})")
        if self.init not in INITS:
            raise ValueError(f"Invalid init {self.init!r} (expected one of {', '.join(INITS)})")
        if self.init == "spectral" and self.model not in SPECTRAL_FORMATS:
            raise ValueError(
                f"Invalid init 'spectral' for model {self.model!r} (a spectral start exists for "
                f"{', '.join(SPECTRAL_FORMATS)}; use init='auto' or 'balanced')"
            )
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"Invalid dtype {self.dtype!r} (expected float32 or float64)")
        for name in ("steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"Invalid {name} value: {getattr(self, name)} (expected >= 1)")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"Invalid batch_size value: {self.batch_size} (expected >= 1)")
        if self.patience is not None and (self.patience < 1 or self.validation_fraction <= 0):
            raise ValueError(f"Invalid patience {self.patience}: needs >= 1 and a validation fraction > 0")
        if isinstance(self.tol, bool) or not (isinstance(self.tol, (int, float)) and 0 <= self.tol < math.inf):
            raise ValueError(f"Invalid tol {self.tol!r} (expected a number >= 0; 0 turns convergence stopping off)")
        scale = self.init_scale
        if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and 0 < scale < math.inf):
            raise ValueError(f"Invalid init_scale {scale!r} (expected a number > 0)")
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) or self.restarts < 1:
            raise ValueError(f"Invalid restarts {self.restarts!r} (expected an int >= 1)")
        if not (0 < self.missing < 1):
            raise ValueError(f"Invalid missing ratio: {self.missing} (expected 0 < missing < 1)")
        budget = self.dense_budget_gb
        if isinstance(budget, bool) or not (isinstance(budget, (int, float)) and 0 <= budget < math.inf):
            raise ValueError(f"Invalid dense_budget_gb {self.dense_budget_gb!r} (expected a number of GB >= 0)")
        _ = self.optimizer_configs  # builds them, validating lr, momentum, alpha, rho and the schedule

    @cached_property
    def optimizer_configs(self) -> list[OptimizerConfig]:
        return compared_optimizers(self, total_steps=self.steps)

    def settings(self) -> dict[str, Any]:
        """What determines a run besides its optimizer and seed (for resume fingerprints).

        Includes the device (timings depend on it) and a digest of a data file's contents.
        """
        out = self.run_settings("als", "dense_budget_gb")
        out["validation"] = self.validation_fraction  # None and its value are the same runs
        for key, unset in (("value_column", None), ("protocol", "task"), ("restarts", 1)):
            if out[key] == unset:  # runs stored before the option existed stay valid
                out.pop(key)
        out["data_digest"] = data_digest(self.data)
        return out


def _torch_dtype(name: str) -> torch.dtype:
    return torch.float64 if name == "float64" else torch.float32


def _core_scales(n_cores: int) -> list[float]:
    """Deliberately unbalanced initial norms: factors from 1/4 to 4 whose product is 1."""
    return np.exp(np.linspace(-math.log(4), math.log(4), n_cores)).tolist()


def resolved_init(config: CompletionConfig) -> str:
    """The start a config's runs take: ``init="auto"`` is the spectral start for the formats that have one (CP,
    Tucker) and the balanced random start for the others (TT, TR)."""
    if config.init != "auto":
        return config.init
    return "spectral" if config.model in SPECTRAL_FORMATS else "balanced"


def make_model(config: CompletionConfig, data: TensorData, split: CompletionSplit, seed: int) -> nn.Module:
    """The seed's initial model: the spectral start, random balanced or unbalanced norms, or TensorLy's masked
    decomposition (see ``init``)."""
    cls = model_class(config.model)
    dtype = _torch_dtype(config.dtype)
    if config.protocol == "paper":  # the authors' start: TensorLy's random Tucker, no iteration
        observed = dense_observed(data.shape, split.train.indices, split.train.values.double())
        return cls.from_tensor(
            observed, config.rank, random_state=seed, dtype=dtype, init="random", n_iter_max=0, tol=1e-5
        )
    init = resolved_init(config)
    if init == "spectral":  # next to the signal: a random start's spurious minima are rarer (docs/design.md, 6)
        train = Standardizer.fit(split.train.values, config.standardize).apply(split.train)
        gen = torch.Generator().manual_seed(seed)
        return spectral_start(
            config.model, data.shape, config.rank, train.indices, train.values, generator=gen, dtype=dtype
        )
    if init == "tensorly":
        note = dense_budget_note(data.shape, config.model, config.dense_budget_gb, "init='tensorly'")
        if note is not None:
            raise ValueError(f"{note}; use init='balanced' or raise dense_budget_gb")
        std = Standardizer.fit(split.train.values, config.standardize)
        observed = dense_observed(data.shape, split.train.indices, std.transform(split.train.values.double()))
        return cls.from_tensor(observed, config.rank, random_state=seed, dtype=dtype)  # NaN = not observed
    gen = torch.Generator().manual_seed(seed)
    model = cls(data.shape, config.rank, std="balanced", generator=gen, dtype=dtype)  # unit-variance entries
    (group,) = model.core_groups()
    # Scaled to the data: entries of RMS init_scale times the training values' (model scale). A start as
    # large as the data (the balanced default, RMS 1) left CP rank 5 on 100^3 (5% observed) at held-out
    # R^2 0.79, 0.98, 0.55 after 1,000 Adam steps on three seeds; RMS 0.1 reached 0.99 on each by step 600
    # (docs/design.md, section 6).
    target = config.init_scale * _model_scale_rms(config, split)
    factor = target ** (1 / len(group.cores))  # the entries are multilinear in the cores: balance is kept
    with torch.no_grad():
        for core in group.cores:
            core.mul_(factor)
        if init == "unbalanced":
            for core, s in zip(group.cores, _core_scales(len(group.cores))):
                core.mul_(s)
    return model


def start_model(
    config: CompletionConfig, data: TensorData, split: CompletionSplit, seed: int, start: int = 0
) -> nn.Module:
    """Start number ``start`` of a seed's run: 0 is ``init``'s (:func:`make_model`); each later one (``restarts``)
    a random start scaled to the data, balanced (unbalanced under ``init="unbalanced"``), from a generator of
    its own, seeded by ``(seed, start)``."""
    if start == 0:
        return make_model(config, data, split, seed)
    random = dataclasses.replace(config, init="unbalanced" if config.init == "unbalanced" else "balanced")
    return make_model(random, data, split, int(np.random.SeedSequence((seed, start)).generate_state(1)[0]))


def start_objective(record: Mapping[str, Any]) -> float:
    """What ``restarts`` minimise: a start's validation MSE with a validation set, else its training loss on
    every training entry (the stopping rule's objectives, at the final weights); +inf when not finite."""
    value = record["val_rmse"] ** 2 if record.get("val_rmse") is not None else record["train_loss"]
    return float(value) if value is not None and math.isfinite(value) else math.inf


def _model_scale_rms(config: CompletionConfig, split: CompletionSplit) -> float:
    """The RMS of the training values on the model's scale (1 under global standardisation)."""
    std = Standardizer.fit(split.train.values, config.standardize)
    rms = float(std.transform(split.train.values.double()).pow(2).mean().sqrt())
    return rms if rms > 0 else 1.0


@dataclass
class CompletionExperiment:
    """Loaded data and per-seed splits shared by every run of one experiment."""

    config: CompletionConfig
    data: TensorData
    _splits: dict[int, CompletionSplit] = field(default_factory=dict)

    @classmethod
    def load(cls, config: CompletionConfig) -> CompletionExperiment:
        data = load_tensor(config.data, dtype=_torch_dtype(config.dtype), value_column=config.value_column)
        return cls(config, data)

    @property
    def data_missing(self) -> float:
        """The input's own missing share, 1 - known entries / cells (before any hold-out)."""
        return 1.0 - self.data.n_known / self.data.n_cells

    def split(self, seed: int) -> CompletionSplit:
        if seed not in self._splits:
            if self.config.protocol == "paper":
                self._splits[seed] = paper_split(self.data, self.config.missing, seed)
            else:
                # a slice without observations is not identifiable: one-line warning, the run goes on
                self._splits[seed] = split_entries(
                    self.data,
                    self.config.missing,
                    seed=seed,
                    validation=self.config.validation_fraction,
                    empty_slices="warn",
                )
        return self._splits[seed]

    def run(self, optimizer: OptimizerConfig, seed: int, progress: ProgressFn | None = None) -> RunResult:
        """Train one model with ``optimizer`` on the seed's split; return final metrics and curves.

        With ``restarts`` > 1, train from that many starts (:func:`start_model`) and keep the one whose objective
        is lowest (:func:`start_objective`): its metrics and curve are the run's, while ``steps``, ``train_time_s``
        and ``wall_time_s`` add up over every start (what the run cost); ``start`` names the start kept and
        ``start_objectives`` lists each start's objective.
        """
        fits = [self._run_start(optimizer, seed, start, progress) for start in range(self.config.restarts)]
        if len(fits) == 1:
            return fits[0]
        objectives = [start_objective(fit.record) for fit in fits]
        best = min(range(len(fits)), key=lambda k: objectives[k])
        record = dict(fits[best].record)
        for key in ("steps", "train_time_s", "wall_time_s"):
            record[key] = sum(fit.record[key] for fit in fits)
        record.update(start=best, start_objectives=objectives)
        return RunResult(record=record, curve=fits[best].curve)

    def _run_start(self, optimizer: OptimizerConfig, seed: int, start: int, progress: ProgressFn | None) -> RunResult:
        """One start of :meth:`run`: train ``optimizer`` from :func:`start_model`'s ``start`` on the seed's split."""
        cfg = self.config
        device = torch.device(cfg.device)
        split = self.split(seed)
        std = Standardizer.fit(split.train.values, cfg.standardize)
        model = start_model(cfg, self.data, split, seed, start).to(device)
        split = dataclasses.replace(
            split,
            train=split.train.to(device),
            test=split.test.to(device),
            val=None if split.val is None else split.val.to(device),
        )
        train = std.apply(split.train)
        predict = EntryPredictor(model, self.data.shape)
        gen = torch.Generator().manual_seed(seed)
        n_train = len(train)
        batch = None if cfg.batch_size is None or cfg.batch_size >= n_train else cfg.batch_size
        if batch is not None:
            predict.dense = False  # a mini-batch never needs the whole tensor

        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            if batch is None:
                return train.indices, train.values
            pick = torch.randint(n_train, (batch,), generator=gen).to(device)
            return train.indices[pick], train.values[pick]

        reduce = torch.sum if cfg.protocol == "paper" else torch.mean  # the paper sums the squared errors

        def loss(entries: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            idx, target = entries
            return reduce((predict(idx) - target) ** 2)

        def evaluate(row: Mapping[str, Any]) -> dict[str, Any]:
            test_r2, test_rmse = evaluate_entries(predict, split.test, std)
            val_r2, val_rmse = evaluate_entries(predict, split.val, std)
            # the paper's metric over training steps (paper protocol only: it predicts every training entry)
            train_r2 = training_r2(predict, split.train, std) if cfg.protocol == "paper" else None
            out = {"test_r2": test_r2, "test_rmse": test_rmse, "val_r2": val_r2, "train_r2": train_r2}
            out["val_mse"] = val_rmse**2  # the convergence objective with a validation set (NaN without)
            if row["train_loss"] is None:  # before training: the loss on all training entries
                with torch.no_grad():
                    out["train_loss"] = float(loss((train.indices, train.values)))
            return out

        result = engine.train(
            model,
            optimizer,
            Steps(cfg.steps, cfg.eval_every, draw, generator=gen),
            loss,
            evaluate,
            monitor=None if split.val is None else Monitor("val_r2", patience=cfg.patience),
            convergence=convergence(cfg, with_validation=split.val is not None),
            progress=progress,
            label=f"{optimizer.label} s{seed}" + (f" start {start}" if start else ""),
            family=NAME,  # a regression on tensor entries: no logits, classes or samples for a loss term
        )
        record = {
            **result.record_fields(),
            **self._final_metrics(model, predict, split, std),  # the best weights under early stopping
            "best_step": result.best_step if result.best_step is not None else result.steps,
            "stop_reason": result.stop_reason,
        }
        if split.val is not None:  # what tuning selects by: R^2 on the validation entries, at the final weights
            record["val_r2"], record["val_rmse"] = evaluate_entries(predict, split.val, std)
            record.update(validation=cfg.validation_fraction, n_val=len(split.val))
        return RunResult(record=record, curve=[{k: row[k] for k in CURVE_COLUMNS} for row in result.history])

    def _final_metrics(self, model: nn.Module, predict: EntryPredictor, split: CompletionSplit, std: Standardizer):
        """The record fields every row shares: setting, held-out R^2/RMSE, train loss (standardised, on all
        training entries), Q of the final model."""
        test_r2, test_rmse = evaluate_entries(predict, split.test, std)
        train = std.apply(split.train)
        cfg = self.config
        reduce = torch.sum if cfg.protocol == "paper" else torch.mean
        with torch.no_grad():
            train_loss = float(reduce((predict(train.indices) - train.values) ** 2))
        q_mean, q_sum, q_groups = q_stats(find_core_groups(model))
        return {
            "model": cfg.model,
            "rank": cfg.rank,
            "data": self.data.name,
            "missing": cfg.missing,
            "data_missing": self.data_missing,
            "test_r2": test_r2,
            "test_rmse": test_rmse,
            "train_r2": training_r2(predict, split.train, std),
            "train_loss": train_loss,
            "Q": q_mean,
            "Q_sum": q_sum,
            "Q_groups": q_groups,
        }

    def run_als(self, seed: int) -> RunResult:
        """TensorLy's masked ALS on the seed's observed entries (CP: parafac, Tucker: tucker/HOOI): a
        reference row fitted by an algorithm, not an optimizer (``method`` None, ``algorithm`` "als")."""
        cfg = self.config
        start = time.perf_counter()
        reference = {"method": None, "base": None, "algorithm": "als", "optimizer": "als (tensorly)", "seed": seed}
        reference |= {"steps": None, "diverged": False, "step_time_ms": None, "selected": {}}
        note = dense_budget_note(self.data.shape, cfg.model, cfg.dense_budget_gb, "masked ALS")
        if note is not None:  # a row that says why, never a silent multi-GB allocation
            info = {"model": cfg.model, "rank": cfg.rank, "data": self.data.name, "missing": cfg.missing}
            info["data_missing"] = self.data_missing
            metrics = dict.fromkeys(("test_r2", "test_rmse", "train_r2", "train_loss", "Q", "Q_sum", "Q_groups"))
            record = {**reference, **info, **metrics, "wall_time_s": None, "skipped": note}
            check_record(record, f"completion ALS seed {seed}")
            return RunResult(record=record)
        split = self.split(seed)
        std = Standardizer.fit(split.train.values, cfg.standardize)
        # TensorLy's masked decomposition (the paper's HOOI row under protocol="paper") on the same split
        als = {**cfg.to_dict(), "init": "tensorly", "optimizers": ("base",), "protocol": "task"}
        model = make_model(CompletionConfig(**als), self.data, split, seed)
        record = {
            **reference,
            **self._final_metrics(model, EntryPredictor(model, self.data.shape), split, std),
            "wall_time_s": time.perf_counter() - start,
        }
        check_record(record, f"completion ALS seed {seed}")
        return RunResult(record=record)


def convergence(config: CompletionConfig, with_validation: bool) -> Convergence | None:
    """The stopping rule of every method alike: the validation MSE (with a validation set) or the training
    loss has converged (relative decrease below ``tol`` at two evaluations in a row); ``steps`` is the upper
    bound. None (run every step) for ``tol=0`` and for the paper's protocol, which runs its fixed iterations."""
    if config.tol == 0 or config.protocol == "paper":
        return None
    return Convergence("val_mse" if with_validation else "train_loss", tol=config.tol)


def paper_split(data: TensorData, missing: float, seed: int) -> CompletionSplit:
    """The paper's split: training entries where ``torch.rand(shape) < 1 - missing`` (0.3 in the paper) after
    seeding with ``seed``, as the authors' script draws it (from a generator seeded alike, so torch's
    global random state is left alone); every other known entry is held out."""
    observed = torch.rand(data.shape, generator=torch.Generator().manual_seed(int(seed))) < round(1 - missing, 12)
    train = observed[tuple(data.indices.T)]
    parts = [Entries(data.indices[keep], data.values[keep]) for keep in (train, ~train)]
    if not (len(parts[0]) and len(parts[1])):
        raise ValueError(f"the paper's split of {data.name} leaves no training or no held-out entry")
    return CompletionSplit(data.shape, parts[0], parts[1], None, data.name, missing, int(seed))


def training_r2(predict: EntryPredictor, train: Entries, std: Standardizer) -> float:
    """The paper's Table 1 metric: ``1 - ||(X̂ - X)M||² / ||XM||²`` over the training entries M (uncentred,
    on the original scale)."""
    with torch.no_grad():
        pred = std.inverse(predict(train.indices)).double()
    target = train.values.double()
    return float(1 - (pred - target).pow(2).sum() / target.pow(2).sum())


def run_completion(
    config: CompletionConfig, *, out_dir: str | None = None, resume: bool = True, progress: ProgressFn | None = None
) -> list[RunResult]:
    """Run every optimizer on every seed (and the ALS reference); reuse finished runs in ``out_dir``."""
    exp = CompletionExperiment.load(config)
    results = run_comparison(
        NAME, config, config.optimizer_configs, exp.run, TEST_R2, out_dir=out_dir, resume=resume, progress=progress
    )
    if config.als and config.model in ALS_MODELS:
        store = run_store(out_dir)
        for seed in config.seeds:
            print_ = fingerprint("completion-als", config.settings(), seed)
            results.append(
                store.fetch(
                    f"als-seed{seed}",
                    print_,
                    lambda seed=seed: exp.run_als(seed),
                    resume=resume,
                    keep=lambda done: not done.record.get("skipped"),  # a larger budget may run it later
                )
            )
    return results


def missing_shares(results: Sequence[RunResult], config: CompletionConfig) -> str:
    """Both missing shares, told apart: the data's own (from the records) and the held-out one."""
    own = next((r.record["data_missing"] for r in results if r.record.get("data_missing") is not None), None)
    held = f"{config.missing:.0%} of the observed entries held out"
    return held if own is None else f"{own:.1%} missing in the data; {held}"


def plot_completion(results: Sequence[RunResult], config: CompletionConfig):
    """Held-out R^2 and Q against steps, mean over seeds, one line per optimizer."""
    trained = [r for r in results if r.curve]  # the ALS rows have no curve
    panels = {"test_r2": "held-out R²", "Q": "norm deviation Q"}
    title = f"{config.model} rank {config.rank} on {config.data}\n{missing_shares(results, config)}"
    return curve_figure(trained, "step", panels, yscales={"Q": "log"}, title=title)


def completion_table(results: Sequence[RunResult], config: CompletionConfig):
    """Mean ± std over seeds: held-out R^2 and RMSE, train loss, Q, wall time; skipped rows say why below."""
    skipped = dict.fromkeys(r.record["skipped"] for r in results if r.record.get("skipped"))
    return summary_table(
        results,
        {
            "test_r2": "test R²",
            "test_rmse": "test RMSE",
            "train_loss": "train loss",
        },
        title=f"Tensor completion: {config.model} rank {config.rank}, {config.data}, {len(config.seeds)} seed(s); "
        + missing_shares(results, config),
        caption="; ".join(skipped) or None,
    )


# The record fields a comparison may be decided on, the default first.
METRICS = (
    TEST_R2,
    Metric("test_rmse", "held-out RMSE", higher_is_better=False, match_tolerance=0.0),
    Metric("train_r2", "R² on the training entries (the paper's Table 1)"),
    TRAIN_LOSS,
    Q,
)
# A regression on tensor entries: no logits, classes or samples for a loss term (loss_context).
TASK = Task(
    NAME,
    TITLE,
    CompletionConfig,
    run_completion,
    completion_table,
    plot_completion,
    METRICS,
    CURVE_COLUMNS,
    command="complete",
    loss_context=(),
)
write_completion = TASK.write_outcome  # curves.csv, completion.png, config.json and, last, results.json
