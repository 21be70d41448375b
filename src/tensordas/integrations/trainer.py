r"""Run DAS and SAM under Hugging Face ``transformers.Trainer`` (needs ``transformers``).

::

    from tensordas.integrations.trainer import DASTrainer
    trainer = DASTrainer(model=peft_model, args=TrainingArguments(...), train_dataset=ds,
                         method="das", alpha=0.05)          # or method="sam", rho=0.05; "base"
    trainer.train()

``method`` is a name of the method registry (:mod:`tensordas.training.methods`: ``base``, ``das``,
``sam``, ``bar``, ...) and the method's options are keyword arguments under their registry names
(``alpha``, ``alpha_schedule``, ``grad_norm``, ``das_variant``, ``s_min``, ``s_max``, ``rho``,
``adaptive``, ...; ``variant``, td.DAS's own keyword, is accepted for ``das_variant``): a method added
to the registry runs here without a change to this module.

The base optimizer is the one ``TrainingArguments.optim`` names (``adamw_torch``, ``sgd``, ...),
with the Trainer's learning rate, weight-decay groups and LR scheduler; DAS or SAM wraps it.

What the optimizer sees
    - **Gradient accumulation.** The Trainer backpropagates every micro-batch and calls
      ``optimizer.step()`` once, after the last one, so DAS scales the cores from the fully
      accumulated gradient. For that sum to be the full-batch gradient each micro-batch loss must be
      divided by the number of micro-batches. ``transformers`` skips that division for models whose
      ``forward`` takes ``**kwargs`` (it then expects the model to normalise by
      ``num_items_in_batch``), but many heads, e.g. ``BertForSequenceClassification``, take
      ``**kwargs`` and ignore it, so the accumulated gradient comes out ``gradient_accumulation_steps``
      times too large (transformers issue #47688). ``DASTrainer`` therefore sets
      ``model_accepts_loss_kwargs = False`` (mean loss per micro-batch, divided by the number of
      micro-batches: exact for equal micro-batches); pass ``trust_model_loss_kwargs=True`` for models
      whose loss does honour ``num_items_in_batch`` (token-level causal-LM losses).
    - **Mixed precision.** With ``fp16`` the step goes through ``GradScaler.step``, which unscales the
      gradients before calling ``DAS.step`` and skips the step on overflow; ``bf16`` needs no scaler.
      Gradient clipping (``max_grad_norm``) happens before the step, so DAS sees the clipped gradient
      the base optimizer uses.
    - **SAM** needs two forward/backward passes; :meth:`DASTrainer.training_step` runs both for each
      micro-batch (at ``w``, then at ``w + e``), restores ``w`` and leaves the accumulated gradient
      at ``w + e`` for the Trainer's ``optimizer.step()``, which takes SAM's ``second_step()``. Any
      registered method that needs a closure and has SAM's phases (``first_step``, ``restore``,
      ``second_step``) runs the same way, whatever its class derives from. With ``gradient_accumulation_steps = 1``
      this is SAM exactly. With accumulation the perturbation is computed per micro-batch (the
      "m-sharpness" form of SAM, m = micro-batch size), not from the full batch's gradient: the
      update is the mean over micro-batches of SAM gradients ``grad L_i(w + rho g_i / ||g_i||)``.
    - **Given optimizers.** ``optimizers=(opt, sched)`` is used as is, so it must match ``method``: an
      instance of the method's class (:class:`tensordas.DAS` for ``"das"``, :class:`tensordas.SAM` for
      ``"sam"``; anything else raises ``ValueError``). A decaying ``alpha_schedule`` without
      ``total_steps`` decays over the Trainer's ``max_steps``; DAS's step counter is saved in and
      restored from the Trainer's checkpoints.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from .._deprecation import REMOVAL_RELEASE
from ..core_groups import CoreGroup, find_core_groups
from ..optim import DAS, BaseOptimizerWrapper
from ..optim.watch import CHECK_AFTER, ScaleWatch, step_log
from ..training.methods import METHODS as REGISTRY  # this module's METHODS was the old trainer_methods()
from ..training.methods import OPTIONS, Method, MethodOptions, get_method, method_of

__all__ = ["DASTrainer", "das_optimizer_cls_and_kwargs", "trainer_methods"]


def _moves_for_evaluation(m: Method) -> bool:
    """Its optimizer keeps the weights away from the point to evaluate between steps (MSAM): the Trainer's
    evaluation and checkpoints have no hook for :meth:`BaseOptimizerWrapper.evaluation_point`."""
    resting = BaseOptimizerWrapper.evaluation_point  # where the weights are (a class without one keeps them too)
    return m.cls is not None and getattr(m.cls, "evaluation_point", resting) is not resting


# The phases of a two-pass step (docs/design.md section 2): to ``w + e``, back to ``w``, the base step.
_PHASES = ("first_step", "restore", "second_step")


def _runs_in_phases(m: Method) -> bool:
    """A two-pass method (``needs_closure``) with no step hook of its own whose class has :data:`_PHASES`:
    :meth:`DASTrainer.training_step` runs its passes per micro-batch, the Trainer's ``step()`` its second step."""
    return (
        m.needs_closure
        and m.step is None
        and m.cls is not None
        and all(callable(getattr(m.cls, p, None)) for p in _PHASES)
    )


