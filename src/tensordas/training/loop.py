"""The classification family's training: epochs of mini-batches with cross-entropy, on the engine.

:func:`train_classifier` trains a model in place with the method an :class:`OptimizerConfig` names,
through :func:`tensordas.training.engine.train` (one step function for one-pass and two-pass methods,
the step timer, the divergence rule, checkpoints), and records one row of metrics per epoch (row 0:
before training):

- ``train_loss``, ``train_acc``: cross-entropy and accuracy on the training labels (which may be
  noisy), averaged over the epoch's samples at the weights before each step;
- ``test_loss``, ``test_acc``: on the (clean) test set, in ``eval()`` mode;
- with ``validation``: ``val_loss``, ``val_acc`` on the validation split (held out of the training
  data, labels as noisy as the training ones), what a tuning grid selects by;
- with ``true_labels``: on the training samples whose label was corrupted, the fraction predicted as
  their noisy label (``memorized``) and as their true label (``recovered``);
- ``Q``, ``Q_sum``: the norm deviation over the model's core groups, mean and sum (None for a dense model);
- ``epoch``, ``step``, ``lr`` (at the end of the epoch), ``time_s`` (the epoch's training time).

Schedules. The learning-rate schedule is a ``LambdaLR`` stepped after every optimizer step:
``cosine`` anneals from ``lr`` to 0 over all ``epochs * batches`` steps, ``step`` multiplies the rate
by ``lr_gamma`` every ``lr_step`` epochs (changes happen at epoch boundaries), ``none`` keeps it.
DAS's ``alpha_t`` schedule gets ``total_steps = epochs * batches``.

Batches. Each epoch visits the training set in an order drawn from ``(seed, epoch)``; the last batch
may be smaller, except that a last batch of a single sample is dropped (batch norm cannot train on one).

Checkpoints. With ``checkpoint=PATH`` the engine writes, atomically after every epoch (with
``checkpoint_every_s``: after the epochs that end at least that many seconds after the last write, after
the last one, and after one that ends the run early), the model,
optimizer (incl. momentum/Adam moments and DAS's step counter), scheduler, the global RNG state,
the epoch, the metrics so far and the elapsed times. With ``resume=True`` a checkpoint whose ``tag``
matches, and that was written for the same settings (seed, loop and optimizer configurations, the
model's parameter names and shapes, the data's shapes and labels), is continued from the next
epoch, to exactly the result of an uninterrupted run (same parameters, same metrics); any other one
is stale and training starts afresh (an unreadable one with a warning).

Device and dtype. Inputs are moved to the device of the model's parameters and floating inputs are
cast to their floating dtype (a ``.double()`` model trains on float32 data); labels stay int64.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..reporting import ProgressFn
from . import engine
from .engine import Checkpoint, Epochs, TrainResult, check_checkpoint_interval
from .lossterms import CONTEXT_FIELDS
from .optimizers import OptimizerConfig

__all__ = [
    "CLASSIFIER_CONTEXT",
    "LR_SCHEDULES",
    "LoopConfig",
    "evaluate",
    "train_classifier",
]

LR_SCHEDULES = ("cosine", "step", "none")
# What a classifier's training step exposes to a method's loss term (every field of LossContext): the
# features and the last layer come from a forward hook on the model's last linear layer.
CLASSIFIER_CONTEXT = CONTEXT_FIELDS

Inputs = torch.Tensor | Mapping[str, torch.Tensor]
Forward = Callable[[nn.Module, Any], torch.Tensor]


@dataclass(frozen=True)
class LoopConfig:
    """How to train: epochs, batch sizes and the learning-rate schedule (see the module docstring)."""

    epochs: int = 20
    batch_size: int = 64
    lr_schedule: str = "cosine"
    lr_step: int | None = None  # "step": epochs between decays (None: a third of the epochs)
    lr_gamma: float = 0.1
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {name} value: {value!r} (expected a positive integer)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Invalid lr_schedule {self.lr_schedule!r} (expected one of {', '.join(LR_SCHEDULES)})")
        if self.lr_step is not None and (not isinstance(self.lr_step, int) or self.lr_step < 1):
            raise ValueError(f"Invalid lr_step value: {self.lr_step!r} (expected a positive number of epochs)")
        if not (math.isfinite(self.lr_gamma) and 0 < self.lr_gamma <= 1):
            raise ValueError(f"Invalid lr_gamma value: {self.lr_gamma} (expected 0 < lr_gamma <= 1)")

    def batches(self, n_train: int) -> list[int]:
        """Sizes of one epoch's batches (a trailing batch of one sample is dropped)."""
        full, rest = divmod(n_train, self.batch_size)
        sizes = [self.batch_size] * full + ([rest] if rest > 1 else [])
        if not sizes:
            raise ValueError(f"cannot train on {n_train} sample(s): batch norm needs at least 2 per batch")
        return sizes

    def lr_factor(self, steps_per_epoch: int) -> Callable[[int], float]:
        """The multiplier of the base learning rate after ``t`` optimizer steps."""
        total = self.epochs * steps_per_epoch
        if self.lr_schedule == "cosine":
            return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
        if self.lr_schedule == "step":
            every = self.lr_step or max(1, self.epochs // 3)
            return lambda t: self.lr_gamma ** ((t // steps_per_epoch) // every)
        return lambda t: 1.0


def _take(x: Inputs, idx: torch.Tensor) -> Inputs:
    if isinstance(x, Mapping):
        return {k: v[idx] for k, v in x.items()}
    return x[idx]


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype | None]:
    """The device of the model's parameters and their floating dtype (None: no floating parameter)."""
    params = list(model.parameters())
    floating = [p for p in params if p.is_floating_point()]
    return params[0].device, (floating[0].dtype if floating else None)


def _labels(y: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Class indices as int64 on ``device`` (cross-entropy needs Long targets; int32/uint8 are fine too)."""
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels must be integer class indices, got {y.dtype}")
    return y.to(device=device, dtype=torch.int64)


def _to(x: Inputs, device: torch.device, dtype: torch.dtype | None = None) -> Inputs:
    """Move ``x`` to ``device``; floating tensors also take ``dtype`` (the model's), integer ones keep theirs."""
    if isinstance(x, Mapping):
        return {k: _to(v, device, dtype) for k, v in x.items()}
    if dtype is not None and x.is_floating_point():
        return x.to(device=device, dtype=dtype)
    return x.to(device)


def _default_forward(model: nn.Module, x: Inputs) -> torch.Tensor:
    return model(**x) if isinstance(x, Mapping) else model(x)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: Inputs, y: torch.Tensor, *, batch_size: int = 1024, forward: Forward | None = None
) -> tuple[float, float, torch.Tensor]:
    """Mean cross-entropy, accuracy and the predicted classes on ``(x, y)``, in ``eval()`` mode.

    The model's training mode is restored afterwards. Empty inputs give ``(nan, nan, empty)``.
    """
    forward = forward or _default_forward
    n = int(y.shape[0])
    if n == 0:
        return math.nan, math.nan, torch.empty(0, dtype=torch.int64)
    device, dtype = _model_device_dtype(model)
    x, y = _to(x, device, dtype), _labels(y, device)
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), dtype=torch.float64, device=y.device)
        preds = []
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=y.device)
            logits = forward(model, _take(x, idx))
            total += F.cross_entropy(logits.float(), y[idx], reduction="sum").double()
            preds.append(logits.argmax(dim=1))
        pred = torch.cat(preds)
        return float(total) / n, float((pred == y).double().mean()), pred
    finally:
        model.train(was_training)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + epoch) % (2**63))


