"""The training loop every classification task shares: epochs of mini-batches under base, SAM or DAS.

:func:`train_classifier` trains a model in place with the optimizer an :class:`OptimizerConfig` names
(built by :func:`build_optimizer` and driven by :func:`optimizer_step`, so SAM's two passes and DAS's
one pass use the same loop) and records one row of metrics per epoch (row 0: before training):

- ``train_loss``, ``train_acc``: cross-entropy and accuracy on the training labels (which may be
  noisy), averaged over the epoch's mini-batches at the weights before each step;
- ``test_loss``, ``test_acc``: on the (clean) test set, in ``eval()`` mode;
- with ``true_labels``: on the training samples whose label was corrupted, the fraction predicted as
  their noisy label (``memorized``) and as their true label (``recovered``);
- ``Q_mean``, ``Q_sum``: the norm deviation ``Q`` over the model's core groups (None for a dense model);
- ``lr``: the learning rate at the end of the epoch; ``time_s``: the epoch's wall time.

Schedules. The learning-rate schedule is a ``LambdaLR`` stepped after every optimizer step:
``cosine`` anneals from ``lr`` to 0 over all ``epochs * batches`` steps, ``step`` multiplies the rate
by ``lr_gamma`` every ``lr_step`` epochs (changes happen at epoch boundaries), ``none`` keeps it.
DAS's ``alpha_t`` schedule gets ``total_steps = epochs * batches``.

Batches. Each epoch visits the training set in an order drawn from ``(seed, epoch)``; the last batch
may be smaller, except that a last batch of a single sample is dropped (batch norm cannot train on one).

Checkpoints. With ``checkpoint=PATH`` the loop writes, atomically after every epoch, the model,
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
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core_groups import CoreGroup, find_core_groups
from ..metrics import norm_deviation
from ..reporting import ProgressFn, atomic_open, ensure_dir
from .optimizers import OptimizerConfig, build_optimizer, optimizer_step, synchronize

__all__ = [
    "LR_SCHEDULES",
    "LoopConfig",
    "TrainResult",
    "core_groups_or_none",
    "evaluate",
    "load_checkpoint",
    "train_classifier",
]

LR_SCHEDULES = ("cosine", "step", "none")
CHECKPOINT_FORMAT = "tensordas-train-checkpoint"

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


@dataclass
class TrainResult:
    """What :func:`train_classifier` returns; the model itself is trained in place."""

    history: list[dict[str, Any]]  # one row per epoch, row 0 before training
    steps: int  # optimizer steps taken
    train_time_s: float  # time inside the optimizer steps (forward, backward, update, LR schedule)
    wall_time_s: float  # everything, evaluations included (summed over resumed sessions)
    diverged: bool  # a non-finite training loss stopped the run
    resumed_from: int = 0  # the epoch of the checkpoint continued from (0: a fresh run)
    group_q: dict[str, float] = field(default_factory=dict)  # final Q per core group
    step_times: list[float] = field(default_factory=list)  # seconds of each optimizer step

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]

    @property
    def best(self) -> dict[str, Any]:
        """The trained epoch (>= 1, or row 0 if none) with the highest test accuracy (the first on ties)."""
        rows = [r for r in self.history if r["epoch"] >= 1] or self.history
        return max(rows, key=lambda r: (r["test_acc"] if r["test_acc"] is not None else -1.0, -r["epoch"]))

    @property
    def step_time_ms(self) -> float | None:
        """The median step time: robust to the first steps' warm-up and to other load on the machine."""
        return 1e3 * statistics.median(self.step_times) if self.step_times else None


def core_groups_or_none(model: nn.Module) -> list[CoreGroup]:
    """The model's core groups, or ``[]`` for a model without any (a dense network)."""
    try:
        return find_core_groups(model)
    except ValueError:
        return []


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


