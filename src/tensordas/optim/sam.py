r"""Sharpness-Aware Minimization (Foret et al., 2021) and its adaptive variant ASAM (Kwon et al., 2021).

One SAM step, for the gradient ``g`` at the current weights ``w``::

    ||g||  = sqrt(sum_p ||T_p g_p||^2)           T_p = |w_p| (ASAM) or 1 (SAM)
    e_p    = rho * T_p^2 g_p / (||g|| + 1e-12)
    w     <- w + e;  recompute the gradient g~ at w + e;  w <- w (restored exactly)
    base optimizer step with g~

This is the widely used reference formulation (davda54/sam); unlike it, ``state_dict()``
keeps the base optimizer's state (momentum, Adam moments), and all per-parameter work is
done with fused multi-tensor kernels without host synchronisation.

Non-finite gradients (``nonfinite=``): a NaN/Inf in the first pass's gradient makes ``||g||`` and
so the perturbation ``e`` non-finite; the second pass then runs at NaN weights and its gradient,
which the base step applies, is NaN everywhere. The weights are always restored to ``w`` exactly
before the base step, so only the base step can change them.

- ``"warn"`` (default): the step proceeds as described and a warning is given once per run
  (counted on the device; on a GPU the count is read back without a sync, a step or two late).
- ``"skip"``: the gradient of each pass is checked (one host read per pass); a non-finite one
  skips the whole step: no perturbation (first pass) or ``w`` restored (second pass), no base
  step, base state unchanged. With ``step(closure)`` the second pass is not even run.
- ``"raise"``: ``FloatingPointError`` naming the param group(s), with the weights at ``w``.

Counted in :attr:`SAM.nonfinite_steps`. Under ``torch.amp.GradScaler`` (:func:`sam_amp_step`)
the scaler's own inf/NaN checks skip overflowing steps first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ._dtensor import all_reduce_sum, is_dtensor, local, shard_group
from ._nonfinite import NonfiniteCounter, check_nonfinite_mode, nonfinite_flags
from ._wrapper import BaseOptimizerWrapper, check_dense_grads, check_non_negative

__all__ = ["SAM", "register_closure_check", "unregister_closure_check"]

_EPS = 1e-12

# A closure check looks at the closure handed to SAM.step and raises ValueError when the framework that built it
# would make SAM's two passes wrong (tensordas.integrations.lightning registers Lightning's); None when it is fine.
ClosureCheck = Callable[[Callable[[], Any]], None]
_CLOSURE_CHECKS: dict[str, ClosureCheck] = {}


def register_closure_check(name: str, check: ClosureCheck) -> None:
    """Register ``check(closure)``, called by :meth:`SAM.step` before its first pass.

    For training frameworks that build the closure themselves: the check refuses, with a ``ValueError``,
    settings under which calling that closure twice would be a silently wrong step. Optim stays free of
    any framework's knowledge; the framework's module in :mod:`tensordas.integrations` registers it.
    """
    if name in _CLOSURE_CHECKS:
        raise ValueError(f"a SAM closure check named {name!r} is already registered")
    _CLOSURE_CHECKS[name] = check


def unregister_closure_check(name: str) -> None:
    """Remove the closure check registered under ``name``."""
    if _CLOSURE_CHECKS.pop(name, None) is None:
        raise ValueError(f"no SAM closure check named {name!r} is registered")


class SAM(BaseOptimizerWrapper):
    """SAM / ASAM around any ``torch.optim.Optimizer``; costs a second forward and backward pass.

    Use either ``step(closure)`` where the closure zeroes the gradients, runs forward and
    backward and returns the loss (it is called twice: at ``w`` and at ``w + e``), or the
    explicit phases: ``loss.backward(); first_step(zero_grad=True); loss_fn().backward();
    second_step(zero_grad=True)``.

    Args:
        params: parameters or param-group dicts; ``rho`` and ``adaptive`` may be set per group.
        base_optimizer: optimizer class, e.g. ``torch.optim.SGD``.
        rho: neighbourhood radius, >= 0.
        adaptive: ASAM's element-wise scaling of the perturbation by ``|w|``.
        nonfinite: ``"warn"`` (default), ``"skip"`` or ``"raise"``: what a non-finite gradient
            does (module docstring).
        **kwargs: hyper-parameters of the base optimizer.
    """

    def __init__(
        self,
        params,
        base_optimizer,
        rho: float = 0.05,
        adaptive: bool = False,
        nonfinite: str = "warn",
        **kwargs: Any,
    ) -> None:
        check_non_negative("rho", rho)
        check_nonfinite_mode(nonfinite)
        super().__init__(params, base_optimizer, {"rho": rho, "adaptive": bool(adaptive)}, **kwargs)
        self.nonfinite = nonfinite
        self._backup: dict[torch.Tensor, torch.Tensor] = {}  # w before the perturbation, by parameter
        self._perturbed: list[torch.Tensor] = []
        self._skip_pending = False  # nonfinite="skip" found a non-finite first-pass gradient
        self._nonfinite_host = 0  # steps found non-finite by a host read (skip/raise modes)
        device = next((p.device for g in self.param_groups for p in g["params"]), torch.device("cpu"))
        self._nonfinite_count = NonfiniteCounter(["first-pass gradient"], device)  # warn mode, on the device

    @property
    def nonfinite_steps(self) -> int:
        """Steps whose gradient was not finite (skipped steps under ``nonfinite="skip"``; under
        ``"warn"`` the first-pass gradient norm, counted on the device: reading it syncs a GPU)."""
        return self._nonfinite_host + self._nonfinite_count.counts()[0]

    def _extra_state(self) -> dict[str, Any]:
        return {"nonfinite_steps": self.nonfinite_steps}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._nonfinite_host = int(extra.get("nonfinite_steps", 0))
        self._nonfinite_count.load(torch.zeros(1, dtype=torch.int64))

    def _nonfinite_groups(self) -> list[str]:
        """The param groups whose gradient holds a NaN/Inf now (one fused kernel, one host read)."""
        owners, grads, params = [], [], []
        for i, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.grad is not None:
                    owners.append(i)
                    grads.append(p.grad)
                    params.append(p)
        if not grads:
            return []
        check_dense_grads(params)
        bad = [o for o, f in zip(owners, nonfinite_flags(grads, params)) if f]
        return [f"param group {i} ({bad.count(i)} of {owners.count(i)} parameters)" for i in dict.fromkeys(bad)]

    def _refuse(self, where: str) -> bool:
        """Under skip/raise: check the gradient of this pass; True when the step must be skipped."""
        if self.nonfinite == "warn":
            return False
        bad = self._nonfinite_groups()
        if not bad:
            return False
        self._nonfinite_host += 1
        if self.nonfinite == "raise":
            raise FloatingPointError(
                f"SAM: non-finite {where} gradient in {', '.join(bad)} (nonfinite='raise'; the weights are at w)"
            )
        return True

    def _nonfinite_message(self, names: list[str]) -> str:
        return (
            "SAM: the first-pass gradient was not finite, so the perturbation and the second pass were NaN/Inf "
            "and the base step applies a non-finite gradient (warned once; nonfinite_steps counts; "
            "nonfinite='skip' skips such steps, nonfinite='raise' stops)"
        )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Checked before the group is added, so a refused group leaves the optimizer as it was.
        params = param_group["params"]
        param_group["params"] = params = [params] if isinstance(params, torch.Tensor) else list(params)
        if "rho" in param_group:
            check_non_negative("rho", param_group["rho"])
        for p in params:
            if not p.is_floating_point():
                raise ValueError(f"SAM needs real floating-point parameters, got a {p.dtype} parameter")
        super().add_param_group(param_group)

    def _grad_norm(self) -> torch.Tensor | None:
        # Under FSDP2 (DTensor parameters) the norms are taken of the local shards (DTensor has no
        # usable foreach dispatch here, see _dtensor.py) and summed over the shards by one all-reduce.
        sq_norms, sharded = [], []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            check_dense_grads(params)
            sharded.extend(p for p in params if is_dtensor(p))
            grads = [local(p.grad) for p in params]
            if group["adaptive"]:
                grads = torch._foreach_mul(grads, torch._foreach_abs([local(p) for p in params]))
            # Accumulate in at least float32: bf16/fp16 norms would round the perturbation's scale.
            acc = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
            sq_norms.extend(torch._foreach_norm(grads, 2, dtype=acc))
        if not sq_norms:
            return None
        device = sq_norms[0].device
        if sharded:
            params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            sq = torch.stack([n.to(device) for n in sq_norms]).square_().sum()
            return all_reduce_sum(sq, shard_group(params)).sqrt()
        return torch.stack([n.to(device) for n in sq_norms]).norm(2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to ``w + e`` (the sharpness-maximising neighbour) and remember ``w``."""
        if self._perturbed:
            raise RuntimeError("first_step() called twice without second_step()")
        if self._refuse("first-pass"):
            self._skip_pending = True
            if zero_grad:
                self.zero_grad()
            return
        grad_norm = self._grad_norm()
        if grad_norm is not None and self.nonfinite == "warn":
            finite = torch.lt(grad_norm, math.inf).reshape(1)
            self._nonfinite_count.sub_finite_(finite.to(self._nonfinite_count.acc.device))
        if grad_norm is not None:
            for group in self.param_groups:
                perturbed = [p for p in group["params"] if p.grad is not None]
                if not perturbed:
                    continue
                params = [local(p) for p in perturbed]  # FSDP2: the local shards (views of the DTensors)
                buffers = [self._backup.get(p) for p in perturbed]
                if any(b is None or b.shape != p.shape for b, p in zip(buffers, params)):
                    for p, w in zip(perturbed, params):
                        self._backup[p] = torch.empty_like(w)
                    buffers = [self._backup[p] for p in perturbed]
                torch._foreach_copy_(buffers, params)
                scale = group["rho"] / (grad_norm + _EPS)
                e_w = torch._foreach_mul([local(p.grad) for p in perturbed], scale.to(params[0].device))
                if group["adaptive"]:
                    torch._foreach_mul_(e_w, torch._foreach_mul(params, params))
                torch._foreach_add_(params, e_w)
                self._perturbed.extend(perturbed)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def restore(self) -> None:
        """Move back from ``w + e`` to ``w`` exactly, without stepping (e.g. when a step is skipped)."""
        if self._perturbed:
            torch._foreach_copy_([local(p) for p in self._perturbed], [self._backup[p] for p in self._perturbed])
            self._perturbed = []

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` exactly and take the base step with the gradient computed at ``w + e``
        (with ``nonfinite="skip"``, no base step when either pass's gradient was not finite)."""
        skip = self._skip_pending
        self._skip_pending = False
        if not skip:
            try:
                skip = self._refuse("second-pass")
            finally:
                self.restore()
        if not skip:
            self.base_optimizer.step()
            # A step was taken: tell an LR scheduler (it marks optimizers whose step() it saw called
            # this way, and would warn "lr_scheduler.step() before optimizer.step()" otherwise).
            self._opt_called = True
        if zero_grad:
            self.zero_grad()
        if self.nonfinite == "warn":
            self._nonfinite_count.poll(self._nonfinite_message)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """One full SAM step; ``closure`` must zero the gradients, run forward and backward, return the loss."""
        if closure is None:
            raise ValueError(
                "SAM.step() needs a closure that zeroes gradients, runs forward and backward and returns the "
                "loss (or call first_step()/second_step() yourself; under Lightning, precision='16-mixed' steps "
                "without a closure: use 'bf16-mixed' or '32-true')"
            )
        for check in _CLOSURE_CHECKS.values():  # e.g. Lightning settings that would make the two passes wrong
            check(closure)
        with torch.enable_grad():
            loss = closure()
        self.first_step(zero_grad=True)
        if self._skip_pending:  # nonfinite="skip": no second pass
            self.second_step()
            return loss
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss
