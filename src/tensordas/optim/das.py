r"""Deviation-Aware Scaling (DAS).

For every core group, before the base optimizer's update (docs/optimizers.md)::

    s_k = sqrt(clamp(1 + 2 alpha_t eta_t (gamma_k - gamma_bar) / (||g|| n_k), s_min^2, s_max^2))
    G_k <- s_k G_k

so each squared norm ``n_k`` moves by ``2 alpha eta (gamma_k - gamma_bar) / ||g||``: SAM's
first-order norm drift with ``rho`` replaced by ``alpha``, at no extra forward/backward pass.
``sum_k n_k`` is unchanged while no clamp bites and no core has ``n_k = 0``.

``variant="reference"`` follows the authors' public code instead:
``s_k = clamp(1 + alpha eta (gamma_k - gamma_bar) / (||g|| ||G_k||), s_min, s_max)``
(``||G_k||`` rather than ``||G_k||^2`` and no square root; the clamp is ours).

``variant="gradient"`` acts through the base optimizer instead of on the weights: before the base
step it adds to each core's gradient the term whose plain gradient step gives the sam-matched drift::

    c_k = -alpha_t (gamma_k - gamma_bar) / (||g|| n_k)
    g_k <- g_k + c_k G_k

Under plain GD with step ``eta``, ``n_k`` changes by ``-2 eta c_k n_k = 2 alpha eta (gamma_k - gamma_bar)
/ ||g||`` more than under GD (to first order): the weight form's drift. Under momentum or Adam the term
enters the buffers and moments, as SAM's extra gradient term does (the weight form bypasses them).
With ``balance`` it adds ``(beta / 2)(log n_k - mean_j log n_j)`` to ``c_k`` (again the weight form's
first-order drift). The clamp keeps the equivalent squared scale ``1 - 2 eta c_k`` in
``[s_min^2, s_max^2]``; a core that the weight form leaves at ``s_k = 1`` gets ``c_k = 0``.

``balance=beta > 0`` (off by default) multiplies each scale by the function-preserving factor::

    b_k = exp(-(beta eta_t / 2) (log n_k - mean_j log n_j))

(the mean over the group's cores with ``n_j > 0`` and a gradient). ``prod_k b_k = 1``, so for a
multilinear group the model's function is unchanged and only the norms move, towards equal core
norms (``log n_k`` drifts by ``-beta eta (log n_k - mean)`` per step). Unlike the DAS drift it does
not vanish with the gradient: it keeps acting after convergence, as SAM's balancing does. The
clamp applies to the product ``s_k b_k`` (it bites only on pathological steps).

A core with ``n_k = 0`` keeps ``s_k = 1``; a core without a gradient keeps ``s_k = 1`` and is
left out of ``gamma_bar`` and of the balance mean; a group with a non-finite ``gamma_k`` is not
scaled at that step and the event is counted (:attr:`DAS.skipped_steps`); when ``||g|| = 0`` the
DAS factor is 1 and only the balance factor acts; a scale whose formula is not finite (an overflow on
a pathological step) keeps 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._core_scaling import CoreScalingOptimizer, Eta, _Flat, _Plan
from ._wrapper import check_non_negative

__all__ = ["DAS", "das_scales_flat", "das_scales_host", "das_scales_single_group"]

VARIANTS = ("sam-matched", "reference", "gradient")
GRAD_NORMS = ("group", "global")


def _factors(variant: str, alpha: float, balance: float, s_min: float, s_max: float):
    """(DAS coefficient per unit eta, balance exponent per unit eta, clamp bounds, square root?).

    The sam-matched formula is evaluated on ``s_k^2`` (then square-rooted), so its balance factor
    enters squared: ``b_k^2 = exp(-beta eta (log n_k - mean))``.
    """
    if variant == "sam-matched":
        return 2.0 * alpha, -balance, s_min**2, s_max**2, True
    return alpha, -balance / 2.0, s_min, s_max, False


def das_scales_flat(
    f: _Flat,
    alpha: float,
    eta: Eta,
    *,
    variant: str = "sam-matched",
    s_min: float = 0.5,
    s_max: float = 2.0,
    balance: float = 0.0,
    global_norm: bool = False,
) -> torch.Tensor:
    """Scales of all cores of all groups at once (the device path): writes ``f.s``, returns each
    group's "gradient finite" flag. A constant number of operators over flat tensors, no host sync.

    Non-finite values do the bookkeeping instead of masks: a skipped group's ``gamma_bar`` is NaN,
    a zero-norm core divides by zero, and the last operator maps every non-finite scale to 1.
    """
    gradient = variant == "gradient"
    coef, bcoef, lo, hi, root = _factors("sam-matched" if gradient else variant, alpha, balance, s_min, s_max)
    v = f.views()
    n, gamma, S, idx = v.n, v.gamma, v.S, f.group_index
    if balance:
        ln0, pos = v.rows[1], v.rows[2]
        torch.sign(n, out=pos)  # 1 for n_k > 0, 0 for n_k = 0 (and for NaN)
        torch.special.xlogy(pos, n, out=ln0)  # log n_k, 0 where n_k = 0, NaN where n_k is NaN
    torch.index_add(f.seg_zero, f.seg_dim, idx, v.block, out=f.seg)  # per group: sum gamma [, sum log n, count n>0]
    # With balance, ||g|| = 0 must give a finite DAS factor of 1 so that the balance factor acts: the
    # group sums start from the dtype's tiny, and the global sum includes it (see _Flat); neither
    # changes a normal sum.
    gbar_g, gbar_k = v.pg_rows[0], v.pk_rows[0]
    if global_norm:
        gsq = v.grad_sq.sum()
        S.add_(gsq, alpha=0)  # NaN in every group when the global norm is not finite
        inv = gsq.rsqrt()
    else:
        inv_g, inv = v.pg_rows[1], v.pk_rows[1]
        torch.rsqrt(S, out=inv_g)
    torch.div(S, f.count, out=gbar_g)
    if balance:
        ml_g = v.pg_rows[-1]
        torch.div(v.seg_rows[1], v.seg_rows[2], out=ml_g)
        ml_g.addcmul_(S, v.seg_rows[1], value=0)  # NaN for a skipped group or a non-finite core norm
    torch.index_select(f.pg, 1, idx, out=f.pk)
    d = torch.sub(gamma, gbar_k)
    d.mul_(inv)
    if gradient:
        _gradient_coefficients_flat(f, d, n, ln0 if balance else None, v.pk_rows[-1], alpha, balance, eta, s_min, s_max)
        return torch.lt(S, math.inf)
    if eta.is_scalar:
        coef *= eta.value
    else:
        d.mul_(eta.value)
    x = torch.addcdiv(f.ones, d, n if root else n.sqrt(), value=coef)
    if balance:
        e = torch.sub(ln0, v.pk_rows[-1])
        e.mul_(eta.times(bcoef)).exp_()
        x.mul_(e)
    # Not finite: a zero-norm core (d / 0), a skipped group (NaN), an overflow. All keep 1.
    torch.nan_to_num(x, nan=1.0, posinf=1.0, neginf=1.0, out=f.s).clamp_(lo, hi)
    if root:
        f.s.sqrt_()
    return torch.lt(S, math.inf)  # S >= 0: finite unless inf or NaN (one operator, torch.isfinite takes four)


def _coefficient_bounds(eta: float, s_min: float, s_max: float) -> tuple[float, float]:
    """The gradient form's clamp: ``c_k`` such that the equivalent squared scale ``1 - 2 eta c_k`` lies in
    ``[s_min^2, s_max^2]`` (the weight form's clamp; it bites only on pathological steps)."""
    return (1.0 - s_max**2) / (2.0 * eta), (1.0 - s_min**2) / (2.0 * eta)


def _gradient_coefficients_flat(
    f: _Flat,
    d: torch.Tensor,
    n: torch.Tensor,
    log_n: torch.Tensor | None,
    mean_log_n: torch.Tensor,
    alpha: float,
    balance: float,
    eta: Eta,
    s_min: float,
    s_max: float,
) -> None:
    """``f.s <- c_k = -alpha d_k / n_k [+ (beta/2)(log n_k - mean log n)]`` (``d_k = (gamma_k - gamma_bar)
    / ||g||``), clamped, every non-finite value (a zero-norm core, a skipped group) mapped to 0."""
    c = torch.div(d, n)
    c.mul_(-alpha)
    if log_n is not None:
        e = torch.sub(log_n, mean_log_n)
        c.add_(e, alpha=balance / 2.0)
    torch.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0, out=f.s)
    if eta.is_scalar:
        if eta.value > 0:
            f.s.clamp_(*_coefficient_bounds(eta.value, s_min, s_max))
    else:
        f.s.clamp_(min=(1.0 - s_max**2) / (2.0 * eta.value), max=(1.0 - s_min**2) / (2.0 * eta.value))


