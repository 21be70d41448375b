"""Optimizer configurations: what one run trains with, and what a comparison of methods shares.

Both carry every method's options as fields (:class:`~tensordas.training.methods.MethodOptions`);
:func:`build_optimizer` turns an :class:`OptimizerConfig` into the optimizer through the method
registry, and :func:`optimizer_step` takes one step with it (one pass, or two for SAM).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from ..core_groups import CoreGroup
from .methods import (
    BASE_OPTIMIZERS,
    BASE_STRENGTH,
    METHODS,
    OPTIONS,
    STRENGTHS,
    Method,
    MethodOptions,
    Strength,
    get_method,
    method_of,
)

__all__ = [
    "ComparisonSettings",
    "OptimizerConfig",
    "build_optimizer",
    "check_device",
    "compared_optimizers",
    "evaluation_point",
    "method_lr",
    "middle",
    "tune_grids",
    "optimizer_step",
    "settle",
    "synchronize",
]

# The optimizer settings that are not a method's own option.
_BASE_SETTINGS = ("lr", "momentum", "weight_decay")


@dataclass(frozen=True)
class OptimizerConfig(MethodOptions):
    """What to build: ``method`` (a name of the method registry) on the ``base`` optimizer, with the
    base's hyper-parameters and the method's options (fields named as in the registry)."""

    method: str = "das"
    base: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    total_steps: int | None = None  # the run's length, for a decaying strength schedule (the engine sets it)
    grid: bool = False  # one candidate of a tuning grid: its run key names its tuned values

    def __post_init__(self) -> None:
        get_method(self.method)  # ValueError naming an unknown method
        for name in STRENGTHS:
            if isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(f"Invalid {name} value: {getattr(self, name)!r} (one run takes one value)")
        if self.base not in BASE_OPTIMIZERS:
            raise ValueError(f"Invalid base optimizer: {self.base!r} (expected one of {', '.join(BASE_OPTIMIZERS)})")
        for name in _BASE_SETTINGS:
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"Invalid {name} value: {value} (expected >= 0)")
        if self.total_steps is not None and (
            isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int) or self.total_steps < 1
        ):
            raise ValueError(f"Invalid total_steps value: {self.total_steps!r} (expected a positive integer)")
        self.check_options()

    @property
    def spec(self) -> Method:
        """The registry entry of :attr:`method`."""
        return METHODS[self.method]

    def options(self) -> dict[str, Any]:
        """The values of the method's own options, by name (``{}`` for the base optimizer)."""
        return {name: getattr(self, name) for name in self.spec.options}

    def tuned_values(self) -> dict[str, float]:
        """The values of the settings a tuning grid may vary for this method (its strength first)."""
        return {name: getattr(self, name) for name in self.spec.tuned_options}

    def record_fields(self) -> dict[str, Any]:
        """What a result record says about the method beyond its label: its learning rate (the base's
        strength, tuned like the others') and its options' values."""
        return {"lr": self.lr, **self.options()}

    def as_dict(self) -> dict[str, Any]:
        """What determines the optimizer: method, base, its hyper-parameters and the method's options only
        (a base run's fingerprint does not depend on DAS's alpha)."""
        keep = ("method", "base", *_BASE_SETTINGS, "total_steps", *self.options())
        return {k: getattr(self, k) for k in keep}

    @property
    def label(self) -> str:
        """A short name for tables: ``sgd``, ``sam(sgd)``, ``das(adam)``."""
        return self.spec.label(self.base)

    @property
    def strength(self) -> tuple[str, float] | None:
        """The method's strength option and its value (None for a method without one)."""
        name = self.spec.strength
        return None if name is None else (name, getattr(self, name))


