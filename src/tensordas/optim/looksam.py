"""LookSAM (Liu et al., 2022) from pytorch-optimizer, driven at its intended cost.

pytorch-optimizer's ``LookSAM.step(closure)`` evaluates the closure twice on every step (SAM's cost).
:func:`looksam_step` drives its phases so that the second pass runs only every ``k``-th step
(``1 + 1/k`` passes per step), reusing the stored direction otherwise. :func:`looksam_class` adds what
the library's class lacks for our engine: ``state_dict``/``load_state_dict`` that keep the base
optimizer's state (momentum, Adam moments) beside LookSAM's own (its step counter, the stored
direction), so a resumed run continues exactly. pytorch-optimizer is an optional dependency (the
``all`` extra), imported on first use. The method registry (``training/methods.py``, entry ``looksam``)
builds and steps it through these two.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["looksam_class", "looksam_step"]


@functools.cache
def looksam_class() -> type[Optimizer]:
    """pytorch-optimizer's ``LookSAM`` with a state dict that includes the base optimizer's state."""
    try:
        from pytorch_optimizer import LookSAM
    except ImportError:
        raise ImportError(
            "optimizer 'looksam' needs pytorch-optimizer: pip install 'tensordas[all]' (or pytorch-optimizer)"
        ) from None

    class TensordasLookSAM(LookSAM):
        """``LookSAM`` whose state dict holds the base optimizer's state too (exact resume)."""

        def state_dict(self) -> dict[str, Any]:
            return {"looksam": super().state_dict(), "base": self.base_optimizer.state_dict()}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            if set(state_dict) != {"looksam", "base"}:
                raise ValueError("state dict was not saved by LookSAM (expected keys 'looksam' and 'base')")
            super().load_state_dict(state_dict["looksam"])
            self.base_optimizer.load_state_dict(state_dict["base"])
            self.param_groups = self.base_optimizer.param_groups  # shared again, as after __init__

    TensordasLookSAM.__name__ = TensordasLookSAM.__qualname__ = "LookSAM"
    return TensordasLookSAM


def looksam_step(optimizer: Any, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One LookSAM step: the gradient at ``w`` always, the gradient at ``w + e`` every ``k``-th step.

    ``first_step`` (which zeroes the gradient) is called only on those steps; ``second_step``
    restores ``w``, mixes in the stored direction on the other steps, takes the base step and counts
    the step. Returns the loss at ``w``.
    """
    loss = closure()
    if optimizer.get_step() % optimizer.k == 0:
        optimizer.first_step(zero_grad=True)
        closure()
    optimizer.second_step()
    return loss
