"""The optimizer methods every comparison can run, declared once.

A *method* is what a run compares: the base optimizer alone (``base``), or a wrapper around it (``sam``,
``das``, ``bar``). Each is one :class:`Method` entry of :data:`METHODS`, which says how the optimizer
is built (its class wraps the base optimizer class), whether it needs core groups, whether it needs a
closure (a second forward/backward pass), which of its options is its *strength* (the value a tuning
grid varies: ``alpha``, ``rho``) and its other options (:class:`Option`), each with one name used
everywhere: experiment settings, TOML files, result records and the CLI flag (``das_variant`` is
``--das-variant``; :attr:`Option.keyword` is the optimizer's own keyword, ``variant``, mapped here and
nowhere else).

Everything that names methods reads this registry: the training engine (one pass or two),
:class:`~tensordas.training.OptimizerConfig` and :class:`~tensordas.training.ComparisonSettings`
(one field per option, see :data:`MethodOptions`), :class:`tensordas.adapters.hf.DASTrainer`, the CLI
(``--optimizer`` choices, one flag per option, with the help written here) and the records (which
options a run used). Adding a method is one entry below (with its new options) plus its tests.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from ..optim import BAR, DAS, SAM
from ..optim.das import GRAD_NORMS, VARIANTS
from ..optim.schedules import ALPHA_SCHEDULES
from ._looksam import looksam_class, looksam_step

__all__ = [
    "BASE_OPTIMIZERS",
    "BASE_STRENGTH",
    "GRID_SIZE",
    "METHODS",
    "OPTIONS",
    "STRENGTHS",
    "Method",
    "Strength",
    "MethodOptions",
    "Option",
    "compared_methods",
    "get_method",
    "method_of",
]

BASE_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


@dataclass(frozen=True)
class Option:
    """One setting of a method, under the one name settings, records and the CLI use.

    Attributes:
        name: the settings/record key; the CLI flag is ``--`` + name with dashes (``--das-variant``).
        default: the default value; its type is the option's type (float, str or bool).
        help: the CLI help text.
        keyword: the optimizer's keyword argument, when it differs from ``name``.
        choices: the valid values of a string option.
        minimum, maximum: the valid range of a number option (the optimizer may check more, e.g. a
            strict bound, when it is built).
    """

    name: str
    default: Any
    help: str
    keyword: str | None = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def kwarg(self) -> str:
        """The optimizer's keyword argument for this option."""
        return self.keyword or self.name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """``ValueError`` naming the option and ``value`` unless it is valid."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"Invalid {self.name} value: {value!r} (expected true or false)")
        elif self.choices:
            if value not in self.choices:
                raise ValueError(f"Invalid {self.name} {value!r} (expected one of {', '.join(self.choices)})")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"Invalid {self.name} value: {value!r} (expected a finite number)")
            if self.minimum is not None and not value >= self.minimum:
                raise ValueError(f"Invalid {self.name} value: {value} (expected >= {self.minimum:g})")
            if self.maximum is not None and not value <= self.maximum:
                raise ValueError(f"Invalid {self.name} value: {value} (expected <= {self.maximum:g})")


@dataclass(frozen=True)
class Method:
    """How one method is built and driven.

    Attributes:
        name: the registry key, ``--optimizer`` value and the records' ``method``.
        title: a short description for help texts.
        cls: the wrapper, called as ``cls(params, base_optimizer_class, **options, **base_kwargs)``;
            ``None``: the base optimizer itself (unless ``load`` gives the class).
        load: imports and returns the wrapper class on first use (a class from an optional dependency).
        options: the options it reads (its strength included), passed as their keywords.
        strength: the option a tuning grid varies (``None``: nothing to tune).
        needs_core_groups: passed ``core_groups=``; a model without any is an error.
        needs_closure: ``step(closure)`` evaluates the loss more than once (SAM: at ``w`` and ``w + e``).
        scheduled: passed ``total_steps=`` (the run's length, for a decaying strength schedule).
        compared: one of the methods ``--compare`` runs.
        step: ``step(optimizer, closure) -> loss``, one training step where the method's own
            ``step(closure)`` is not the one to call (LookSAM: the second pass only every k-th step);
            the optimizer's ``base_optimizer`` then counts the steps a learning-rate schedule sees.
        cycle: the option giving the number of steps over which the method's cost repeats (LookSAM:
            ``looksam_k``, one two-pass step in k); step times are then averaged per cycle before their
            median is taken, so the median is the method's mean cost, not its cheap steps' cost.
        grid: the default candidate values of ``strength`` that ``--tune`` tries (empty: none declared);
            the base's strength is its learning rate, and its grid holds *multipliers* of the family's
            ``lr`` (so one grid serves every family: ``lr x (0.5, 1, 2)``).
        also_tuned: options beside ``strength`` that a list may tune instead (LookSAM's ``looksam_alpha``):
            the method is then tuned over that list at the middle value of its strength's list, so it
            gets as many candidates as the others (:func:`~tensordas.training.compared_optimizers`).
        fixed: keyword arguments the wrapper always gets, not options the user sets: a preset of another
            method's class (the authors' DAS is ``td.DAS`` with ``variant="reference"``).
    """

    name: str
    title: str
    cls: type[Optimizer] | None = None
    options: tuple[Option, ...] = ()
    strength: str | None = None
    needs_core_groups: bool = False
    needs_closure: bool = False
    scheduled: bool = False
    compared: bool = False
    load: Callable[[], type[Optimizer]] | None = None
    step: Callable[[Any, Callable[[], torch.Tensor]], torch.Tensor] | None = None
    cycle: str | None = None
    grid: tuple[float, ...] = ()
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    also_tuned: tuple[str, ...] = ()

    @property
    def tuned_options(self) -> tuple[str, ...]:
        """The settings a list may give this method several candidate values of: its strength first."""
        return tuple(n for n in (self.strength, *self.also_tuned) if n is not None)

    @property
    def is_base(self) -> bool:
        """The base optimizer itself, not a wrapper."""
        return self.cls is None and self.load is None

    @property
    def wrapper(self) -> type[Optimizer] | None:
        """The wrapper class (imported by ``load`` where it comes from an optional dependency)."""
        return self.cls if self.load is None else self.load()

    def schedule_target(self, optimizer: Optimizer) -> Optimizer:
        """The optimizer a learning-rate scheduler is attached to: the one whose ``step()`` runs every step."""
        return optimizer.base_optimizer if self.step is not None else optimizer

    def label(self, base: str) -> str:
        """A short name for tables: ``sgd``, ``sam(sgd)``, ``das(adam)``."""
        return base if self.is_base else f"{self.name}({base})"

    def kwargs(
        self,
        settings: Mapping[str, Any],
        *,
        core_groups: Any = None,
        total_steps: int | None = None,
    ) -> dict[str, Any]:
        """The wrapper's keyword arguments: its options from ``settings`` (by option name), the core
        groups and the run's length where the method takes them."""
        out = {o.kwarg: settings[o.name] for o in self.options}
        out.update(self.fixed)
        if self.needs_core_groups:
            if core_groups is None:
                raise ValueError(f"optimizer {self.name!r} needs core groups")
            out["core_groups"] = core_groups
        if self.scheduled:
            out["total_steps"] = total_steps
        return out

    def build(
        self,
        params: Iterable[torch.nn.Parameter],
        base: type[Optimizer],
        base_kwargs: Mapping[str, Any],
        settings: Mapping[str, Any],
        *,
        core_groups: Any = None,
        total_steps: int | None = None,
    ) -> Optimizer:
        """The optimizer over ``params``: ``base(params, **base_kwargs)``, wrapped by :attr:`wrapper`."""
        if self.is_base:
            return base(params, **base_kwargs)
        extra = self.kwargs(settings, core_groups=core_groups, total_steps=total_steps)
        return self.wrapper(params, base, **extra, **base_kwargs)