def _mean_log_norms(n: list[float], group_index: list[int], num_groups: int) -> list[float]:
    """Per group: mean of log n_k over its cores with n_k > 0; NaN when a core norm is not finite."""
    total, count = [0.0] * num_groups, [0] * num_groups
    for g, n_k in zip(group_index, n):
        if not math.isfinite(n_k):
            total[g] = math.nan
        elif n_k > 0:
            total[g] += math.log(n_k)
            count[g] += 1
    return [t / c if c else math.nan for t, c in zip(total, count)]


def _gradient_coefficient(
    n_k: float,
    deviation: float,
    norm: float,
    skipped: bool,
    mean_log: float | None,
    eta: float,
    alpha: float,
    balance: float,
    s_min: float,
    s_max: float,
) -> float:
    """One core's ``c_k`` of the gradient form on Python floats (0 where it is not defined)."""
    if skipped or not n_k > 0:
        return 0.0
    c = -alpha * deviation / (norm * n_k) if norm > 0 else 0.0
    if mean_log is not None:
        c += balance / 2.0 * (math.log(n_k) - mean_log)  # NaN when a core norm is not finite
    if not math.isfinite(c):
        return 0.0
    if eta > 0:
        lo, hi = _coefficient_bounds(eta, s_min, s_max)
        c = min(max(c, lo), hi)
    return c


