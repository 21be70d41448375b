"""The optimizer methods every comparison can run, declared once.

A *method* is what a run compares: the base optimizer alone (``base``), or a wrapper around it (``sam``,
``das``, ``bar``). Each is one :class:`Method` entry of :data:`METHODS`, which says how the optimizer
is built (its class wraps the base optimizer class), whether it needs core groups, whether it needs a
closure (a second forward/backward pass), which of its options is its *strength* (the value a tuning
grid varies: ``alpha``, ``rho``), its other options and its figure style.

The options are the fields of :class:`MethodOptions`, written out below: one name used everywhere
(experiment settings, TOML files, result records, the CLI flag: ``das_variant`` is ``--das-variant``),
the field's type and default, and its help, valid values and optimizer keyword as field metadata
(:func:`option`; :attr:`Option.keyword` maps ``das_variant`` to td.DAS's own ``variant`` here and nowhere
else). :data:`OPTIONS` is read from those fields; an entry names the options it reads.

Everything that names methods reads this registry: the training engine (one pass or two),
:class:`~tensordas.training.OptimizerConfig` and :class:`~tensordas.training.ComparisonSettings`
(subclasses of :class:`MethodOptions`), :class:`tensordas.integrations.trainer.DASTrainer`, the CLI
(``--optimizer`` choices, one flag per option, with the help written here), the records (which options
a run used), the figures' colours, ``tensordas dynamics`` and the report. Adding a method is one entry
below (with any new option as a field of :class:`MethodOptions`) plus its tests; a method defined outside
the package is one :func:`register_method` call with the options that exist.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from ..optim import BAR, DAS, MSAM, MSAMDAS, SAM
from ..optim.das import GRAD_NORMS, VARIANTS
from ..optim.looksam import looksam_class, looksam_step
from ..optim.schedules import ALPHA_SCHEDULES
from ..reporting.plots import forget_method_style, set_method_style
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
    "option",
    "register_method",
    "unregister_method",
]

BASE_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}

# A strength setting: one value, or the values a tuning grid tries (TOML list, CLI comma list).
Strength = float | tuple[float, ...]


@dataclass(frozen=True)
class Option:
    """One setting of a method, under the one name settings, records and the CLI use: a field of
    :class:`MethodOptions` read back with its metadata (:func:`option`).

    Attributes:
        name: the settings/record key; the CLI flag is ``--`` + name with dashes (``--das-variant``).
        default: the default value; its type is the option's type (float, int, str or bool).
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


