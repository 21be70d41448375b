r"""Norm dynamics of GD, SAM, DAS (weight and gradient form), MSAM or any registered method on a Tucker-2 model
(the paper's Figure 1).

A Tucker-2 matrix model ``X = A G B^T`` (:class:`tensordas.TuckerModel` with two modes; core group
``[G, A, B]``) is fitted by full-batch descent on the squared loss ``L = 0.5 ||X - Y||_F^2`` to a
noisy low-rank target ``Y = T + a N``:

- ``T = U V^T / sqrt(k)`` with ``U (m x k)``, ``V (n x k)`` standard Gaussian (unit-variance entries);
- ``N`` standard Gaussian, ``a`` the noise strength.

The base optimizer (``base``): plain GD (``torch.optim.SGD`` without momentum, the default),
heavy-ball momentum 0.9 (``"momentum"``) or Adam (``"adam"``, torch's defaults), all with learning rate
``eta``. Each curve is a method of the registry (:mod:`tensordas.training.methods`) on that base, built by
:func:`~tensordas.training.build_optimizer` and stepped by :func:`~tensordas.training.optimizer_step` like
every family's: by default the base alone, SAM, DAS in weight form (``DAS``) and in gradient form
(``DAS-gradient``, its drift added to the gradient, so the base's momentum/moments carry it), and MSAM where
the base has a momentum (``momentum``, ``adam``; evaluated at its unperturbed weights); ``optimizers`` names
others. With ``balance`` set, one more curve is DAS with that ``balance`` option (docs/design.md, section 1).
All start from the same initialisation whose core norms are deliberately unbalanced (``core_scales``), so
that the norm deviation ``Q`` is clearly non-zero. Every iteration records the loss, ``Q``, ``C`` and
``||g||`` at the current weights, in float64.

Late phase: the model's best loss is known in closed form (Eckart-Young: the best rank-``min(rank)``
approximation of the target), so each curve reports the first step at which its excess loss fell to
:data:`CONVERGED_TOL` of the initial excess (``converged_step``) and ``Q`` there (``Q_converged``); a
run longer than that shows whether ``Q`` keeps moving after the loss has converged.

First-order theory (docs/design.md, section 1, fact 3): one step of size ``eta`` changes ``Q`` under SAM by
``4 eta rho C / ||g||`` more than under GD, and DAS (with ``alpha``) reproduces that drift. The
result's ``dq_ratio`` is the measured ``(dQ_SAM - dQ_GD)`` over that prediction at the first step
from the shared initialisation (DAS and DAS-gradient: the same with ``alpha``); 1 means the theory holds.
Methods without that prediction (:data:`PREDICTED`) have no first-step check.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import operator
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.table import Table

from ..core_groups import CoreGroup
from ..metrics import group_stats
from ..models import TuckerModel
from ..reporting import ProgressFn, ensure_dir, line_panels, results_table, save_figure, write_csv, write_json
from ..training import METHODS, OptimizerConfig, build_optimizer, get_method, optimizer_step
from ..training.optimizers import evaluation_point, settle
from .protocol import Task

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "TASK",
    "BALANCED",
    "CSV_COLUMNS",
    "BASES",
    "CONVERGED_TOL",
    "CURVE_LABELS",
    "PREDICTED",
    "Curve",
    "converged_step",
    "DynamicsConfig",
    "DynamicsProblem",
    "DynamicsResult",
    "FirstStep",
    "dynamics_table",
    "make_problem",
    "plot_dynamics",
    "run_dynamics",
    "train_curve",
    "write_dynamics",
]

# The curves' labels (the paper's Figure 1 names) of the methods run by default; any other method's curve is
# labelled by its registry name, the base alone by its base (BASES).
CURVE_LABELS = {"sam": "SAM", "das": "DAS", "das-gradient": "DAS-gradient", "msam": "MSAM"}
DEFAULT_METHODS = ("base", "sam", "das", "das-gradient")  # MSAM too on the bases with a momentum
MSAM_BASES = ("momentum", "adam")
# The methods whose first step has a first-order prediction, 4 eta s C / ||g|| with s their strength (docs/design.md,
# section 1, fact 3: SAM's drift, which DAS and its gradient form reproduce with s = alpha).
PREDICTED = ("sam", "das", "das-gradient")
BALANCED = "DAS+balance"  # the extra curve, with ``balance`` set
BALANCE_STYLE = ("#c44e52", "-.")  # its colour and line style in the figure
MOMENTUM = 0.9  # heavy-ball momentum of the ``momentum`` base
CONVERGED_TOL = 1e-4  # converged: excess loss over the optimum at most this fraction of the initial excess
CSV_COLUMNS = ("optimizer", "step", "loss", "Q", "C", "grad_norm")
JSON_NAME, CSV_NAME, PNG_NAME = "dynamics.json", "dynamics.csv", "dynamics.png"
FORMAT_VERSION = 1
DTYPE = torch.float64

SETUP = {
    "model": "Tucker-2 X = A G B^T (core group [G, A, B])",
    "loss": "0.5 * ||X - Y||_F^2",
    "target": "Y = T + noise * N, T = U V^T / sqrt(target_rank); U, V, N standard Gaussian",
    "init": "cores Gaussian with equal expected squared norms (output RMS init_rms), std times core_scales",
    "base_optimizer": "SGD (lr=eta, no momentum)",
    "sam": "SAM(rho), perturbation rho * g / ||g||",
    "das": "DAS(alpha), variant sam-matched, grad_norm group",
    "das_gradient": "DAS-gradient: DAS(alpha), variant gradient (the drift as a gradient term), grad_norm group",
    "msam": "MSAM(msam_rho): gradient at w - msam_rho * m / ||m|| (momentum bases only); curves at w",
    "dtype": "float64",
    "dq_ratio": "(dQ_X - dQ_GD) / (4 * eta * rho_X * C / ||g||) at step 1 (rho_DAS = alpha)",
}
# The base optimizers: (curve name of the base alone, setup text, OptimizerConfig settings).
BASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "sgd": ("GD", SETUP["base_optimizer"], {"base": "sgd"}),
    "momentum": (
        "momentum",
        f"SGD (lr=eta, heavy-ball momentum {MOMENTUM})",
        {"base": "sgd", "momentum": MOMENTUM},
    ),
    "adam": ("Adam", "Adam (lr=eta, torch defaults: betas (0.9, 0.999), eps 1e-8)", {"base": "adam"}),
}


# ------------------------------------------------------------------------------------ config
def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"Invalid {name} value: {value!r} (expected an integer >= {minimum})")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"Invalid {name} value: {value!r} (expected an integer >= {minimum})") from None
    if v < minimum:
        raise ValueError(f"Invalid {name} value: {v} (expected an integer >= {minimum})")
    return v


def _float(name: str, value: Any, *, positive: bool) -> float:
    what = "> 0" if positive else ">= 0"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name} value: {value!r} (expected a finite number {what})")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"Invalid {name} value: {value} (expected a finite number {what})")
    return v


def _pair(name: str, value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"Invalid {name} value: {value!r} (expected one integer or two)")
        return _int(name, value[0], 1), _int(name, value[1], 1)
    v = _int(name, value, 1)
    return v, v


# The curve labels of earlier versions, accepted in ``optimizers`` for the methods they name.
_OLD_LABELS = {"GD": "base", "momentum": "base", "Adam": "base", **{v: k for k, v in CURVE_LABELS.items()}}


def _methods(value: Any) -> tuple[str, ...]:
    """``optimizers`` as registry method names (an old curve label names its method); ``ValueError`` naming
    the value unless each is a registered method this study can run, once, with ``base`` among them."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"Invalid optimizers value: {value!r} (expected a list of method names, e.g. base,sam,das)")
    if BALANCED in value:
        raise ValueError(f"Invalid optimizers value: {BALANCED!r} is the balance curve: set balance=BETA instead")
    names = tuple(_OLD_LABELS.get(v, v) if isinstance(v, str) else v for v in value)
    for name in names:
        method = get_method(name)  # ValueError naming an unknown method
        if method.loss_term is not None:
            raise ValueError(
                f"Invalid optimizers value: {name!r} adds a loss term from a classifier's outputs, which the "
                "dynamics study (a matrix fit) does not have"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"Invalid optimizers value: {list(value)!r} (a method is named twice)")
    if "base" not in names:
        raise ValueError(
            f"Invalid optimizers value: {list(value)!r} (add base: the reference of every first-step check)"
        )
    return names