def das_scales_host(
    n: list[float],
    gamma: list[float],
    group_index: list[int],
    num_groups: int,
    eta: list[float],
    alpha: float,
    *,
    global_sq_norm: float | None = None,
    variant: str = "sam-matched",
    s_min: float = 0.5,
    s_max: float = 2.0,
    balance: float = 0.0,
) -> tuple[list[float], list[bool]]:
    """The scales of :func:`das_scales_flat` on Python floats (the CPU path: a few dozen tensor
    operations on a handful of numbers cost more than the numbers themselves)."""
    gamma_sum, count = [0.0] * num_groups, [0] * num_groups
    for g, value in zip(group_index, gamma):
        gamma_sum[g] += value
        count[g] += 1
    skipped = [not math.isfinite(s) for s in gamma_sum]
    if global_sq_norm is not None and not math.isfinite(global_sq_norm):
        skipped = [True] * num_groups
    coef, bcoef, lo, hi, root = _factors(variant, alpha, balance, s_min, s_max)
    mean_log = _mean_log_norms(n, group_index, num_groups) if balance else None
    scales = []
    for g, n_k, gamma_k, eta_k in zip(group_index, n, gamma, eta):
        norm = math.sqrt(gamma_sum[g] if global_sq_norm is None else global_sq_norm)
        if variant == "gradient":
            scales.append(
                _gradient_coefficient(
                    n_k, gamma_k - gamma_sum[g] / count[g], norm, skipped[g], mean_log and mean_log[g],
                    eta_k, alpha, balance, s_min, s_max,
                )
            )  # fmt: skip
            continue
        if skipped[g] or not n_k > 0:
            scales.append(1.0)
            continue
        x = 1.0
        if norm > 0:
            deviation = gamma_k - gamma_sum[g] / count[g]
            x = 1 + coef * eta_k * deviation / (norm * (n_k if root else math.sqrt(n_k)))
        if mean_log is not None:
            v = bcoef * eta_k * (math.log(n_k) - mean_log[g])  # NaN when a core norm is not finite
            x *= math.exp(v) if v < 709.0 else math.inf
        s = 1.0 if not math.isfinite(x) else min(max(x, lo), hi)
        scales.append(math.sqrt(s) if root else s)
    return scales, skipped