def _q_stats(groups: list[CoreGroup]) -> tuple[float | None, float | None, dict[str, float]]:
    if not groups:
        return None, None, {}
    per = {g.name: float(norm_deviation(g)) for g in groups}
    values = list(per.values())
    return math.fsum(values) / len(values), math.fsum(values), per


def _current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + epoch) % (2**63))


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    ensure_dir(path.parent)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train_classifier` (on the CPU, tensors and plain types only).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a readable training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, pickle and unpickler errors: the file is corrupted or not a checkpoint
        raise ValueError(f"cannot read checkpoint {str(path)!r}: corrupted or not a PyTorch file ({e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a dict")
    return state


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
        "optimizer": dataclasses.asdict(config),
        "seed": int(seed),
        "model": [[name, list(t.shape), str(t.dtype)] for name, t in model.state_dict().items()],
        "data": [shapes(x_train), shapes(x_test)],
    }
    h = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode())
    for labels in (y_train, y_test, true_labels):
        h.update(b"|" if labels is None else labels.detach().to("cpu", torch.int64).numpy().tobytes() + b"|")
    return h.hexdigest()


def _resume_state(path: Path, tag: str | None, settings: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
    except ValueError as e:
        warnings.warn(f"{e}; training from scratch", stacklevel=3)
        return None
    if state.get("format") != CHECKPOINT_FORMAT:
        warnings.warn(f"{str(path)!r} is not a training checkpoint; training from scratch", stacklevel=3)
        return None
    if state.get("tag") != tag or state.get("settings") != settings:
        return None  # written for other settings: stale
    return state


def train_classifier(
    model: nn.Module,
    optimizer: OptimizerConfig,
    train: tuple[Inputs, torch.Tensor],
    test: tuple[Inputs, torch.Tensor],
    *,
    loop: LoopConfig | None = None,
    seed: int = 0,
    true_labels: torch.Tensor | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = True,
    tag: str | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    label: str | None = None,
    forward: Forward | None = None,
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
        checkpoint: a file to write after every epoch (and to resume from).
        resume: continue from ``checkpoint`` if it exists and its ``tag`` equals ``tag``.
        tag: identifies the settings a checkpoint belongs to (e.g. a fingerprint).
        meta: extra JSON-like facts stored in the checkpoint (e.g. the architecture's name).
        progress: called as ``progress(label, steps_done, total_steps)``.
        label: progress label (default: the optimizer's label).
        forward: ``forward(model, inputs) -> logits`` (default: ``model(inputs)``).

    Returns:
        A :class:`TrainResult` with the per-epoch metrics.

    Raises:
        ValueError: for DAS/BAR on a model without core groups, or mismatched data.
    """
    loop = loop or LoopConfig()
    forward = forward or _default_forward
    label = label or optimizer.label
    x_train, y_train = train
    x_test, y_test = test
    n_train = int(y_train.shape[0])
    if true_labels is not None and tuple(true_labels.shape) != tuple(y_train.shape):
        raise ValueError(f"true_labels has shape {tuple(true_labels.shape)}, the labels {tuple(y_train.shape)}")
    device, dtype = _model_device_dtype(model)
    x_train, x_test = _to(x_train, device, dtype), _to(x_test, device, dtype)
    y_train, y_test = _labels(y_train, device), _labels(y_test, device)
    corrupted_idx = None
    if true_labels is not None:
        true_labels = _labels(true_labels, device)
        corrupted_idx = torch.nonzero(true_labels != y_train).flatten()
    sizes = loop.batches(n_train)
    per_epoch = len(sizes)
    total_steps = loop.epochs * per_epoch

    groups = core_groups_or_none(model)
    if optimizer.method in ("das", "bar") and not groups:
        raise ValueError(
            f"optimizer {optimizer.label} needs core groups, but {type(model).__name__} has none "
            "(a dense network? use a tensorized one such as 'tt-mlp')"
        )
    config = dataclasses.replace(optimizer, total_steps=total_steps)
    opt = build_optimizer(config, model.parameters(), groups or None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, loop.lr_factor(per_epoch))

    def measure(epoch: int, train_loss: float | None, train_acc: float | None, seconds: float) -> dict[str, Any]:
        test_loss, test_acc, _ = evaluate(model, x_test, y_test, batch_size=loop.eval_batch_size, forward=forward)
        memorized = recovered = None
        if corrupted_idx is not None and corrupted_idx.numel():
            _, _, pred = evaluate(
                model, _take(x_train, corrupted_idx), y_train[corrupted_idx], batch_size=loop.eval_batch_size,
                forward=forward,
            )  # fmt: skip
            memorized = float((pred == y_train[corrupted_idx]).double().mean())
            recovered = float((pred == true_labels[corrupted_idx]).double().mean())
        q_mean, q_sum, _ = _q_stats(groups)
        return {
            "epoch": epoch,
            "lr": _current_lr(opt),
            "train_loss": train_loss,
            "train_acc": train_acc,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "memorized": memorized,
            "recovered": recovered,
            "Q_mean": q_mean,
            "Q_sum": q_sum,
            "time_s": seconds,
        }

    session_start = time.perf_counter()
    path = Path(checkpoint) if checkpoint is not None else None
    settings = _settings_key(model, config, loop, seed, (x_train, y_train, x_test, y_test), true_labels)
    state = _resume_state(path, tag, settings) if (path is not None and resume) else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], device)
        history: list[dict[str, Any]] = list(state["history"])
        start_epoch, steps = int(state["epoch"]) + 1, int(state["steps"])
        wall_before, diverged = float(state["wall_time_s"]), bool(state["diverged"])
        step_times: list[float] = [float(t) for t in state["step_times"]]
        resumed_from = int(state["epoch"])
    else:
        history = [measure(0, None, None, 0.0)]
        start_epoch, steps, wall_before, diverged, step_times, resumed_from = 1, 0, 0.0, False, [], 0
    if progress is not None:
        progress(label, steps, total_steps)

    model.train()
    for epoch in range(start_epoch, loop.epochs + 1):
        if diverged:
            break
        tick = time.perf_counter()
        order = torch.randperm(n_train, generator=_epoch_generator(seed, epoch)).to(device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen, start = 0, 0
        for size in sizes:
            idx = order[start : start + size]
            start += size
            xb, yb = _take(x_train, idx), y_train[idx]
            first: dict[str, torch.Tensor] = {}

            def closure(xb=xb, yb=yb, first=first) -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                logits = forward(model, xb)
                loss = F.cross_entropy(logits, yb)
                loss.backward()
                first.setdefault("logits", logits.detach())  # SAM calls twice: keep the pass at w
                return loss

            step_tick = time.perf_counter()
            loss = optimizer_step(opt, closure)
            sched.step()
            synchronize(device)  # on CUDA, time the step's device work too, not only its launches
            step_times.append(time.perf_counter() - step_tick)
            loss_sum += loss.detach().double() * size
            correct += (first["logits"].argmax(dim=1) == yb).sum()
            seen += size
            steps += 1
            if progress is not None:
                progress(label, steps, total_steps)
        train_loss = float(loss_sum) / seen
        diverged = not math.isfinite(train_loss)
        history.append(measure(epoch, train_loss, int(correct) / seen, time.perf_counter() - tick))
        if path is not None:
            _save_checkpoint(
                path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "tag": tag,
                    "settings": settings,
                    "meta": dict(meta or {}),
                    "epoch": epoch,
                    "steps": steps,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": _rng_state(device),
                    "history": history,
                    "step_times": step_times,
                    "wall_time_s": wall_before + time.perf_counter() - session_start,
                    "diverged": diverged,
                },
            )
    _, _, per_group = _q_stats(groups)
    return TrainResult(
        history=history,
        steps=steps,
        train_time_s=math.fsum(step_times),
        wall_time_s=wall_before + time.perf_counter() - session_start,
        diverged=diverged,
        resumed_from=resumed_from,
        group_q=per_group,
        step_times=step_times,
    )