@dataclass(frozen=True)
class DynamicsConfig:
    """Settings of the dynamics study; validated on construction (``ValueError`` naming the value).

    Attributes:
        steps: iterations per optimizer (>= 1).
        noise: noise strength ``a`` of the target ``T + a N`` (>= 0).
        seed: seed of the target and the shared initialisation.
        eta: learning rate of every curve's optimizer (> 0).
        rho: SAM's radius (>= 0).
        alpha: DAS's strength (>= 0); ``None`` means ``rho``.
        size: ``(m, n)`` of the matrix, or one int for a square one.
        rank: Tucker-2 ranks ``(r1, r2)`` of the model (``r1 <= m``, ``r2 <= n``), or one int.
        target_rank: rank ``k`` of the clean target ``T`` (<= min(m, n)); ``None`` means ``min(rank)``.
        init_rms: root-mean-square of the initial model's entries (small: the model grows to fit).
        core_scales: multipliers of the initial ``[G, A, B]`` (about their norms, not squared norms)
            relative to a balanced start; their product is the output's extra scale.
        base: the base optimizer, one of :data:`BASES` (``sgd``: plain GD, ``momentum``: heavy-ball
            0.9, ``adam``).
        balance: ``beta >= 0`` adds a curve, DAS with ``balance=beta``; ``None``: no such curve.
        msam_rho: MSAM's radius (>= 0; momentum and adam bases); ``None`` means ``rho``.
        optimizers: the methods to run, names of the method registry (``base`` among them: the reference of
            the first-step check), each on ``base`` with ``eta``, SAM's ``rho``, DAS's ``alpha`` (also the
            gradient form's) and ``msam_rho``, every other option at its default; the old curve labels
            (``GD``, ``SAM``, ``DAS-gradient``, ...) name their methods. ``None``: ``base``, ``sam``, ``das``,
            ``das-gradient`` and, on the momentum and adam bases, ``msam``.
    """

    steps: int = 1000
    noise: float = 0.5
    seed: int = 0
    eta: float = 2e-3
    rho: float = 0.05
    alpha: float | None = None
    size: tuple[int, int] = (30, 30)
    rank: tuple[int, int] = (4, 4)
    target_rank: int | None = None
    init_rms: float = 0.03
    core_scales: tuple[float, float, float] = (2.0, 1.0, 0.5)
    base: str = "sgd"
    balance: float | None = None
    msam_rho: float | None = None
    optimizers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "steps", _int("steps", self.steps, 1))
        set_(self, "noise", _float("noise", self.noise, positive=False))
        set_(self, "seed", _int("seed", self.seed, 0))
        if self.seed >= 2**63:
            raise ValueError(f"Invalid seed value: {self.seed} (expected < 2**63)")
        set_(self, "eta", _float("eta", self.eta, positive=True))
        set_(self, "rho", _float("rho", self.rho, positive=False))
        if self.alpha is not None:
            set_(self, "alpha", _float("alpha", self.alpha, positive=False))
        set_(self, "size", _pair("size", self.size))
        set_(self, "rank", _pair("rank", self.rank))
        for mode, (r, s) in enumerate(zip(self.rank, self.size)):
            if r > s:
                raise ValueError(f"Invalid rank value: {self.rank} (rank {r} of mode {mode} exceeds size {s})")
        if self.target_rank is not None:
            k = _int("target_rank", self.target_rank, 1)
            if k > min(self.size):
                raise ValueError(f"Invalid target_rank value: {k} (exceeds min(size) = {min(self.size)})")
            set_(self, "target_rank", k)
        set_(self, "init_rms", _float("init_rms", self.init_rms, positive=True))
        scales = self.core_scales
        if not isinstance(scales, (list, tuple)) or len(scales) != 3:
            raise ValueError(f"Invalid core_scales value: {scales!r} (expected 3 numbers, for G, A, B)")
        set_(self, "core_scales", tuple(_float("core_scales", s, positive=True) for s in scales))
        if self.base not in BASES:
            raise ValueError(f"Invalid base value: {self.base!r} (expected one of {', '.join(BASES)})")
        if self.balance is not None:
            set_(self, "balance", _float("balance", self.balance, positive=False))
        if self.msam_rho is not None:
            set_(self, "msam_rho", _float("msam_rho", self.msam_rho, positive=False))
        if self.optimizers is not None:
            set_(self, "optimizers", _methods(self.optimizers))

    @property
    def das_alpha(self) -> float:
        """DAS's strength: ``alpha``, or ``rho`` when not set."""
        return self.rho if self.alpha is None else self.alpha

    @property
    def msam_radius(self) -> float:
        """MSAM's radius: ``msam_rho``, or ``rho`` when not set."""
        return self.rho if self.msam_rho is None else self.msam_rho

    @property
    def methods(self) -> tuple[str, ...]:
        """The registry methods run: ``optimizers``, or the default set for ``base``."""
        if self.optimizers is not None:
            return self.optimizers
        return DEFAULT_METHODS + (("msam",) if self.base in MSAM_BASES else ())

    @property
    def curve_methods(self) -> dict[str, str]:
        """Each curve's label and its method: the base alone (``GD``, ``momentum``, ``Adam``), ``SAM``, ``DAS``,
        ``DAS-gradient``, ``MSAM``, other methods by name, and ``DAS+balance`` with ``balance`` set."""
        labels = {m: BASES[self.base][0] if m == "base" else CURVE_LABELS.get(m, m) for m in self.methods}
        out = {label: m for m, label in labels.items()}
        if self.balance is not None:
            out[BALANCED] = "das"
        return out

    @property
    def curves(self) -> tuple[str, ...]:
        """The curves' labels, in the order they run (:attr:`curve_methods`)."""
        return tuple(self.curve_methods)

    @property
    def clean_rank(self) -> int:
        """Rank of the clean target: ``target_rank``, or ``min(rank)`` when not set."""
        return min(self.rank) if self.target_rank is None else self.target_rank

    def to_dict(self) -> dict[str, Any]:
        """Plain settings with ``alpha`` and ``target_rank`` resolved; ``DynamicsConfig(**d)`` rebuilds it."""
        d = asdict(self)
        d.update(alpha=self.das_alpha, target_rank=self.clean_rank, size=list(self.size), rank=list(self.rank))
        d["msam_rho"] = self.msam_radius
        d["core_scales"] = list(self.core_scales)
        d["optimizers"] = list(self.methods)
        return d


