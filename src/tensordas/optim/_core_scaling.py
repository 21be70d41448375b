"""Shared machinery of optimizers that rescale cores before the base step (DAS, BAR).

Three code paths compute the same scales (STYLE: reference path + fast paths + parity tests):

- **reference** (``foreach=False``): a readable loop over groups, one small tensor op at a time.
- **host** (CPU tensors): one fused norm kernel, the per-core formula on Python floats, one fused
  multiply. On CPU there is no device to wait for, and a few dozen tiny tensor ops cost more than
  the arithmetic itself.
- **device** (CUDA, or CPU when ``_host_path`` is switched off): a constant number of operators
  per step, whatever the number of cores and groups, and no host synchronisation. Everything that
  depends only on the set of cores with a gradient (the "plan") is built once and reused: a flat
  buffer whose 0-dim views receive the squared norms of all cores and gradients from ONE fused
  kernel, the core-to-group index, per-group and per-core scratch rows, the per-core learning-rate
  vector, and the layout that applies the scales. The subclass turns the flat norms into one scale
  per core with a handful of operators over flat tensors (segment sums by ``index_add``, one
  ``index_select`` to bring the group values back to the cores).

Applying per-core scales on a GPU: ``torch._foreach_mul_`` with a list of 0-dim tensors is fused
only for same-shape operands, so it would launch one kernel per core. The device path expands the
scales to one value per element (one ``index_select`` into a persistent buffer) and multiplies
through persistent same-shape views of that buffer: one fused kernel. The buffer is bounded
(``EXPAND_CHUNK`` elements): cores are packed into batches of at most that size that reuse it one
after the other (three operators per batch when there are several), and cores larger than it are
multiplied through stride-0 views of their scale (their kernels are worth a launch), so the extra
memory stays constant. The host path multiplies by a list of Python floats.

Everything ``step()`` changes lives in a plain ``_RunState`` object (or in tensors updated in
place), not in attributes of the optimizer: ``torch.compile`` drops attribute assignments made on
a ``torch.optim.Optimizer`` instance inside a compiled step (seen with torch 2.13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core_groups import CoreGroup, as_core_groups
from ._dtensor import all_reduce_sum, is_dtensor, local, shard_group
from ._nonfinite import NonfiniteCounter, check_nonfinite_mode, nonfinite_flags, warn_user
from ._wrapper import BaseOptimizerWrapper, base_accepts, check_dense_grads, check_non_negative
from .schedules import check_alpha_schedule, scheduled_alpha

# One fused kernel for squared norms where torch has it (2.13; 2.11?); otherwise norms, then a square.
# (The ATen overload: torch.compile traces it, while it does not know torch._foreach_powsum yet.)
_POWSUM = getattr(getattr(torch.ops.aten, "_foreach_powsum", None), "Scalar", None)

# Elements of the buffer that applies expanded scales: 16 MiB in float32 (plus an int32 index of the
# same size when all cores fit), so that models with up to 4M elements in their cores (a
# TR-ResNet, LoRA on every projection of a 24-layer 1024-wide encoder) take a single batch.
EXPAND_CHUNK = 1 << 22


def accumulation_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    """float64 if any tensor is float64, else float32: bf16/fp16 norms would lose the statistics."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def to_device(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A host list as a device tensor without making the host wait (pinned, non-blocking copy)."""
    t = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def equivalent_scale(eta: float, c: float) -> float:
    """The weight-form scale whose norm drift the gradient term ``c G_k`` gives to first order."""
    return math.sqrt(max(1.0 - 2.0 * eta * c, 0.0))


