"""Loss terms a registered method adds to the training loss, from what the forward pass exposes.

A method of the registry (:mod:`~tensordas.training.methods`) may carry a :class:`LossTerm`: a function
of a :class:`LossContext` (the batch's logits, the penultimate features and the last linear layer, the
targets, the samples' indices in the training set, the epoch, per-run ``state``) returning a 0-dim
tensor that the engine adds to the family's loss before ``backward()``. The term reads its options
(strength included) from ``ctx.options``; its per-run memory lives in ``ctx.state`` (a dict of tensors
the engine checkpoints with the run, so a resumed run continues bit-exactly), and anything that can be
rebuilt from ``state`` (a teacher network) in ``ctx.cache`` (not checkpointed).

A family says which context fields it can supply (``supplies=`` of :func:`tensordas.training.engine.train`);
a method whose term needs a field the family does not supply is refused before training, naming the family.
Features come from a forward hook on the model's last linear layer (:class:`HeadTap`), so the model's
forward is unchanged for every other method.

The terms (the math and the sources are in docs/design.md):

- :func:`jreg_term`: Jacobian regularisation after Baek, Kolter, Raghunathan (ICLR 2024);
- :func:`saf_term`: SAF's trajectory loss (Du et al., NeurIPS 2022, code ``AngusDujw/SAF``);
- :func:`mesa_term`: MESA, SAF's variant with an EMA teacher instead of per-sample memory.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import TensorizedLayer

__all__ = [
    "CONTEXT_FIELDS",
    "HeadTap",
    "LossContext",
    "LossTerm",
    "find_head",
    "head_weight",
    "jreg_term",
    "mesa_term",
    "saf_term",
    "trajectory_kl",
]

# What a family can supply to a loss term (besides epoch, state, cache and options, which the engine adds).
CONTEXT_FIELDS = ("logits", "targets", "features", "head", "indices", "n_samples", "model", "inputs", "forward")


@dataclass
class LossContext:
    """What a loss term sees of one training step.

    Attributes:
        logits: the model's outputs on the batch, ``(B, C)``, at the current weights (with gradient).
        targets: the batch's labels ``(B,)``.
        features: the input of the last linear layer ``(B, D)`` (with gradient).
        head: the last linear layer (``nn.Linear`` or a tensorized one).
        indices: the batch's sample indices in the training set ``(B,)`` (int64).
        n_samples: the size of the training set ``indices`` index.
        model, inputs, forward: ``forward(model, inputs)`` gives ``logits`` (a teacher reruns it at other weights).
        epoch: the round (epoch) of this step, from 1.
        state: the term's per-run memory (tensors only; checkpointed with the run).
        cache: what can be rebuilt from ``state`` (not checkpointed).
        options: the method's option values by name.
    """

    logits: torch.Tensor
    targets: torch.Tensor | None = None
    features: torch.Tensor | None = None
    head: nn.Module | None = None
    indices: torch.Tensor | None = None
    n_samples: int | None = None
    model: nn.Module | None = None
    inputs: Any = None
    forward: Callable[[nn.Module, Any], torch.Tensor] | None = None
    epoch: int = 1
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LossTerm:
    """A term added to the training loss: ``fn(ctx)``, reading the options ``reads`` (names of the method's
    options, strength included) and the context fields ``needs``."""

    name: str
    fn: Callable[[LossContext], torch.Tensor]
    reads: tuple[str, ...]
    needs: frozenset[str]

    def __call__(self, ctx: LossContext) -> torch.Tensor:
        return self.fn(ctx)


# ------------------------------------------------------------------------------------------ features
_LINEAR = (nn.Linear, TensorizedLayer)


def find_head(model: nn.Module) -> nn.Module:
    """The model's last linear layer: its ``head`` (or ``fc``) attribute when that is a linear layer, else
    the last ``nn.Linear``/tensorized layer registered. ``ValueError`` for a model without one."""
    for name in ("head", "fc", "classifier"):
        module = getattr(model, name, None)
        if isinstance(module, _LINEAR):
            return module
    linears = [m for m in model.modules() if isinstance(m, _LINEAR)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layer: a loss term needs its last linear layer")
    return linears[-1]


def head_weight(head: nn.Module) -> torch.Tensor:
    """The last layer's weight (differentiable): ``nn.Linear.weight`` or a tensorized layer's reconstruction."""
    if isinstance(head, TensorizedLayer):
        return head.canonical_weight()
    if isinstance(head, nn.Linear):
        return head.weight
    raise ValueError(f"cannot read the weight of a {type(head).__name__} head (expected a linear layer)")


class HeadTap:
    """A forward hook on the model's last linear layer, keeping its input (the penultimate features) and
    output. Used as ``with tap: logits = model(x)``: the hook exists only inside the block, so the model's
    forward is unchanged everywhere else (evaluation, other methods, after an exception)."""

    def __init__(self, model: nn.Module) -> None:
        self.head = find_head(model)
        self.features: torch.Tensor | None = None
        self.output: torch.Tensor | None = None
        self._handle: Any = None

    def __enter__(self) -> HeadTap:
        self.features = self.output = None
        self._handle = self.head.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        self._handle = None

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if module is self.head:  # a deep copy of the model (a teacher) carries the hook too: ignore it
            self.features, self.output = args[0], output

    def take(self, logits: torch.Tensor) -> torch.Tensor:
        """The features of the pass that gave ``logits``; ``ValueError`` if the head's output is not the logits."""
        if self.features is None or self.output is None or self.output.shape != logits.shape:
            raise ValueError(
                f"the last linear layer {type(self.head).__name__} did not produce the logits "
                f"{tuple(logits.shape)}: a loss term needs a model whose last linear layer is its output"
            )
        features, self.features, self.output = self.features, None, None
        return features.flatten(1)


