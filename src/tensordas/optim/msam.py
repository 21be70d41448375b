r"""Momentum-SAM (Becker et al., 2024, "Momentum-SAM: Sharpness Aware Minimization without Computational
Overhead"; code: github.com/MarlonBecker/MSAM): SAM's perturbation taken along the negative momentum
direction, so one forward/backward pass per step.

With the base optimizer's momentum ``m`` (SGD's ``momentum_buffer``, Adam's ``exp_avg``), the
weights ``w`` are kept at the perturbed point between steps::

    w~_t = w_t - rho * m_t / (||m_t|| + 1e-12)          (||.|| over all parameters)

and a step, with the gradient ``g`` taken at ``w~_t`` by the caller's forward/backward pass, is::

    w_t    = w~_t + rho * m_t / (||m_t|| + 1e-12)       "move back" (the same tensors, undone)
    base optimizer step with g                          (m_{t+1} = mu m_t + g, w_{t+1} = w_t - lr m_{t+1})
    w~_{t+1} = w_{t+1} - rho * m_{t+1} / (||m_{t+1}|| + 1e-12)   "move up"

exactly the bookkeeping of the authors' ``MSAM.step`` and ``AdamW_MSAM`` (their ``rho`` is ours; the
authors use ``rho = 3`` for SGD and AdamW alike). Before the first step there is no momentum and no
perturbation. Bases:

- ``torch.optim.SGD`` with momentum > 0: ``m`` is its momentum buffer (the authors' optimizer).
- ``torch.optim.SGD`` without momentum: ``m`` is the last gradient, kept by MSAM (the authors' code
  with ``momentum=0`` does the same: its buffer is then the last gradient); one copy per step.
- Adam, AdamW, NAdam, RAdam, Adamax: ``m`` is the first moment ``exp_avg`` (the authors' AdamW variant,
  which perturbs along the unpreconditioned first moment).
- any other base: ``ValueError`` (no momentum to follow).

Two small differences from the authors' code, both from wrapping an unmodified torch base optimizer:
the base applies its weight decay at the unperturbed ``w_t`` (the authors add it to the gradient at
``w~_t``), and the perturbation covers every parameter with a momentum (the authors' step moves only
those with a gradient at that step; the same in a loop where every parameter gets one).

**Evaluation sees the unperturbed weights**: between steps the parameters are at ``w~``. Evaluate, save
or copy them inside ``with opt.evaluation_point():`` (moves back on entry, up again on exit; the training
engine does this around every evaluation, early-stopping copy and checkpoint), and call
:meth:`MSAM.settle` after the last step (the engine does) to leave them at ``w`` for good.
``state_dict()`` records whether the parameters are perturbed at that moment; ``load_state_dict()``
assumes the model's parameters were saved at the same moment (and loaded first) and puts them at the
perturbed point, ready for the next step.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch

from ._wrapper import BaseOptimizerWrapper, check_non_negative
from .das import DAS

__all__ = ["MSAM", "MSAMDAS"]

_EPS = 1e-12  # the authors' constant in 1 / (||m|| + eps)
_FIRST_MOMENT_BASES = (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax)
_OWN_KEY = "msam_last_grad"  # SGD without momentum: the direction MSAM keeps itself


class _MSAMRun:
    """What ``step()`` changes (a plain object, as for DAS: torch.compile and optimizer attributes)."""

    def __init__(self) -> None:
        self.coef: torch.Tensor | None = None  # rho / (||m|| + eps) of the applied perturbation
        self.moved: list[torch.Tensor] = []  # the parameters it was applied to
        self.keys: list[str] = []  # the state key of each one's momentum
        self.perturbed = False


class MSAM(BaseOptimizerWrapper):
    """Momentum-SAM around SGD (with or without momentum) or an Adam-family optimizer; one pass per step.

    Args:
        params: parameters or param-group dicts.
        base_optimizer: optimizer class, e.g. ``torch.optim.SGD`` (with ``momentum=0.9``: the authors'
            setting) or ``torch.optim.AdamW``.
        rho: perturbation radius along ``-m / ||m||``, >= 0 (not SAM's scale: the authors use 3, SAM's
            usual values are ~0.05).
        **kwargs: hyper-parameters of the base optimizer (``lr``, ``momentum``, ...).

    Raises:
        ValueError: a negative ``rho``, or a base optimizer without a momentum MSAM knows how to read.
    """

    def __init__(self, params, base_optimizer, rho: float = 3.0, **kwargs: Any) -> None:
        check_non_negative("rho", rho)
        super().__init__(params, base_optimizer, {}, **kwargs)
        base = self._momentum_owner
        if not isinstance(base, (torch.optim.SGD, *_FIRST_MOMENT_BASES)):
            raise ValueError(
                f"MSAM follows the base optimizer's momentum; {type(base).__name__} has none it can read "
                "(use torch.optim.SGD or an Adam-family optimizer)"
            )
        self.rho = float(rho)
        self._run = _MSAMRun()

    # ------------------------------------------------------------------ the direction
    @property
    def _momentum_owner(self) -> torch.optim.Optimizer:
        """The torch optimizer whose state holds the momentum (inside a wrapper such as DAS: its base)."""
        base = self.base_optimizer
        return base.base_optimizer if isinstance(base, BaseOptimizerWrapper) else base

    def _key(self, group: dict[str, Any]) -> str:
        if isinstance(self._momentum_owner, torch.optim.SGD):
            return "momentum_buffer" if group.get("momentum", 0) != 0 else _OWN_KEY
        return "exp_avg"

    def _directions(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
        """The parameters that have a momentum now, their momenta and its state key."""
        params, moms, keys = [], [], []
        for group in self.param_groups:
            key = self._key(group)
            for p in group["params"]:
                m = self.state.get(p, {}).get(key)
                if isinstance(m, torch.Tensor):
                    params.append(p)
                    moms.append(m)
                    keys.append(key)
        return params, moms, keys

    def _move(self, sign: float) -> None:
        """``w += sign * coef * m`` over the parameters the current perturbation covers."""
        run = self._run
        if run.coef is None or not run.moved:
            return
        moms = [self.state[p][k] for p, k in zip(run.moved, run.keys)]
        torch._foreach_add_(run.moved, torch._foreach_mul(moms, run.coef * sign))

    @torch.no_grad()
    def _perturb(self) -> None:
        """Move up: ``w~ = w - rho m / (||m|| + eps)`` with the current momenta."""
        params, moms, keys = self._directions()
        run = self._run
        run.moved, run.keys = params, keys
        if not params:
            run.coef = None
            return
        dtype = torch.float64 if any(m.dtype == torch.float64 for m in moms) else torch.float32
        norm = torch.linalg.vector_norm(torch.stack([n.to(dtype) for n in torch._foreach_norm(moms)]))
        run.coef = self.rho / (norm + _EPS)
        torch._foreach_add_(params, torch._foreach_mul(moms, -run.coef))
        run.perturbed = True

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure=None):
        """Move back to ``w``, take the base step with the gradient taken at ``w~``, move up again.

        ``closure`` (optional) is called once, before anything moves: one forward/backward pass."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._run.perturbed:
            self._move(+1.0)
            self._run.perturbed = False
        for group in self.param_groups:  # SGD without momentum: keep the last gradient as the direction
            if self._key(group) == _OWN_KEY:
                for p in group["params"]:
                    if p.grad is not None:
                        state = self.state[p]
                        if _OWN_KEY in state:
                            state[_OWN_KEY].copy_(p.grad)
                        else:
                            state[_OWN_KEY] = p.grad.detach().clone()
        self.base_optimizer.step()
        self._perturb()
        return loss

    # ------------------------------------------------------------------ the unperturbed weights
    @torch.no_grad()
    def move_back(self) -> None:
        """Put the parameters at the unperturbed point ``w`` (the authors' ``move_back_from_momentumAscent``)."""
        if self._run.perturbed:
            self._move(+1.0)
            self._run.perturbed = False

    @torch.no_grad()
    def move_up(self) -> None:
        """Put the parameters back at the perturbed point ``w~`` (the authors' ``move_up_to_momentumAscent``)."""
        if not self._run.perturbed and self._run.coef is not None:
            self._move(-1.0)
            self._run.perturbed = True

    @contextlib.contextmanager
    def evaluation_point(self) -> Iterator[None]:
        """Inside: the parameters are the unperturbed ``w`` (evaluate, copy or save them here)."""
        was = self._run.perturbed
        self.move_back()
        try:
            yield
        finally:
            if was:
                self.move_up()

    def settle(self) -> None:
        """After the last step: leave the parameters at ``w`` (the next ``step()`` still works)."""
        self.move_back()

    @property
    def perturbed(self) -> bool:
        """Whether the parameters are at the perturbed point now."""
        return self._run.perturbed

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Any]:
        run = self._run
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        return {
            "rho": self.rho,
            "perturbed": run.perturbed,
            "coef": None if run.coef is None else run.coef.detach().clone(),
            "moved": [index[id(p)] for p in run.moved],
        }

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        missing = {"perturbed", "coef", "moved"} - extra.keys()
        if missing:
            raise ValueError(f"state dict lacks {sorted(missing)} in its MSAM section")
        count = sum(len(g["params"]) for g in self.param_groups)
        if any(not 0 <= i < count for i in extra["moved"]):
            raise ValueError(f"state dict's MSAM section names parameters this optimizer ({count}) does not have")

    @torch.no_grad()
    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        params = [p for g in self.param_groups for p in g["params"]]
        keys = [self._key(g) for g in self.param_groups for _ in g["params"]]
        run = self._run
        run.moved = [params[i] for i in extra["moved"]]
        run.keys = [keys[i] for i in extra["moved"]]
        coef = extra["coef"]
        run.coef = None if coef is None else torch.as_tensor(coef).to(params[0].device)
        run.perturbed = bool(extra["perturbed"])
        self.move_up()  # saved at w (inside evaluation_point): back to w~, where training goes on


