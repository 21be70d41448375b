"""Step-overhead benchmark: wall time per training step of base vs DAS vs SAM (docs/performance.md).

A residual CNN whose convolutions are Tucker-2 tensorized (``W = A x G x B``, one core group of
three cores per layer) plus a tensor-train linear layer (three cores) is trained on one fixed,
synthetic CIFAR-shaped batch with

- base: ``torch.optim.SGD(lr, momentum=0.9)``
- DAS:  ``td.DAS(..., torch.optim.SGD, core_groups=td.find_core_groups(model), lr, momentum=0.9)``
- SAM:  ``td.SAM(..., torch.optim.SGD, rho=0.05, lr, momentum=0.9)``, stepped with a closure
- DAS in gradient form (``variant="gradient"``; with ``balance=0.1``: ``das-gradient-balance``) and MSAM
  (``td.MSAM(..., rho=--msam-rho)``), the other one-pass candidates, timed in the same rotation (full
  steps only)

Three identical copies of the model are timed in one process, interleaved: every round runs a block
of ``--steps-per-round`` full training steps (zero_grad, forward, backward, optimizer step) for each
optimizer in a rotating order, then a block of ``opt.step()`` calls alone for base and DAS (on the
gradients of the last full step; parameters and momentum are restored afterwards, outside the
timer). Warm-up rounds come first and are not recorded. Reported: medians over rounds of the
per-step times and of the per-round (paired) ratios DAS/base and DAS/SAM, and whether the
performance goals are met (the script never fails on a missed goal).

``--groups N`` sets the number of core groups (N-1 tensorized conv blocks + the TT linear layer);
``--sweep N1,N2,..`` times ``opt.step()`` alone for base and DAS for each number of groups and
counts the ATen operators (and, on CUDA, the kernels) that ``DAS.rescale_cores()`` dispatches, to
show that DAS's host work does not grow with the number of groups. ``--force-device-path`` runs
the device (CUDA) path's code on CPU tensors, so its operator count can be checked without a GPU.
``--compile`` times ``opt.step()`` alone, eager against ``torch.compile``, for base and DAS.

Run ``python benchmarks/step_overhead.py --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import tensordas as td
from tensordas.training import synchronize
from tensordas.training.methods import GRADIENT_BALANCE

GOALS = {"cpu": {"das_over_base": 1.03, "das_over_sam": 0.55}, "cuda": {"das_over_base": 1.03, "das_over_sam": 0.52}}
KINDS = ("base", "das", "sam", "das-gradient", "das-gradient-balance", "msam")
ONE_PASS = (
    "das-gradient",
    "das-gradient-balance",
    "msam",
)  # the other one-pass candidates: full-step ratios to base and SAM


# --------------------------------------------------------------------------- tensorized layers
def _core(shape: tuple[int, ...], std: float, gen: torch.Generator) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape, generator=gen) * std)


class TuckerConv2d(nn.Module):
    """Tucker-2 convolution: ``W[o, i] = sum_ab A[o, a] G[a, b] B[i, b]`` (one group ``[A, G, B]``)."""

    def __init__(self, cin: int, cout: int, k: int, rank: int, gen: torch.Generator) -> None:
        super().__init__()
        # Kaiming variance for W, split evenly over the three cores (Var W = r^2 vA vG vB).
        std = (2.0 / (cin * k * k) / rank**2) ** (1 / 6)
        self.A = _core((cout, rank), std, gen)
        self.G = _core((rank, rank, k, k), std, gen)
        self.B = _core((cin, rank), std, gen)
        self.padding = k // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.einsum("oa,abhw,ib->oihw", self.A, self.G, self.B)
        return F.conv2d(x, w, padding=self.padding)

    def core_groups(self) -> list[td.CoreGroup]:
        return [td.CoreGroup("tucker2", [self.A, self.G, self.B])]


class TTLinear(nn.Module):
    """Tensor-train linear layer ``(i1 i2 i3) -> (o1 o2 o3)`` with three cores (one group)."""

    def __init__(self, ins: tuple[int, int, int], outs: tuple[int, int, int], rank: int, gen: torch.Generator) -> None:
        super().__init__()
        fan_in = math.prod(ins)
        std = (1.0 / fan_in / rank**2) ** (1 / 6)
        self.C1 = _core((outs[0], ins[0], rank), std, gen)
        self.C2 = _core((rank, outs[1], ins[1], rank), std, gen)
        self.C3 = _core((rank, outs[2], ins[2]), std, gen)
        self.bias = nn.Parameter(torch.zeros(math.prod(outs)))
        self.out_features, self.in_features = math.prod(outs), fan_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.einsum("aip,pbjq,qck->abcijk", self.C1, self.C2, self.C3)
        return F.linear(x, w.reshape(self.out_features, self.in_features), self.bias)

    def core_groups(self) -> list[td.CoreGroup]:
        return [td.CoreGroup("tt", [self.C1, self.C2, self.C3])]


def _factor3(n: int) -> tuple[int, int, int]:
    """Split n into three factors as even as possible (n = a*b*c)."""
    best = (n, 1, 1)
    for a in range(1, n + 1):
        for b in range(1, n // a + 1):
            if n % (a * b) == 0:
                c = n // (a * b)
                if max(a, b, c) < max(best):
                    best = (a, b, c)
    return best


class TensorizedNet(nn.Module):
    """Dense stem, ``groups-1`` residual Tucker-2 conv blocks with BatchNorm, TT linear, dense head."""

    def __init__(self, groups: int, width: int, rank: int, hidden: int, classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"--groups must be >= 1, got {groups}")
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.convs = nn.ModuleList(TuckerConv2d(width, width, 3, rank, gen) for _ in range(groups - 1))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(groups - 1))
        self.fc = TTLinear(_factor3(width), _factor3(hidden), max(2, rank // 2), gen)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for conv, bn in zip(self.convs, self.bns):
            x = F.relu(x + bn(conv(x)))
        x = F.relu(self.fc(x.mean((2, 3))))
        return self.head(x)


# --------------------------------------------------------------------------- helpers
def build(args: argparse.Namespace, groups: int, device: torch.device):
    """Identical models, one per optimizer of :data:`KINDS`, and their optimizers."""
    models = {k: TensorizedNet(groups, args.width, args.rank, args.hidden, seed=args.seed).to(device) for k in KINDS}

    def das(kind: str, **options) -> td.DAS:
        """DAS on ``models[kind]`` with the benchmark's alpha, lr and momentum (and ``options``: its variant)."""
        model = models[kind]
        return td.DAS(model.parameters(), torch.optim.SGD, core_groups=td.find_core_groups(model),
                      alpha=args.alpha, lr=args.lr, momentum=0.9, **options)  # fmt: skip

    opts = {
        "base": torch.optim.SGD(models["base"].parameters(), lr=args.lr, momentum=0.9),
        "das": das("das"),
        "sam": td.SAM(models["sam"].parameters(), torch.optim.SGD, rho=args.rho, lr=args.lr, momentum=0.9),
        "das-gradient": das("das-gradient", variant="gradient"),
        "das-gradient-balance": das("das-gradient-balance", variant="gradient", balance=GRADIENT_BALANCE),
        "msam": td.MSAM(models["msam"].parameters(), torch.optim.SGD, rho=args.msam_rho, lr=args.lr, momentum=0.9),
    }
    if args.force_device_path:
        for opt in opts.values():
            if isinstance(opt, td.DAS):
                opt._host_path = False  # the path CUDA takes, on CPU tensors
    return models, opts


