r"""Norm dynamics of GD, SAM, DAS (weight and gradient form) and MSAM on a Tucker-2 model (the paper's Figure 1).

A Tucker-2 matrix model ``X = A G B^T`` (:class:`tensordas.TuckerModel` with two modes; core group
``[G, A, B]``) is fitted by full-batch descent on the squared loss ``L = 0.5 ||X - Y||_F^2`` to a
noisy low-rank target ``Y = T + a N``:

- ``T = U V^T / sqrt(k)`` with ``U (m x k)``, ``V (n x k)`` standard Gaussian (unit-variance entries);
- ``N`` standard Gaussian, ``a`` the noise strength.

The base optimizer (``base``): plain GD (``torch.optim.SGD`` without momentum, the default),
heavy-ball momentum 0.9 (``"momentum"``) or Adam (``"adam"``, torch's defaults), all with learning rate
``eta``. The base alone, SAM, DAS in weight form (``DAS``) and in gradient form (``DAS-gradient``, its
drift added to the gradient, so the base's momentum/moments carry it), MSAM where the base has a
momentum (``momentum``, ``adam``; evaluated at its unperturbed weights), all on that base, and, with
``balance`` set, DAS with that balance (docs/design.md, section 1) start from the same initialisation
whose core norms are
deliberately unbalanced (``core_scales``), so that the norm deviation ``Q`` is clearly non-zero. Every
iteration records the loss, ``Q``, ``C`` and ``||g||`` at the current weights, in float64.

Late phase: the model's best loss is known in closed form (Eckart-Young: the best rank-``min(rank)``
approximation of the target), so each curve reports the first step at which its excess loss fell to
:data:`CONVERGED_TOL` of the initial excess (``converged_step``) and ``Q`` there (``Q_converged``); a
run longer than that shows whether ``Q`` keeps moving after the loss has converged.

First-order theory (docs/design.md, section 1, fact 3): one step of size ``eta`` changes ``Q`` under SAM by
``4 eta rho C / ||g||`` more than under GD, and DAS (with ``alpha``) reproduces that drift. The
result's ``dq_ratio`` is the measured ``(dQ_SAM - dQ_GD)`` over that prediction at the first step
from the shared initialisation (DAS: the same with ``alpha``); 1 means the theory holds.
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
from ..optim import DAS
from ..reporting import ProgressFn, ensure_dir, line_panels, results_table, save_figure, write_csv, write_json
from ..training import OptimizerConfig, build_optimizer
from ..training.methods import BASE_OPTIMIZERS
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
    "OPTIMIZERS",
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

OPTIMIZERS = ("GD", "SAM", "DAS")
GRADIENT_FORM = "DAS-gradient"  # DAS's drift as a gradient term (variant="gradient"), on every base
MSAM_CURVE = "MSAM"  # Momentum-SAM, on the bases with a momentum
MSAM_BASES = ("momentum", "adam")
BALANCED = "DAS+balance"  # the fourth curve, with ``balance`` set
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


@dataclass(frozen=True)
class DynamicsConfig:
    """Settings of the dynamics study; validated on construction (``ValueError`` naming the value).

    Attributes:
        steps: iterations per optimizer (>= 1).
        noise: noise strength ``a`` of the target ``T + a N`` (>= 0).
        seed: seed of the target and the shared initialisation.
        eta: learning rate of all three optimizers (> 0).
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

    @property
    def das_alpha(self) -> float:
        """DAS's strength: ``alpha``, or ``rho`` when not set."""
        return self.rho if self.alpha is None else self.alpha

    @property
    def msam_radius(self) -> float:
        """MSAM's radius: ``msam_rho``, or ``rho`` when not set."""
        return self.rho if self.msam_rho is None else self.msam_rho

    @property
    def optimizers(self) -> tuple[str, ...]:
        """The curves' names: the base alone, ``SAM``, ``DAS``, ``DAS-gradient``, ``MSAM`` (momentum bases)
        and, with ``balance`` set, ``DAS+balance``."""
        extra = (MSAM_CURVE,) if self.base in MSAM_BASES else ()
        extra += () if self.balance is None else (BALANCED,)
        return (BASES[self.base][0], "SAM", "DAS", GRADIENT_FORM, *extra)

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
        return self.first_step.dq_ratio["SAM"]

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
        return [
            {
                "method": _METHOD.get(row["optimizer"], "base"),
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


_METHOD = {"SAM": "sam", "DAS": "das", GRADIENT_FORM: "das-gradient", MSAM_CURVE: "msam", BALANCED: "das"}
# any other name: the base alone


def _optimizer(name: str, model: torch.nn.Module, group: CoreGroup, config: DynamicsConfig) -> torch.optim.Optimizer:
    """The base optimizer (:data:`BASES`) with step ``eta``, or SAM / DAS / DAS with balance on it."""
    opt_config = OptimizerConfig(
        method=_METHOD.get(name, "base"),
        lr=config.eta,
        rho=config.rho,
        alpha=config.das_alpha,
        das_gradient_alpha=config.das_alpha,
        msam_rho=config.msam_radius,
        **BASES[config.base][2],
    )
    if name != BALANCED:
        return build_optimizer(opt_config, model.parameters(), core_groups=[group])
    # balance is not an option of the method registry (training/, not this task's), so DAS is built
    # here with the registry's other DAS defaults; a test checks that balance=0 gives DAS's curve.
    kwargs = {"momentum": opt_config.momentum} if opt_config.base == "sgd" else {}
    return DAS(
        model.parameters(),
        BASE_OPTIMIZERS[opt_config.base],
        core_groups=[group],
        alpha=config.das_alpha,
        balance=config.balance,
        lr=config.eta,
        weight_decay=opt_config.weight_decay,
        **kwargs,
    )


def train_curve(
    name: str, problem: DynamicsProblem, config: DynamicsConfig, progress: ProgressFn | None = None
) -> Curve:
    """Train a copy of ``problem.model`` with the optimizer ``name`` (one of ``config.optimizers``)."""
    model = copy.deepcopy(problem.model)
    (group,) = model.core_groups()
    opt = _optimizer(name, model, group, config)
    losses, qs, cs, norms = [], [], [], []
    n_initial = None
    for t in range(config.steps + 1):
        with evaluation_point(opt):  # MSAM: the curves follow its unperturbed weights
            opt.zero_grad(set_to_none=True)
            loss = problem.loss(model)
            loss.backward()
            stats = group_stats(group)  # at the weights after t steps
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
        if name == "SAM":
            opt.first_step(zero_grad=True)
            problem.loss(model).backward()
            opt.second_step(zero_grad=True)
        elif name == MSAM_CURVE:  # its gradient is taken at the perturbed weights (the curve's was at w)
            opt.zero_grad(set_to_none=True)
            problem.loss(model).backward()
            opt.step()
        else:
            opt.step()
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
    gd = curves[config.optimizers[0]]
    q0, c0, g0 = gd.Q[0], gd.C[0], gd.grad_norm[0]
    strengths = {"SAM": config.rho, "DAS": config.das_alpha, GRADIENT_FORM: config.das_alpha}
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
        curves = {name: train_curve(name, problem, config, progress) for name in config.optimizers}
    return DynamicsResult(
        config=config,
        curves=curves,
        first_step=_first_step(curves, config),
        setup=_setup(config),
        loss_min=problem.loss_min(),
    )


def _setup(config: DynamicsConfig) -> dict[str, str]:
    """:data:`SETUP` with the base optimizer's text (and the balance curve's, when there is one)."""
    setup = {**SETUP, "base_optimizer": BASES[config.base][1]}
    if config.balance is not None:
        setup["das_balance"] = f"DAS(alpha, balance={config.balance:g}), otherwise as DAS"
    return setup


# ------------------------------------------------------------------------------- reporting
def plot_dynamics(result: DynamicsResult) -> Figure:
    """Q, C and the loss against iterations for the three optimizers."""
    cfg = result.config
    ratios = result.first_step.dq_ratio
    title = (
        f"Tucker-2 {cfg.size[0]}x{cfg.size[1]}, rank {cfg.rank[0]}x{cfg.rank[1]}, noise {cfg.noise:g}, "
        f"eta {cfg.eta:g}, rho {cfg.rho:g}, alpha {cfg.das_alpha:g}  |  "
        f"first-step dQ measured/predicted: SAM {ratios['SAM']:.3f}, DAS {ratios['DAS']:.3f}"
    )
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
    )
    if BALANCED in result.curves:  # the shared palette would draw it in the base's colour
        for ax in fig.axes:
            for line in ax.get_lines():
                if line.get_label() == BALANCED:
                    line.set(color=BALANCE_STYLE[0], linestyle=BALANCE_STYLE[1])
        fig.axes[0].legend(frameon=False)
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
    count=lambda config: len(config.optimizers),
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
