"""The wrapper contract shared by SAM, DAS and BAR.

The base optimizer is built on the wrapper's ``param_groups`` and shares them (and its
``state``), so LR schedulers, ``zero_grad`` and ``torch.amp.GradScaler`` see one set of
groups. ``state_dict()`` is the base optimizer's own state dict plus one extra section for
the wrapper, so momentum and Adam moments survive a checkpoint.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Any

import torch
from torch.optim import Optimizer

_EXTRA_KEY = "tensordas"


def check_non_negative(name: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``value`` unless it is a finite number >= 0."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Invalid {name} value: {value} (expected a scalar)")
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name} value: {value!r} (expected a number)")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid {name} value: {value} (expected a finite number >= 0)")


def check_dense_grads(params: list[torch.Tensor]) -> None:
    """Raise ``ValueError`` for sparse gradients (e.g. ``nn.Embedding(sparse=True)``): the fused
    norm kernels have no sparse implementation."""
    if any(p.grad is not None and p.grad.layout != torch.strided for p in params):
        raise ValueError("sparse gradients are not supported (e.g. use nn.Embedding(sparse=False))")


class BaseOptimizerWrapper(Optimizer):
    """An optimizer that runs ``base_optimizer`` on shared parameter groups.

    Args:
        params: parameters or parameter-group dicts, as for any ``torch.optim.Optimizer``.
        base_optimizer: the optimizer *class* (or factory) to wrap, e.g. ``torch.optim.SGD``.
        wrapper_defaults: per-group hyper-parameters of the wrapper (e.g. SAM's ``rho``).
        **kwargs: passed to ``base_optimizer``.
    """

    def __init__(self, params, base_optimizer, wrapper_defaults: dict[str, Any], **kwargs: Any) -> None:
        if isinstance(base_optimizer, Optimizer):
            raise TypeError(
                "base_optimizer must be an optimizer class such as torch.optim.SGD, not an instance; "
                "pass its hyper-parameters as keyword arguments"
            )
        if not callable(base_optimizer):
            raise TypeError(f"base_optimizer must be an optimizer class, got {base_optimizer!r}")
        if "lr" in kwargs:
            check_non_negative("learning rate", kwargs["lr"])
        super().__init__(params, {**wrapper_defaults, **kwargs})
        self.base_optimizer: Optimizer = base_optimizer(self.param_groups, **kwargs)
        # The base's defaults too (Adam's betas, ...): schedulers such as OneCycleLR read them here.
        self.defaults = {**self.base_optimizer.defaults, **wrapper_defaults, **kwargs}
        self._share_with_base()

    def _share_with_base(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "lr" in param_group:
            check_non_negative("learning rate", param_group["lr"])
        if not hasattr(self, "base_optimizer"):  # called by Optimizer.__init__
            super().add_param_group(param_group)
            return
        for key, value in self.defaults.items():
            param_group.setdefault(key, value)
        self.base_optimizer.add_param_group(param_group)
        self._share_with_base()

    def train(self) -> None:
        """Call the base optimizer's ``train()`` if it has one (schedule-free optimizers move the
        parameters between their training and averaged points; the HF Trainer calls this)."""
        if callable(getattr(self.base_optimizer, "train", None)):
            self.base_optimizer.train()

    def eval(self) -> None:
        """Call the base optimizer's ``eval()`` if it has one (see :meth:`train`)."""
        if callable(getattr(self.base_optimizer, "eval", None)):
            self.base_optimizer.eval()

    def evaluation_point(self) -> contextlib.AbstractContextManager:
        """A context inside which the parameters are the point to evaluate, copy and save. For SAM, DAS
        and BAR that is where they are; MSAM keeps them at a perturbed point between steps and moves
        back inside. Training loops wrap evaluation and checkpointing in it (the engine does)."""
        return contextlib.nullcontext()

    def settle(self) -> None:
        """After the last step: leave the parameters at the evaluation point for good (MSAM moves back;
        the others do nothing)."""

    # Wrapper-specific state lives in one extra section of the base optimizer's state dict.
    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        """Raise ``ValueError`` if ``extra`` does not fit this optimizer (before anything is loaded)."""

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        pass

    @classmethod
    def _public_name(cls) -> str:
        # Private subclasses (e.g. the Trainer's SAM) save and load as their public class.
        return next(c.__name__ for c in cls.__mro__ if not c.__name__.startswith("_"))

    def state_dict(self) -> dict[str, Any]:
        state = self.base_optimizer.state_dict()
        state[_EXTRA_KEY] = {"wrapper": self._public_name(), **self._extra_state()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint; on a mismatch raise ``ValueError`` with nothing changed."""
        state_dict = dict(state_dict)
        extra = state_dict.pop(_EXTRA_KEY, None)
        if extra is not None:
            if extra.get("wrapper") != self._public_name():
                raise ValueError(
                    f"state dict was saved by {extra.get('wrapper')}, cannot load it into {self._public_name()}"
                )
            self._check_extra_state(extra)
        self.base_optimizer.load_state_dict(state_dict)
        self._share_with_base()
        if extra is not None:
            self._load_extra_state(extra)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_optimizer!r})"


def base_accepts(base_optimizer, name: str) -> bool:
    """Whether ``base_optimizer``'s constructor takes a keyword ``name``."""
    try:
        params = inspect.signature(base_optimizer).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