# ----------------------------------------------------------------------------------- problem
@dataclass
class DynamicsProblem:
    """The target and the shared initialisation; each optimizer trains its own copy of ``model``."""

    model: TuckerModel
    target: torch.Tensor  # Y = T + a N
    clean: torch.Tensor  # T

    def loss(self, model: torch.nn.Module) -> torch.Tensor:
        """The squared loss ``0.5 ||model() - Y||_F^2``."""
        return 0.5 * (model() - self.target).pow(2).sum()

    def loss_min(self) -> float:
        """The model's smallest loss (Eckart-Young): ``A G B^T`` reaches every matrix of rank at most
        ``min(r1, r2)``, so the optimum leaves the target's other squared singular values, halved."""
        r = min(self.model.core.shape)
        return 0.5 * float(torch.linalg.svdvals(self.target)[r:].pow(2).sum())


def make_problem(config: DynamicsConfig) -> DynamicsProblem:
    """Draw the target and the unbalanced initialisation from ``config.seed`` (float64, CPU).

    A balanced start gives every core the same expected squared norm ``c`` with output RMS
    ``init_rms``: entries of ``X`` sum ``r1 r2`` products of three entries, so
    ``c^3 = init_rms^2 m n r1 r2``; ``core_scales`` then multiplies each core.
    """
    gen = torch.Generator().manual_seed(config.seed)
    (m, n), (r1, r2), k = config.size, config.rank, config.clean_rank
    u = torch.randn(m, k, generator=gen, dtype=DTYPE)
    v = torch.randn(n, k, generator=gen, dtype=DTYPE)
    clean = u @ v.T / math.sqrt(k)
    target = clean + config.noise * torch.randn(m, n, generator=gen, dtype=DTYPE)
    balanced_sq_norm = (config.init_rms**2 * m * n * r1 * r2) ** (1 / 3)
    numels = (r1 * r2, m * r1, n * r2)  # G, A, B
    scales = [s * math.sqrt(balanced_sq_norm / numel) for s, numel in zip(config.core_scales, numels)]
    model = TuckerModel((m, n), (r1, r2), std=1.0, core_scales=scales, generator=gen, dtype=DTYPE)
    return DynamicsProblem(model=model, target=target, clean=clean)


