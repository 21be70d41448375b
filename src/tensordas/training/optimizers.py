"""Optimizer configurations: what one run trains with, and what a comparison of methods shares.

Both carry every registered method's options as fields (:data:`~tensordas.training.methods.MethodOptions`);
:func:`build_optimizer` turns an :class:`OptimizerConfig` into the optimizer through the method
registry, and :func:`optimizer_step` takes one step with it (one pass, or two for SAM).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from ..core_groups import CoreGroup
from .methods import BASE_OPTIMIZERS, METHODS, OPTIONS, STRENGTHS, Method, MethodOptions, get_method, method_of

__all__ = [
    "ComparisonSettings",
    "OptimizerConfig",
    "build_optimizer",
    "check_device",
    "compared_optimizers",
    "evaluation_point",
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
    grid: bool = False  # one candidate of a strength grid: its run key names the strength's value

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
        return {o.name: getattr(self, o.name) for o in self.spec.options}

    def record_fields(self) -> dict[str, Any]:
        """What a result record says about the method beyond its label: its options' values."""
        return self.options()

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
    lr: float = 0.01
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    optimizers: tuple[str, ...] = ("das",)
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"

    def run_settings(self, *drop: str) -> dict[str, Any]:
        """The task's own settings (for run fingerprints): everything but the methods, their options,
        the base optimizer's settings and the seeds (each run's optimizer configuration holds those),
        and the keys in ``drop``."""
        out = dataclasses.asdict(self)
        for key in ("optimizers", "seeds", "base", *_BASE_SETTINGS, *OPTIONS, *drop):
            out.pop(key)
        return out


def compared_optimizers(settings: ComparisonSettings, total_steps: int | None = None) -> list[OptimizerConfig]:
    """One validated :class:`OptimizerConfig` per name in ``settings.optimizers`` and value of its strength.

    A strength given as a list (a tuning grid) gives one candidate per value, in the list's order,
    marked ``grid=True``; a method without that strength takes the list's first value (unused).
    ``total_steps`` drives a decaying strength schedule; when it is not known yet, the engine sets it.
    """
    names = tuple(settings.optimizers)
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ValueError(f"Invalid optimizer(s) {bad or '[]'} (expected some of {', '.join(METHODS)})")
    shared = {k: getattr(settings, k) for k in ("base", *_BASE_SETTINGS, *OPTIONS)}
    grids = {k: v for k, v in shared.items() if isinstance(v, tuple) and k in STRENGTHS}
    shared.update({k: v[0] for k, v in grids.items()})
    out = []
    for m in names:
        strength = METHODS[m].strength
        values = grids.get(strength, ()) if strength is not None else ()
        if not values:
            out.append(OptimizerConfig(method=m, total_steps=total_steps, **shared))
        for value in values:
            out.append(OptimizerConfig(method=m, total_steps=total_steps, grid=True, **{**shared, strength: value}))
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
