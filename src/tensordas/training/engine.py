"""The one training engine: every gradient-based family (classifiers, fine-tuning, completion) trains here.

A family supplies three things and the engine does the rest:

- a :class:`Plan`: which data each step trains on, in *rounds* — shuffled epochs (:class:`Epochs`) or
  steps drawn one by one and evaluated every ``N`` (:class:`Steps`); the family draws its batches
  exactly as it always did, so its numbers do not depend on the engine;
- the loss: ``loss(batch) -> loss`` or ``(loss, counts)``, where ``counts`` are per-batch sums
  (e.g. correct predictions) reported per round like the loss, from the pass at the current weights;
  or ``(loss, counts, exposed)``, where ``exposed`` holds what the forward pass exposes to a method's
  loss term (``logits``, ``targets``, ``indices``, ``n_samples``, ``inputs``, ``forward``: see
  :class:`~tensordas.training.lossterms.LossContext`), with ``supplies=`` naming the fields the family
  provides (``features`` and ``head`` included where its model's last linear layer gives the logits:
  the engine reads them with a forward hook);
- the evaluation: ``evaluate(row) -> metrics``, called before training (row 0) and after every round,
  inside :func:`~tensordas.layers.reused_weights` (each tensorized layer's weight built once per row).

The engine builds the optimizer from the method registry (:func:`build_optimizer`), and for every
method alike: one closure and step function (SAM's two passes, the others' one); an optional
``LambdaLR`` schedule stepped after every step (``torch.optim``'s idiom); one step timer that waits for
the device (:func:`synchronize`) and reports the median step; the running training loss per round;
one divergence rule — a non-finite training loss in a round ends the run after that round's
evaluation, and the result says so (checked once per round, so no host synchronisation per step);
the norm deviation ``Q`` of the core groups in every row (mean and sum over groups); one progress
callback; optional early stopping on a validation metric that restores the best weights
(:class:`Monitor`); optional stopping once an objective has converged (:class:`Convergence`; the result's
``stop_reason`` says what ended the run); and one checkpoint/resume path (:class:`Checkpoint`): after every
round (or, with ``every_s``, after the rounds that end at least that many seconds after the last write, and
always after the last round and one that ends the run early) the model, optimizer (momentum, Adam moments,
DAS's step counter), schedule, random state, plan state, the loss term's state (SAF's memory, MESA's
teacher) and history are written atomically, and a resumed run ends with exactly the numbers of an
uninterrupted one.
Evaluation, the early-stopping copy and checkpoints happen inside the optimizer's evaluation point
(:func:`~tensordas.training.optimizers.evaluation_point`: MSAM's unperturbed weights, the weights as they
are for every other method), and the trained model is left there (:func:`~tensordas.training.optimizers.settle`).

Loss terms. A method with a :attr:`~tensordas.training.methods.Method.loss_term` adds it to the family's
loss before ``backward()`` (one pass; the reported training loss stays the family's own loss, so it
compares across methods); a family that does not supply what the term needs is refused before training,
with its name in the message.

Rows (``TrainResult.history``) hold ``step`` (optimizer steps so far), ``epoch`` (for :class:`Epochs`),
``lr`` (of the first parameter group), ``train_loss`` (the round's mean training loss: per sample or per
batch, see :class:`Batch`; ``None`` in row 0), the counts, ``Q`` and ``Q_sum`` (``None`` without core
groups), ``time_s`` (the round's training time) and the family's metrics.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import numbers
import statistics
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..core_groups import CoreGroup, find_core_groups
from ..layers import reused_weights
from ..metrics import norm_deviation
from ..optim.watch import CHECK_AFTER, ScaleWatch
from ..reporting import ProgressFn, atomic_open, ensure_dir
from .lossterms import CONTEXT_FIELDS, HeadTap, LossContext
from .optimizers import OptimizerConfig, build_optimizer, evaluation_point, optimizer_step, settle, synchronize

__all__ = [
    "CHECKPOINT_FORMAT",
    "CONTEXT_FIELDS",
    "Batch",
    "Checkpoint",
    "Convergence",
    "Epochs",
    "Monitor",
    "Plan",
    "Steps",
    "TrainResult",
    "core_groups_or_none",
    "load_checkpoint",
    "q_stats",
    "train",
]

CHECKPOINT_FORMAT = "tensordas-train-checkpoint"

LossOutput = (
    torch.Tensor
    | tuple[torch.Tensor, Mapping[str, torch.Tensor] | None]
    | tuple[torch.Tensor, Mapping[str, torch.Tensor] | None, Mapping[str, Any]]
)


# ------------------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Batch:
    """What one step trains on: the family's ``data`` and its ``weight`` in the round's mean training
    loss (the number of samples for a per-sample mean, 1 for a mean over batches)."""

    data: Any
    weight: int | float = 1


class Plan(Protocol):
    """Which data each step trains on, in ``rounds`` (evaluated, early-stopped and checkpointed after each)."""

    rounds: int
    round_name: str | None  # the row key of the round index ("epoch"), or None

    @property
    def total_steps(self) -> int: ...

    def batches(self, round: int) -> Iterator[Batch]:
        """The batches of round ``round`` (from 1)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class _GeneratorState:
    """Plans that draw from their own ``torch.Generator`` save its state in checkpoints."""

    generator: torch.Generator | None

    def state_dict(self) -> dict[str, Any]:
        return {} if self.generator is None else {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])


