"""Shared machinery of optimizers that rescale cores before the base step (DAS, BAR).

Every step gathers the cores that have a gradient into one flat list ("plan"), computes all
squared norms of cores and gradients with two fused ``torch._foreach_norm`` calls, lets the
subclass turn the flat statistics into one scale per core, and applies them with one fused
``torch._foreach_mul_``. The kernel count does not grow with the number of groups and nothing
in ``step()`` reads a value back to the host.

Applying per-core scales: ``torch._foreach_mul_`` with a list of 0-dim tensors is fused only
for same-shape operands, so on CUDA it would launch one kernel per core. There the scales are
expanded to one value per element and multiplied through same-shape views. The expanded
buffer is bounded (``EXPAND_CHUNK`` elements): cores are packed into batches of at most that
size, and a core larger than it is multiplied on its own (its kernel is worth a launch), so
the extra memory stays constant and the kernel count grows only with the cores' total size,
not with the number of groups. On CPU, where foreach kernels loop per tensor anyway, the
0-dim list is cheaper and needs no buffer.

On CPU there is no device to synchronise with, and the ~40 tiny tensor operations of the flat
path cost more than the arithmetic itself, so a subclass may offer ``_host_scales``: the same
formula on Python floats, fed by one fused norm call and applied by one fused multiply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..core_groups import CoreGroup, as_core_groups
from ._dtensor import all_reduce_sum, is_dtensor, local, shard_group
from ._wrapper import BaseOptimizerWrapper, base_accepts, check_dense_grads, check_non_negative
from .schedules import check_alpha_schedule, scheduled_alpha


def accumulation_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    """float64 if any tensor is float64, else float32: bf16/fp16 norms would lose the statistics."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list as a device tensor without making the host wait (pinned, non-blocking copy)."""
    t = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@dataclass
class FlatStats:
    """Flat per-core statistics of the cores that have a gradient at this step."""

    n: torch.Tensor  # squared core norms, shape (K,)
    gamma: torch.Tensor  # squared gradient norms, shape (K,)
    group_index: torch.Tensor  # group of each core, shape (K,), int64
    group_count: torch.Tensor  # cores with a gradient per group, shape (num_groups,), int64
    num_groups: int
    eta: torch.Tensor | float  # learning rate of each core's param group, (K,) or a scalar
    global_sq_norm: torch.Tensor | None  # squared gradient norm of all optimizer parameters


# Elements of the transient buffer that applies expanded scales (4 MiB in float32).
EXPAND_CHUNK = 1 << 20


@dataclass
class _ExpandBatch:
    """Cores whose scales are expanded to elements together (at most ``EXPAND_CHUNK`` of them)."""

    index: list[int]  # positions in the plan's cores
    index_tensor: torch.Tensor | None  # the same on the device; None when it is every core in order
    numels: list[int]
    numel_tensor: torch.Tensor
    total: int


@dataclass
class _ExpandLayout:
    batches: list[_ExpandBatch]
    large: list[int]  # positions of cores of EXPAND_CHUNK elements or more, multiplied one by one


def _expand_layout(numels: list[int], device: torch.device, chunk: int) -> _ExpandLayout:
    groups, large, current, size = [], [], [], 0
    for i, n in enumerate(numels):
        if n >= chunk:
            large.append(i)
            continue
        if current and size + n > chunk:
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        groups.append(current)
    batches = []
    for index in groups:
        whole = index == list(range(len(numels)))
        sizes = [numels[i] for i in index]
        batches.append(
            _ExpandBatch(
                index=index,
                index_tensor=None if whole else to_device(index, torch.int64, device),
                numels=sizes,
                numel_tensor=to_device(sizes, torch.int64, device),
                total=sum(sizes),
            )
        )
    return _ExpandLayout(batches, large)


@dataclass
class _Plan:
    """The cores that have a gradient at this step, in group order, and what indexes them."""

    cores: list[torch.Tensor]
    group_index: torch.Tensor  # (K,) int64 on the cores' device
    group_count: torch.Tensor  # (number of groups,) int64: cores with a gradient per group
    param_group_of_core: list[int]
    numels: list[int]
    group_index_list: list[int]  # the same as group_index, on the host (CPU path)
    expand: _ExpandLayout | None = None  # built on first use of the expand strategy