def squared_norms(tensors: list[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """``||t||_F^2`` of each tensor, accumulated in ``dtype``, by one fused kernel (two on old torch)."""
    if _POWSUM is not None:
        return list(_POWSUM(tensors, 2, dtype))
    return list(torch._foreach_pow(torch._foreach_norm(tensors, 2, dtype=dtype), 2))


def _one_vector(outs: list[torch.Tensor]) -> torch.Tensor | None:
    """The vector that ``outs`` are consecutive 0-dim views of, or None. The CUDA foreach norm
    kernels return their results that way; reading the vector saves a copy kernel per 64-odd
    results. (Not under torch.compile, where the results are traced values.)"""
    if torch.compiler.is_compiling():
        return None
    base = outs[0]._base
    if base is None or base.dim() != 1 or base.numel() != len(outs) or not base.is_contiguous():
        return None
    step, start = base.element_size(), base.data_ptr()
    if outs[0].data_ptr() != start or outs[-1].data_ptr() != start + (len(outs) - 1) * step:
        return None
    if len(outs) > 1 and outs[1].data_ptr() != start + step:
        return None
    return base


def squared_norms_into(tensors: list[torch.Tensor], dtype: torch.dtype, out: torch.Tensor) -> None:
    """Write ``||tensors[i]||^2`` into ``out[i]``: one fused kernel and one copy (or a fused stack)."""
    outs = _POWSUM(tensors, 2, dtype) if _POWSUM is not None else torch._foreach_norm(tensors, 2, dtype=dtype)
    base = _one_vector(outs)
    if base is not None and base.dtype == out.dtype:
        out.copy_(base)
    else:
        torch.stack(outs, out=out)
    if _POWSUM is None:
        out.square_()


# --------------------------------------------------------------------------- plan
@dataclass
class _Plan:
    """The cores that have a gradient at this step, in group order, and what indexes them."""

    cores: list[torch.Tensor]
    others: list[torch.Tensor]  # optimizer parameters outside the groups that have a gradient (when needed)
    group_index_list: list[int]
    param_group_of_core: list[int]
    numels: list[int]  # of the local shard under FSDP2
    group_index: torch.Tensor  # (K,) int64 on the cores' device
    group_count: torch.Tensor  # (number of groups,) int64: cores with a gradient per group
    sharded: bool
    param_groups_used: tuple[int, ...] = ()
    flat: Any = None  # device-path buffers (_Flat), built on first use
    eta_key: tuple | None = None
    eta_vec: torch.Tensor | None = None
    eta_scaled: dict = field(default_factory=dict)
    pg_index: torch.Tensor | None = None


class Eta:
    """The learning rate of each core: a float when all share one, else a (K,) device tensor."""

    def __init__(self, value: float | torch.Tensor, plan: _Plan | None = None) -> None:
        self.value = value
        self._plan = plan

    @property
    def is_scalar(self) -> bool:
        return not isinstance(self.value, torch.Tensor)

    def times(self, factor: float) -> float | torch.Tensor:
        """``factor * eta`` (cached per plan for a constant learning-rate vector)."""
        if self.is_scalar:
            return factor * self.value
        if self._plan is None:
            return self.value * factor
        cache = self._plan.eta_scaled
        if factor not in cache:
            cache[factor] = self.value * factor
        return cache[factor]


def _fresh_views() -> bool:
    """Whether to slice views from their buffers now rather than reuse the stored ones. Under
    torch.compile every buffer enters the graph once and its views are made inside the graph:
    views of one buffer passed as separate graph inputs are fragile under inductor (aliased
    inputs). In eager mode the stored views save one operator each per step."""
    return torch.compiler.is_compiling()


class _ExpandBatch:
    """Cores whose scales are expanded to elements together (at most ``EXPAND_CHUNK`` elements)."""

    def __init__(self, index: list[int], numels: list[int], shapes: list, s: torch.Tensor, buffer: torch.Tensor):
        self.index, self.numels, self.shapes = index, numels, shapes
        self.total = sum(numels)
        self.members: list[torch.Tensor] | None = None
        contiguous = index == list(range(index[0], index[0] + len(index)))
        self.positions = None if contiguous else to_device(index, torch.int64, s.device)
        self.counts = to_device(numels, torch.int64, s.device)
        self.element_index: torch.Tensor | None = None
        self._views = self._make_views(s, buffer)

    def _make_views(self, s: torch.Tensor, buffer: torch.Tensor):
        out = buffer[: self.total]
        parts = [v.view(shape) for v, shape in zip(out.split(self.numels), self.shapes)]
        source = s[self.index[0] : self.index[0] + len(self.index)] if self.positions is None else None
        return out, parts, source

    def expand(self, s: torch.Tensor, buffer: torch.Tensor) -> list[torch.Tensor]:
        """Write each core's scale into its elements of the shared buffer; the per-core views of it."""
        out, parts, source = self._make_views(s, buffer) if _fresh_views() else self._views
        if self.element_index is not None:  # the single-batch layout: one gather
            torch.index_select(s, 0, self.element_index, out=out)
        else:
            source = source if source is not None else s.index_select(0, self.positions)
            out.copy_(torch.repeat_interleave(source, self.counts, output_size=self.total))
        return parts

    def __call__(self, members: list[torch.Tensor], s: torch.Tensor, buffer: torch.Tensor) -> None:
        """Multiply each member by its scale (expanded through the shared buffer)."""
        torch._foreach_mul_(members, self.expand(s, buffer))


class _ApplyLayout:
    """``G_k *= s_k`` for every core with a constant number of operators (see the module docstring).

    Memory: one shared buffer of at most ``chunk`` elements (and, when all cores fit in one batch,
    an int32 index of the same size); several batches expand their scales one after the other.
    """

    def __init__(self, shapes: list, numels: list[int], s: torch.Tensor, chunk: int) -> None:
        groups, current, size = [], [], 0
        self.large = []
        for i, n in enumerate(numels):
            if n >= chunk:
                self.large.append(i)
                continue
            if current and size + n > chunk:
                groups.append(current)
                current, size = [], 0
            current.append(i)
            size += n
        if current:
            groups.append(current)
        totals = [sum(numels[i] for i in ix) for ix in groups]
        self.buffer = torch.empty(max(totals, default=0), dtype=s.dtype, device=s.device)
        self.batches = [
            _ExpandBatch(ix, [numels[i] for i in ix], [shapes[i] for i in ix], s, self.buffer) for ix in groups
        ]
        if len(self.batches) == 1:
            b = self.batches[0]
            positions = to_device(b.index, torch.int32, s.device)
            b.element_index = torch.repeat_interleave(positions, b.counts, output_size=b.total)
        self.large_shapes = [shapes[i] for i in self.large]
        self.large_views = self._large_views(s)
        self.s = s

    def _large_views(self, s: torch.Tensor) -> list[torch.Tensor]:
        return [s[i].expand(shape) for i, shape in zip(self.large, self.large_shapes)]

    def __call__(self, cores: list[torch.Tensor], fixed: bool) -> None:
        """Multiply ``cores`` (the plan's, or their local shards) by the scales in ``self.s``."""
        for b in self.batches:
            members = b.members
            if members is None:
                members = [cores[i] for i in b.index]
                if fixed:
                    b.members = members
            b(members, self.s, self.buffer)
        if self.large:
            views = self._large_views(self.s) if _fresh_views() else self.large_views
            torch._foreach_mul_([cores[i] for i in self.large], views)

    def add_scaled(self, targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
        """``targets[k] += s_k * sources[k]`` with the same constant number of operators (DAS's gradient
        form adds ``c_k G_k`` to the gradients; the gradient tensors change between steps, so none is kept)."""
        for b in self.batches:
            parts = b.expand(self.s, self.buffer)
            torch._foreach_addcmul_([targets[i] for i in b.index], [sources[i] for i in b.index], parts)
        if self.large:
            views = self._large_views(self.s) if _fresh_views() else self.large_views
            torch._foreach_addcmul_([targets[i] for i in self.large], [sources[i] for i in self.large], views)


class _FlatViews:
    """Named views of a :class:`_Flat`'s buffers (the layout is described there)."""

    def __init__(self, f: _Flat) -> None:
        k, o, rows = f.k, f.o, f.nrows
        buf = f.buf
        self.n = buf[:k]
        self.others_sq = buf[k : k + o]
        self.gamma = buf[k + o : 2 * k + o]
        self.grad_sq = buf[k : 2 * k + o + 1]  # the other gradients, the cores' gradients, tiny
        self.reduced = buf[: 2 * k + o]  # what the norm kernel writes (and FSDP2 sums over shards)
        if rows == 1:
            self.block, self.rows, self.seg_rows = self.gamma, [self.gamma], [f.seg]
        else:
            self.block = buf[k + o :].view(rows, k + 1)[:, :k]
            self.rows, self.seg_rows = list(self.block.unbind(0)), list(f.seg.unbind(0))
        self.S = self.seg_rows[0]
        self.pg_rows, self.pk_rows = list(f.pg.unbind(0)), list(f.pk.unbind(0))


class _Flat:
    """Device-path buffers of one plan (module docstring): built once, overwritten every step.

    ``buf`` holds ``[n (K) | others (O) | gamma (K) | tiny | extra rows, each K values and a gap]``
    where ``tiny`` is the dtype's smallest normal number: the sum of ``buf[K:2K+O+1]`` is the
    squared global gradient norm, positive even when every gradient is zero (and equal to it
    otherwise: ``tiny`` is below the last bit of any normal sum). The segment sums read ``block``
    (gamma, or gamma and the extra rows as a (rows, K) view) into ``seg``, starting from
    ``seg_zero`` (whose first row is ``tiny`` when ``tiny_base``); the subclass writes per-group
    values into the rows of ``pg`` and gathers them into ``pk``. :meth:`views` names the views.
    """

    def __init__(
        self, plan: _Plan, num_groups: int, dtype: torch.dtype, rows: int, pg_rows: int, tiny_base: bool = False
    ) -> None:
        k, o, g = len(plan.cores), len(plan.others), num_groups
        device = plan.group_index.device
        self.k, self.o, self.nrows = k, o, rows
        self.dtype = dtype
        self.tiny = torch.finfo(dtype).tiny
        self.group_index = plan.group_index
        self.buf = torch.zeros(k + o + rows * (k + 1), dtype=dtype, device=device)
        self.buf[2 * k + o] = self.tiny
        self.seg_dim = 0 if rows == 1 else 1
        self.seg_zero = torch.zeros((g,) if rows == 1 else (rows, g), dtype=dtype, device=device)
        if tiny_base:
            self.seg_zero[0] = self.tiny
        self.seg = torch.zeros_like(self.seg_zero)
        self.count = plan.group_count.to(dtype)
        self.pg = torch.zeros(max(pg_rows, 1), g, dtype=dtype, device=device)
        self.pk = torch.zeros(max(pg_rows, 1), k, dtype=dtype, device=device)
        self.ones = torch.ones(k, dtype=dtype, device=device)
        self.s = torch.ones(k, dtype=dtype, device=device)
        shapes = [local(c).shape for c in plan.cores]
        self.apply = _ApplyLayout(shapes, plan.numels, self.s, EXPAND_CHUNK)
        self.extra: dict[str, Any] = {}
        self._views = _FlatViews(self)

    def views(self) -> _FlatViews:
        """The named views (stored ones in eager mode, sliced afresh under torch.compile)."""
        return _FlatViews(self) if _fresh_views() else self._views


@dataclass
class _Record:
    """What the last scaling step kept for :meth:`CoreScalingOptimizer.last_step_stats` (read lazily)."""

    kind: str  # "flat" (device tensors), "host" (floats) or "groups" (per-group tensors)
    data: Any


class _RunState:
    """What ``step()`` changes, kept off the optimizer object: under ``torch.compile`` (torch 2.13)
    attribute assignments on a ``torch.optim.Optimizer`` instance made inside a compiled ``step``
    are dropped, while those on a plain object are replayed."""

    def __init__(self) -> None:
        self.step = 0
        self.skipped_whole_steps = 0
        self.plan_key: tuple | None = None
        self.plan: _Plan | None = None
        self.record: _Record | None = None
        self.record_eta: Any = None  # the gradient form: each core's learning rate at the recorded step
        self.schedule_warned = False
        self.host_max_dev = 0.0


class CoreScalingOptimizer(BaseOptimizerWrapper):
    """Base class: rescale each core group's cores, then take the base optimizer's step.

    Subclasses implement :meth:`_device_scales` (and optionally :meth:`_host_scales`) and
    :meth:`_single_tensor_rescale`.
    """

    # Rows of the flat buffer that the segment sums read, and per-group rows gathered to cores.
    _flat_rows = 1
    _flat_pg_rows = 1
    _flat_tiny_base = False

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
        nonfinite: str = "warn",
        **kwargs: Any,
    ) -> None:
        check_non_negative("alpha", alpha)
        check_alpha_schedule(alpha_schedule, total_steps)
        check_nonfinite_mode(nonfinite)
        if foreach is not None and base_accepts(base_optimizer, "foreach"):
            kwargs["foreach"] = foreach
        super().__init__(params, base_optimizer, {}, **kwargs)
        self.alpha = float(alpha)
        self.alpha_schedule = alpha_schedule
        self.total_steps = total_steps
        self.foreach = foreach is not False
        self.nonfinite = nonfinite
        self._need_global_norm = need_global_norm
        self.core_groups: list[CoreGroup] = self._checked_groups(core_groups)
        self._run = _RunState()  # everything step() changes (module docstring: torch.compile)
        device = self.core_groups[0].cores[0].device
        # Per group: steps left unscaled because a gradient norm was not finite.
        self._skips = NonfiniteCounter([g.name for g in self.core_groups], device)
        # Largest |s_k - 1| applied since construction (a device scalar, updated without a sync).
        self._max_dev = torch.zeros((), dtype=torch.float32, device=device)

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
        self._all_cores = [c for g in kept for c in g.cores]
        self._core_ids = {id(c) for c in self._all_cores}
        return kept

    def _current_plan(self) -> _Plan:
        """The cores that have a gradient now; rebuilt only when that set or the groups change."""
        has_grad = tuple(c.grad is not None for c in self._all_cores)
        others = self._other_params() if self._need_global_norm else []
        key = (has_grad, tuple(map(id, others)), id(self.param_groups), len(self.param_groups))
        if key != self._run.plan_key:
            pg_of = {id(p): i for i, pg in enumerate(self.param_groups) for p in pg["params"]}
            cores, index = [], []
            for gi, g in enumerate(self.core_groups):
                for c in g.cores:
                    if c.grad is not None:
                        cores.append(c)
                        index.append(gi)
            check_dense_grads(cores + others)
            device = self.core_groups[0].cores[0].device
            self._run.plan = _Plan(
                cores=cores,
                others=others,
                group_index_list=index,
                param_group_of_core=[pg_of[id(c)] for c in cores],
                numels=[local(c).numel() for c in cores],  # of the local shard under FSDP2
                group_index=to_device(index, torch.int64, device),
                group_count=to_device([index.count(g) for g in range(len(self.core_groups))], torch.int64, device),
                sharded=bool(cores) and is_dtensor(cores[0]),
                param_groups_used=tuple(sorted({pg_of[id(c)] for c in cores})),
            )
            self._run.plan_key = key
        return self._run.plan

    def _other_params(self) -> list[torch.Tensor]:
        """The optimizer's parameters outside the core groups that have a gradient."""
        core_ids = self._core_ids
        return [p for pg in self.param_groups for p in pg["params"] if p.grad is not None and id(p) not in core_ids]

    # ------------------------------------------------------------------ state
    @property
    def step_count(self) -> int:
        """Number of completed steps (drives the alpha schedule)."""
        return self._run.step

    @property
    def alpha_t(self) -> float:
        """The scaling strength the next step will use."""
        return scheduled_alpha(self.alpha, self.alpha_schedule, self._run.step, self.total_steps)

    @property
    def skipped_steps(self) -> int:
        """Group-steps left unscaled because a gradient norm was NaN/Inf (reads the device)."""
        return sum(self._skips.counts())

    def skipped_per_group(self) -> dict[str, int]:
        """Unscaled group-steps per core group name (reads the device)."""
        return dict(zip(self._skips.names, self._skips.counts()))

    @property
    def skipped_whole_steps(self) -> int:
        """Steps skipped entirely by ``nonfinite="skip"`` (no scaling, no base step)."""
        return self._run.skipped_whole_steps

    @property
    def max_scale_deviation(self) -> torch.Tensor:
        """``max |s_k - 1|`` over every scale applied since construction: a 0-dim float32 tensor on the
        cores' device, updated inside ``step()`` without a host sync (reading it on a GPU syncs).

        A value <= 1e-6 after many steps means DAS never moved the cores: alpha is too small for
        this learning rate and base optimizer (DAS's drift scales with ``alpha * lr``).
        """
        return self._max_dev

    def _extra_state(self) -> dict[str, Any]:
        return {
            "step": self._run.step,
            "nonfinite_skips": torch.tensor(self._skips.counts(), dtype=torch.int64),
            "skipped_whole_steps": self._run.skipped_whole_steps,
            "max_scale_deviation": float(self._max_dev),
            "alpha": self.alpha,
            "alpha_schedule": self.alpha_schedule,
            "total_steps": self.total_steps,
            "nonfinite": self.nonfinite,
        }

    def _check_extra_state(self, extra: dict[str, Any]) -> None:
        missing = {"step", "nonfinite_skips"} - extra.keys()
        if missing:
            raise ValueError(f"state dict lacks {sorted(missing)} in its {type(self).__name__} section")
        skips = torch.as_tensor(extra["nonfinite_skips"])
        if skips.shape != self._skips.acc.shape:
            have = self._skips.acc.numel()
            raise ValueError(f"state dict has {skips.numel()} core groups, this optimizer has {have}")

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._run.step = int(extra["step"])
        self._skips.load(extra["nonfinite_skips"])
        self._run.skipped_whole_steps = int(extra.get("skipped_whole_steps", 0))
        self._max_dev.fill_(float(extra.get("max_scale_deviation", 0.0)))
        self._run.host_max_dev = 0.0
        self._run.plan_key = None
        self._run.record = None

    # ------------------------------------------------------------------ learning rates
    def _eta(self, plan: _Plan, dtype: torch.dtype, device: torch.device) -> Eta:
        """Each plan core's learning rate: one float when they share it, else a device vector that is
        rebuilt (one pinned, non-blocking copy) only when the param groups' learning rates change."""
        lrs = [pg["lr"] for pg in self.param_groups]
        if any(isinstance(lr, torch.Tensor) for lr in lrs):
            per_group = torch.stack([torch.as_tensor(lr, dtype=dtype).to(device) for lr in lrs])
            return Eta(per_group[self._pg_index(plan, device)])
        used = {lrs[i] for i in plan.param_groups_used}
        if len(used) == 1:
            return Eta(float(used.pop()))
        key = tuple(float(lr) for lr in lrs)
        if plan.eta_key != key:
            plan.eta_vec = to_device(list(key), dtype, device)[self._pg_index(plan, device)]
            plan.eta_key = key
            plan.eta_scaled = {}
        return Eta(plan.eta_vec, plan)

    @staticmethod
    def _pg_index(plan: _Plan, device: torch.device) -> torch.Tensor:
        if plan.pg_index is None:
            plan.pg_index = to_device(plan.param_group_of_core, torch.int64, device)
        return plan.pg_index

    # ------------------------------------------------------------------ subclass hooks
    def _active(self, alpha: float) -> bool:
        """Whether this step scales anything (alpha_t = 0 is exactly the base optimizer)."""
        return alpha != 0.0

    def _device_scales(self, f: _Flat, plan: _Plan, alpha: float, eta: Eta) -> torch.Tensor:
        """Write one scale per plan core into ``f.s`` from the squared norms in ``f``; return each
        group's "gradient finite" flag (bool, on the device). No host synchronisation."""
        raise NotImplementedError

    def _prepare_flat(self, f: _Flat, plan: _Plan) -> None:
        """Add subclass-specific constant tensors to a freshly built :class:`_Flat`."""

    def _single_tensor_rescale(self, alpha: float) -> None:
        """The readable per-group reference path (``foreach=False``)."""
        raise NotImplementedError

    # True: the step adds ``c_k G_k`` to each core's gradient (the values computed are c_k) instead of
    # multiplying the core by ``s_k`` (DAS's gradient form).
    _adds_to_grads = False

    # Subclasses that implement _host_scales get the CPU path; tests switch it off to compare paths.
    _host_path = False

    def _host_scales(
        self, n: list[float], gamma: list[float], plan: _Plan, eta: list[float], alpha: float, global_sq: float | None
    ) -> tuple[list[float], list[bool]]:
        """(scale per core, skipped per group) on Python floats; see the module docstring."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the paths
    def _flat_norms(self, plan: _Plan) -> tuple[list[torch.Tensor], torch.dtype]:
        """The tensors whose squared norms the step needs, in the flat layout's order, and their dtype."""
        cores = plan.cores
        tensors = cores + [p.grad for p in plan.others] + [c.grad for c in cores]
        if plan.sharded:
            tensors = [local(t) for t in tensors]
        return tensors, accumulation_dtype(tensors)

    def _reduce_shards(self, plan: _Plan, t: torch.Tensor) -> None:
        """FSDP2: sum the local shards' squared norms over the shards with ONE all-reduce (in place)."""
        if plan.sharded:
            all_reduce_sum(t, shard_group(plan.cores + plan.others))

    def _device_rescale(self, plan: _Plan, alpha: float) -> None:
        tensors, dtype = self._flat_norms(plan)
        f = plan.flat
        if f is None or f.dtype != dtype:
            f = plan.flat = _Flat(
                plan, len(self.core_groups), dtype, self._flat_rows, self._flat_pg_rows, self._flat_tiny_base
            )
            self._prepare_flat(f, plan)
        v = f.views()
        squared_norms_into(tensors, dtype, v.reduced)
        self._reduce_shards(plan, v.reduced)
        eta = self._eta(plan, dtype, f.s.device)
        finite = self._device_scales(f, plan, alpha, eta)
        self._skips.sub_finite_(finite)
        if self._adds_to_grads:
            # f.s holds c_k; the weight form's equivalent scale deviation is |eta_k c_k| (first order)
            dev = f.s.abs().max() * eta.value if eta.is_scalar else torch.mul(f.s, eta.value).abs_().max()
            torch.maximum(self._max_dev, dev.to(self._max_dev.dtype), out=self._max_dev)
            cores = [local(c) for c in plan.cores] if plan.sharded else plan.cores
            f.apply.add_scaled([c.grad for c in cores], cores)
            self._run.record_eta = eta
        else:
            torch.maximum(self._max_dev, torch.dist(f.s, f.ones, math.inf), out=self._max_dev)
            if plan.sharded:
                f.apply([local(c) for c in plan.cores], fixed=False)
            else:
                f.apply(plan.cores, fixed=True)
        self._run.record = _Record("flat", (plan, f))

    def _host_rescale(self, plan: _Plan, alpha: float) -> None:
        tensors, dtype = self._flat_norms(plan)
        sq = torch.stack(squared_norms(tensors, dtype))
        self._reduce_shards(plan, sq)
        values = sq.tolist()  # a CPU tensor: reading it back waits for nothing
        k, o = len(plan.cores), len(plan.others)
        n, others, gamma = values[:k], values[k : k + o], values[k + o :]
        global_sq = math.fsum(gamma) + math.fsum(others) if self._need_global_norm else None
        eta = [float(self.param_groups[i]["lr"]) for i in plan.param_group_of_core]
        scales, skipped = self._host_scales(n, gamma, plan, eta, alpha, global_sq)
        if any(skipped):
            self._skips.add_(skipped)
            if self.nonfinite == "warn":
                self._skips.warn_names([g for g, s in zip(self._skips.names, skipped) if s], self._nonfinite_message)
        if self._adds_to_grads:  # scales are the coefficients c_k of the gradient form
            deviation = max(abs(e * c) for e, c in zip(eta, scales))
            cores = [local(c) for c in plan.cores]
            torch._foreach_add_([c.grad for c in cores], torch._foreach_mul(cores, scales))
            self._run.record_eta = eta
        else:
            deviation = max(abs(s - 1.0) for s in scales)
            torch._foreach_mul_([local(c) for c in plan.cores], scales)
        if deviation > self._run.host_max_dev:  # a lower bound of _max_dev: touch the tensor only when it grows
            self._run.host_max_dev = deviation
            self._max_dev.clamp_min_(deviation)
        self._run.record = _Record("host", (plan, n, gamma, scales, skipped))

    @torch.no_grad()
    def rescale_cores(self) -> None:
        """Apply this step's core scaling without the base step (``step()`` calls it)."""
        alpha = self.alpha_t
        if not self._active(alpha):
            self._run.record = None
            return
        if not self.foreach:
            if is_dtensor(self.core_groups[0].cores[0]):
                raise NotImplementedError("foreach=False is not supported with DTensor (FSDP2) parameters")
            check_dense_grads([p for pg in self.param_groups for p in pg["params"]])
            self._run.record = _Record("groups", [])
            self._single_tensor_rescale(alpha)
            return
        plan = self._current_plan()
        if not plan.cores:
            self._run.record = None
            return
        # Under torch.compile the host path's Python floats would be specialised (a recompile per value).
        if self._host_path and plan.cores[0].device.type == "cpu" and not torch.compiler.is_compiling():
            self._host_rescale(plan, alpha)
        else:
            self._device_rescale(plan, alpha)

    # ------------------------------------------------------------------ non-finite gradients
    def _nonfinite_message(self, names: list[str]) -> str:
        return (
            f"{type(self).__name__}: a non-finite gradient in core group(s) {', '.join(map(repr, names))}: "
            "left unscaled, and the base optimizer still applies that gradient (warned once per group; "
            "skipped_per_group() counts; nonfinite='skip' skips such steps, nonfinite='raise' stops)"
        )

    def _nonfinite_owners(self) -> list[str]:
        """Names of the core groups (and 'parameters outside the core groups') whose gradient is not
        finite now; one fused max-norm kernel and ONE host read (skip/raise modes)."""
        owners, grads = [], []
        for g in self.core_groups:
            for c in g.cores:
                if c.grad is not None:
                    owners.append(g.name)
                    grads.append(c.grad)
        for p in self._other_params():
            owners.append(None)
            grads.append(p.grad)
        if not grads:
            return []
        check_dense_grads(grads)
        params = [p for pg in self.param_groups for p in pg["params"] if p.grad is not None]
        flags = nonfinite_flags(grads, params)
        bad = [o for o, f in zip(owners, flags) if f]
        names = list(dict.fromkeys(o for o in bad if o is not None))
        if None in bad:
            names.append("parameters outside the core groups")
        return names

    def _warn_schedule_end(self) -> None:
        if (
            not self._run.schedule_warned
            and self.alpha_schedule != "constant"
            and self.alpha > 0
            and self._run.step >= self.total_steps
        ):
            self._run.schedule_warned = True
            warn_user(
                f"{type(self).__name__}: step {self._run.step + 1} is past total_steps={self.total_steps} of the "
                f"{self.alpha_schedule!r} alpha schedule, so alpha_t is 0 from here on and the core scaling stops; "
                "set total_steps to the run's number of optimizer steps"
            )

    @torch.no_grad()
    def step(self, closure=None):
        """Rescale the cores, then take the base optimizer's step with the unchanged gradients.

        With ``nonfinite="skip"``/``"raise"`` a non-finite gradient skips the whole step / raises
        ``FloatingPointError`` before anything changed (one host read of a flag per step).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._warn_schedule_end()
        if self.nonfinite != "warn":
            bad = self._nonfinite_owners()
            if bad:
                if self.nonfinite == "raise":
                    raise FloatingPointError(
                        f"{type(self).__name__}: non-finite gradient in {', '.join(map(repr, bad))} at step "
                        f"{self._run.step + 1} (nonfinite='raise'; nothing was changed)"
                    )
                self._skips.add_([g.name in bad for g in self.core_groups])
                self._run.skipped_whole_steps += 1
                self._run.record = None
                return loss
        self.rescale_cores()
        self.base_optimizer.step()
        self._run.step += 1
        # The host path warned already. Under torch.compile reading the counts would break the graph:
        # the counts keep counting (skipped_per_group()), the warning waits for an eager step.
        record = self._run.record
        host = record is not None and record.kind == "host"
        if self.nonfinite == "warn" and not host and not torch.compiler.is_compiling():
            self._skips.poll(self._nonfinite_message)
        return loss

    # ------------------------------------------------------------------ what the last step did
    def last_step_stats(self) -> dict[str, dict[str, float]]:
        """Per core group name, what the last scaling step did (computed now, in float64, from the
        O(cores) values the step kept; reading them back syncs a GPU, nothing was read inside ``step()``).

        Each entry: ``scale_min``/``scale_max`` (the applied ``s_k``; DAS's gradient form, which scales
        nothing, reports the equivalent ``sqrt(1 - 2 eta_k c_k)``: same norm drift to first order), ``Q``
        and ``C`` (the norm deviation and norm-gradient covariance of the squared core and gradient norms
        the step saw, before scaling) and
        ``grad_norm`` (the group's ``||g||``), over the group's cores that had a gradient, and
        ``skipped`` (True when a non-finite gradient left the group unscaled). Groups without a
        gradient are absent. Empty before the first scaling step, after a skipped step, and when
        the step scaled nothing (``alpha_t = 0`` without balance).
        """
        rec = self._run.record
        if rec is None:
            return {}
        rows: dict[int, list[tuple[float, float, float]]] = {}
        skipped: list[bool]
        if rec.kind == "groups":
            flagged = {}
            for gi, n, gamma, s, skip in rec.data:
                rows[gi] = list(zip(n.tolist(), gamma.tolist(), s.tolist()))
                flagged[gi] = bool(skip)
            skipped = [flagged.get(gi, False) for gi in range(len(self.core_groups))]
        else:
            if rec.kind == "flat":
                plan, f = rec.data
                v = f.views()
                n, gamma, s = v.n.tolist(), v.gamma.tolist(), f.s.tolist()
                skipped = [not math.isfinite(x) for x in v.S.tolist()]
            else:
                plan, n, gamma, s, skipped = rec.data
            if self._adds_to_grads:  # report the equivalent scale sqrt(1 - 2 eta_k c_k)
                eta = self._run.record_eta
                if isinstance(eta, Eta):
                    eta = [eta.value] * len(s) if eta.is_scalar else eta.value.tolist()
                s = [equivalent_scale(e, c) for e, c in zip(eta, s)]
            for gi, nk, gk, sk in zip(plan.group_index_list, n, gamma, s):
                rows.setdefault(gi, []).append((nk, gk, sk))
        return {self.core_groups[gi].name: _group_summary(values, skipped[gi]) for gi, values in sorted(rows.items())}


def _group_summary(values: list[tuple[float, float, float]], skipped: bool) -> dict[str, float]:
    n, gamma, s = (list(col) for col in zip(*values))
    n_bar, gamma_bar = math.fsum(n) / len(n), math.fsum(gamma) / len(gamma)
    return {
        "scale_min": min(s),
        "scale_max": max(s),
        "Q": math.fsum((x - n_bar) ** 2 for x in n) / len(n),
        "C": math.fsum((x - n_bar) * (y - gamma_bar) for x, y in zip(n, gamma)) / len(n),
        "grad_norm": math.sqrt(math.fsum(gamma)),
        "skipped": skipped,
    }