@dataclass
class Epochs(_GeneratorState):
    """``epochs`` shuffled passes: round ``e`` visits ``order(e)`` (a permutation of sample indices) in
    batches of ``sizes``; ``take(indices)`` gives a batch's data.

    ``per_sample``: the round's training loss is the mean over samples (each batch weighs its size),
    else the mean over batches. ``generator``: the generator ``order`` draws from, when it is not
    re-seeded per epoch (its state is checkpointed)."""

    epochs: int
    sizes: Sequence[int]
    order: Callable[[int], torch.Tensor]
    take: Callable[[torch.Tensor], Any]
    per_sample: bool = True
    generator: torch.Generator | None = None
    round_name: str | None = "epoch"

    @property
    def rounds(self) -> int:
        return self.epochs

    @property
    def total_steps(self) -> int:
        return self.epochs * len(self.sizes)

    def batches(self, round: int) -> Iterator[Batch]:
        order = self.order(round)
        start = 0
        for size in self.sizes:
            yield Batch(self.take(order[start : start + size]), size if self.per_sample else 1)
            start += size


@dataclass
class Steps(_GeneratorState):
    """``steps`` steps, each on ``draw()`` (e.g. a random mini-batch, or the whole training set), in
    rounds of ``every`` steps (the last one may be shorter); the training loss is the mean over steps."""

    steps: int
    every: int
    draw: Callable[[], Any]
    generator: torch.Generator | None = None
    round_name: str | None = None

    @property
    def rounds(self) -> int:
        return math.ceil(self.steps / self.every)

    @property
    def total_steps(self) -> int:
        return self.steps

    def batches(self, round: int) -> Iterator[Batch]:
        first = (round - 1) * self.every
        for _ in range(first, min(first + self.every, self.steps)):
            yield Batch(self.draw())