# ------------------------------------------------------------------------------------ result
@dataclass
class Curve:
    """Per-iteration record of one optimizer; entry ``t`` is measured at the weights after ``t`` steps."""

    step: list[int]
    loss: list[float]
    Q: list[float]
    C: list[float]
    grad_norm: list[float]
    n_initial: list[float]  # squared core norms [G, A, B] at step 0
    n_final: list[float]  # ... and after the last step


@dataclass
class FirstStep:
    """Theory check at the first step from the shared initialisation (per optimizer SAM, DAS)."""

    Q: float
    C: float
    grad_norm: float
    predicted: dict[str, float]  # 4 eta rho C / ||g|| (alpha for DAS)
    measured: dict[str, float]  # Q_X[1] - Q_GD[1]
    dq_ratio: dict[str, float]  # measured / predicted (NaN when the prediction is 0)


def converged_step(loss: list[float], loss_min: float, tol: float = CONVERGED_TOL) -> int | None:
    """The first step whose excess loss ``loss - loss_min`` is at most ``tol`` times the initial excess
    (``None`` if none is)."""
    bound = loss_min + tol * (loss[0] - loss_min)
    return next((t for t, x in enumerate(loss) if x <= bound), None)


@dataclass
class DynamicsResult:
    """Curves per optimizer (the base alone, ``SAM``, ``DAS``, maybe ``DAS+balance``), the first-step
    theory check and the model's optimal loss (for the late phase)."""

    config: DynamicsConfig
    curves: dict[str, Curve]
    first_step: FirstStep
    setup: dict[str, str] = field(default_factory=lambda: dict(SETUP))
    loss_min: float = math.nan

    @property
    def dq_ratio(self) -> float:
        """SAM's measured over predicted first-step change of ``Q`` relative to the base alone."""
        return self.first_step.dq_ratio.get("SAM", math.nan)

    def summary(self) -> list[dict[str, Any]]:
        """One row per optimizer: final loss, Q, C, dq_ratio (``None`` for the base alone, the
        reference), the step the loss converged at (``None``: not within the run) and Q there."""
        rows = []
        for name, c in self.curves.items():
            t = converged_step(c.loss, self.loss_min)
            rows.append(
                {
                    "optimizer": name,
                    "final_loss": c.loss[-1],
                    "final_Q": c.Q[-1],
                    "final_C": c.C[-1],
                    "dq_ratio": self.first_step.dq_ratio.get(name),
                    "converged_step": t,
                    "Q_converged": None if t is None else c.Q[t],
                }
            )
        return rows

    def records(self) -> list[dict[str, Any]]:
        """One record per optimizer in the shared schema (:mod:`tensordas.tasks.records`): the final
        training loss, Q and C, and the first-step ``dq_ratio``."""
        settings = BASES[self.config.base][2]
        methods = self.config.curve_methods
        return [
            {
                "method": methods[row["optimizer"]],
                "base": settings["base"],
                "momentum": settings.get("momentum", 0.0),
                "balance": self.config.balance if row["optimizer"] == BALANCED else None,
                "optimizer": row["optimizer"],
                "seed": self.config.seed,
                "selected": {},
                "train_loss": row["final_loss"],
                "Q": row["final_Q"],
                "C": row["final_C"],
                "dq_ratio": row["dq_ratio"],
                "Q_converged": row["Q_converged"],
                "converged_step": row["converged_step"],
                "diverged": False,  # a diverged study raises
                "steps": self.config.steps,
                "step_time_ms": None,
                "wall_time_s": None,
            }
            for row in self.summary()
        ]

    def rows(self) -> Iterator[dict[str, Any]]:
        """The curves in long format, keyed by :data:`CSV_COLUMNS`."""
        for name, c in self.curves.items():
            for i, step in enumerate(c.step):
                yield {
                    "optimizer": name,
                    "step": step,
                    "loss": c.loss[i],
                    "Q": c.Q[i],
                    "C": c.C[i],
                    "grad_norm": c.grad_norm[i],
                }

    def to_dict(self) -> dict[str, Any]:
        """Everything written to ``dynamics.json`` (no timings or paths: same seed, same file)."""
        from .. import __version__

        summary = {row.pop("optimizer"): row for row in self.summary()}
        for name, c in self.curves.items():
            summary[name].update(n_initial=c.n_initial, n_final=c.n_final)
        curves = {
            name: {k: getattr(c, k) for k in ("step", "loss", "Q", "C", "grad_norm")} for name, c in self.curves.items()
        }
        return {
            "task": "dynamics",
            "format_version": FORMAT_VERSION,
            "tensordas_version": __version__,
            "torch_version": torch.__version__,
            "config": self.config.to_dict(),
            "setup": self.setup,
            "dq_ratio": self.dq_ratio,
            "first_step": asdict(self.first_step),
            "loss_min": self.loss_min,
            "converged_tol": CONVERGED_TOL,
            "summary": summary,
            "files": {"csv": CSV_NAME, "png": PNG_NAME},
            "curves": curves,
        }