def trainer_methods() -> tuple[str, ...]:
    """The registry's methods the Trainer can run, read when asked (a method registered later is included):
    one-pass methods, and two-pass ones that run in SAM's phases (:func:`_runs_in_phases`). Not the methods
    with a loss term (the Trainer computes the loss itself and exposes no features to add it to), nor those
    whose weights rest at a perturbed point between steps."""
    return tuple(
        m.name
        for m in REGISTRY.values()
        if m.loss_term is None and (not m.needs_closure or _runs_in_phases(m)) and not _moves_for_evaluation(m)
    )


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # the old name of trainer_methods(): it read like the registry's METHODS
        warnings.warn(
            f"{__name__}.METHODS is deprecated and will be removed in {REMOVAL_RELEASE}: "
            f"use {__name__}.trainer_methods()",
            FutureWarning,
            stacklevel=2,
        )
        return trainer_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Optimizer keywords accepted for registry option names (td.DAS's ``variant`` is ``das_variant``); a keyword
# that is an option's own name stays that option (``alpha`` is DAS's, not das-gradient's ``das_gradient_alpha``).
_KEYWORDS = {o.kwarg: o.name for o in OPTIONS.values() if o.kwarg != o.name and o.kwarg not in OPTIONS}
_UNWRAPPABLE_KEYS = ("params", "model", "optimizer_dict")


class _PassesInTrainingStep:
    """Mixin for a two-pass method's class under :class:`DASTrainer`: ``training_step`` has run both passes of
    every micro-batch and restored ``w``, so ``step()`` without a closure is the second step (the base step with
    the accumulated gradient)."""

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            return super().step(closure)
        self.second_step()
        return None


@functools.cache
def _trainer_class(cls: type) -> type:
    """``cls`` stepped by :class:`DASTrainer` (``_TrainerSAM`` for SAM: a private name, so its state dict
    names the public class)."""
    return type(f"_Trainer{cls.__name__}", (_PassesInTrainingStep, cls), {"__module__": __name__})


class _ScaleWatchCallback(TrainerCallback):
    """Warn once when DAS's scales never moved in the first :data:`CHECK_AFTER` steps (or the run)."""

    def __init__(self) -> None:
        self.watch: ScaleWatch | None = None

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.watch = ScaleWatch(optimizer, after=min(CHECK_AFTER, state.max_steps or CHECK_AFTER))

    def on_step_end(self, args, state, control, **kwargs):
        if self.watch is not None:
            self.watch.step(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.watch is not None:
            self.watch.finish(state.global_step)


def _base_optimizer(args: TrainingArguments, model: nn.Module, given=None) -> tuple[type, dict[str, Any]]:
    """The optimizer class and keyword arguments ``args.optim`` names, checked to be wrappable."""
    cls, kwargs = given if given is not None else Trainer.get_optimizer_cls_and_kwargs(args, model)
    if isinstance(cls, type) and issubclass(cls, BaseOptimizerWrapper):
        raise ValueError(
            f"optimizer_cls_and_kwargs names {cls.__name__}, a tensordas wrapper: DASTrainer wraps the base "
            "optimizer itself, so pass the base optimizer class (e.g. torch.optim.AdamW) or use method='base'"
        )
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or any(
        k in kwargs for k in _UNWRAPPABLE_KEYS
    ):
        raise ValueError(
            f"optimizer {args.optim!r} cannot be wrapped by DAS or SAM: it is not a plain torch.optim.Optimizer "
            "class taking parameter groups (use e.g. adamw_torch or sgd)"
        )
    return cls, dict(kwargs)


def das_optimizer_cls_and_kwargs(
    model: nn.Module,
    args: TrainingArguments,
    core_groups: list[CoreGroup] | None = None,
    **das_kwargs: Any,
) -> tuple[type, dict[str, Any]]:
    """``optimizer_cls_and_kwargs`` for a plain ``Trainer``: DAS around the optimizer ``args.optim`` names.

    ``Trainer(model, args, ..., optimizer_cls_and_kwargs=das_optimizer_cls_and_kwargs(model, args, alpha=0.05))``.
    Prefer :class:`DASTrainer`, which also fixes the gradient-accumulation loss scaling (module docstring).
    """
    base_cls, base_kwargs = _base_optimizer(args, model)
    groups = core_groups if core_groups is not None else find_core_groups(model)
    return DAS, {"base_optimizer": base_cls, "core_groups": groups, **das_kwargs, **base_kwargs}


def _method_settings(method: str, kwargs: dict[str, Any]) -> tuple[Method, MethodOptions]:
    """The registry entry of ``method`` and its options, popped from ``kwargs`` (the rest is the Trainer's)."""
    if method in REGISTRY and REGISTRY[method].loss_term is not None:
        raise ValueError(
            f"DASTrainer does not run method {method!r}: it adds a loss term from the model's features, which the "
            f"Trainer's own loss does not expose; use `tensordas finetune --optimizer {method}`"
        )
    runnable = trainer_methods()
    if method in REGISTRY and _moves_for_evaluation(REGISTRY[method]):
        raise ValueError(
            f"DASTrainer does not run method {method!r} (its weights rest at a perturbed point between steps and "
            "the Trainer's evaluation and checkpoints would see them there); use one of "
            f"{', '.join(runnable)}, or `tensordas finetune --optimizer {method}`"
        )
    if method in REGISTRY and method not in runnable:  # e.g. LookSAM: its k-periodic second pass has no Trainer hook
        raise ValueError(
            f"DASTrainer does not run method {method!r} (it takes more than one pass, and only a step in phases "
            f"{'/'.join(_PHASES)} without a step hook of its own fits the Trainer's micro-batches); "
            f"use one of {', '.join(runnable)}, or `tensordas finetune --optimizer {method}`"
        )
    if method not in runnable:
        raise ValueError(f"Invalid method: {method!r} (expected one of {', '.join(runnable)})")
    given = {_KEYWORDS.get(k, k): kwargs.pop(k) for k in list(kwargs) if k in OPTIONS or k in _KEYWORDS}
    settings = MethodOptions(**given)
    settings.check_options()  # ValueError naming an invalid value
    return get_method(method), settings


class DASTrainer(Trainer):
    """``transformers.Trainer`` whose optimizer is a registered method around the base optimizer ``args.optim`` names.

    Args:
        *args, **kwargs: as for ``Trainer``, plus the method's options under their registry names
            (module docstring); a decaying ``alpha_schedule`` without ``total_steps`` decays over the
            Trainer's number of optimizer steps.
        method: a registry name: ``"das"`` (one pass), ``"sam"`` (two passes per micro-batch), ``"base"``, ...
        total_steps: the length of a decaying strength schedule (default: the Trainer's steps).
        core_groups: the core groups of a method that needs them; default ``find_core_groups(model)``.
        trust_model_loss_kwargs: keep ``transformers``' own choice of gradient-accumulation loss
            scaling (see the module docstring); default ``False`` divides each micro-batch's mean loss
            by the number of micro-batches.
    """

    def __init__(
        self,
        *args: Any,
        method: str = "das",
        total_steps: int | None = None,
        core_groups: list[CoreGroup] | None = None,
        trust_model_loss_kwargs: bool = False,
        **kwargs: Any,
    ) -> None:
        self.spec, self.settings = _method_settings(method, kwargs)
        super().__init__(*args, **kwargs)
        self.method = method
        self.total_steps = total_steps
        self.core_groups = core_groups
        self._num_training_steps: int | None = None
        self._check_given_optimizer()
        if self.spec.needs_core_groups and core_groups is None and self.optimizer is None and self.model is not None:
            try:
                find_core_groups(self.model)
            except ValueError as err:
                others = " or ".join(repr(m) for m in trainer_methods() if not REGISTRY[m].needs_core_groups)
                raise ValueError(f"DASTrainer(method={method!r}): {err}; use method={others} for such a model") from err
        if not trust_model_loss_kwargs:
            self.model_accepts_loss_kwargs = False
        self.add_callback(_ScaleWatchCallback())

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The Trainer's log, plus at each training log: DAS's Q (mean over core groups) and the range of
        the scales its last step applied (``das/Q``, ``das/scale_min``, ``das/scale_max``), so TensorBoard,
        W&B and ``state.log_history`` get them."""
        if "loss" in logs and self.optimizer is not None:
            logs.update(step_log(self.optimizer))
        super().log(logs, *args, **kwargs)

    def _check_given_optimizer(self) -> None:
        """An optimizer passed as ``optimizers=(opt, sched)`` must match ``method`` (it is used as is)."""
        opt = self.optimizer
        if opt is None:
            return
        name, cls = type(opt).__name__, self.spec.cls
        if cls is None:
            given = method_of(opt)
            if not given.is_base:
                raise ValueError(
                    f"optimizers=(...) passes a tensordas.{given.wrapper.__name__}: use method={given.name!r} "
                    f"(got method={self.method!r})"
                )
            return
        if not isinstance(opt, cls):
            raise ValueError(
                f"method={self.method!r} but optimizers=(...) passes a {name}, not a tensordas.{cls.__name__}: a given "
                f"optimizer is used as is, so build it with tensordas.{cls.__name__}(...), or leave optimizers out "
                "(DASTrainer then wraps args.optim), or pass method='base'"
            )
        if self.spec.needs_closure and not isinstance(opt, _PassesInTrainingStep):
            if type(opt) is not cls:
                raise ValueError(f"method={self.method!r} supports {cls.__name__} itself, not the subclass {name}")
            opt.__class__ = _trainer_class(cls)  # same state; step() without a closure after training_step's passes

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self._num_training_steps = num_training_steps
        super().create_optimizer_and_scheduler(num_training_steps)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer (same parameter groups), wrapped by the method's class."""
        if self.optimizer is not None or self.spec.cls is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        base_cls, base_kwargs = _base_optimizer(self.args, opt_model, self.optimizer_cls_and_kwargs)
        total_steps = self.total_steps
        if self.spec.scheduled and total_steps is None:
            # The run's length for a decaying strength schedule. train() calls create_optimizer() directly
            # (not create_optimizer_and_scheduler), after setting state.max_steps to the number of steps.
            total_steps = self._num_training_steps or self.state.max_steps or None
        groups = None
        if self.spec.needs_core_groups:
            groups = self.core_groups if self.core_groups is not None else find_core_groups(opt_model)
        options = {o: getattr(self.settings, o) for o in OPTIONS}
        extra = self.spec.kwargs(options, core_groups=groups, total_steps=total_steps)
        cls = _trainer_class(self.spec.cls) if self.spec.needs_closure else self.spec.cls
        saved = self.optimizer_cls_and_kwargs
        self.optimizer_cls_and_kwargs = (cls, {"base_optimizer": base_cls, **extra, **base_kwargs})
        try:
            return super().create_optimizer(model)
        finally:
            self.optimizer_cls_and_kwargs = saved

    def _two_pass_optimizer(self) -> _PassesInTrainingStep | None:
        """The optimizer whose passes :meth:`training_step` runs (``None`` for a one-pass method)."""
        opt = self.optimizer
        while opt is not None and not isinstance(opt, _PassesInTrainingStep):
            opt = getattr(opt, "optimizer", None)  # accelerate's AcceleratedOptimizer wraps ours
        return opt

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """One micro-batch; for a two-pass method (SAM) two passes, at ``w`` and ``w + e``, adding the gradient at
        ``w + e`` to the gradient accumulated so far. Returns the loss at ``w``."""
        opt = self._two_pass_optimizer()
        if opt is None:
            return super().training_step(model, inputs, num_items_in_batch)
        params = [p for group in opt.param_groups for p in group["params"]]
        accumulated = [p.grad for p in params]  # earlier micro-batches of this accumulation window
        for p in params:
            p.grad = None
        loss = super().training_step(model, inputs, num_items_in_batch)
        opt.first_step(zero_grad=True)
        try:
            super().training_step(model, inputs, num_items_in_batch)
        finally:
            opt.restore()
        with torch.no_grad():
            for p, g in zip(params, accumulated):
                if g is not None:
                    if p.grad is None:
                        p.grad = g
                    else:
                        p.grad.add_(g)
        return loss