def _settings_key(
    model: nn.Module,
    config: OptimizerConfig,
    loop: LoopConfig,
    seed: int,
    data: tuple[Inputs, torch.Tensor, Inputs, torch.Tensor],
    true_labels: torch.Tensor | None,
) -> str:
    """A digest of everything that determines the run's numbers besides the initial weights.

    Stored in the checkpoint and compared on resume (on top of ``tag``), so that a checkpoint left by
    a run with another seed, schedule, optimizer, architecture or other labels is never continued.
    """

    def shapes(x: Inputs) -> Any:
        if isinstance(x, Mapping):
            return {str(k): [list(v.shape), str(v.dtype)] for k, v in x.items()}
        return [list(x.shape), str(x.dtype)]

    x_train, y_train, x_test, y_test = data
    facts = {
        "loop": dataclasses.asdict(loop),
        "optimizer": config.as_dict(),
        "seed": int(seed),
        "model": [[name, list(t.shape), str(t.dtype)] for name, t in model.state_dict().items()],
        "data": [shapes(x_train), shapes(x_test)],
    }
    h = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode())
    for labels in (y_train, y_test, true_labels):
        h.update(b"|" if labels is None else labels.detach().to("cpu", torch.int64).numpy().tobytes() + b"|")
    return h.hexdigest()