def _from_dict(data: Mapping[str, Any]) -> DynamicsResult:
    """The result stored by :func:`write_dynamics` (``KeyError``/``TypeError`` if it is not one)."""
    curves = {
        name: Curve(**data["curves"][name], n_initial=row["n_initial"], n_final=row["n_final"])
        for name, row in data["summary"].items()
    }
    if data.get("converged_tol") != CONVERGED_TOL:
        raise ValueError("written with another convergence tolerance")
    return DynamicsResult(
        config=DynamicsConfig(**data["config"]),
        curves=curves,
        first_step=FirstStep(**data["first_step"]),
        setup=dict(data["setup"]),
        loss_min=float(data["loss_min"]),
    )


def load_dynamics(out_dir: str | Path, config: DynamicsConfig) -> DynamicsResult | None:
    """The finished study in ``out_dir`` if its ``dynamics.json`` is intact and was run with ``config``."""
    try:
        data = json.loads((Path(out_dir) / JSON_NAME).read_text(encoding="utf-8"))
        result = _from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return result if result.config.to_dict() == config.to_dict() else None


# --------------------------------------------------------------------------------------- run
@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # The study's tensors are tiny: a thread pool only adds overhead (badly so on a busy machine),
    # and one thread makes the numbers independent of the core count.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _optimizer_config(name: str, config: DynamicsConfig) -> OptimizerConfig:
    """What the curve ``name`` trains with: its method on the base with step ``eta``, SAM's ``rho``, DAS's
    ``alpha`` (also the gradient form's), ``msam_rho``, DAS's ``balance`` option on the balance curve, every
    other option at the registry's default."""
    balance = {"balance": config.balance} if name == BALANCED else {}
    return OptimizerConfig(
        method=config.curve_methods[name],
        lr=config.eta,
        rho=config.rho,
        alpha=config.das_alpha,
        das_gradient_alpha=config.das_alpha,
        msam_rho=config.msam_radius,
        total_steps=config.steps,  # a decaying schedule (the authors' DAS) spans the curve
        **balance,
        **BASES[config.base][2],
    )