def option(
    default: Any,
    help: str,
    *,
    keyword: str | None = None,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A field of :class:`MethodOptions`: its default, and what :class:`Option` says beside it (CLI help,
    the optimizer's keyword where it differs from the field's name, valid values) as the field's metadata."""
    about = {"help": help, "keyword": keyword, "choices": tuple(choices), "minimum": minimum, "maximum": maximum}
    return dataclasses.field(default=default, metadata={"option": about})


@dataclass(frozen=True)
class MethodOptions:
    """Every method's options, one field each: the base of the configurations that carry them
    (:class:`~tensordas.training.OptimizerConfig`, :class:`~tensordas.training.ComparisonSettings`, the
    families' configurations), so an option is a configuration field, a TOML key, a record key and a CLI
    flag at once. A field typed :data:`Strength` may hold the list of values a tuning grid tries.

    A new option is one field here, beside the entry that reads it; :meth:`check_options` validates the
    values against each field's metadata (:func:`option`)."""

    # SAM, LookSAM
    rho: Strength = option(0.05, "SAM/LookSAM radius.", minimum=0)
    adaptive: bool = option(False, "ASAM: scale SAM's perturbation by |w|.")
    # DAS (alpha and alpha_schedule: BAR's too)
    alpha: Strength = option(0.05, "DAS/BAR strength (the analogue of SAM's rho).", minimum=0)
    alpha_schedule: str = option(
        "constant", f"Decay of alpha over the run: {' | '.join(ALPHA_SCHEDULES)}.", choices=ALPHA_SCHEDULES
    )
    grad_norm: str = option("group", "DAS normaliser: group | global (SAM's norm).", choices=GRAD_NORMS)
    das_variant: str = option(
        "sam-matched",
        "DAS formula: sam-matched (drift equals SAM's) | reference (authors') | gradient (the drift as a gradient "
        "term, through the base optimizer).",
        keyword="variant",
        choices=VARIANTS,
    )
    s_min: float = option(
        0.5, "DAS: smallest per-step core scale, in (0, 1] (a clamp for pathological steps).", minimum=0, maximum=1
    )
    s_max: float = option(2.0, "DAS: largest per-step core scale, >= 1 (a clamp for pathological steps).", minimum=1)
    balance: float = option(
        0.0,
        "DAS: function-preserving pull toward equal core norms, beta >= 0 (experimental: docs/dynamics.md).",
        minimum=0,
    )
    # das-authors, das-gradient, das-gradient-balance
    authors_alpha: Strength = option(
        0.1, "The authors' DAS strength, cosine-decayed (their label-noise default 0.1).", keyword="alpha", minimum=0
    )
    das_gradient_alpha: Strength = option(
        1.0, "das-gradient strength (DAS's alpha, tuned on its own).", keyword="alpha", minimum=0
    )
    das_gradient_balance_alpha: Strength = option(
        100.0,
        "das-gradient-balance strength (DAS's alpha in gradient form, with balance 0.1; tuned on its own).",
        keyword="alpha",
        minimum=0,
    )
    # MSAM, msam-das
    msam_rho: Strength = option(
        3.0, "MSAM radius along -m/||m|| (its own scale: the authors use 3, not SAM's rho).", keyword="rho", minimum=0
    )
    msam_das_alpha: Strength = option(
        1.0, "msam-das: strength of its DAS gradient term (tuned on its own).", keyword="alpha", minimum=0
    )
    # LookSAM
    looksam_k: int = option(5, "LookSAM: steps between its second passes (k).", keyword="k", minimum=1)
    looksam_alpha: Strength = option(
        0.7,
        "LookSAM: weight of the reused direction, in (0, 1) (pytorch-optimizer's alpha, rescaled per parameter "
        "tensor).",
        keyword="alpha",
        minimum=0,
        maximum=1,
    )
    # The loss terms' options (docs/design.md: the terms' math and where the defaults come from).
    jreg_lambda: Strength = option(
        3e-3, "Jacobian regularisation strength: lambda * (||W_last||^2 + ratio * mean ||features||^2).", minimum=0
    )
    jreg_ratio: float = option(
        1.0, "Jacobian regularisation: weight of the feature penalty over the last-layer one.", minimum=0
    )
    # SAF's defaults: the authors' run.sh (AngusDujw/SAF): --reinforce 0.3 --minus_epoch 2 --kl_start_epoch 5, and
    # SAF_train.py's --temperature 5 (README: "a very stable parameter").
    saf_lambda: Strength = option(0.3, "SAF: weight of the trajectory loss (the authors' --reinforce).", minimum=0)
    saf_tau: float = option(
        5.0, "SAF/MESA: temperature of the trajectory loss (the authors' --temperature).", minimum=1e-6
    )
    saf_epochs: int = option(2, "SAF: epochs back to the stored outputs, E (the authors' --minus_epoch).", minimum=1)
    saf_start: int = option(
        5, "SAF: epochs trained before the trajectory loss starts (the authors' --kl_start_epoch).", minimum=0
    )
    # MESA's defaults: the authors' run.sh for MESA_train.py: --reinforce 0.8 --kl_start_epoch 5 --model-ema-decay
    # 0.9998.
    mesa_lambda: Strength = option(0.8, "MESA: weight of the distillation loss to the EMA teacher.", minimum=0)
    mesa_decay: float = option(0.9998, "MESA: decay of the teacher's weight average per step.", minimum=0, maximum=1)
    mesa_start: int = option(
        5, "MESA: epochs trained before the loss starts (the authors' --kl_start_epoch).", minimum=0
    )

    def check_options(self) -> None:
        """Check every option; a strength may be a list of values (stored as a tuple), nothing else may."""
        for spec in OPTIONS.values():
            value = getattr(self, spec.name)
            if isinstance(value, (list, tuple)):
                if spec.name not in STRENGTHS:
                    raise ValueError(
                        f"Invalid {spec.name} value: {list(value)!r} (a list is allowed only for a method's "
                        f"strength: {', '.join(STRENGTHS)})"
                    )
                if not value:
                    raise ValueError(f"Invalid {spec.name} value: [] (expected at least one value)")
                for v in value:
                    spec.check(v)
                if len(set(value)) != len(value):
                    raise ValueError(f"Invalid {spec.name} value: {list(value)!r} (a value is listed twice)")
                object.__setattr__(self, spec.name, tuple(float(v) for v in value))
            else:
                spec.check(value)

    @property
    def tuned(self) -> bool:
        """Some strength is a list of values: each method picks one on validation data."""
        return any(isinstance(getattr(self, s, None), tuple) for s in STRENGTHS)


def _read_options() -> tuple[dict[str, Option], tuple[str, ...]]:
    """:data:`OPTIONS` and the names of the :data:`Strength` fields, from :class:`MethodOptions`'s fields."""
    types = typing.get_type_hints(MethodOptions)
    options, strengths = {}, []
    for f in dataclasses.fields(MethodOptions):
        about = f.metadata.get("option")
        if about is None:
            raise TypeError(f"MethodOptions.{f.name} is not declared with option(...)")
        options[f.name] = Option(f.name, f.default, **about)
        if types[f.name] == Strength:
            strengths.append(f.name)
        elif types[f.name] is not type(f.default):
            raise TypeError(f"MethodOptions.{f.name}: its type {types[f.name]} is not its default's")
    return options, tuple(strengths)


# Every option by name, read from MethodOptions' fields.
OPTIONS: dict[str, Option]
OPTIONS, _STRENGTH_OPTIONS = _read_options()
# The base optimizer's strength: its learning rate (a setting of every configuration, not a registry option).
BASE_STRENGTH = "lr"
# The settings a tuning grid varies (the base's lr, then the Strength fields: the strengths, LookSAM's alpha):
# given a list, each method picks its value on a validation split.
STRENGTHS: tuple[str, ...] = (BASE_STRENGTH, *_STRENGTH_OPTIONS)
# Every --tune grid has this many values, so every compared method gets the same number of candidates.
GRID_SIZE = 3


@dataclass(frozen=True)
class Method:
    """How one method is built, driven and drawn.

    Attributes:
        name: the registry key, ``--optimizer`` value and the records' ``method``.
        title: a short description for help texts.
        cls: the wrapper, called as ``cls(params, base_optimizer_class, **options, **base_kwargs)``;
            ``None``: the base optimizer itself (unless ``load`` gives the class).
        load: imports and returns the wrapper class on first use (a class from an optional dependency).
        options: the names of the options it reads (its strength included; fields of :class:`MethodOptions`),
            passed as their keywords (:attr:`Option.kwarg`).
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
        color: its colour in every figure (``None``: one picked from its name, the same in every figure).
        linestyle: its matplotlib line style in every figure.
    """

    name: str
    title: str
    cls: type[Optimizer] | None = None
    options: tuple[str, ...] = ()
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
    color: str | None = None
    linestyle: str = "-"

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

    def wrapper_keywords(self) -> tuple[str, ...]:
        """The keywords of the wrapper beyond ``params`` and the base optimizer's: its options' (not its loss
        term's), its ``fixed`` ones, ``core_groups`` and ``total_steps`` where it takes them."""
        term = set(self.loss_term.reads) if self.loss_term is not None else set()
        names = [OPTIONS[n].kwarg for n in self.options if n not in term] + list(self.fixed)
        names += ["core_groups"] * self.needs_core_groups + ["total_steps"] * self.scheduled
        return tuple(names)

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
        out = {OPTIONS[n].kwarg: settings[n] for n in self.options if n not in term}
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


# --- checking an entry, registering it ------------------------------------------------------------
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_+")


def _check_strength_and_grid(method: Method) -> None:
    """The strength is one of the method's list-capable options (or the base's lr), the grid one of
    :data:`GRID_SIZE` valid values of it, ``also_tuned`` other list-capable options."""
    name, strength = method.name, method.strength
    if strength is not None and strength not in (*method.options, BASE_STRENGTH):
        raise ValueError(f"method {name!r}: strength {strength!r} is not one of its options")
    if strength == BASE_STRENGTH and not method.is_base:
        raise ValueError(f"method {name!r}: only the base optimizer is tuned over its learning rate")
    for tuned in method.tuned_options:
        if tuned not in STRENGTHS:
            raise ValueError(
                f"method {name!r}: {tuned!r} cannot be tuned: a tuned option is a MethodOptions field typed "
                f"Strength ({', '.join(STRENGTHS[1:])})"
            )
    extra = sorted(set(method.also_tuned) - set(method.options) | ({strength} & set(method.also_tuned)))
    if extra:
        raise ValueError(f"method {name!r}: also_tuned {extra} are not options beside its strength")
    if not method.grid:
        return
    if strength is None:
        raise ValueError(f"method {name!r}: a grid needs a strength to vary")
    if strength == BASE_STRENGTH:
        if not all(math.isfinite(v) and v > 0 for v in method.grid):
            raise ValueError(f"method {name!r}: learning-rate multipliers must be positive")
    else:
        for value in method.grid:
            OPTIONS[strength].check(value)
    if len(method.grid) != GRID_SIZE or len(set(method.grid)) != GRID_SIZE:
        raise ValueError(f"method {name!r}: its grid needs {GRID_SIZE} distinct values (equal budget)")


def _check_class(method: Method) -> None:
    """The wrapper is an optimizer class callable as ``cls(params, base_optimizer_class, **keywords)``, and a
    method that needs a closure (without its own ``step`` hook) takes it in ``step(closure)``."""
    cls, name = method.cls, method.name
    if cls is not None and method.load is not None:
        raise ValueError(f"method {name!r}: give cls or load, not both")
    if method.step is not None and not callable(method.step):
        raise ValueError(f"method {name!r}: step must be callable as step(optimizer, closure)")
    if cls is None:
        if method.load is not None and not callable(method.load):
            raise ValueError(f"method {name!r}: load must be callable and return the wrapper class")
        return
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise ValueError(f"method {name!r}: cls must be a torch.optim.Optimizer subclass, got {cls!r}")
    keywords = method.wrapper_keywords()
    try:
        inspect.signature(cls).bind(None, None, **dict.fromkeys(keywords))
    except TypeError as e:
        raise ValueError(
            f"method {name!r}: {cls.__name__} must accept ({', '.join(['params', 'base_optimizer', *keywords])}) "
            f"and the base optimizer's keywords: {e}"
        ) from None
    if method.needs_closure and method.step is None:
        try:
            inspect.signature(cls.step).bind(None, None)
        except (TypeError, ValueError):
            raise ValueError(f"method {name!r} needs a closure: {cls.__name__}.step must take one") from None


def _check_method(method: Method) -> None:
    """``ValueError`` saying what is wrong with the entry ``method`` (not whether its name is free)."""
    if not isinstance(method, Method):
        raise ValueError(f"register_method expects a Method, got {type(method).__name__}")
    name = method.name
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS or not name[0].isalpha():
        raise ValueError(
            f"Invalid method name {name!r} (lower-case letters, digits, '-', '_' and '+', starting with a letter)"
        )
    options = tuple(method.options)
    if not all(isinstance(o, str) for o in options):
        raise ValueError(f"method {name!r}: options are named by their MethodOptions field names (strings)")
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise ValueError(
            f"method {name!r}: unknown option(s) {', '.join(map(repr, unknown))}; the options are the fields of "
            "tensordas.training.MethodOptions (" + ", ".join(OPTIONS) + "): a new one is a field there, "
            f"`{unknown[0]}: float = option(default, help, minimum=0)` beside the entry that reads it, in "
            "tensordas/training/methods.py"
        )
    if len(set(options)) != len(options):
        raise ValueError(f"method {name!r}: an option is named twice")
    _check_strength_and_grid(method)
    if method.loss_term is not None and not set(method.loss_term.reads) <= set(options):
        raise ValueError(f"method {name!r}: its loss term reads options it does not declare")
    if method.cycle is not None and method.cycle not in options:
        raise ValueError(f"method {name!r}: its cycle {method.cycle!r} is not one of its options")
    clash = sorted(set(method.fixed) & {OPTIONS[n].kwarg for n in options})
    if clash:
        raise ValueError(f"method {name!r}: {clash} is both fixed and an option")
    _check_class(method)


METHODS: dict[str, Method] = {}


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to :data:`METHODS` after checking it; every command, configuration, the engine, the
    figures, ``tensordas reproduce``, ``dynamics`` and the Trainer integration then know it.

    A method defined outside the package reads the options that exist (fields of :class:`MethodOptions`);
    its strength is one of them typed :data:`Strength` and its ``grid`` has :data:`GRID_SIZE` values.

    Raises:
        ValueError: the name is taken (unless ``replace=True``) or malformed, an option is unknown (the message
            says how to add one), the strength, grid, loss term or ``fixed`` keywords do not fit its options,
            or the class cannot be called as ``cls(params, base_optimizer_class, **keywords)``.
    """
    _check_method(method)
    if method.name in METHODS and not replace:
        raise ValueError(f"method {method.name!r} is already registered (pass replace=True to overwrite it)")
    METHODS[method.name] = dataclasses.replace(method, options=tuple(method.options))
    set_method_style(method.name, method.color, method.linestyle)
    return METHODS[method.name]


def unregister_method(name: str) -> None:
    """Remove a method registered with :func:`register_method` (a ValueError for a built-in or unknown name)."""
    if name in _BUILT_IN:
        raise ValueError(f"method {name!r} is built in and cannot be unregistered")
    if METHODS.pop(name, None) is None:
        raise ValueError(f"no method {name!r} is registered")
    forget_method_style(name)


def registered_methods() -> tuple[Method, ...]:
    """The methods added with :func:`register_method` from outside the package (not the built-in ones): what a
    worker process, which starts with the built-in registry only, must register again to run them."""
    return tuple(m for name, m in METHODS.items() if name not in _BUILT_IN)


# --- the methods: one entry each ---------------------------------------------------------------------
DAS_OPTIONS = ("alpha", "alpha_schedule", "grad_norm", "das_variant", "s_min", "s_max", "balance")
JREG_OPTIONS = ("jreg_lambda", "jreg_ratio")
SAF_OPTIONS = ("saf_lambda", "saf_tau", "saf_epochs", "saf_start")
MESA_OPTIONS = ("mesa_lambda", "saf_tau", "mesa_decay", "mesa_start")
# das-gradient-balance's fixed pull toward equal core norms: chosen on the noisy family's exploration seeds 0-2
# by validation accuracy (balance 0 / 0.1 / 1: 0.528 / 0.561 / 0.554 at alpha 100; docs/experiments.md).
GRADIENT_BALANCE = 0.1
# Default grids: chosen in a pilot on the noisy family (tt-mlp, digits, 600 samples, 40% noise, 10 epochs,
# seeds 0-1) by validation accuracy and memorisation of the corrupted training labels: jreg acts from 1e-3
# (memorised 0.38 -> 0.23) and collapses to chance at 3e-2; SAF acts from its authors' 0.3 and breaks at 10.
JREG_GRID = (1e-3, 3e-3, 1e-2)
SAF_GRID = (0.3, 1.0, 3.0)

for _entry in (
    Method(
        "base",
        "the base optimizer alone",
        compared=True,
        strength=BASE_STRENGTH,
        grid=(0.5, 1.0, 2.0),  # multipliers of the family's lr (docs/experiments.md)
        color="#4c72b0",
    ),
    Method(
        "sam",
        "SAM: two forward/backward passes per step",
        SAM,
        options=("rho", "adaptive"),
        strength="rho",
        needs_closure=True,
        compared=True,
        grid=(0.1, 0.2, 0.3),  # the noisy and compress configs' rho grid
        color="#dd8452",
        linestyle="--",
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
        color="#55a868",
        linestyle=":",
    ),
    Method(
        "das-authors",
        "the authors' DAS: reference formula, alpha cosine-decayed (ctxGou/Tensor-SAM)",
        DAS,
        options=("authors_alpha",),
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
        options=("das_gradient_alpha", "alpha_schedule", "grad_norm", "s_min", "s_max", "balance"),
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
        options=("das_gradient_balance_alpha", "alpha_schedule", "grad_norm", "s_min", "s_max"),
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
        options=("msam_rho",),
        strength="msam_rho",
        compared=True,
        grid=(0.3, 1.0, 3.0),
    ),
    Method(
        "msam-das",
        "MSAM whose base step is DAS in gradient form (one pass; rho from --msam-rho)",
        MSAMDAS,
        options=("msam_das_alpha", "msam_rho", "alpha_schedule", "grad_norm", "balance"),
        strength="msam_das_alpha",
        needs_core_groups=True,
        scheduled=True,
        grid=(0.1, 1.0, 10.0),
    ),
    Method(
        "bar",
        "BAR (nBAR): two-core groups only",
        BAR,
        options=("alpha", "alpha_schedule"),
        strength="alpha",
        needs_core_groups=True,
        scheduled=True,
        grid=(10.0, 100.0, 1000.0),  # DAS's grid: the same strength scale
        color="#8172b3",
    ),
    Method(
        "looksam",
        "pytorch-optimizer's LookSAM (per-tensor rescaling of the reused direction, not Liu et al.'s "
        "whole-vector form): SAM's second pass every k-th step, 1 + 1/k passes per step",
        options=("rho", "looksam_k", "looksam_alpha"),
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
):
    register_method(_entry)
_BUILT_IN = frozenset(METHODS)


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