@dataclass(frozen=True)
class ComparisonSettings(MethodOptions):
    """The settings every comparison task shares: which methods, their options (one field per
    registered option), the base optimizer's hyper-parameters, the seeds and the device. Task
    configurations inherit them and override the defaults they need."""

    base: str = "sgd"
    lr: Strength = 0.01  # a list: the base's tuning grid; the other methods train at its middle value
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    optimizers: tuple[str, ...] = ("das",)
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"
    tune: bool = False  # tune every method over its registry grid (:func:`tune_grids`)

    def check_options(self) -> None:
        """Check every method option and ``lr`` (a list of learning rates becomes a tuple), and with
        ``tune`` fill each single-valued strength from the registry grids (:func:`tune_grids`)."""
        if not isinstance(self.tune, bool):
            raise ValueError(f"Invalid tune value: {self.tune!r} (expected true or false)")
        if isinstance(self.lr, (list, tuple)):
            values = tuple(self.lr)
            if not values:
                raise ValueError("Invalid lr value: [] (expected at least one value)")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                    raise ValueError(f"Invalid lr value: {v!r} (expected a positive number)")
            if len(set(values)) != len(values):
                raise ValueError(f"Invalid lr value: {list(values)!r} (a value is listed twice)")
            object.__setattr__(self, "lr", tuple(float(v) for v in values))
        MethodOptions.check_options(self)
        if self.tune:
            for name, values in tune_grids(self).items():
                object.__setattr__(self, name, values)

    def run_settings(self, *drop: str) -> dict[str, Any]:
        """The task's own settings (for run fingerprints): everything but the methods, their options,
        the base optimizer's settings, the seeds and ``tune`` (each run's optimizer configuration holds
        what they decide), and the keys in ``drop``."""
        out = dataclasses.asdict(self)
        for key in ("optimizers", "seeds", "tune", "base", *_BASE_SETTINGS, *OPTIONS, *drop):
            out.pop(key)
        return out