def _optimizer(name: str, model: torch.nn.Module, group: CoreGroup, config: DynamicsConfig) -> torch.optim.Optimizer:
    """The optimizer of the curve ``name`` (:func:`_optimizer_config`), built by the method registry."""
    return build_optimizer(_optimizer_config(name, config), model.parameters(), core_groups=[group])


def train_curve(
    name: str, problem: DynamicsProblem, config: DynamicsConfig, progress: ProgressFn | None = None
) -> Curve:
    """Train a copy of ``problem.model`` with the curve ``name``'s optimizer (one of ``config.curves``)."""
    model = copy.deepcopy(problem.model)
    (group,) = model.core_groups()
    opt = _optimizer(name, model, group, config)
    method = METHODS[config.curve_methods[name]]
    params = list(model.parameters())
    # The loss whose gradient is in .grad and the parameters' version counters when it was taken: the step's
    # first pass reuses it while no parameter has changed in place since (every method but MSAM, whose
    # evaluation point is not where it rests), so a curve costs no extra pass.
    taken: list[tuple[torch.Tensor, list[int]]] = []

    def closure() -> torch.Tensor:
        if taken and taken[-1][1] == [p._version for p in params]:
            return taken.pop()[0]
        taken.clear()
        opt.zero_grad(set_to_none=True)
        loss = problem.loss(model)
        loss.backward()
        return loss

    losses, qs, cs, norms = [], [], [], []
    n_initial = None
    for t in range(config.steps + 1):
        with evaluation_point(opt):  # MSAM: the curves follow its unperturbed weights
            taken.clear()
            loss = closure()
            stats = group_stats(group)  # at the weights after t steps
            taken.append((loss, [p._version for p in params]))  # MSAM's moving back up will change them
        losses.append(loss.detach())
        qs.append(stats.Q)
        cs.append(stats.C)
        norms.append(stats.grad_norm)
        if n_initial is None:
            n_initial = stats.n.tolist()
        if not torch.isfinite(loss):
            raise ValueError(
                f"{name} diverged at step {t} (loss {loss.detach().item()}); use a smaller eta than {config.eta}"
            )
        if t == config.steps:
            break
        optimizer_step(opt, closure, method)  # as every family steps: one pass, or SAM's two
        if progress is not None:
            progress(name, t + 1, config.steps)
    settle(opt)
    return Curve(
        step=list(range(config.steps + 1)),
        loss=torch.stack(losses).tolist(),
        Q=torch.stack(qs).tolist(),
        C=torch.stack(cs).tolist(),
        grad_norm=torch.stack(norms).tolist(),
        n_initial=n_initial,
        n_final=stats.n.tolist(),
    )