# ------------------------------------------------------------------------------- monitor, checkpoint
@dataclass(frozen=True)
class Monitor:
    """Early stopping on a validation metric of the evaluation rows.

    After each evaluation the weights with the best ``metric`` so far are kept; after ``patience``
    evaluations without improvement (None: never) training stops; at the end the best weights are
    restored."""

    metric: str
    higher_is_better: bool = True
    patience: int | None = None

    def better(self, value: float, best: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


@dataclass(frozen=True)
class Convergence:
    """Stop once an objective (a row key, lower is better) has stopped improving.

    The rule: at an evaluation, the relative decrease since the previous evaluation is
    ``(prev - now) / |prev|``; the run has converged when it is below ``tol`` at ``patience`` evaluations in a
    row (an increase counts as below). Row 0 (before training) takes no part: its training loss is measured
    at the initial weights, the rows after it average the round's steps. ``tol=0`` never stops (only an
    exact plateau or a rise would, so the rule is off then). The same rule for every method keeps a
    comparison fair: each stops on its own objective's convergence, never on the others'."""

    metric: str = "train_loss"
    tol: float = 1e-3
    patience: int = 2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"Invalid tol {self.tol!r} (expected a finite number >= 0)")
        if self.patience < 1:
            raise ValueError(f"Invalid convergence patience {self.patience} (expected >= 1)")

    def converged(self, history: Sequence[Mapping[str, Any]]) -> bool:
        """Whether the last ``patience`` evaluations of ``history`` each improved by less than ``tol``."""
        if self.tol == 0:
            return False
        values = [r.get(self.metric) for r in history if r["step"] >= 1][-(self.patience + 1) :]
        if len(values) < self.patience + 1 or any(v is None or not math.isfinite(v) for v in values):
            return False
        return all((prev - now) < self.tol * abs(prev) for prev, now in zip(values, values[1:]))


@dataclass(frozen=True)
class Checkpoint:
    """Where to write the run, how often, and which file may be continued.

    A file at ``path`` is continued (with ``resume``) only if it was written with the same ``tag`` and
    ``settings`` (a digest of everything else that determines the numbers); any other is stale and
    training starts afresh (an unreadable one with a warning). ``meta`` is stored as is (e.g. the
    architecture, so that ``tensordas compress`` can rebuild a dense model from the file).

    ``every_s``: 0 writes after every round; a positive value writes after a round only when at least that
    many seconds have passed since the last write (or the start), so an interrupted run loses at most about
    that much training. The last round, and a round that ends the run early (divergence, early stopping,
    convergence), are always written. Writing is not free (a synced file per round: 5-7% of a 2-second
    run of 30 epochs), and a run that short loses little when it restarts."""

    path: Path
    tag: str | None = None
    settings: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    resume: bool = True
    every_s: float = 0.0

    def __post_init__(self) -> None:
        check_checkpoint_interval(self.every_s)


def check_checkpoint_interval(value: Any) -> float:
    """``value`` as seconds between checkpoint writes, or a ``ValueError`` naming it (finite, >= 0)."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
        raise ValueError(f"Invalid checkpoint every_s value: {value!r} (expected finite seconds >= 0)")
    return float(value)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by the engine (on the CPU, tensors and plain types only).

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


def _resume_state(checkpoint: Checkpoint) -> dict[str, Any] | None:
    path = checkpoint.path
    if not (checkpoint.resume and path.is_file()):
        return None
    try:
        state = load_checkpoint(path)
    except ValueError as e:
        warnings.warn(f"{e}; training from scratch", stacklevel=4)
        return None
    if state.get("format") != CHECKPOINT_FORMAT:
        warnings.warn(f"{str(path)!r} is not a training checkpoint; training from scratch", stacklevel=4)
        return None
    if state.get("tag") != checkpoint.tag or state.get("settings") != checkpoint.settings:
        return None  # written for other settings: stale
    return state


def _save(path: Path, state: dict[str, Any]) -> None:
    ensure_dir(path.parent)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ------------------------------------------------------------------------------------------ result
def core_groups_or_none(model: nn.Module) -> list[CoreGroup]:
    """The model's core groups, or ``[]`` for a model without any (a dense network)."""
    try:
        return find_core_groups(model)
    except ValueError:
        return []


def q_stats(groups: Sequence[CoreGroup]) -> tuple[float | None, float | None, dict[str, float]]:
    """The norm deviation ``Q`` of each group: (mean over groups, sum, per group name); ``None`` without groups."""
    if not groups:
        return None, None, {}
    per = {g.name: float(norm_deviation(g)) for g in groups}
    values = list(per.values())
    return math.fsum(values) / len(values), math.fsum(values), per