def train_classifier(
    model: nn.Module,
    optimizer: OptimizerConfig,
    train: tuple[Inputs, torch.Tensor],
    test: tuple[Inputs, torch.Tensor],
    *,
    loop: LoopConfig | None = None,
    seed: int = 0,
    true_labels: torch.Tensor | None = None,
    validation: tuple[Inputs, torch.Tensor] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every_s: float = 0.0,
    resume: bool = True,
    tag: str | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    label: str | None = None,
    forward: Forward | None = None,
    family: str = "classifier",
) -> TrainResult:
    """Train ``model`` (in place) with cross-entropy on ``train`` and evaluate it on ``test`` every epoch.

    Args:
        model: any classifier; data is moved to the device of its parameters.
        optimizer: what to train with; DAS and BAR need a model with core groups.
        train, test: ``(inputs, labels)``; inputs a tensor (samples first) or a dict of such tensors
            (passed as keyword arguments); labels int64. ``train``'s labels may be noisy.
        loop: epochs, batch size, LR schedule (default :class:`LoopConfig`).
        seed: draws the batch order (with the epoch).
        true_labels: the clean training labels, when ``train``'s are noisy: adds ``memorized`` and
            ``recovered`` (on the samples whose label differs) to the metrics.
        validation: ``(inputs, labels)`` held out of the training data: adds ``val_loss`` and ``val_acc``.
        checkpoint: a file to write the run to (and to resume from).
        checkpoint_every_s: write only after epochs ending at least this many seconds after the last write
            (and after the last epoch, or one ending the run early); 0: after every epoch
            (:class:`~tensordas.training.engine.Checkpoint`).
        resume: continue from ``checkpoint`` if it exists and its ``tag`` equals ``tag``.
        tag: identifies the settings a checkpoint belongs to (e.g. a fingerprint).
        meta: extra JSON-like facts stored in the checkpoint (e.g. the architecture's name).
        progress: called as ``progress(label, steps_done, total_steps)``.
        label: progress label (default: the optimizer's label).
        forward: ``forward(model, inputs) -> logits`` (default: ``model(inputs)``).
        family: the family's name in errors (a method whose loss term the model cannot supply).

    Returns:
        A :class:`TrainResult` with the per-epoch metrics.

    Raises:
        ValueError: for DAS/BAR on a model without core groups, or mismatched data.
    """
    loop = loop or LoopConfig()
    check_checkpoint_interval(checkpoint_every_s)
    forward = forward or _default_forward
    x_train, y_train = train
    x_test, y_test = test
    n_train = int(y_train.shape[0])
    if true_labels is not None and tuple(true_labels.shape) != tuple(y_train.shape):
        raise ValueError(f"true_labels has shape {tuple(true_labels.shape)}, the labels {tuple(y_train.shape)}")
    device, dtype = _model_device_dtype(model)
    x_train, x_test = _to(x_train, device, dtype), _to(x_test, device, dtype)
    y_train, y_test = _labels(y_train, device), _labels(y_test, device)
    if validation is not None:
        validation = (_to(validation[0], device, dtype), _labels(validation[1], device))
    corrupted_idx = None
    if true_labels is not None:
        true_labels = _labels(true_labels, device)
        corrupted_idx = torch.nonzero(true_labels != y_train).flatten()
    sizes = loop.batches(n_train)
    plan = Epochs(
        epochs=loop.epochs,
        sizes=sizes,
        order=lambda epoch: torch.randperm(n_train, generator=_epoch_generator(seed, epoch)).to(device),
        take=lambda idx: (_take(x_train, idx), y_train[idx], idx),
    )

    def loss(batch: tuple[Inputs, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        xb, yb, idx = batch
        logits = forward(model, xb)
        # what a method's loss term may read (training/lossterms.py); the samples' indices in the training set
        exposed = {
            "logits": logits,
            "targets": yb,
            "indices": idx,
            "n_samples": n_train,
            "inputs": xb,
            "forward": forward,
        }
        return F.cross_entropy(logits, yb), {"train_acc": (logits.argmax(dim=1) == yb).sum()}, exposed

    def measure(row: Mapping[str, Any]) -> dict[str, Any]:
        test_loss, test_acc, _ = evaluate(model, x_test, y_test, batch_size=loop.eval_batch_size, forward=forward)
        memorized = recovered = None
        if corrupted_idx is not None and corrupted_idx.numel():
            _, _, pred = evaluate(
                model, _take(x_train, corrupted_idx), y_train[corrupted_idx], batch_size=loop.eval_batch_size,
                forward=forward,
            )  # fmt: skip
            memorized = float((pred == y_train[corrupted_idx]).double().mean())
            recovered = float((pred == true_labels[corrupted_idx]).double().mean())
        out = {
            "train_acc": row.get("train_acc"),  # row 0 has no training pass: None
            "test_loss": test_loss,
            "test_acc": test_acc,
            "memorized": memorized,
            "recovered": recovered,
        }
        if validation is not None:
            out["val_loss"], out["val_acc"], _ = evaluate(
                model, *validation, batch_size=loop.eval_batch_size, forward=forward
            )
        return out

    store = None
    if checkpoint is not None:
        config = dataclasses.replace(optimizer, total_steps=plan.total_steps)
        settings = _settings_key(model, config, loop, seed, (x_train, y_train, x_test, y_test), true_labels)
        store = Checkpoint(
            Path(checkpoint), tag=tag, settings=settings, meta=dict(meta or {}), resume=resume,
            every_s=checkpoint_every_s,
        )  # fmt: skip
    return engine.train(
        model,
        optimizer,
        plan,
        loss,
        measure,
        lr_lambda=loop.lr_factor(len(sizes)),
        checkpoint=store,
        progress=progress,
        label=label,
        supplies=CLASSIFIER_CONTEXT,
        family=family,
    )