def _first_step(curves: Mapping[str, Curve], config: DynamicsConfig) -> FirstStep:
    """The first step's change of ``Q`` over the base alone's, measured and predicted, for each curve of a method
    with a prediction (:data:`PREDICTED`; not the balance curve)."""
    methods = config.curve_methods
    gd = curves[next(label for label, m in methods.items() if m == "base")]
    q0, c0, g0 = gd.Q[0], gd.C[0], gd.grad_norm[0]
    strengths = {}
    for label, method in methods.items():
        if method in PREDICTED and label != BALANCED:
            strengths[label] = getattr(_optimizer_config(label, config), get_method(method).strength)
    predicted, measured, ratio = {}, {}, {}
    for name, strength in strengths.items():
        predicted[name] = 4 * config.eta * strength * c0 / g0 if g0 > 0 else 0.0
        measured[name] = curves[name].Q[1] - gd.Q[1]
        ratio[name] = measured[name] / predicted[name] if predicted[name] != 0 else math.nan
    return FirstStep(Q=q0, C=c0, grad_norm=g0, predicted=predicted, measured=measured, dq_ratio=ratio)


def run_dynamics(
    config: DynamicsConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: ProgressFn | None = None,
) -> DynamicsResult:
    """Train the base alone, SAM and DAS (and DAS with balance) from one shared initialisation and
    record loss, Q, C per iteration.

    Args:
        config: settings (defaults: :class:`DynamicsConfig`).
        out_dir: with ``resume``, a finished study of the same settings written there is returned as is.
        resume: reuse a finished study in ``out_dir``.
        progress: called as ``progress(optimizer, steps_done, steps)`` after every step.

    Raises:
        ValueError: if a run diverges (non-finite loss; lower ``eta``).
    """
    config = config or DynamicsConfig()
    done = load_dynamics(out_dir, config) if (out_dir is not None and resume) else None
    if done is not None:
        if progress is not None:
            for name in done.curves:
                progress(name, 1, 1)
        return dataclasses.replace(done, config=config)
    problem = make_problem(config)
    with _one_thread():
        curves = {name: train_curve(name, problem, config, progress) for name in config.curves}
    return DynamicsResult(
        config=config,
        curves=curves,
        first_step=_first_step(curves, config),
        setup=_setup(config),
        loss_min=problem.loss_min(),
    )


def _setup(config: DynamicsConfig) -> dict[str, str]:
    """:data:`SETUP` with the base optimizer's text (and the balance curve's, when there is one); a method it does
    not describe, by its registry title."""
    setup = {**SETUP, "base_optimizer": BASES[config.base][1]}
    for method in config.methods:
        if method not in ("base", *CURVE_LABELS):
            setup[method] = f"{get_method(method).title} (registry defaults but eta, rho, alpha, msam_rho)"
    if config.balance is not None:
        setup["das_balance"] = f"DAS(alpha, balance={config.balance:g}), otherwise as DAS"
    return setup


