"""Non-finite gradients: the ``nonfinite="warn" | "skip" | "raise"`` option of DAS, BAR and SAM.

- ``warn`` (default): the step goes on (DAS/BAR leave the affected core group unscaled, SAM perturbs
  as usual) and a warning names the group once per run. Counting happens on the device; the counts
  are read back only when that costs no host synchronisation (on CPU at once; on CUDA from a
  pinned host copy taken without blocking at an earlier step, once its copy event has completed),
  so the warning may come a step or two late on a GPU.
- ``skip``: the whole step is skipped (no scaling or perturbation, no base step, base state and
  step counter unchanged) and counted. Deciding that needs one host read of a flag per step.
- ``raise``: ``FloatingPointError`` naming the group, before anything changed (one read per step).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable

import torch

from ._dtensor import all_reduce_sum, is_dtensor, local, shard_group

NONFINITE_MODES = ("warn", "skip", "raise")

_INTERNAL = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(torch.__file__)))


def warn_user(message: str) -> None:
    """``warnings.warn(message, RuntimeWarning)`` attributed to the first frame outside this package
    and torch (the user's ``opt.step()``), whatever the wrappers and decorators in between."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RuntimeWarning, stacklevel=level)


def check_nonfinite_mode(mode: str) -> None:
    """Raise ``ValueError`` naming ``mode`` unless it is one of :data:`NONFINITE_MODES`."""
    if mode not in NONFINITE_MODES:
        raise ValueError(f"Invalid nonfinite: {mode!r} (expected 'warn', 'skip' or 'raise')")


class NonfiniteCounter:
    """Per-name counts of steps with a non-finite gradient, kept on the device.

    The fused device path counts "steps minus finite steps" without a negation kernel: it
    subtracts each step's finite flags from ``acc`` and adds 1 to the host integer ``offset``;
    the count of name ``i`` is ``acc[i] + offset``.
    """

    def __init__(self, names: list[str], device: torch.device) -> None:
        self.names = names
        self.acc = torch.zeros(len(names), dtype=torch.int64, device=device)
        self.offset = 0
        self.warned: set[str] = set()
        self._pinned: torch.Tensor | None = None
        self._event = None
        self._pending_offset: int | None = None

    # ------------------------------------------------------------------ updates
    def sub_finite_(self, finite: torch.Tensor) -> None:
        """Count every name whose ``finite`` flag (bool tensor) is False; no host sync."""
        self.acc.add_(finite, alpha=-1)
        self.offset += 1

    def add_(self, flags: list[bool] | torch.Tensor) -> None:
        """Count the names whose flag is True (a host list or a device bool tensor)."""
        if isinstance(flags, torch.Tensor):
            self.acc.add_(flags.to(self.acc.device, torch.int64))
        elif any(flags):
            self.acc.add_(torch.tensor(flags, dtype=torch.int64).to(self.acc.device))

    # ------------------------------------------------------------------ reads
    def counts(self) -> list[int]:
        """The counts per name (reads the device)."""
        return [int(v) + self.offset for v in self.acc.tolist()]

    def load(self, counts: torch.Tensor) -> None:
        """Set the counts (from a checkpoint)."""
        self.acc.copy_(torch.as_tensor(counts, dtype=torch.int64))
        self.offset = 0
        self._pending_offset = None

    def poll(self, message: Callable[[list[str]], str]) -> None:
        """Warn once for each name counted since the last warning, reading only what is free to read."""
        if self.acc.device.type != "cuda":
            self._warn_new(self.counts(), message)
            return
        if self._pending_offset is not None and self._event.query():
            self._warn_new([int(v) + self._pending_offset for v in self._pinned.tolist()], message)
            self._pending_offset = None
        if self._pending_offset is None and len(self.warned) < len(self.names):
            if self._pinned is None:
                self._pinned = torch.empty(len(self.names), dtype=torch.int64, pin_memory=True)
                self._event = torch.cuda.Event()
            self._pinned.copy_(self.acc, non_blocking=True)
            self._event.record()
            self._pending_offset = self.offset

    def warn_names(self, names: list[str], message: Callable[[list[str]], str]) -> None:
        """Warn about ``names`` not warned about before (when the host already knows them)."""
        new = [n for n in names if n not in self.warned]
        if new:
            self.warned.update(new)
            warn_user(message(new))

    def _warn_new(self, counts: list[int], message: Callable[[list[str]], str]) -> None:
        self.warn_names([n for n, c in zip(self.names, counts) if c > 0], message)


def nonfinite_flags(grads: list[torch.Tensor], params: list[torch.Tensor]) -> list[bool]:
    """Per tensor of ``grads``: whether it holds a NaN/Inf (one fused max-norm kernel, no overflow
    of squares, one host read). Under FSDP2 the flags are OR-ed over the shards with one all-reduce,
    so every rank takes the same decision."""
    shards = None
    if any(is_dtensor(p) for p in params):
        shards = shard_group(params)
        grads = [local(g) for g in grads]
    full = [i for i, g in enumerate(grads) if g.numel()]  # an empty shard holds no NaN (and has no max)
    device = grads[0].device
    bad = torch.zeros(len(grads), dtype=torch.float32, device=device)
    if full:
        peaks = torch.stack([t.to(device) for t in torch._foreach_norm([grads[i] for i in full], math.inf)])
        bad[full] = (~torch.isfinite(peaks)).to(torch.float32)
    bad = all_reduce_sum(bad, shards)
    return [v > 0 for v in bad.tolist()]