# --- the options (shared ones declared once) -----------------------------------------------------
ALPHA = Option("alpha", 0.05, "DAS/BAR strength (the analogue of SAM's rho).", minimum=0)
ALPHA_SCHEDULE = Option(
    "alpha_schedule", "constant", f"Decay of alpha over the run: {' | '.join(ALPHA_SCHEDULES)}.",
    choices=ALPHA_SCHEDULES,
)  # fmt: skip
RHO = Option("rho", 0.05, "SAM/LookSAM radius.", minimum=0)
# The base optimizer's strength: its learning rate (a setting of every configuration, not a registry option).
BASE_STRENGTH = "lr"
# Every --tune grid has this many values, so every compared method gets the same number of candidates.
GRID_SIZE = 3

# --- the methods: one entry each ---------------------------------------------------------------------
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "base",
            "the base optimizer alone",
            compared=True,
            strength=BASE_STRENGTH,
            grid=(0.5, 1.0, 2.0),  # multipliers of the family's lr (docs/experiments.md)
        ),
        Method(
            "sam",
            "SAM: two forward/backward passes per step",
            SAM,
            options=(RHO, Option("adaptive", False, "ASAM: scale SAM's perturbation by |w|.")),
            strength="rho",
            needs_closure=True,
            compared=True,
            grid=(0.1, 0.2, 0.3),  # the noisy and compress configs' rho grid
        ),
        Method(
            "das",
            "DAS: rescale the cores, then the base step (one pass)",
            DAS,
            options=(
                ALPHA,
                ALPHA_SCHEDULE,
                Option("grad_norm", "group", "DAS normaliser: group | global (SAM's norm).", choices=GRAD_NORMS),
                Option(
                    "das_variant",
                    "sam-matched",
                    "DAS formula: sam-matched (drift equals SAM's) | reference (authors').",
                    keyword="variant",
                    choices=VARIANTS,
                ),
                Option(
                    "s_min",
                    0.5,
                    "DAS: smallest per-step core scale, in (0, 1] (a clamp for pathological steps).",
                    minimum=0,
                    maximum=1,
                ),
                Option(
                    "s_max", 2.0, "DAS: largest per-step core scale, >= 1 (a clamp for pathological steps).", minimum=1
                ),
                Option(
                    "balance",
                    0.0,
                    "DAS: function-preserving pull toward equal core norms, beta >= 0 (experimental: "
                    "docs/dynamics.md).",
                    minimum=0,
                ),
            ),  # fmt: skip
            strength="alpha",
            needs_core_groups=True,
            scheduled=True,
            compared=True,
            grid=(10.0, 100.0, 1000.0),  # the noisy, compress and fine-tuning configs' alpha grid
        ),
        Method(
            "das-authors",
            "the authors' DAS: reference formula, alpha cosine-decayed (ctxGou/Tensor-SAM)",
            DAS,
            options=(
                Option(
                    "authors_alpha",
                    0.1,
                    "The authors' DAS strength, cosine-decayed (their label-noise default 0.1).",
                    keyword="alpha",
                    minimum=0,
                ),
            ),
            strength="authors_alpha",
            needs_core_groups=True,
            scheduled=True,
            compared=True,
            # ctxGou/Tensor-SAM src/cifar10-label-noise.sh runs `--method gbar2 --gbar_alpha 0.1
            # --gbar_alpha_scheduler cosine` for every noise rate; its compression search
            # (src/optuna_cifar_trainer.py) draws gbar_alpha from {0.1, 0.05, 0.01, 0.005, 0.001}.
            # The grid is geometric around 0.1.
            grid=(0.03, 0.1, 0.3),
            fixed={"variant": "reference", "alpha_schedule": "cosine"},
        ),
        Method(
            "bar",
            "BAR (nBAR): two-core groups only",
            BAR,
            options=(ALPHA, ALPHA_SCHEDULE),
            strength="alpha",
            needs_core_groups=True,
            scheduled=True,
            grid=(10.0, 100.0, 1000.0),  # DAS's grid: the same strength scale
        ),
        Method(
            "looksam",
            "pytorch-optimizer's LookSAM (per-tensor rescaling of the reused direction, not Liu et al.'s "
            "whole-vector form): SAM's second pass every k-th step, 1 + 1/k passes per step",
            options=(
                RHO,
                Option("looksam_k", 5, "LookSAM: steps between its second passes (k).", keyword="k", minimum=1),
                Option(
                    "looksam_alpha",
                    0.7,
                    "LookSAM: weight of the reused direction, in (0, 1) (pytorch-optimizer's alpha, rescaled "
                    "per parameter tensor).",
                    keyword="alpha",
                    minimum=0,
                    maximum=1,
                ),
            ),
            strength="rho",
            also_tuned=("looksam_alpha",),
            grid=(0.1, 0.2, 0.3),  # SAM's: the two share rho
            needs_closure=True,
            compared=True,
            load=looksam_class,
            step=looksam_step,
            cycle="looksam_k",
        ),
    )
}