class MSAMDAS(MSAM):
    """MSAM whose base step is DAS in gradient form (registry entry ``msam-das``; docs/design.md).

    The two act on different things and compose without interfering: MSAM chooses where the gradient is
    taken (``w~``, one pass), DAS's gradient form adds its norm-drift term ``c_k G_k`` to that gradient,
    computed from the cores at the unperturbed ``w`` (``step()`` moves back first), and the base
    optimizer's momentum carries both terms, so the next perturbation direction includes DAS's drift.
    The weight form would bypass the momentum that MSAM follows; the gradient form is the one that fits.

    Args:
        params, base_optimizer, rho: as for :class:`MSAM`.
        core_groups, alpha, alpha_schedule, total_steps, grad_norm, balance: as for :class:`~tensordas.DAS`
            (``variant="gradient"`` always).
        **kwargs: hyper-parameters of the base optimizer.
    """

    def __init__(
        self,
        params,
        base_optimizer,
        core_groups=None,
        rho: float = 3.0,
        alpha: float = 0.05,
        alpha_schedule: str = "constant",
        total_steps: int | None = None,
        grad_norm: str = "group",
        balance: float = 0.0,
        **kwargs: Any,
    ) -> None:
        das = functools.partial(
            DAS,
            base_optimizer=base_optimizer,
            core_groups=core_groups,
            alpha=alpha,
            alpha_schedule=alpha_schedule,
            total_steps=total_steps,
            grad_norm=grad_norm,
            balance=balance,
            variant="gradient",
        )
        super().__init__(params, das, rho=rho, **kwargs)

    @property
    def das(self) -> DAS:
        """The DAS (gradient form) that takes the base step."""
        return self.base_optimizer

    # DAS's own section of the state dict travels inside MSAM's (one extra section per state dict).
    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "das": self.das._extra_state()}

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        super()._check_extra_state(extra)
        if "das" not in extra:
            raise ValueError("state dict lacks ['das'] in its MSAMDAS section")
        self.das._check_extra_state(extra["das"])

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.das._load_extra_state(extra["das"])
        super()._load_extra_state(extra)
