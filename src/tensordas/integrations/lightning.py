"""PyTorch Lightning: what SAM's closure-driven step cannot do under it, refused with a clear error.

``td.DAS`` and ``td.SAM`` returned from ``configure_optimizers`` need nothing else (docs/integrations.md,
section 4). This module registers :func:`check_sam_closure` with :func:`tensordas.optim.sam.register_closure_check`
when ``tensordas`` is imported, so every ``SAM.step(closure)`` runs it.

In automatic optimization Lightning calls ``optimizer.step(closure)`` (through its precision
plugin, as ``functools.partial(Precision._wrap_closure, module, optimizer, closure)``), where the
closure runs ``training_step`` and ``backward`` for the *current* batch and then the
``on_before_optimizer_step`` hooks and gradient clipping. DAS calls it once, like any optimizer,
and gives the plain loop's step. SAM calls it twice, at ``w`` and at ``w + e``; two settings make
that a silently wrong step:

- ``accumulate_grad_batches = k > 1``: the closure of the last micro-batch only adds that
  micro-batch's gradient (it zeroes nothing; the others were run before ``step``). SAM's first
  pass sees the sum of all ``k`` (right), but its second pass, after zeroing, sees only the last
  micro-batch's ``1/k`` share: the base step would use ``1/k`` of the batch at ``1/k`` scale.
- ``gradient_clip_algorithm="value"``: the clipping runs after each pass, so the gradient SAM
  perturbs along is clipped element-wise and no longer points uphill. (Norm clipping is fine: it
  scales the whole gradient, and SAM's perturbation ``rho g / ||g||`` does not see the scale.)

Nothing here imports Lightning: the closure is inspected only when Lightning is already imported.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from ..optim.sam import register_closure_check

__all__ = ["LIGHTNING_CHECK_NAME", "check_sam_closure", "lightning_module_of"]

LIGHTNING_CHECK_NAME = "PyTorch Lightning (accumulate_grad_batches, value clipping)"
_PACKAGES = ("lightning.pytorch", "pytorch_lightning")


def lightning_module_of(closure: Any) -> Any | None:
    """The ``LightningModule`` whose Trainer built ``closure``, or ``None`` for any other closure."""
    classes = tuple(
        sys.modules[name].LightningModule
        for name in _PACKAGES
        if name in sys.modules and hasattr(sys.modules[name], "LightningModule")
    )
    if not classes or not isinstance(closure, functools.partial):
        return None
    return next((a for a in closure.args if isinstance(a, classes)), None)


def check_sam_closure(closure: Any) -> None:
    """Raise ``ValueError`` when Lightning's automatic optimization would make SAM's step wrong."""
    module = lightning_module_of(closure)
    if module is None or not module.automatic_optimization:
        return  # manual optimization: the user's closure decides what the passes see
    trainer = module.trainer
    k = trainer.accumulate_grad_batches
    if k > 1:
        raise ValueError(
            f"SAM cannot run under Lightning's accumulate_grad_batches={k}: its second pass would see only the "
            f"last of the {k} micro-batches; use accumulate_grad_batches=1 with a {k}x larger batch, manual "
            "optimization (run every micro-batch in the closure), or DAS (one pass, accumulates like any optimizer)"
        )
    algorithm = getattr(trainer.gradient_clip_algorithm, "value", trainer.gradient_clip_algorithm)
    if trainer.gradient_clip_val and algorithm == "value":
        raise ValueError(
            "SAM cannot run under Lightning's gradient_clip_algorithm='value': Lightning clips after each pass, "
            "so SAM would perturb along an element-wise clipped gradient; use gradient_clip_algorithm='norm' "
            "(it leaves SAM's perturbation unchanged) or clip in manual optimization"
        )


register_closure_check(LIGHTNING_CHECK_NAME, check_sam_closure)