@dataclass
class TrainResult:
    """What :func:`train` returns; the model itself is trained in place (best weights restored under a
    :class:`Monitor`)."""

    history: list[dict[str, Any]]  # one row per evaluation, row 0 before training
    steps: int  # optimizer steps taken
    train_time_s: float  # time inside the optimizer steps (forward, backward, update, LR schedule)
    wall_time_s: float  # training and evaluations (summed over resumed sessions)
    diverged: bool  # a non-finite training loss stopped the run
    resumed_from: int = 0  # the round of the checkpoint continued from (0: a fresh run)
    group_q: dict[str, float] = field(default_factory=dict)  # final Q per core group
    step_times: list[float] = field(default_factory=list)  # seconds of each optimizer step
    best_step: int | None = None  # under a Monitor: the step of the restored best weights
    cycle: int = 1  # steps over which the method's cost repeats (LookSAM: k)
    stop_reason: str = "steps"  # why it ended: steps (the budget), converged, patience, diverged

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]

    def best_row(self, metric: str) -> dict[str, Any]:
        """The trained row (step >= 1, or row 0 if none) with the highest ``metric`` (the first on ties)."""
        rows = [r for r in self.history if r["step"] >= 1] or self.history
        return max(rows, key=lambda r: (r[metric] if r[metric] is not None else -math.inf, -r["step"]))

    @property
    def step_time_ms(self) -> float | None:
        """The median step time: robust to the first steps' warm-up and to other load on the machine. For a
        method whose cost repeats over ``cycle`` steps (LookSAM), the median of the per-cycle means."""
        times = self.step_times
        if self.cycle > 1 and len(times) >= self.cycle:
            times = [
                math.fsum(times[i : i + self.cycle]) / self.cycle
                for i in range(0, len(times) - self.cycle + 1, self.cycle)
            ]
        return 1e3 * statistics.median(times) if times else None

    def record_fields(self) -> dict[str, Any]:
        """The record fields every trained run reports alike (see :mod:`tensordas.tasks.records`)."""
        final = self.final
        return {
            "train_loss": final["train_loss"],
            "Q": final["Q"],
            "Q_sum": final["Q_sum"],
            "Q_groups": self.group_q,
            "steps": self.steps,
            "diverged": self.diverged,
            "train_time_s": self.train_time_s,
            "step_time_ms": self.step_time_ms,
            "wall_time_s": self.wall_time_s,
        }


