"""Build the optimizers every experiment compares — the base, SAM on it, DAS on it — from names.

All tasks go through :func:`build_optimizer` and drive the result with :func:`optimizer_step`,
so one training loop serves one-pass (base, DAS, BAR) and two-pass (SAM) optimizers alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch.optim import Optimizer

from ..core_groups import CoreGroup
from ..optim import BAR, DAS, SAM
from ..optim.das import GRAD_NORMS, VARIANTS
from ..optim.schedules import check_alpha_schedule

BASE_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
METHODS = ("base", "sam", "das", "bar")


@dataclass
class OptimizerConfig:
    """What to build: ``method`` on top of the ``base`` optimizer, with their hyper-parameters."""

    method: str = "das"
    base: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    rho: float = 0.05  # SAM
    adaptive: bool = False  # ASAM
    alpha: float = 0.05  # DAS / BAR
    alpha_schedule: str = "constant"
    total_steps: int | None = None
    grad_norm: str = "group"
    variant: str = "sam-matched"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Invalid optimizer: {self.method!r} (expected one of {', '.join(METHODS)})")
        if self.base not in BASE_OPTIMIZERS:
            raise ValueError(f"Invalid base optimizer: {self.base!r} (expected one of {', '.join(BASE_OPTIMIZERS)})")
        for name in ("lr", "momentum", "weight_decay", "rho", "alpha"):
            value = getattr(self, name)
            if not value >= 0:  # also rejects NaN
                raise ValueError(f"Invalid {name} value: {value} (expected >= 0)")
        check_alpha_schedule(self.alpha_schedule, self.total_steps)
        if self.variant not in VARIANTS:
            raise ValueError(f"Invalid DAS variant {self.variant!r} (expected one of {', '.join(VARIANTS)})")
        if self.grad_norm not in GRAD_NORMS:
            raise ValueError(f"Invalid grad_norm {self.grad_norm!r} (expected one of {', '.join(GRAD_NORMS)})")

    def record_fields(self) -> dict[str, str]:
        """What a result record says about the method beyond its label (DESIGN: which DAS variant)."""
        if self.method != "das":
            return {}
        return {"das_variant": self.variant, "grad_norm": self.grad_norm}

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        """A short name for tables: ``sgd``, ``sam(sgd)``, ``das(adam)``."""
        return self.base if self.method == "base" else f"{self.method}({self.base})"


@dataclass(frozen=True)
class ComparisonSettings:
    """The settings every comparison task shares: which optimizers, their hyper-parameters, the
    seeds and the device. Task configurations inherit them and override the defaults they need."""

    base: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    optimizers: tuple[str, ...] = ("das",)
    alpha: float = 0.05  # DAS strength
    rho: float = 0.05  # SAM radius
    alpha_schedule: str = "constant"
    das_variant: str = "sam-matched"  # DAS formula: sam-matched | reference
    grad_norm: str = "group"  # DAS normaliser: group | global
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"


def compared_optimizers(settings: ComparisonSettings, total_steps: int | None = None) -> list[OptimizerConfig]:
    """One validated :class:`OptimizerConfig` per name in ``settings.optimizers``.

    ``total_steps`` drives a decaying alpha schedule; when it is not known yet (a loop sets it
    later), 1 stands in for validation.
    """
    names = tuple(settings.optimizers)
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ValueError(f"Invalid optimizer(s) {bad or '[]'} (expected some of {', '.join(METHODS)})")
    if total_steps is None and settings.alpha_schedule != "constant":
        total_steps = 1
    return [
        OptimizerConfig(
            method=m,
            base=settings.base,
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            rho=settings.rho,
            alpha=settings.alpha,
            alpha_schedule=settings.alpha_schedule,
            total_steps=total_steps,
            grad_norm=settings.grad_norm,
            variant=settings.das_variant,
        )
        for m in names
    ]


def build_optimizer(
    config: OptimizerConfig,
    params: Iterable[torch.nn.Parameter],
    core_groups: Sequence[CoreGroup] | None = None,
) -> Optimizer:
    """The optimizer ``config`` names over ``params``; DAS and BAR need ``core_groups``."""
    base_cls = BASE_OPTIMIZERS[config.base]
    kwargs: dict = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.base == "sgd":
        kwargs["momentum"] = config.momentum
    params = list(params)
    if config.method == "base":
        return base_cls(params, **kwargs)
    if config.method == "sam":
        return SAM(params, base_cls, rho=config.rho, adaptive=config.adaptive, **kwargs)
    if core_groups is None:
        raise ValueError(f"optimizer {config.method!r} needs core groups")
    scaling = {"alpha": config.alpha, "alpha_schedule": config.alpha_schedule, "total_steps": config.total_steps}
    if config.method == "bar":
        return BAR(params, base_cls, core_groups=core_groups, **scaling, **kwargs)
    return DAS(
        params,
        base_cls,
        core_groups=core_groups,
        grad_norm=config.grad_norm,
        variant=config.variant,
        **scaling,
        **kwargs,
    )


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on CPU).

    Step timers call it before they read the clock: CUDA kernels run asynchronously, so without it a
    timer measures only the launches, and the step's device time lands outside it (in the next host
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


def optimizer_step(optimizer: Optimizer, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One training step. ``closure`` zeroes the gradients, runs forward and backward, returns the loss.

    SAM calls the closure twice (at ``w`` and ``w + e``); every other optimizer once.
    Returns the loss at the current weights.
    """
    if isinstance(optimizer, SAM):
        return optimizer.step(closure)
    loss = closure()
    optimizer.step()
    return loss