# ------------------------------------------------------------------------------- reporting
def plot_dynamics(result: DynamicsResult) -> Figure:
    """Q, C and the loss against iterations, one line per curve in its method's style (the balance curve in
    :data:`BALANCE_STYLE`)."""
    cfg = result.config
    ratios = ", ".join(f"{k} {v:.3f}" for k, v in result.first_step.dq_ratio.items() if k in ("SAM", "DAS"))
    title = (
        f"Tucker-2 {cfg.size[0]}x{cfg.size[1]}, rank {cfg.rank[0]}x{cfg.rank[1]}, noise {cfg.noise:g}, "
        f"eta {cfg.eta:g}, rho {cfg.rho:g}, alpha {cfg.das_alpha:g}"
    )
    if ratios:
        title += f"  |  first-step dQ measured/predicted: {ratios}"
    if cfg.base != "sgd":
        title += f"  |  base {cfg.base}"
    if cfg.balance is not None:
        title += f"  |  DAS+balance: beta {cfg.balance:g}"
    series = {name: asdict(c) for name, c in result.curves.items()}
    fig = line_panels(
        series,
        "step",
        ["Q", "C", "loss"],
        ylabels={
            "Q": "norm deviation Q",
            "C": "norm-gradient covariance C",
            "loss": "loss 0.5||X - Y||²",
        },
        yscales={"C": "symlog", "loss": "log"},
        xlabel="iteration",
        title=title,
        styles={BALANCED: BALANCE_STYLE},  # DAS with one option changed: not DAS's style
    )
    return fig


def dynamics_table(result: DynamicsResult) -> Table:
    """Rich table: optimizer, final loss, final Q, final C, first-step dq_ratio."""
    return results_table(
        result.summary(),
        {
            "optimizer": "optimizer",
            "final_loss": "final loss",
            "final_Q": "final Q",
            "final_C": "final C",
            "dq_ratio": "dq_ratio",
            "converged_step": "converged at",
            "Q_converged": "Q there",
        },
        title=f"Norm dynamics ({result.config.steps} steps, base {result.config.base}, seed {result.config.seed})",
        caption="dq_ratio: measured (dQ_X - dQ_GD) / predicted 4·eta·rho·C/||g|| at step 1 (1 = first-order theory); "
        f"converged: excess loss over the optimum <= {CONVERGED_TOL:g} of the initial excess",
    )


def write_dynamics(result: DynamicsResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``dynamics.csv`` (``paths["curves"]``), ``dynamics.png`` (``"figure"``) and, last,
    ``dynamics.json`` (``"results"``) into ``out_dir``.

    Each file is written atomically; an older ``dynamics.json`` is removed first, so a folder
    holds a ``dynamics.json`` only when the files beside it come from the same, finished run.
    """
    out = ensure_dir(out_dir)
    json_path = out / JSON_NAME
    json_path.unlink(missing_ok=True)
    paths = {"curves": write_csv(out / CSV_NAME, result.rows(), CSV_COLUMNS)}
    paths["figure"] = save_figure(plot_dynamics(result), out / PNG_NAME)
    paths["results"] = write_json(json_path, result.to_dict())
    return paths


TASK = Task(
    name="dynamics",
    title="norm dynamics of GD, SAM and DAS on a Tucker-2 model",
    config=DynamicsConfig,
    run=run_dynamics,
    write=lambda result, config, out_dir: write_dynamics(result, out_dir),
    table=lambda result, config: dynamics_table(result),
    plot=lambda result, config: plot_dynamics(result),
    records=DynamicsResult.records,
    count=lambda config: len(config.curves),
    record_columns={
        "optimizer": "optimizer",
        "train_loss": "final loss",
        "Q": "final Q",
        "Q_converged": "Q at convergence",
        "dq_ratio": "dq_ratio",
    },
    note="dq_ratio: measured (dQ_X - dQ_GD) / predicted 4·eta·rho·C/||g|| at the first step (1 = theory).",
    command="dynamics",
)
