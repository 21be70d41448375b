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

from ..optim import BAR, DAS, MSAM, MSAMDAS, SAM
from ..optim.das import GRAD_NORMS, VARIANTS
from ..optim.looksam import looksam_class, looksam_step
from ..optim.schedules import ALPHA_SCHEDULES
from .lossterms import JREG, MESA, SAF, LossTerm

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
        elif self.type in (float, int):
            if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"Invalid {self.name} value: {value!r} (expected an integer)")
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
        loss_term: a term the engine adds to the training loss, computed from what the forward pass exposes
            (:mod:`~tensordas.training.lossterms`); the options it reads are among ``options`` and are not
            passed to the wrapper. With ``cls``, the combination "wrapper + term" (``das+jreg``). Families
            that cannot supply the fields the term needs refuse the method before training.
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
    loss_term: LossTerm | None = None
    also_tuned: tuple[str, ...] = ()

    @property
    def tuned_options(self) -> tuple[str, ...]:
        """The settings a list may give this method several candidate values of: its strength first."""
        return tuple(n for n in (self.strength, *self.also_tuned) if n is not None)

    @property
    def is_base(self) -> bool:
        """The base optimizer itself: no wrapper and no loss term."""
        return self.cls is None and self.load is None and self.loss_term is None

    @property
    def wraps(self) -> bool:
        """The optimizer is a wrapper class around the base optimizer (not the base optimizer itself)."""
        return self.cls is not None or self.load is not None

    def needs_missing(self, supplies: Iterable[str]) -> list[str]:
        """The context fields the method's loss term needs that ``supplies`` lacks (``[]``: it can run)."""
        if self.loss_term is None:
            return []
        return sorted(self.loss_term.needs - set(supplies))

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
        term = set(self.loss_term.reads) if self.loss_term is not None else set()
        out = {o.kwarg: settings[o.name] for o in self.options if o.name not in term}
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
        if not self.wraps:
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
GRAD_NORM = Option("grad_norm", "group", "DAS normaliser: group | global (SAM's norm).", choices=GRAD_NORMS)
DAS_VARIANT = Option(
    "das_variant",
    "sam-matched",
    "DAS formula: sam-matched (drift equals SAM's) | reference (authors') | gradient (the drift as a gradient "
    "term, through the base optimizer).",
    keyword="variant",
    choices=VARIANTS,
)
S_MIN = Option(
    "s_min", 0.5, "DAS: smallest per-step core scale, in (0, 1] (a clamp for pathological steps).", minimum=0, maximum=1
)
S_MAX = Option("s_max", 2.0, "DAS: largest per-step core scale, >= 1 (a clamp for pathological steps).", minimum=1)
DAS_GRADIENT_ALPHA = Option(
    "das_gradient_alpha", 1.0, "das-gradient strength (DAS's alpha, tuned on its own).", keyword="alpha", minimum=0
)
DAS_GRADIENT_BALANCE_ALPHA = Option(
    "das_gradient_balance_alpha",
    100.0,
    "das-gradient-balance strength (DAS's alpha in gradient form, with balance 0.1; tuned on its own).",
    keyword="alpha",
    minimum=0,
)
# das-gradient-balance's fixed pull toward equal core norms: chosen on the noisy family's exploration seeds 0-2
# by validation accuracy (balance 0 / 0.1 / 1: 0.528 / 0.561 / 0.554 at alpha 100; docs/experiments.md).
GRADIENT_BALANCE = 0.1
MSAM_RHO = Option(
    "msam_rho",
    3.0,
    "MSAM radius along -m/||m|| (its own scale: the authors use 3, not SAM's rho).",
    keyword="rho",
    minimum=0,
)
BALANCE = Option(
    "balance",
    0.0,
    "DAS: function-preserving pull toward equal core norms, beta >= 0 (experimental: docs/dynamics.md).",
    minimum=0,
)

DAS_OPTIONS: tuple[Option, ...] = (ALPHA, ALPHA_SCHEDULE, GRAD_NORM, DAS_VARIANT, S_MIN, S_MAX, BALANCE)