def _collect_options(methods: Mapping[str, Method]) -> dict[str, Option]:
    """Every method's options by name; two methods sharing a name must share the declaration."""
    out: dict[str, Option] = {}
    for method in methods.values():
        names = [o.name for o in method.options]
        if method.strength is not None and method.strength not in (*names, BASE_STRENGTH):
            raise ValueError(f"method {method.name!r}: strength {method.strength!r} is not one of its options")
        if method.strength == BASE_STRENGTH and not method.is_base:
            raise ValueError(f"method {method.name!r}: only the base optimizer is tuned over its learning rate")
        extra = sorted(set(method.also_tuned) - set(names) | ({method.strength} & set(method.also_tuned)))
        if extra:
            raise ValueError(f"method {method.name!r}: also_tuned {extra} are not options beside its strength")
        for option in method.options:
            if out.setdefault(option.name, option) != option:
                raise ValueError(f"option {option.name!r} is declared twice, differently")
        clash = sorted(set(method.fixed) & {o.kwarg for o in method.options})
        if clash:
            raise ValueError(f"method {method.name!r}: {clash} is both fixed and an option")
        if method.grid:
            if method.strength is None:
                raise ValueError(f"method {method.name!r}: a grid needs a strength to vary")
            if method.strength == BASE_STRENGTH:
                if not all(math.isfinite(v) and v > 0 for v in method.grid):
                    raise ValueError(f"method {method.name!r}: learning-rate multipliers must be positive")
            else:
                strength = next(o for o in method.options if o.name == method.strength)
                for value in method.grid:
                    strength.check(value)
            if len(method.grid) != GRID_SIZE or len(set(method.grid)) != GRID_SIZE:
                raise ValueError(f"method {method.name!r}: its grid needs {GRID_SIZE} distinct values (equal budget)")
    return out