def make_batch(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.batch, 3, args.image, args.image, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    return x.to(device), y.to(device)


def make_train_step(kind: str, model: nn.Module, opt: torch.optim.Optimizer, x, y) -> Callable[[], None]:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    if kind == "sam":
        return lambda: opt.step(closure)  # SAM.step calls the closure itself, twice

    def step() -> None:
        closure()
        opt.step()

    return step


def time_block(fn: Callable[[], None], k: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over a block of ``k`` calls."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / k


class Snapshot:
    """Parameters and optimizer state of a model, to undo the step-only blocks (outside the timer)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        self.params = [p.detach().clone() for p in model.parameters()]
        self.bufs = {
            id(p): {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)} for p, s in opt.state.items()
        }
        self.model, self.opt = model, opt

    @torch.no_grad()
    def restore(self) -> None:
        for p, saved in zip(self.model.parameters(), self.params):
            p.copy_(saved)
        for p, s in self.opt.state.items():
            for k, v in self.bufs.get(id(p), {}).items():
                s[k].copy_(v)


def quantiles(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q25": q[0], "q75": q[2]}


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_launches(fn: Callable[[], None], device: torch.device) -> dict[str, int | None]:
    """Top-level ATen operators dispatched by ``fn`` and, on CUDA, the GPU kernels it launches."""
    with _OpCounter() as counter:
        fn()
    out: dict[str, int | None] = {"aten_ops": counter.count, "cuda_kernels": None}
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        synchronize(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            synchronize(device)
        launches = [e for e in prof.events() if e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC")]
        out["cuda_kernels"] = len(launches)
    return out


# --------------------------------------------------------------------------- benchmark parts
def run_main(args: argparse.Namespace, device: torch.device) -> dict:
    models, opts = build(args, args.groups, device)
    x, y = make_batch(args, device)
    steps = {k: make_train_step(k, models[k], opts[k], x, y) for k in KINDS}
    full: dict[str, list[float]] = {k: [] for k in KINDS}
    only: dict[str, list[float]] = {"base": [], "das": []}
    k, k_only = args.steps_per_round, args.steps_per_round * args.step_only_factor
    t_start = time.perf_counter()
    for r in range(-args.warmup, args.rounds):
        if r >= 2 and time.perf_counter() - t_start > args.time_budget:
            print(f"time budget of {args.time_budget:.0f} s reached after {r} of {args.rounds} rounds", file=sys.stderr)
            break
        order = KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]
        for kind in order:
            t = time_block(steps[kind], k, device)
            if r >= 0:
                full[kind].append(t)
        # opt.step() alone, on the gradients of the last full step; undone afterwards.
        for kind in ("base", "das") if r % 2 == 0 else ("das", "base"):
            snap = Snapshot(models[kind], opts[kind])
            t = time_block(opts[kind].step, k_only, device)
            snap.restore()
            if r >= 0:
                only[kind].append(t)
    elapsed = time.perf_counter() - t_start
    ratio_base = [d / b for d, b in zip(full["das"], full["base"])]
    ratio_sam = [d / s for d, s in zip(full["das"], full["sam"])]
    sam_base = [s / b for s, b in zip(full["sam"], full["base"])]
    only_extra = [d - b for d, b in zip(only["das"], only["base"])]
    n_cores = sum(len(g) for g in opts["das"].core_groups)
    n_params = sum(p.numel() for p in models["base"].parameters())
    return {
        "rounds_done": len(full["base"]),
        "groups": len(opts["das"].core_groups),
        "cores": n_cores,
        "parameters": n_params,
        "elapsed_s": elapsed,
        "full_step_s": {kind: quantiles(v) for kind, v in full.items()},
        "step_only_s": {kind: quantiles(v) for kind, v in only.items()},
        "ratio": {
            "das_over_base": quantiles(ratio_base),
            "das_over_sam": quantiles(ratio_sam),
            "sam_over_base": quantiles(sam_base),
            "step_only_das_over_base": quantiles([d / b for d, b in zip(only["das"], only["base"])]),
        },
        "ratio_of_medians": {
            "das_over_base": statistics.median(full["das"]) / statistics.median(full["base"]),
            "das_over_sam": statistics.median(full["das"]) / statistics.median(full["sam"]),
            "sam_over_base": statistics.median(full["sam"]) / statistics.median(full["base"]),
            "step_only_das_over_base": statistics.median(only["das"]) / statistics.median(only["base"]),
        },
        # Load from other processes only ever slows a block down: the fastest blocks are the least disturbed.
        "ratio_of_minima": {
            "das_over_base": min(full["das"]) / min(full["base"]),
            "das_over_sam": min(full["das"]) / min(full["sam"]),
            "sam_over_base": min(full["sam"]) / min(full["base"]),
            "step_only_das_over_base": min(only["das"]) / min(only["base"]),
        },
        "one_pass_ratio_of_medians": {
            f"{kind}_over_{ref}": statistics.median(full[kind]) / statistics.median(full[ref])
            for kind in ONE_PASS
            for ref in ("base", "sam")
        },
        "das_step_extra_s": quantiles(only_extra),
        "das_step_extra_over_base_full_step": statistics.median(only_extra) / statistics.median(full["base"]),
        "skipped_group_steps": opts["das"].skipped_steps,
    }


def run_sweep(args: argparse.Namespace, device: torch.device, group_counts: list[int]) -> list[dict]:
    """opt.step() alone (base vs DAS) and DAS.rescale_cores() launch counts against the number of groups."""
    rows = []
    x, y = make_batch(args, device)
    for n in group_counts:
        models, opts = build(args, n, device)
        for kind in ("base", "das"):
            make_train_step(kind, models[kind], opts[kind], x, y)()  # gradients to step on
        snaps = {kind: Snapshot(models[kind], opts[kind]) for kind in ("base", "das")}
        das = opts["das"]
        fns = {"base": opts["base"].step, "das": das.step, "rescale": das.rescale_cores}
        times: dict[str, list[float]] = {kind: [] for kind in fns}
        k = args.steps_per_round * args.step_only_factor
        for r in range(-args.warmup, args.sweep_rounds):
            for kind in ("base", "das", "rescale") if r % 2 == 0 else ("rescale", "das", "base"):
                t = time_block(fns[kind], k, device)
                snaps["base" if kind == "base" else "das"].restore()
                if r >= 0:
                    times[kind].append(t)
        launches = count_launches(das.rescale_cores, device)
        base_launches = count_launches(opts["base"].step, device)
        snaps["das"].restore()
        snaps["base"].restore()
        extra = [d - b for d, b in zip(times["das"], times["base"])]
        rows.append(
            {
                "groups": len(das.core_groups),
                "cores": sum(len(g) for g in das.core_groups),
                "base_step_s": statistics.median(times["base"]),
                "das_step_s": statistics.median(times["das"]),
                "das_extra_s": statistics.median(extra),
                "das_rescale_s": statistics.median(times["rescale"]),
                "das_rescale_aten_ops": launches["aten_ops"],
                "das_rescale_cuda_kernels": launches["cuda_kernels"],
                "base_step_aten_ops": base_launches["aten_ops"],
                "base_step_cuda_kernels": base_launches["cuda_kernels"],
            }
        )
    return rows


def run_compile_check(args: argparse.Namespace, device: torch.device) -> dict:
    """``opt.step()`` alone, eager against ``torch.compile(opt.step)``, for base and DAS (same model,
    same gradients, interleaved rounds); the compiled steps must give the eager parameters."""
    x, y = make_batch(args, device)
    result: dict = {"backend": args.compile_backend}
    for kind in ("base", "das"):
        models, opts = build(args, args.groups, device)
        make_train_step(kind, models[kind], opts[kind], x, y)()
        snap = Snapshot(models[kind], opts[kind])
        opt = opts[kind]
        opt.step()
        eager_params = [p.detach().clone() for p in models[kind].parameters()]
        snap.restore()
        torch._dynamo.reset()
        compiled = torch.compile(opt.step, backend=args.compile_backend)
        t0 = time.perf_counter()
        compiled()
        synchronize(device)
        compile_s = time.perf_counter() - t0
        diff = max(float((p.detach() - e).abs().max()) for p, e in zip(models[kind].parameters(), eager_params))
        snap.restore()
        if kind == "das":
            opt._run.step = 0  # the schedule and warnings see the same step again
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        k = args.steps_per_round * args.step_only_factor
        for r in range(-args.warmup, args.sweep_rounds):
            for mode in ("eager", "compiled") if r % 2 == 0 else ("compiled", "eager"):
                t = time_block(opt.step if mode == "eager" else compiled, k, device)
                snap.restore()
                if r >= 0:
                    times[mode].append(t)
        result[kind] = {
            "eager_step_s": statistics.median(times["eager"]),
            "compiled_step_s": statistics.median(times["compiled"]),
            "compiled_over_eager": statistics.median([c / e for c, e in zip(times["compiled"], times["eager"])]),
            "first_compiled_call_s": compile_s,
            "max_abs_diff_vs_eager": diff,
        }
    return result


def run_sync_check(args: argparse.Namespace, device: torch.device) -> dict:
    """On CUDA: DAS.step() under ``torch.cuda.set_sync_debug_mode("error")``."""
    if device.type != "cuda":
        return {"checked": False, "reason": "needs --device cuda"}
    models, opts = build(args, args.groups, device)
    x, y = make_batch(args, device)
    step = make_train_step("das", models["das"], opts["das"], x, y)
    result: dict = {"checked": True}

    def guarded(label: str, fn: Callable[[], None]) -> None:
        synchronize(device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            fn()
            result[label] = "no host sync"
        except RuntimeError as err:
            result[label] = f"HOST SYNC: {str(err).splitlines()[0]}"
        finally:
            torch.cuda.set_sync_debug_mode(0)
        synchronize(device)

    # The first step of a fresh optimizer builds its per-core plan (index tensor copied to the device).
    models["das"].zero_grad()
    F.cross_entropy(models["das"](x), y).backward()
    guarded("first_step", opts["das"].step)
    for _ in range(3):
        step()
    guarded("steady_state_steps", lambda: [opts["das"].step() for _ in range(5)])
    result["ok"] = result["steady_state_steps"] == "no host sync"
    return result


# --------------------------------------------------------------------------- reporting
def fmt_ms(s: float) -> str:
    return f"{s * 1e3:8.3f} ms"


def report(
    args, device, main: dict | None, sweep: list[dict] | None, sync_res: dict | None, compile_res: dict | None = None
) -> dict:
    goals = GOALS[device.type]
    out: dict = {"config": vars(args).copy(), "goals": goals}
    out["env"] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "das_path": "device (forced on CPU)" if args.force_device_path and device.type == "cpu" else "default",
    }
    print(
        f"tensordas step-overhead benchmark — torch {torch.__version__}, device {out['env']['device']}, "
        f"{torch.get_num_threads()} threads" + ("; DAS on its device path (forced)" if args.force_device_path else "")
    )
    if main is not None:
        print(
            f"model: {main['groups']} core groups, {main['cores']} cores, {main['parameters']:,} parameters; "
            f"batch {args.batch}x3x{args.image}x{args.image}; {main['rounds_done']} rounds x {args.steps_per_round} "
            f"steps (+{args.warmup} warm-up), {main['elapsed_s']:.1f} s"
        )
        print("\nfull training step (zero_grad, forward, backward, step), median [q25, q75] per step:")
        for kind in KINDS:
            q = main["full_step_s"][kind]
            print(f"  {kind:12s} {fmt_ms(q['median'])}  [{q['q25'] * 1e3:.3f}, {q['q75'] * 1e3:.3f}]")
        print("  ratio of medians: " + ", ".join(f"{k} {v:.3f}" for k, v in main["one_pass_ratio_of_medians"].items()))
        print("opt.step() alone:")
        for kind in ("base", "das"):
            q = main["step_only_s"][kind]
            print(f"  {kind:5s} {fmt_ms(q['median'])}  [{q['q25'] * 1e3:.3f}, {q['q75'] * 1e3:.3f}]")
        e = main["das_step_extra_s"]
        print(
            f"  DAS extra per step: {e['median'] * 1e6:.1f} us = "
            f"{100 * main['das_step_extra_over_base_full_step']:.2f}% of a base training step"
        )
        print("\nratios: median of per-round paired ratios [q25, q75] | ratio of medians | ratio of minima")
        met = {}
        for key, label in (
            ("das_over_base", "DAS/base  full step"),
            ("das_over_sam", "DAS/SAM   full step"),
            ("sam_over_base", "SAM/base  full step"),
            ("step_only_das_over_base", "DAS/base  opt.step() only"),
        ):
            q = main["ratio"][key]
            rom, rmin = main["ratio_of_medians"][key], main["ratio_of_minima"][key]
            line = f"  {label:27s} {q['median']:.4f} [{q['q25']:.4f}, {q['q75']:.4f}] | {rom:.4f} | {rmin:.4f}"
            if key in goals:
                met[key] = q["median"] <= goals[key]
                line += f"   goal <= {goals[key]:.2f}: {'MET' if met[key] else 'NOT MET'}"
            print(line)
        main["goals_met"] = met
        if main["skipped_group_steps"]:
            print(f"  note: DAS skipped {main['skipped_group_steps']} group-steps for non-finite gradients")
        out["main"] = main
    if sweep is not None:
        print("\nopt.step() alone against the number of core groups (median per step):")
        kern = device.type == "cuda"
        hdr = "  groups  cores     base step      DAS step    DAS extra  rescale_cores  DAS-rescale aten ops"
        print(hdr + ("  DAS-rescale kernels  base-step kernels" if kern else "  base-step aten ops"))
        for row in sweep:
            line = (
                f"  {row['groups']:6d} {row['cores']:6d} {fmt_ms(row['base_step_s'])}  {fmt_ms(row['das_step_s'])}"
                f"  {row['das_extra_s'] * 1e6:8.1f} us  {row['das_rescale_s'] * 1e6:10.1f} us"
                f"  {row['das_rescale_aten_ops']:20d}"
            )
            if kern:
                line += f"  {row['das_rescale_cuda_kernels']!s:>19}  {row['base_step_cuda_kernels']!s:>17}"
            else:
                line += f"  {row['base_step_aten_ops']:18d}"
            print(line)
        if not kern:
            print("  (on CPU foreach operators loop over tensors internally: time grows with the number of cores,")
            print("   the operator count shows the work DAS dispatches per step)")
        out["sweep"] = sweep
    if compile_res is not None:
        print(f"\nopt.step() alone, eager vs torch.compile (backend {compile_res['backend']}), median per step:")
        for kind in ("base", "das"):
            r = compile_res[kind]
            print(
                f"  {kind:5s} eager {fmt_ms(r['eager_step_s'])}  compiled {fmt_ms(r['compiled_step_s'])}  "
                f"compiled/eager {r['compiled_over_eager']:.3f}  (first call {r['first_compiled_call_s']:.1f} s, "
                f"max |diff| vs eager {r['max_abs_diff_vs_eager']:.1e})"
            )
        out["compile"] = compile_res
    if sync_res is not None:
        print("\nsync check (DAS.step() under torch.cuda.set_sync_debug_mode('error')):")
        if not sync_res["checked"]:
            print(f"  skipped: {sync_res['reason']}")
        else:
            print(f"  first step of a fresh optimizer: {sync_res['first_step']}")
            print(f"  steady-state steps:              {sync_res['steady_state_steps']}")
        out["sync_check"] = sync_res
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--rounds", type=int, default=None, help="measured rounds (default: 40 on CPU, 100 on CUDA)")
    p.add_argument(
        "--time-budget",
        type=float,
        default=90.0,
        help="stop the full-step rounds early after this many seconds (default: 90; a loaded machine is slow)",
    )
    p.add_argument("--warmup", type=int, default=3, help="warm-up rounds, not recorded (default: 3)")
    p.add_argument("--steps-per-round", type=int, default=None, help="steps per timed block (default: 3 CPU, 10 CUDA)")
    p.add_argument("--step-only-factor", type=int, default=10, help="opt.step()-only block = factor x steps-per-round")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: 32 on CPU, 128 on CUDA)")
    p.add_argument("--image", type=int, default=32, help="input height/width (default: 32, CIFAR-shaped)")
    p.add_argument("--width", type=int, default=None, help="channels (default: 32 on CPU, 64 on CUDA)")
    p.add_argument("--rank", type=int, default=None, help="Tucker rank of each conv (default: width/2)")
    p.add_argument("--hidden", type=int, default=64, help="TT-linear output features (default: 64)")
    p.add_argument("--groups", type=int, default=10, help="core groups: groups-1 Tucker conv blocks + TT linear")
    p.add_argument(
        "--sweep", type=str, default="2,8,32", help="group counts for the opt.step() sweep, or 'none' (default: 2,8,32)"
    )
    p.add_argument("--sweep-rounds", type=int, default=15, help="rounds per sweep point (default: 15)")
    p.add_argument("--no-main", action="store_true", help="skip the full-step comparison (sweep / sync check only)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--sync-check", action="store_true", help="CUDA: check DAS.step() does not synchronise the host")
    p.add_argument(
        "--force-device-path",
        action="store_true",
        help="run DAS's device (CUDA) path on CPU tensors instead of its CPU host path (operator counts)",
    )
    p.add_argument("--compile", action="store_true", help="also time opt.step() eager vs torch.compile (base, DAS)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default: inductor)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--rho", type=float, default=0.05)
    p.add_argument("--msam-rho", type=float, default=3.0, help="MSAM's radius (default: 3, the authors')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write all numbers to this JSON file")
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    args.rounds = args.rounds if args.rounds is not None else (100 if cuda else 40)
    args.steps_per_round = args.steps_per_round if args.steps_per_round is not None else (10 if cuda else 3)
    args.batch = args.batch if args.batch is not None else (128 if cuda else 32)
    args.width = args.width if args.width is not None else (64 if cuda else 32)
    args.rank = args.rank if args.rank is not None else max(2, args.width // 2)
    for name in ("rounds", "steps_per_round", "step_only_factor", "batch", "image", "width", "rank", "groups"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    try:
        off = args.sweep.strip().lower() in ("", "none", "0")
        args.sweep = None if off else [int(s) for s in args.sweep.split(",")]
    except ValueError:
        p.error(f"--sweep expects comma-separated integers, got {args.sweep!r}")
    if args.sweep and min(args.sweep) < 1:
        p.error("--sweep group counts must be >= 1")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda requested but CUDA is not available")
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_flush_denormal(True)  # denormal slow-downs on CPU would swamp the comparison
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    main_res = None if args.no_main else run_main(args, device)
    sweep = run_sweep(args, device, args.sweep) if args.sweep else None
    sync_res = run_sync_check(args, device) if args.sync_check else None
    compile_res = run_compile_check(args, device) if args.compile else None
    out = report(args, device, main_res, sweep, sync_res, compile_res)
    if args.json is not None:
        out["config"]["json"] = str(args.json)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        tmp.replace(args.json)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