class CoreScalingOptimizer(BaseOptimizerWrapper):
    """Base class: rescale each core group's cores, then take the base optimizer's step.

    Subclasses implement :meth:`_flat_scales`.
    """

    def __init__(
        self,
        params,
        base_optimizer,
        core_groups,
        alpha: float,
        alpha_schedule: str,
        total_steps: int | None,
        need_global_norm: bool,
        foreach: bool | None,
        **kwargs: Any,
    ) -> None:
        check_non_negative("alpha", alpha)
        check_alpha_schedule(alpha_schedule, total_steps)
        if foreach is not None and base_accepts(base_optimizer, "foreach"):
            kwargs["foreach"] = foreach
        super().__init__(params, base_optimizer, {}, **kwargs)
        self.alpha = float(alpha)
        self.alpha_schedule = alpha_schedule
        self.total_steps = total_steps
        self.foreach = foreach is not False
        self._need_global_norm = need_global_norm
        self.core_groups: list[CoreGroup] = self._checked_groups(core_groups)
        self._step_count = 0
        device = self.core_groups[0].cores[0].device
        # Per group: how many steps were skipped because a gradient norm was not finite.
        self._nonfinite_skips = torch.zeros(len(self.core_groups), dtype=torch.int64, device=device)
        self._plan_key: tuple | None = None
        self._plan: _Plan | None = None

    # ----------------------------------------------------------------- set-up
    def _checked_groups(self, core_groups) -> list[CoreGroup]:
        if core_groups is None:
            raise ValueError("core_groups is required: pass td.find_core_groups(model) or a list of lists of tensors")
        groups = as_core_groups(core_groups)
        if not groups:
            raise ValueError("core_groups is empty: DAS needs at least one core group")
        held = {id(p) for g in self.param_groups for p in g["params"]}
        seen: dict[int, str] = {}
        kept = []
        for g in groups:
            cores = []
            for c in g.cores:
                if not isinstance(c, torch.Tensor):
                    raise TypeError(f"core group {g.name!r} holds a {type(c).__name__}, not a tensor")
                if not c.is_floating_point():
                    raise ValueError(f"core group {g.name!r} holds a {c.dtype} core; cores must be real floating point")
                if id(c) in seen:
                    raise ValueError(f"a core of group {g.name!r} is also in group {seen[id(c)]!r}")
                seen[id(c)] = g.name
                if id(c) not in held:
                    if c.requires_grad:
                        raise ValueError(
                            f"a core of group {g.name!r} (shape {tuple(c.shape)}) is not among the optimizer's "
                            "parameters; pass every trainable core to the optimizer"
                        )
                    continue  # a frozen core is never scaled
                cores.append(c)
            if len(cores) >= 2:
                kept.append(CoreGroup(g.name, cores))
        if not kept:
            raise ValueError("no core group has two or more cores held by this optimizer")
        devices = {c.device for g in kept for c in g.cores}
        if len(devices) > 1:
            raise ValueError(f"all cores must live on one device, found {sorted(map(str, devices))}")
        return kept

    def _current_plan(self) -> _Plan:
        """The cores that have a gradient now; rebuilt only when that set or the groups change."""
        has_grad = tuple(c.grad is not None for g in self.core_groups for c in g.cores)
        key = (has_grad, id(self.param_groups), len(self.param_groups))
        if key != self._plan_key:
            pg_of = {id(p): i for i, pg in enumerate(self.param_groups) for p in pg["params"]}
            cores, index = [], []
            for gi, g in enumerate(self.core_groups):
                for c in g.cores:
                    if c.grad is not None:
                        cores.append(c)
                        index.append(gi)
            check_dense_grads(cores)
            device = self.core_groups[0].cores[0].device
            numels = [local(c).numel() for c in cores]  # of the local shard under FSDP2
            self._plan = _Plan(
                cores=cores,
                group_index=to_device(index, torch.int64, device),
                group_count=to_device([index.count(g) for g in range(len(self.core_groups))], torch.int64, device),
                param_group_of_core=[pg_of[id(c)] for c in cores],
                numels=numels,
                group_index_list=index,
            )
            self._plan_key = key
        return self._plan

    # ------------------------------------------------------------------ state
    @property
    def step_count(self) -> int:
        """Number of completed steps (drives the alpha schedule)."""
        return self._step_count

    @property
    def alpha_t(self) -> float:
        """The scaling strength the next step will use."""
        return scheduled_alpha(self.alpha, self.alpha_schedule, self._step_count, self.total_steps)

    @property
    def skipped_steps(self) -> int:
        """Group-steps left unscaled because a gradient norm was NaN/Inf (reads the device)."""
        return int(self._nonfinite_skips.sum())

    def skipped_per_group(self) -> dict[str, int]:
        """Unscaled group-steps per core group name (reads the device)."""
        return {g.name: int(k) for g, k in zip(self.core_groups, self._nonfinite_skips.tolist())}

    def _extra_state(self) -> dict[str, Any]:
        return {
            "step": self._step_count,
            "nonfinite_skips": self._nonfinite_skips.clone(),
            "alpha": self.alpha,
            "alpha_schedule": self.alpha_schedule,
            "total_steps": self.total_steps,
        }

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        missing = {"step", "nonfinite_skips"} - extra.keys()
        if missing:
            raise ValueError(f"state dict lacks {sorted(missing)} in its {type(self).__name__} section")
        skips = torch.as_tensor(extra["nonfinite_skips"])
        if skips.shape != self._nonfinite_skips.shape:
            raise ValueError(
                f"state dict has {skips.numel()} core groups, this optimizer has {self._nonfinite_skips.numel()}"
            )

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._step_count = int(extra["step"])
        self._nonfinite_skips.copy_(torch.as_tensor(extra["nonfinite_skips"], dtype=torch.int64))
        self._plan_key = None

    # ------------------------------------------------------------------- step
    def _core_eta(self, plan: _Plan, device: torch.device, dtype: torch.dtype) -> torch.Tensor | float:
        lrs = [self.param_groups[i]["lr"] for i in plan.param_group_of_core]
        if any(isinstance(lr, torch.Tensor) for lr in lrs):
            return torch.stack([torch.as_tensor(lr, dtype=dtype).to(device) for lr in lrs])
        if all(lr == lrs[0] for lr in lrs):
            return float(lrs[0])
        return to_device(lrs, dtype, device)

    def _squared_norms(self, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Squared norms of all cores then all their gradients (one fused call), and of the other
        gradients the optimizer holds when the global norm is needed (None otherwise)."""
        cores = plan.cores
        others = self._other_grads(cores) if self._need_global_norm else []
        dtype = accumulation_dtype(cores + others)
        if is_dtensor(cores[0]):
            return self._sharded_squared_norms(cores, others, dtype)
        sq = torch.stack(torch._foreach_norm(cores + [c.grad for c in cores], 2, dtype=dtype)).square_()
        if not self._need_global_norm:
            return sq, None
        if not others:
            return sq, sq.new_zeros(())
        return sq, torch.stack(torch._foreach_norm(others, 2, dtype=dtype)).to(sq.device).square_().sum()

    def _other_grads(self, cores: list[torch.Tensor]) -> list[torch.Tensor]:
        """The gradients of the optimizer's parameters that are not among ``cores``."""
        core_ids = {id(c) for c in cores}
        others = [p for pg in self.param_groups for p in pg["params"] if p.grad is not None and id(p) not in core_ids]
        check_dense_grads(others)
        return [p.grad for p in others]

    def _sharded_squared_norms(
        self, cores: list[torch.Tensor], others: list[torch.Tensor], dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """FSDP2 (DTensor cores): ``_foreach_norm`` on DTensors gives ``_NormPartial`` norms
        (whose in-place ``square_()`` raises, and which would take one collective per core), so
        square the norms of the local shards and sum them over the shards with ONE all-reduce
        for all cores, gradients and (for the global norm) the other gradients together."""
        shards = shard_group(cores + others)
        pieces = [local(c) for c in cores] + [local(c.grad) for c in cores]
        sq = torch.stack(torch._foreach_norm(pieces, 2, dtype=dtype)).square_()
        if not self._need_global_norm:
            return all_reduce_sum(sq, shards), None
        others_sq = sq.new_zeros(1)
        if others:
            others_sq = torch.stack(torch._foreach_norm([local(g) for g in others], 2, dtype=dtype))
            others_sq = others_sq.to(sq.device).square_().sum().reshape(1)
        sq = all_reduce_sum(torch.cat([sq, others_sq]), shards)
        return sq[:-1], sq[-1]

    def _flat_stats(self, plan: _Plan) -> FlatStats:
        sq, others_sq = self._squared_norms(plan)
        n, gamma = sq[: len(plan.cores)], sq[len(plan.cores) :]
        global_sq = None if others_sq is None else gamma.sum() + others_sq
        dtype = sq.dtype
        return FlatStats(
            n=n,
            gamma=gamma,
            group_index=plan.group_index,
            group_count=plan.group_count,
            num_groups=len(self.core_groups),
            eta=self._core_eta(plan, n.device, dtype),
            global_sq_norm=global_sq,
        )

    def _flat_scales(self, stats: FlatStats, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (scale per core, bool per group: skipped for a non-finite gradient)."""
        raise NotImplementedError

    def _single_tensor_rescale(self, alpha: float) -> None:
        """The readable per-group reference path (``foreach=False``)."""
        raise NotImplementedError

    # Subclasses that implement _host_scales get the CPU path; tests switch it off to compare paths.
    _host_path = False

    def _host_scales(
        self, n: list[float], gamma: list[float], plan: _Plan, eta: list[float], alpha: float, global_sq: float | None
    ) -> tuple[list[float], list[bool]]:
        """(scale per core, skipped per group) on Python floats; see the module docstring."""
        raise NotImplementedError

    def _host_rescale(self, plan: _Plan, alpha: float) -> None:
        sq, others_sq = self._squared_norms(plan)
        values = sq.tolist()  # a CPU tensor: reading it back waits for nothing
        k = len(plan.cores)
        n, gamma = values[:k], values[k:]
        global_sq = None if others_sq is None else math.fsum(gamma) + float(others_sq)
        eta = [float(self.param_groups[i]["lr"]) for i in plan.param_group_of_core]
        scales, skipped = self._host_scales(n, gamma, plan, eta, alpha, global_sq)
        if any(skipped):
            self._nonfinite_skips.add_(torch.tensor(skipped, dtype=torch.int64))
        torch._foreach_mul_([local(c) for c in plan.cores], scales)

    @torch.no_grad()
    def rescale_cores(self) -> None:
        """Apply this step's core scaling without the base step (``step()`` calls it)."""
        alpha = self.alpha_t
        if alpha == 0.0:
            return  # alpha = 0 is exactly the base optimizer
        if not self.foreach:
            if is_dtensor(self.core_groups[0].cores[0]):
                raise NotImplementedError("foreach=False is not supported with DTensor (FSDP2) parameters")
            check_dense_grads([p for pg in self.param_groups for p in pg["params"]])
            self._single_tensor_rescale(alpha)
            return
        plan = self._current_plan()
        if not plan.cores:
            return
        if self._host_path and plan.cores[0].device.type == "cpu":
            self._host_rescale(plan, alpha)
            return
        scales, skipped = self._flat_scales(self._flat_stats(plan), alpha)
        self._nonfinite_skips.add_(skipped.to(torch.int64))
        self._apply_scales(plan, scales, expand=plan.cores[0].is_cuda)

    @staticmethod
    def _apply_scales(plan: _Plan, scales: torch.Tensor, expand: bool) -> None:
        """``G_k *= s_k`` for every core (see the module docstring for the two strategies); under
        FSDP2 on each core's local shard (``plan.numels`` are local numels then)."""
        cores = [local(c) for c in plan.cores]
        if not expand:
            torch._foreach_mul_(cores, list(scales.unbind()))
            return
        if plan.expand is None:
            plan.expand = _expand_layout(plan.numels, scales.device, EXPAND_CHUNK)
        for batch in plan.expand.batches:
            s = scales if batch.index_tensor is None else scales.index_select(0, batch.index_tensor)
            full = torch.repeat_interleave(s, batch.numel_tensor, output_size=batch.total)
            members = [cores[i] for i in batch.index]
            torch._foreach_mul_(members, [v.view(c.shape) for v, c in zip(full.split(batch.numels), members)])
        for i in plan.expand.large:
            cores[i].mul_(scales[i])

    @torch.no_grad()
    def step(self, closure=None):
        """Rescale the cores, then take the base optimizer's step with the unchanged gradients."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.rescale_cores()
        self.base_optimizer.step()
        self._step_count += 1
        return loss