# ------------------------------------------------------------------------------------------- terms
def jreg_term(ctx: LossContext) -> torch.Tensor:
    """Jacobian regularisation after Baek, Kolter, Raghunathan (ICLR 2024, "Why is SAM robust to label noise?").

    ``lambda * (||W_last||_F^2 + ratio * mean_i ||h_i||^2)`` with ``W_last`` the last linear layer's
    weight (bias excluded) and ``h_i`` the penultimate features of sample ``i`` (the last layer's input).

    The paper shows that SAM's label-noise robustness comes from the network-Jacobian part of its
    perturbed gradient, which for a two-layer linear network acts like an L2 penalty on the last layer's
    weights and on the intermediate features, and that SGD with such explicit penalties recovers much
    of SAM's gain. Where this departs: one strength ``jreg_lambda`` with a fixed ratio ``jreg_ratio`` of
    the feature penalty to the weight penalty (the paper weighs the two separately; one strength keeps
    the tuned count equal to the other methods'), and only the last hidden layer's features are penalised.
    """
    lam, ratio = float(ctx.options["jreg_lambda"]), float(ctx.options["jreg_ratio"])
    weight = head_weight(ctx.head)
    features = ctx.features
    return lam * (weight.square().sum() + ratio * features.square().sum(dim=1).mean())