def das_scales_single_group(
    cores: list[torch.Tensor],
    alpha: float,
    eta: list[float],
    *,
    global_sq_norm: torch.Tensor | None = None,
    variant: str = "sam-matched",
    s_min: float = 0.5,
    s_max: float = 2.0,
    balance: float = 0.0,
) -> tuple[list[torch.Tensor | None], torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Reference single-tensor path for one group.

    Returns scales (None for gradient-less cores), the skipped flag, and ``(n, gamma)`` of the
    cores with a gradient (None when there is none).
    """
    active = [c for c in cores if c.grad is not None]
    if not active:
        skipped = torch.tensor(False) if global_sq_norm is None else ~torch.isfinite(global_sq_norm)
        return [None] * len(cores), skipped, None
    dtype = torch.float64 if any(c.dtype == torch.float64 for c in active) else torch.float32
    gamma = torch.stack([c.grad.to(dtype).pow(2).sum() for c in active])
    n = torch.stack([c.to(dtype).pow(2).sum() for c in active])
    skipped = ~torch.isfinite(gamma).all()
    if global_sq_norm is not None:
        skipped = skipped | ~torch.isfinite(global_sq_norm)
    coef, bcoef, lo, hi, root = _factors(variant, alpha, balance, s_min, s_max)
    eta_t = torch.tensor([e for c, e in zip(cores, eta) if c.grad is not None], dtype=dtype, device=n.device)
    norm = (gamma.sum() if global_sq_norm is None else global_sq_norm.to(dtype)).sqrt()
    deviation = gamma - gamma.mean()
    if variant == "gradient":
        c = _gradient_coefficients_single_group(n, deviation, norm, skipped, eta_t, alpha, balance, s_min, s_max)
        it = iter(c.unbind())
        return [next(it) if core.grad is not None else None for core in cores], skipped, (n, gamma)
    x = 1 + coef * eta_t * deviation / (norm * (n if root else n.sqrt()))
    x = torch.where(norm > 0, x, torch.ones_like(x))  # ||g|| = 0: the DAS factor is 1
    defined = (n > 0) & ~skipped
    if balance:
        positive = n > 0
        log_n = torch.where(positive, n.log(), torch.zeros_like(n))
        mean_log = log_n.sum() / positive.sum()
        x = x * torch.exp(bcoef * eta_t * (log_n - mean_log))
        defined &= torch.isfinite(n).all()
    defined &= torch.isfinite(x)
    s = x.clamp(lo, hi)
    s = torch.where(defined, s.sqrt() if root else s, torch.ones_like(s))
    it = iter(s.unbind())
    return [next(it) if c.grad is not None else None for c in cores], skipped, (n, gamma)


def _gradient_coefficients_single_group(
    n: torch.Tensor,
    deviation: torch.Tensor,
    norm: torch.Tensor,
    skipped: torch.Tensor,
    eta: torch.Tensor,
    alpha: float,
    balance: float,
    s_min: float,
    s_max: float,
) -> torch.Tensor:
    """The gradient form's ``c_k`` of one group's cores with a gradient (reference path)."""
    c = -alpha * deviation / (norm * n)
    c = torch.where(norm > 0, c, torch.zeros_like(c))  # ||g|| = 0: no DAS term
    defined = (n > 0) & ~skipped
    if balance:
        positive = n > 0
        log_n = torch.where(positive, n.log(), torch.zeros_like(n))
        c = c + balance / 2.0 * (log_n - log_n.sum() / positive.sum())
        defined &= torch.isfinite(n).all()
    defined &= torch.isfinite(c)
    lo, hi = (1.0 - s_max**2) / (2.0 * eta), (1.0 - s_min**2) / (2.0 * eta)  # +-inf where eta = 0
    c = torch.minimum(torch.maximum(c, lo), hi)
    return torch.where(defined, c, torch.zeros_like(c))


class DAS(CoreScalingOptimizer):
    """Deviation-Aware Scaling around any ``torch.optim.Optimizer``.

    Args:
        params: parameters (or param-group dicts) to optimize; those in no core group get
            the base update only.
        base_optimizer: optimizer class, e.g. ``torch.optim.SGD``.
        core_groups: ``td.find_core_groups(model)`` or a list of lists of tensors.
        alpha: scaling strength (the analogue of SAM's ``rho``), >= 0.
        alpha_schedule: ``"constant"``, ``"linear"`` or ``"cosine"`` decay to 0 over ``total_steps``
            (a warning says when a run passes ``total_steps``).
        total_steps: required by the decaying schedules.
        grad_norm: ``"group"`` normalises by the group's gradient norm, ``"global"`` by the
            norm of all gradients the optimizer holds (the norm SAM uses).
        variant: ``"sam-matched"`` (default, drift equals SAM's), ``"reference"`` (authors' code) or
            ``"gradient"`` (the sam-matched drift as a term added to each core's gradient before the base
            step, so momentum and Adam's moments carry it as they carry SAM's extra term; module docstring).
        s_min, s_max: clamp of the per-step scale, ``0 < s_min <= 1 <= s_max``; they bite
            only on pathological steps.
        foreach: ``False`` selects the readable per-group reference path; also passed to the
            base optimizer when it takes a ``foreach`` argument.
        balance: ``beta >= 0``, the strength of the function-preserving move towards equal core
            norms (module docstring); 0 (default) is the paper's DAS exactly. With ``beta > 0`` a
            step with ``alpha_t = 0`` still balances (alpha = 0 is the base optimizer only without
            balance), and so does a step with ``||g|| = 0``, where the DAS factor is 1.
        nonfinite: ``"warn"`` (default: an affected group is left unscaled and a warning names it
            once), ``"skip"`` (skip the whole step: no scaling, no base step, state unchanged;
            counted in :attr:`skipped_whole_steps`) or ``"raise"`` (``FloatingPointError``).
        **kwargs: hyper-parameters of the base optimizer (``lr``, ``momentum``, ...).
    """

    def __init__(
        self,
        params,
        base_optimizer,
        core_groups=None,
        alpha: float = 0.05,
        alpha_schedule: str = "constant",
        total_steps: int | None = None,
        grad_norm: str = "group",
        variant: str = "sam-matched",
        s_min: float = 0.5,
        s_max: float = 2.0,
        foreach: bool | None = None,
        balance: float = 0.0,
        nonfinite: str = "warn",
        **kwargs: Any,
    ) -> None:
        if grad_norm not in GRAD_NORMS:
            raise ValueError(f"Invalid grad_norm: {grad_norm!r} (expected 'group' or 'global')")
        if variant not in VARIANTS:
            raise ValueError(f"Invalid variant: {variant!r} (expected one of {', '.join(map(repr, VARIANTS))})")
        if not (0 < s_min <= 1 <= s_max) or s_max == float("inf"):
            raise ValueError(f"Invalid clamp s_min={s_min}, s_max={s_max} (need 0 < s_min <= 1 <= s_max < inf)")
        check_non_negative("balance", balance)
        self.grad_norm = grad_norm
        self.variant = variant
        self.s_min, self.s_max = float(s_min), float(s_max)
        self.balance = float(balance)
        super().__init__(
            params,
            base_optimizer,
            core_groups,
            alpha=alpha,
            alpha_schedule=alpha_schedule,
            total_steps=total_steps,
            need_global_norm=grad_norm == "global",
            foreach=foreach,
            nonfinite=nonfinite,
            **kwargs,
        )

    # The flat layout: gamma [, log n_k, n_k > 0] are summed per group; gamma_bar [, 1/||g||] [, mean log n] are
    # gathered back to the cores.
    @property
    def _flat_rows(self) -> int:
        return 3 if self.balance else 1

    @property
    def _flat_pg_rows(self) -> int:
        return 1 + (self.grad_norm == "group") + (self.balance > 0)

    @property
    def _flat_tiny_base(self) -> bool:
        return self.balance > 0

    def _active(self, alpha: float) -> bool:
        return alpha != 0.0 or self.balance != 0.0

    def _device_scales(self, f: _Flat, plan: _Plan, alpha: float, eta: Eta) -> torch.Tensor:
        return das_scales_flat(
            f,
            alpha,
            eta,
            variant=self.variant,
            s_min=self.s_min,
            s_max=self.s_max,
            balance=self.balance,
            global_norm=self.grad_norm == "global",
        )

    _host_path = True

    @property
    def _adds_to_grads(self) -> bool:
        return self.variant == "gradient"

    def _host_scales(self, n, gamma, plan, eta, alpha, global_sq):
        return das_scales_host(
            n,
            gamma,
            plan.group_index_list,
            len(self.core_groups),
            eta,
            alpha,
            global_sq_norm=global_sq,
            variant=self.variant,
            s_min=self.s_min,
            s_max=self.s_max,
            balance=self.balance,
        )

    def _single_tensor_rescale(self, alpha: float) -> None:
        global_sq = None
        if self.grad_norm == "global":
            grads = [p.grad for pg in self.param_groups for p in pg["params"] if p.grad is not None]
            dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
            global_sq = sum(g.to(dtype).pow(2).sum() for g in grads) if grads else torch.tensor(0.0)
        lr_of = {id(p): pg["lr"] for pg in self.param_groups for p in pg["params"]}
        for gi, group in enumerate(self.core_groups):
            scales, skipped, norms = das_scales_single_group(
                group.cores,
                alpha,
                [float(lr_of[id(c)]) for c in group.cores],
                global_sq_norm=global_sq,
                variant=self.variant,
                s_min=self.s_min,
                s_max=self.s_max,
                balance=self.balance,
            )
            self._skips.acc[gi] += skipped.to(self._skips.acc.device, torch.int64)
            applied, deviations = [], []
            for core, s in zip(group.cores, scales):
                if s is None:
                    continue
                if self.variant == "gradient":  # s is c_k: add c_k G_k to the gradient
                    eta = float(lr_of[id(core)])
                    core.grad.add_(core * s.to(core.dtype))
                    deviations.append((eta * s).abs())  # the equivalent |s_k - 1| to first order
                    s = (1 - 2 * eta * s).clamp_min(0).sqrt()  # recorded: the equivalent scale
                else:
                    core.mul_(s)
                    deviations.append((s - 1).abs())
                applied.append(s)
            if applied:
                s_all = torch.stack(applied)
                torch.maximum(self._max_dev, torch.stack(deviations).max().to(self._max_dev), out=self._max_dev)
                self._run.record.data.append((gi, *norms, s_all, skipped))

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "balance": self.balance}