# The loss terms' options (docs/design.md: the terms' math and where the defaults come from).
JREG_LAMBDA = Option(
    "jreg_lambda",
    3e-3,
    "Jacobian regularisation strength: lambda * (||W_last||^2 + ratio * mean ||features||^2).",
    minimum=0,
)
JREG_RATIO = Option(
    "jreg_ratio", 1.0, "Jacobian regularisation: weight of the feature penalty over the last-layer one.", minimum=0
)
# SAF's defaults: the authors' run.sh (AngusDujw/SAF): --reinforce 0.3 --minus_epoch 2 --kl_start_epoch 5, and
# SAF_train.py's --temperature 5 (README: "a very stable parameter").
SAF_LAMBDA = Option("saf_lambda", 0.3, "SAF: weight of the trajectory loss (the authors' --reinforce).", minimum=0)
SAF_TAU = Option(
    "saf_tau", 5.0, "SAF/MESA: temperature of the trajectory loss (the authors' --temperature).", minimum=1e-6
)
SAF_EPOCHS = Option(
    "saf_epochs", 2, "SAF: epochs back to the stored outputs, E (the authors' --minus_epoch).", minimum=1
)
SAF_START = Option(
    "saf_start", 5, "SAF: epochs trained before the trajectory loss starts (the authors' --kl_start_epoch).", minimum=0
)
# MESA's defaults: the authors' run.sh for MESA_train.py: --reinforce 0.8 --kl_start_epoch 5 --model-ema-decay 0.9998.
MESA_LAMBDA = Option("mesa_lambda", 0.8, "MESA: weight of the distillation loss to the EMA teacher.", minimum=0)
MESA_DECAY = Option("mesa_decay", 0.9998, "MESA: decay of the teacher's weight average per step.", minimum=0, maximum=1)
MESA_START = Option(
    "mesa_start", 5, "MESA: epochs trained before the loss starts (the authors' --kl_start_epoch).", minimum=0
)
JREG_OPTIONS = (JREG_LAMBDA, JREG_RATIO)
SAF_OPTIONS = (SAF_LAMBDA, SAF_TAU, SAF_EPOCHS, SAF_START)
MESA_OPTIONS = (MESA_LAMBDA, SAF_TAU, MESA_DECAY, MESA_START)
# Default grids: chosen in a pilot on the noisy family (tt-mlp, digits, 600 samples, 40% noise, 10 epochs,
# seeds 0-1) by validation accuracy and memorisation of the corrupted training labels: jreg acts from 1e-3
# (memorised 0.38 -> 0.23) and collapses to chance at 3e-2; SAF acts from its authors' 0.3 and breaks at 10.
JREG_GRID = (1e-3, 3e-3, 1e-2)
SAF_GRID = (0.3, 1.0, 3.0)

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
            options=DAS_OPTIONS,
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
            "das-gradient",
            "DAS in gradient form: DAS's drift added to the core gradients, carried by the base optimizer (one pass)",
            DAS,
            options=(DAS_GRADIENT_ALPHA, ALPHA_SCHEDULE, GRAD_NORM, S_MIN, S_MAX, BALANCE),
            strength="das_gradient_alpha",
            needs_core_groups=True,
            scheduled=True,
            compared=True,
            grid=(0.1, 1.0, 10.0),
            fixed={"variant": "gradient"},
        ),
        Method(
            "das-gradient-balance",
            "DAS in gradient form with balance 0.1: DAS's drift and a pull of the log core norms toward their "
            "mean, both added to the core gradients (one pass)",
            DAS,
            options=(DAS_GRADIENT_BALANCE_ALPHA, ALPHA_SCHEDULE, GRAD_NORM, S_MIN, S_MAX),
            strength="das_gradient_balance_alpha",
            needs_core_groups=True,
            scheduled=True,
            compared=True,
            grid=(10.0, 100.0, 1000.0),  # DAS's: the same drift per unit alpha
            fixed={"variant": "gradient", "balance": GRADIENT_BALANCE},
        ),
        Method(
            "msam",
            "MSAM (Momentum-SAM): SAM's perturbation along the negative momentum, one pass",
            MSAM,
            options=(MSAM_RHO,),
            strength="msam_rho",
            compared=True,
            grid=(0.3, 1.0, 3.0),
        ),
        Method(
            "msam-das",
            "MSAM whose base step is DAS in gradient form (one pass; rho from --msam-rho)",
            MSAMDAS,
            options=(
                Option(
                    "msam_das_alpha",
                    1.0,
                    "msam-das: strength of its DAS gradient term (tuned on its own).",
                    keyword="alpha",
                    minimum=0,
                ),
                MSAM_RHO,
                ALPHA_SCHEDULE,
                GRAD_NORM,
                BALANCE,
            ),  # fmt: skip
            strength="msam_das_alpha",
            needs_core_groups=True,
            scheduled=True,
            grid=(0.1, 1.0, 10.0),
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
        Method(
            "jreg",
            "Jacobian regularisation (Baek et al. 2024): last-layer weight and feature penalties (one pass)",
            options=JREG_OPTIONS,
            strength="jreg_lambda",
            compared=True,
            grid=JREG_GRID,
            loss_term=JREG,
        ),
        Method(
            "saf",
            "SAF (Du et al. 2022): KL to the outputs of E epochs earlier, per-sample memory (one pass)",
            options=SAF_OPTIONS,
            strength="saf_lambda",
            compared=True,
            grid=SAF_GRID,
            loss_term=SAF,
        ),
        Method(
            "mesa",
            "MESA (Du et al. 2022): KL to an EMA teacher's outputs (one pass plus a teacher forward)",
            options=MESA_OPTIONS,
            strength="mesa_lambda",
            grid=(0.3, 0.8, 2.0),
            loss_term=MESA,
        ),
        Method(
            "das+jreg",
            "DAS and the Jacobian regularisation together (one pass)",
            DAS,
            options=DAS_OPTIONS + JREG_OPTIONS,
            strength="jreg_lambda",
            needs_core_groups=True,
            scheduled=True,
            grid=JREG_GRID,
            loss_term=JREG,
        ),
        Method(
            "das+saf",
            "DAS and SAF's trajectory loss together (one pass)",
            DAS,
            options=DAS_OPTIONS + SAF_OPTIONS,
            strength="saf_lambda",
            needs_core_groups=True,
            scheduled=True,
            grid=SAF_GRID,
            loss_term=SAF,
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
        if method.loss_term is not None and not set(method.loss_term.reads) <= set(names):
            raise ValueError(f"method {method.name!r}: its loss term reads options it does not declare")
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


def compared_methods(supplies: Iterable[str] | None = None) -> tuple[str, ...]:
    """The methods ``--compare`` runs, in registry order; with ``supplies`` (the loss-term context fields a
    family supplies), only those that family can run."""
    return tuple(m.name for m in METHODS.values() if m.compared and (supplies is None or not m.needs_missing(supplies)))


def method_of(optimizer: Optimizer) -> Method:
    """The registered method whose class ``optimizer`` is an instance of (``base`` if none); of several,
    the one with the most derived class (``msam-das``'s subclasses ``msam``'s), then the one with the most
    :attr:`Method.fixed` keywords that ``optimizer`` has (read as its attributes of those names: a preset
    such as ``das-gradient`` shares ``das``'s class).

    A loss term is not part of the optimizer: the optimizer of ``jreg`` is the base optimizer's (``base``),
    that of ``das+jreg`` is DAS's (``das``)."""
    found = []
    for method in METHODS.values():
        if not method.wraps or method.loss_term is not None:
            continue
        try:
            cls = method.wrapper
        except ImportError:  # an optional dependency that is missing: not what built ``optimizer``
            continue
        fits = all(getattr(optimizer, k, None) == v for k, v in method.fixed.items())
        if isinstance(optimizer, cls) and fits:
            found.append((len(cls.__mro__), len(method.fixed), method))
    return max(found, key=lambda t: t[:2], default=(0, 0, METHODS["base"]))[2]