# ------------------------------------------------------------------------------------------ engine
def train(
    model: nn.Module,
    optimizer: OptimizerConfig,
    plan: Plan,
    loss: Callable[[Any], LossOutput],
    evaluate: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    *,
    params: Iterable[nn.Parameter] | None = None,
    core_groups: Sequence[CoreGroup] | None = None,
    lr_lambda: Callable[[int], float] | None = None,
    monitor: Monitor | None = None,
    convergence: Convergence | None = None,
    checkpoint: Checkpoint | None = None,
    progress: ProgressFn | None = None,
    label: str | None = None,
    loss_dtype: torch.dtype = torch.float64,
    supplies: Collection[str] = (),
    family: str | None = None,
) -> TrainResult:
    """Train ``model`` (in place) with the method ``optimizer`` names, batches from ``plan``.

    Args:
        model: the module whose parameters train (its device is the device the steps wait for).
        optimizer: the method and its settings; ``total_steps`` is set to the plan's length.
        plan: the rounds of batches (:class:`Epochs`, :class:`Steps`).
        loss: ``loss(batch.data)``: the loss, or ``(loss, counts)`` with per-batch sums.
        evaluate: ``evaluate(row) -> metrics`` merged into each row (module docstring).
        params: what the optimizer updates (default: all of the model's parameters).
        core_groups: for DAS/BAR and the ``Q`` columns (default: the model's, or none).
        lr_lambda: a ``LambdaLR`` factor stepped after every optimizer step (None: constant rate).
        monitor: early stopping on a validation metric, restoring the best weights.
        convergence: stop once an objective has converged (:class:`Convergence`); the plan's length is then
            an upper bound and ``TrainResult.stop_reason`` says which ended the run.
        checkpoint: write the run after rounds (every round, or by :attr:`Checkpoint.every_s`), and continue a
            matching file.
        progress: called as ``progress(label, steps_done, total_steps)`` at the start and after every step.
        label: the progress label (default: the optimizer's label).
        loss_dtype: the dtype the running training loss is summed in.
        supplies: the loss-term context fields the family supplies (module docstring; ``()``: none).
        family: the family's name, for the error a method whose loss term it cannot supply gets.

    Raises:
        ValueError: a method that needs core groups on a model without any, or a loss term the family
            cannot supply.
    """
    label = label or optimizer.label
    groups = list(core_groups) if core_groups is not None else core_groups_or_none(model)
    if optimizer.spec.needs_core_groups and not groups:
        raise ValueError(
            f"optimizer {optimizer.label} needs core groups, but {type(model).__name__} has none "
            "(a dense network? use a tensorized one such as 'tt-mlp')"
        )
    term = optimizer.spec.loss_term
    missing = optimizer.spec.needs_missing(supplies)
    if missing:
        raise ValueError(
            f"optimizer {optimizer.method!r} adds a loss term that needs the model's {', '.join(missing)}, which "
            f"{'this' if family is None else 'the ' + family} family cannot supply (methods with a loss term run "
            "in the classifier families: "
            "noisy, compress, finetune)"
        )
    device = next(model.parameters()).device
    total_steps = plan.total_steps
    config = dataclasses.replace(optimizer, total_steps=total_steps)
    opt = build_optimizer(config, model.parameters() if params is None else params, groups or None)
    method = config.spec
    watch = ScaleWatch(opt, after=min(CHECK_AFTER, total_steps))  # warns once if DAS never moved a norm
    # attached to the optimizer whose step() runs every step (LookSAM's base optimizer: same param groups)
    sched = torch.optim.lr_scheduler.LambdaLR(method.schedule_target(opt), lr_lambda) if lr_lambda is not None else None

    def row(round_: int, steps: int, train_loss: float | None, counts: Mapping[str, float], seconds: float):
        q_mean, q_sum, _ = q_stats(groups)
        out: dict[str, Any] = {plan.round_name: round_} if plan.round_name else {}
        out.update(step=steps, lr=float(opt.param_groups[0]["lr"]), train_loss=train_loss, **counts)
        with reused_weights(model):  # the family's evaluations see fixed cores: each layer's weight built once
            out.update(evaluate(out))
        out.update(Q=q_mean, Q_sum=q_sum, time_s=seconds)
        return out

    term_state: dict[str, torch.Tensor] = {}  # the loss term's per-run memory (checkpointed)
    term_cache: dict[str, Any] = {}  # what the term rebuilds from its state (not checkpointed)
    term_options = config.options()
    tap = HeadTap(model) if term is not None and term.needs & {"features", "head"} else None

    def term_loss(value: torch.Tensor, exposed: Mapping[str, Any] | None, round_: int) -> torch.Tensor:
        if exposed is None:
            raise ValueError(f"the family's loss exposes nothing to the loss term of {optimizer.method!r}")
        ctx = LossContext(**exposed, epoch=round_, state=term_state, cache=term_cache, options=term_options)
        if ctx.model is None:
            ctx.model = model
        if tap is not None:
            ctx.features, ctx.head = tap.take(ctx.logits), tap.head
        return value + term(ctx)

    session_start = last_write = time.perf_counter()
    state = _resume_state(checkpoint) if checkpoint is not None else None
    best: dict[str, Any] = {"value": None, "state": None, "step": None, "waited": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None:
            sched.load_state_dict(state["scheduler"])
        plan.load_state_dict(state["plan"])
        _set_rng_state(state["rng"], device)
        history: list[dict[str, Any]] = list(state["history"])
        start, steps = int(state["round"]) + 1, int(state["steps"])
        wall_before, diverged, stopped = float(state["wall_time_s"]), bool(state["diverged"]), bool(state["stopped"])
        reason = str(state.get("stop_reason", "patience" if stopped else "steps"))
        step_times: list[float] = [float(t) for t in state["step_times"]]
        best = dict(state["best"])
        resumed_from = int(state["round"])
        term_state.update({k: v.to(device) for k, v in (state.get("loss_term") or {}).items()})
    else:
        with evaluation_point(opt):
            history = [row(0, 0, None, {}, 0.0)]
        start, steps, wall_before, diverged, stopped, step_times, resumed_from = 1, 0, 0.0, False, False, [], 0
        reason = "steps"
    if progress is not None:
        progress(label, steps, total_steps)

    model.train()
    for round_ in range(start, plan.rounds + 1):
        if diverged or stopped:
            break
        tick = time.perf_counter()
        loss_sum = torch.zeros((), dtype=loss_dtype, device=device)
        count_sums: dict[str, torch.Tensor] = {}
        weight = 0
        for batch in plan.batches(round_):
            first: dict[str, Any] = {}

            def closure(data=batch.data, first=first, round_=round_) -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                with tap if tap is not None else contextlib.nullcontext():
                    out = loss(data)
                value, counts, exposed = (*out, None, None)[:3] if isinstance(out, tuple) else (out, None, None)
                (value if term is None else term_loss(value, exposed, round_)).backward()
                first.setdefault("counts", counts)  # SAM calls twice: keep the pass at w
                return value

            step_tick = time.perf_counter()
            value = optimizer_step(opt, closure, method)
            if sched is not None:
                sched.step()
            synchronize(device)  # on CUDA, time the step's device work too, not only its launches
            step_times.append(time.perf_counter() - step_tick)
            loss_sum += value.detach().to(loss_dtype) * batch.weight
            for k, v in (first["counts"] or {}).items():
                count_sums[k] = count_sums[k] + v if k in count_sums else v
            weight += batch.weight
            steps += 1
            watch.step(steps)
            if progress is not None:
                progress(label, steps, total_steps)
        train_loss = float(loss_sum) / weight
        diverged = not math.isfinite(train_loss)
        counts = {k: float(v) / weight for k, v in count_sums.items()}
        # Evaluation, the early-stopping copy and the checkpoint see the point to evaluate (MSAM: unperturbed).
        with evaluation_point(opt):
            history.append(row(round_, steps, train_loss, counts, time.perf_counter() - tick))
            if monitor is not None:
                score = history[-1][monitor.metric]
                if monitor.better(score, best["value"]):
                    best = {"value": score, "state": copy.deepcopy(model.state_dict()), "step": steps, "waited": 0}
                else:
                    best["waited"] += 1
                    stopped = monitor.patience is not None and best["waited"] >= monitor.patience
                    reason = "patience" if stopped else reason
            if diverged:
                reason = "diverged"
            elif not stopped and convergence is not None and convergence.converged(history):
                stopped, reason = True, "converged"
            ends = round_ == plan.rounds or diverged or stopped
            if checkpoint is not None and (ends or time.perf_counter() - last_write >= checkpoint.every_s):
                last_write = time.perf_counter()
                _save(
                    checkpoint.path,
                    {
                        "format": CHECKPOINT_FORMAT,
                        "tag": checkpoint.tag,
                        "settings": checkpoint.settings,
                        "meta": dict(checkpoint.meta),
                        "round": round_,
                        "steps": steps,
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": None if sched is None else sched.state_dict(),
                        "plan": plan.state_dict(),
                        "loss_term": term_state,
                        "rng": _rng_state(device),
                        "history": history,
                        "step_times": step_times,
                        "best": best,
                        "wall_time_s": wall_before + time.perf_counter() - session_start,
                        "diverged": diverged,
                        "stopped": stopped,
                        "stop_reason": reason,
                    },
                )
    settle(opt)  # MSAM: the trained model is the unperturbed point
    if best["state"] is not None:  # early stopping: end with the weights of the best evaluation
        model.load_state_dict(best["state"])
    _, _, per_group = q_stats(groups)
    return TrainResult(
        history=history,
        steps=steps,
        train_time_s=math.fsum(step_times),
        wall_time_s=wall_before + time.perf_counter() - session_start,
        diverged=diverged,
        resumed_from=resumed_from,
        group_q=per_group,
        step_times=step_times,
        best_step=best["step"] if best["state"] is not None else None,
        cycle=int(getattr(config, method.cycle)) if method.cycle else 1,
        stop_reason=reason,
    )