OPTIONS: dict[str, Option] = _collect_options(METHODS)
# A strength setting: one value, or the values a tuning grid tries (TOML list, CLI comma list).
Strength = float | tuple[float, ...]
# The settings a tuning grid varies (the strengths, the base's lr, LookSAM's alpha): given a list, each
# method picks its value on a validation split.
STRENGTHS: tuple[str, ...] = tuple(dict.fromkeys(itertools.chain(*(m.tuned_options for m in METHODS.values()))))


def _check_options(self: Any) -> None:
    """Check every option; a strength may be a list of values (stored as a tuple), nothing else may."""
    for option in OPTIONS.values():
        value = getattr(self, option.name)
        if isinstance(value, (list, tuple)):
            if option.name not in STRENGTHS:
                raise ValueError(
                    f"Invalid {option.name} value: {list(value)!r} (a list is allowed only for a method's "
                    f"strength: {', '.join(STRENGTHS)})"
                )
            if not value:
                raise ValueError(f"Invalid {option.name} value: [] (expected at least one value)")
            for v in value:
                option.check(v)
            if len(set(value)) != len(value):
                raise ValueError(f"Invalid {option.name} value: {list(value)!r} (a value is listed twice)")
            object.__setattr__(self, option.name, tuple(float(v) for v in value))
        else:
            option.check(value)


def _tuned(self: Any) -> bool:
    return any(isinstance(getattr(self, s, None), tuple) for s in STRENGTHS)


MethodOptions: type = dataclasses.make_dataclass(
    "MethodOptions",
    [
        (o.name, Strength if o.name in STRENGTHS else o.type, dataclasses.field(default=o.default))
        for o in OPTIONS.values()
    ],
    frozen=True,
    namespace={
        "__doc__": "Every method's options as fields (built from :data:`OPTIONS`): the base of the "
        "configurations that carry them, so a new option is a field everywhere at once.",
        "check_options": _check_options,
        "tuned": property(_tuned, doc="Some strength is a list of values: each method picks one on validation data."),
    },
)
MethodOptions.__module__ = __name__


def get_method(name: str) -> Method:
    """The registered method ``name``; ``ValueError`` naming it otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Invalid optimizer: {name!r} (expected one of {', '.join(METHODS)})") from None


def compared_methods() -> tuple[str, ...]:
    """The methods ``--compare`` runs, in registry order."""
    return tuple(m.name for m in METHODS.values() if m.compared)


def method_of(optimizer: Optimizer) -> Method:
    """The registered method whose class ``optimizer`` is an instance of (``base`` if none).

    Where several entries share the class (``das`` and its preset ``das-authors``), a preset whose
    ``fixed`` keywords the optimizer's attributes all equal wins over the plain entry.
    """
    found = []
    for method in METHODS.values():
        if method.is_base:
            continue
        try:
            cls = method.wrapper
        except ImportError:  # an optional dependency that is missing: not what built ``optimizer``
            continue
        if isinstance(optimizer, cls) and all(getattr(optimizer, k, None) == v for k, v in method.fixed.items()):
            found.append(method)
    return max(found, key=lambda m: len(m.fixed), default=METHODS["base"])