def middle(values: Sequence[float]) -> float:
    """The middle of ``values`` sorted (of an even count, the lower middle)."""
    return sorted(values)[(len(values) - 1) // 2]


def method_lr(lr: Strength) -> float:
    """The learning rate of every method but the base: ``lr``, or the middle value of an ``lr`` list
    (:func:`middle`). The base's ``--tune`` grid ``lr x (0.5, 1, 2)`` is so centred on the rate the
    other methods use."""
    return middle(lr) if isinstance(lr, tuple) else float(lr)


def tune_grids(settings: Any) -> dict[str, tuple[float, ...]]:
    """What ``tune`` sets: for each compared method's strength left at one value, its registry grid
    (the base's: its grid's multipliers of ``lr``). A strength two methods share (SAM's and LookSAM's
    ``rho``) takes the first method's grid; a strength already given as a list is kept."""
    out: dict[str, tuple[float, ...]] = {}
    for name in settings.optimizers:
        spec = METHODS.get(name)
        if spec is None or spec.strength is None or not spec.grid or spec.strength in out:
            continue
        value = getattr(settings, spec.strength)
        if isinstance(value, tuple):
            continue
        if spec.strength == BASE_STRENGTH:
            out[spec.strength] = tuple(float(value) * g for g in spec.grid)
        else:
            out[spec.strength] = tuple(spec.grid)
    return out


def compared_optimizers(settings: ComparisonSettings, total_steps: int | None = None) -> list[OptimizerConfig]:
    """One validated :class:`OptimizerConfig` per name in ``settings.optimizers`` and candidate.

    A method's candidates are the values of its strength given as a list, in the list's order, marked
    ``grid=True``; a method whose strength is one value has one candidate. The base's strength is
    ``lr``; every other method trains at :func:`method_lr`. A method whose second tuned option is listed
    (LookSAM's ``looksam_alpha``) is tuned over that list instead, its strength at the strength list's
    :func:`middle`. A list no method of the comparison reads takes its first
    value (unused). Equal budget: ``ValueError`` when the methods would get different numbers of
    candidates. ``total_steps`` drives a decaying strength schedule; when it is not known yet, the
    engine sets it.
    """
    names = tuple(settings.optimizers)
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ValueError(f"Invalid optimizer(s) {bad or '[]'} (expected some of {', '.join(METHODS)})")
    shared = {k: getattr(settings, k) for k in ("base", *_BASE_SETTINGS, *OPTIONS)}
    grids = {k: v for k, v in shared.items() if isinstance(v, tuple) and k in STRENGTHS}
    shared.update({k: v[0] for k, v in grids.items()})
    shared["lr"] = method_lr(settings.lr)
    out = []
    counts: dict[str, int] = {}
    for m in names:
        spec = METHODS[m]
        # A listed second option (LookSAM's alpha) is tuned on the strength's middle value instead of the
        # strength: one list per method, so its candidate count stays that of the others (equal budget).
        tuned = [k for k in spec.also_tuned if k in grids]
        fixed = {}
        if tuned and spec.strength in grids:
            fixed[spec.strength] = middle(grids[spec.strength])
        elif spec.strength in grids and (spec.strength != BASE_STRENGTH or spec.is_base):
            tuned = [spec.strength]
        combos = list(itertools.product(*(grids[k] for k in tuned)))
        counts[m] = len(combos)
        for combo in combos:
            values = {**fixed, **dict(zip(tuned, combo, strict=True))}
            out.append(OptimizerConfig(method=m, total_steps=total_steps, grid=bool(tuned), **{**shared, **values}))
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{m} {n}" for m, n in counts.items())
        raise ValueError(
            f"unequal tuning budget: candidates per seed are {listed}; give every compared method the same "
            "number (e.g. --lr 0.025,0.05,0.1 for the base beside a 3-value --rho/--alpha, or --tune)"
        )
    return out


def build_optimizer(
    config: OptimizerConfig,
    params: Iterable[torch.nn.Parameter],
    core_groups: Sequence[CoreGroup] | None = None,
) -> Optimizer:
    """The optimizer ``config`` names over ``params``, built by its registry entry (DAS and BAR need
    ``core_groups``)."""
    kwargs: dict[str, Any] = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.base == "sgd":
        kwargs["momentum"] = config.momentum
    settings = {o: getattr(config, o) for o in OPTIONS}
    return config.spec.build(
        list(params),
        BASE_OPTIMIZERS[config.base],
        kwargs,
        settings,
        core_groups=core_groups,
        total_steps=config.total_steps,
    )


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on CPU).

    Step timers call it before they read the clock: CUDA kernels run asynchronously, so without it a
    timer measures only the launches, and the step's device work lands outside it (in the next host
    synchronisation, e.g. an evaluation or a batch copy) for every optimizer alike.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_device(device: str) -> torch.device:
    """``torch.device(device)``, or a ``ValueError`` naming it when it is malformed or absent here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"Invalid device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Invalid device {device!r}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"Invalid device {device!r} (expected cpu or cuda[:N])")
    return dev


def optimizer_step(
    optimizer: Optimizer, closure: Callable[[], torch.Tensor], method: Method | None = None
) -> torch.Tensor:
    """One training step. ``closure`` zeroes the gradients, runs forward and backward, returns the loss.

    A method with its own ``step`` hook (LookSAM: the second pass every k-th step only) takes the
    step through it; one that needs a closure (SAM) gets it and calls it twice (at ``w`` and
    ``w + e``); every other method gets one call, then ``step()``. ``method`` defaults to the registry
    entry whose class ``optimizer`` is. Returns the loss at the current weights.
    """
    method = method or method_of(optimizer)
    if method.step is not None:
        return method.step(optimizer, closure)
    if method.needs_closure:
        return optimizer.step(closure)
    loss = closure()
    optimizer.step()
    return loss


def evaluation_point(optimizer: Optimizer) -> contextlib.AbstractContextManager:
    """The context in which ``optimizer``'s parameters are the point to evaluate, copy and save (MSAM moves
    back from its perturbed point inside); a no-op for optimizers without one (the base, LookSAM)."""
    method = getattr(optimizer, "evaluation_point", None)
    return method() if callable(method) else contextlib.nullcontext()


def settle(optimizer: Optimizer) -> None:
    """After training: leave the parameters at the evaluation point for good (see :func:`evaluation_point`)."""
    method = getattr(optimizer, "settle", None)
    if callable(method):
        method()
