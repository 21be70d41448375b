"""SAM with ``torch.amp.GradScaler``: both passes scaled, each unscaled once, overflow in either skips.

DAS needs nothing special: ``scaler.scale(loss).backward(); scaler.step(das); scaler.update()``.
``scaler.step`` unscales the gradients before calling ``das.step()`` (so DAS sees true
gradients) and does not call it at all when a gradient is inf/NaN (so neither the cores nor
DAS's step counter move).

SAM does not fit ``scaler.step(sam)``: it needs the gradient of the *first* pass, unscaled, to
build the perturbation, and a second ``scaler.unscale_(sam)`` in the same iteration raises
"unscale_() has already been called on this optimizer since the last update()". The widely
copied recipes also forget that an overflow in the first pass gives an inf/NaN perturbation.
:func:`sam_amp_step` handles both passes:

1. pass 1: ``scaler.scale(loss).backward()``; the gradients are unscaled in place *without*
   registering with the scaler (same kernel as ``GradScaler.unscale_``) and checked for inf/NaN.
   On overflow: the scaler is told (its ``step`` is skipped and ``update`` backs the scale off),
   the gradients are zeroed, the weights were never moved; return.
2. ``sam.first_step()`` perturbs with the unscaled gradient; pass 2 runs with the scaled loss.
3. ``sam.restore()`` brings the weights back to ``w`` exactly, then ``scaler.step`` on the base
   optimizer unscales the pass-2 gradients once and steps, or skips on overflow, and
   ``scaler.update()`` adjusts the scale. Either way the weights are ``w`` or ``w``'s base step.

The loss function runs the forward pass (under ``torch.autocast`` if wanted) and returns the
loss; it must not call ``backward``. Under DDP, run both passes synchronised (no ``no_sync``).

Non-finite gradients: the scaler's checks come first (an overflow skips the step as above), so
SAM's and DAS's ``nonfinite`` options see only unscaled, finite gradients under an enabled
scaler; with ``scaler=None`` (or a disabled one) SAM's ``nonfinite`` mode acts on both passes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from .sam import SAM

__all__ = ["sam_amp_step"]


def _unscale_and_check_(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> bool:
    """Divide every gradient of ``optimizer`` by the scaler's scale in place; True if any is inf/NaN."""
    by_device: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise ValueError("sam_amp_step does not support sparse gradients")
            if p.grad.dtype == torch.float16:  # as GradScaler.unscale_, before the weights are perturbed
                raise ValueError("Attempting to unscale FP16 gradients.")
            by_device[(p.grad.device, p.grad.dtype)].append(p.grad)
    if not by_device:
        return False
    found = []
    for (device, _), grads in by_device.items():
        # scaler.scale(ones) is the public way to read the current scale tensor (no host sync).
        scale = scaler.scale(torch.ones((), dtype=torch.float32, device=device))
        inv_scale = scale.double().reciprocal().float()
        found_inf = torch.zeros((), dtype=torch.float32, device=device)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
        found.append(found_inf.cpu())
    return bool(sum(found))  # one host sync; GradScaler.step syncs on the same flag anyway


def _check_forward_only(sam: SAM) -> None:
    if any(p.grad is not None for group in sam.param_groups for p in group["params"]):
        raise ValueError(
            "sam_amp_step: loss_fn produced gradients; it must only run the forward pass and return the loss "
            "(sam_amp_step calls backward itself; do not pass a SAM.step closure)"
        )


def sam_amp_step(sam: SAM, scaler: torch.amp.GradScaler | None, loss_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One SAM step driven by ``scaler``; returns the (unscaled) first-pass loss, detached.

    Args:
        sam: a :class:`tensordas.SAM` optimizer.
        scaler: a ``torch.amp.GradScaler``; ``None`` or a disabled scaler gives a plain SAM step
            (bf16 autocast needs no scaler).
        loss_fn: runs the forward pass and returns the loss; called twice (at ``w`` and ``w + e``).

    Gradients are zeroed before the first pass and after the step. When either pass overflows the
    step is skipped: the weights stay at ``w`` exactly, the base optimizer's state is untouched and
    ``scaler.update()`` backs the scale off (call nothing else on the scaler for this iteration).
    If ``loss_fn`` raises, the weights are restored to ``w`` before the error propagates.
    """
    if not isinstance(sam, SAM):
        raise TypeError(f"sam_amp_step needs a tensordas.SAM optimizer, got {type(sam).__name__}")
    base = sam.base_optimizer
    sam.zero_grad()
    loss = loss_fn()
    _check_forward_only(sam)
    if scaler is None or not scaler.is_enabled():
        loss.backward()
        sam.first_step(zero_grad=True)
        try:
            loss_fn().backward()
        except BaseException:
            sam.restore()  # w exactly, as in the scaled path
            raise
        sam.second_step(zero_grad=True)
        return loss.detach()
    scaler.scale(loss).backward()
    if _unscale_and_check_(sam, scaler):
        # Pass 1 overflowed: let the scaler see it (unscale_ finds the inf, step skips, update backs off).
        scaler.step(base)
        scaler.update()
        sam.zero_grad()
        return loss.detach()
    sam.first_step(zero_grad=True)
    try:
        scaler.scale(loss_fn()).backward()
    finally:
        sam.restore()  # w exactly, also if the second pass raised
    scaler.step(base)  # unscales the pass-2 gradients once; skips the base step on inf/NaN
    found_inf = getattr(scaler, "_found_inf_per_device", None)
    if found_inf is None or not any(float(v) for v in found_inf(base).values()):  # already synced by step
        # A step was taken: tell an LR scheduler on ``sam`` (as SAM.second_step does), which would
        # warn "lr_scheduler.step() before optimizer.step()" otherwise.
        sam._opt_called = True
    scaler.update()
    sam.zero_grad()
    return loss.detach()