def trajectory_kl(logits: torch.Tensor, reference: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-sample ``tau^2 * KL(softmax(reference/tau) || softmax(logits/tau))``, ``(B,)`` (SAF's and MESA's loss)."""
    log_q = F.log_softmax(logits / tau, dim=1)
    log_p = F.log_softmax(reference.to(logits.dtype) / tau, dim=1)
    return tau**2 * (log_p.exp() * (log_p - log_q)).sum(dim=1)


def _active(ctx: LossContext, start: float) -> bool:
    """The authors' ``epoch > kl_start_epoch`` with their 0-based epochs (ours count from 1)."""
    return ctx.epoch - 1 > start


def saf_term(ctx: LossContext) -> torch.Tensor:
    """SAF's trajectory loss (Du et al., NeurIPS 2022; ``SAF_train.py`` of ``AngusDujw/SAF``).

    Every step stores the batch's logits (detached) per sample for the current epoch; from epoch
    ``saf_start + 2`` on (the authors' 0-based ``epoch > kl_start_epoch``) the loss gains
    ``lambda * tau^2 * mean_i KL(softmax(z_i^(e-E)/tau) || softmax(z_i/tau))`` with ``z_i^(e-E)`` the
    logits stored for sample ``i`` ``E`` epochs earlier (a ring of ``E + 1`` epochs, as theirs). A sample
    without a stored output from that epoch (one left out of that epoch's batches) contributes 0; the mean
    is over the batch, as theirs.
    """
    lam, tau, lag = float(ctx.options["saf_lambda"]), float(ctx.options["saf_tau"]), int(ctx.options["saf_epochs"])
    idx, logits, state = ctx.indices, ctx.logits, ctx.state
    if "saf_logits" not in state:
        shape = (lag + 1, ctx.n_samples, logits.shape[1])
        state["saf_logits"] = torch.zeros(shape, dtype=logits.dtype, device=logits.device)
        state["saf_epoch"] = torch.full((lag + 1, ctx.n_samples), -1, dtype=torch.int64, device=logits.device)
    memory, written = state["saf_logits"], state["saf_epoch"]
    if memory.shape != (lag + 1, ctx.n_samples, logits.shape[1]):
        raise ValueError(f"SAF memory of shape {tuple(memory.shape)} does not fit this run (saf_epochs={lag})")
    slot = ctx.epoch % (lag + 1)
    memory[slot, idx] = logits.detach().to(memory.dtype)
    written[slot, idx] = ctx.epoch
    if not _active(ctx, float(ctx.options["saf_start"])) or ctx.epoch - lag < 1:
        return logits.new_zeros(())
    past = (ctx.epoch - lag) % (lag + 1)
    valid = (written[past, idx] == ctx.epoch - lag).to(logits.dtype)
    return lam * (trajectory_kl(logits, memory[past, idx], tau) * valid).sum() / idx.numel()


def _ema_tensors(model: nn.Module, like: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``model`` an EMA teacher averages: those ``like``'s trainable parameters and floating
    buffers are (frozen parameters never change, so the teacher's copy of them stays exact)."""
    trainable = {n for n, p in like.named_parameters() if p.requires_grad}
    out = {n: p for n, p in model.named_parameters() if n in trainable}
    out.update({n: b for n, b in model.named_buffers() if b.is_floating_point()})
    return out


def mesa_term(ctx: LossContext) -> torch.Tensor:
    """MESA (Du et al., NeurIPS 2022; ``MESA_train.py`` of ``AngusDujw/SAF``): SAF with an EMA teacher.

    The teacher is an exponential moving average of the weights (and floating buffers), updated every step
    with ``decay`` (timm's ``ModelEmaV2`` as the authors use it: ``ema = decay*ema + (1-decay)*w``, started
    at the initial weights) and run in ``eval()`` mode on the batch; the loss gains
    ``lambda * tau^2 * mean_i KL(softmax(teacher_i/tau) || softmax(z_i/tau))`` from epoch ``mesa_start + 2``
    (the authors' 0-based ``epoch > kl_start_epoch``). Costs one extra forward pass (no backward) per step.
    """
    lam, tau, decay = float(ctx.options["mesa_lambda"]), float(ctx.options["saf_tau"]), float(ctx.options["mesa_decay"])
    model, state, cache = ctx.model, ctx.state, ctx.cache
    teacher = cache.get("mesa_teacher")
    update = True
    if teacher is None:
        teacher = copy.deepcopy(model)
        teacher.eval().requires_grad_(False)
        cache["mesa_teacher"] = teacher
        tensors = _ema_tensors(teacher, model)
        fresh = not any(k.startswith("mesa/") for k in state)
        with torch.no_grad():
            for name, t in tensors.items():
                if not fresh:
                    t.copy_(state["mesa/" + name])
                state["mesa/" + name] = t  # the state is the teacher's own tensors from now on
        update = not fresh  # a fresh teacher is the current weights; a resumed one moves on
        students = _ema_tensors(model, model)
        cache["mesa_pairs"] = ([tensors[n] for n in tensors], [students[n] for n in tensors])
    teachers, students = cache["mesa_pairs"]
    if update and teachers:
        with torch.no_grad():  # ema <- decay * ema + (1 - decay) * w, fused over all tensors
            torch._foreach_lerp_(teachers, students, 1.0 - decay)
    if not _active(ctx, float(ctx.options["mesa_start"])):
        return ctx.logits.new_zeros(())
    with torch.no_grad():
        reference = ctx.forward(teacher, ctx.inputs)
    return lam * trajectory_kl(ctx.logits, reference, tau).mean()


JREG = LossTerm("jreg", jreg_term, ("jreg_lambda", "jreg_ratio"), frozenset({"features", "head"}))
SAF = LossTerm(
    "saf", saf_term, ("saf_lambda", "saf_tau", "saf_epochs", "saf_start"), frozenset({"logits", "indices", "n_samples"})
)
MESA = LossTerm(
    "mesa",
    mesa_term,
    ("mesa_lambda", "saf_tau", "mesa_decay", "mesa_start"),
    frozenset({"logits", "model", "inputs", "forward"}),
)
