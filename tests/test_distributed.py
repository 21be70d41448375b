"""DAS and SAM under DistributedDataParallel: 2 CPU processes (gloo) against single-process runs.

One module-scoped fixture spawns two ranks once; each rank runs every scenario below on its half
of the same global batch and saves its parameters after every step. The tests compare those
with runs of the same scenario in this (single) process on the full batch, in float64.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.distributed as dist
from _ranks import run_on_ranks
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import tensordas as td

F64 = torch.float64
WORLD = 2
BATCH = 16  # global batch; each rank gets BATCH // WORLD rows
STEPS = 3
ACCUM = 2  # micro-batches per step in the accumulation scenarios
TOL = 1e-9


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        td.TensorizedLinear(12, 8, "tt", rank=3, dtype=F64),
        nn.Tanh(),
        td.TensorizedLinear(8, 4, "cp", rank=3, dtype=F64),
    )


def make_data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(BATCH, 12, generator=g, dtype=F64), torch.randn(BATCH, 4, generator=g, dtype=F64)


def make_opt(kind: str, module: nn.Module):
    if kind.startswith("das"):
        grad_norm = "global" if kind == "das_global" else "group"
        return td.DAS(
            module.parameters(),
            torch.optim.SGD,
            core_groups=td.find_core_groups(module),
            alpha=0.5,
            grad_norm=grad_norm,
            lr=0.05,
            momentum=0.9,
        )
    return td.SAM(module.parameters(), torch.optim.SGD, rho=0.1, lr=0.05, momentum=0.9)


def run(kind: str, rank: int = 0, world: int = 1) -> list[list[torch.Tensor]]:
    """Train ``STEPS`` steps; with ``world > 1`` this is one DDP rank (the group is initialised).

    Returns the parameters after every step (and, for DAS, the gradients seen before each step).
    """
    module = make_model()
    model = DDP(module) if world > 1 else module
    opt = make_opt(kind, module)
    loss_fn = nn.MSELoss()
    history = []
    for step in range(STEPS):
        x, y = make_data(step)
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        x, y = x[rows], y[rows]
        opt.zero_grad()
        if kind in ("das", "das_global"):
            loss_fn(model(x), y).backward()
            opt.step()
        elif kind == "das_accum":
            # k micro-batches, loss / k each; under DDP all but the last skip the all-reduce.
            for i, (xm, ym) in enumerate(zip(x.chunk(ACCUM), y.chunk(ACCUM))):
                last = i == ACCUM - 1
                ctx = model.no_sync() if (world > 1 and not last) else contextlib.nullcontext()
                with ctx:
                    (loss_fn(model(xm), ym) / ACCUM).backward()
            opt.step()  # the scaling sees the synchronised, accumulated gradient only
        elif kind == "sam":
            loss_fn(model(x), y).backward()  # DDP averages: the perturbation uses the global gradient
            opt.first_step(zero_grad=True)
            loss_fn(model(x), y).backward()  # the second pass is averaged too
            opt.second_step(zero_grad=True)
        elif kind == "sam_closure":

            def closure(x=x, y=y):
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                return loss

            opt.step(closure)
        elif kind == "sam_nosync_first":
            # The tempting saving: skip the first all-reduce. Each rank then perturbs with its own
            # local gradient, which is no longer SAM on the global batch.
            ctx = model.no_sync() if world > 1 else contextlib.nullcontext()
            with ctx:
                loss_fn(model(x), y).backward()
            opt.first_step(zero_grad=True)
            loss_fn(model(x), y).backward()
            opt.second_step(zero_grad=True)
        else:
            raise ValueError(kind)
        history.append([p.detach().clone() for p in module.parameters()])
    return history


KINDS = ["das", "das_global", "das_accum", "sam", "sam_closure", "sam_nosync_first"]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    outdir = tmp_path_factory.mktemp("ddp")
    return run_on_ranks(run, KINDS, WORLD, outdir)


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("kind", ["das", "das_global", "das_accum", "sam", "sam_closure"])
def test_ddp_equals_single_process_on_global_batch(ddp_results, kind):
    single = run(kind)  # one process, full batch (das_accum: in ACCUM micro-batches)
    for rank_results in ddp_results:
        for step, (got, want) in enumerate(zip(rank_results[kind], single)):
            assert max_diff(got, want) < TOL, (kind, step)
    # the run is not trivial: the parameters moved
    assert max_diff(single[-1], [p.detach() for p in make_model().parameters()]) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_ranks_hold_bitwise_equal_parameters(ddp_results, kind):
    """DAS after DDP's all-reduce scales identically on every rank (no drift between replicas)."""
    for step in range(STEPS):
        for a, b in zip(ddp_results[0][kind][step], ddp_results[1][kind][step]):
            assert torch.equal(a, b), (kind, step)


def test_das_accumulation_equals_one_full_batch_step():
    """Single process: k micro-batches with loss / k and one DAS step equal a full-batch DAS step."""
    full, accum = run("das"), run("das_accum")
    for step in range(STEPS):
        assert max_diff(full[step], accum[step]) < TOL, step


def test_ddp_accumulation_with_no_sync_equals_full_batch(ddp_results):
    full = run("das")
    for rank_results in ddp_results:
        assert max_diff(rank_results["das_accum"][-1], full[-1]) < TOL


def test_das_scaling_changes_the_result():
    """The DDP comparison above would be vacuous if DAS did nothing here: alpha matters."""
    das = run("das")
    module = make_model()
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    for step in range(STEPS):
        x, y = make_data(step)
        opt.zero_grad()
        nn.functional.mse_loss(module(x), y).backward()
        opt.step()
    assert max_diff(das[-1], [p.detach() for p in module.parameters()]) > 1e-6


def test_sam_first_pass_under_no_sync_is_not_global_sam(ddp_results):
    """Documented pitfall: the first backward must not run under no_sync(). The replicas stay equal
    (the second pass is synchronised) but the perturbation used local gradients, so the
    result differs from SAM on the global batch."""
    single = run("sam")
    assert max_diff(ddp_results[0]["sam_nosync_first"][-1], single[-1]) > 1e-6
    assert max_diff(ddp_results[0]["sam"][-1], single[-1]) < TOL


# ---------------------------------------------------------------- torch.compile
def _train_compiled(kind: str, compiled: bool) -> list[torch.Tensor]:
    torch._dynamo.reset()
    module = make_model()
    model = torch.compile(module, backend="aot_eager") if compiled else module
    opt = make_opt(kind, module)
    for step in range(2):
        x, y = make_data(step)

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        loss = opt.step(closure)
        assert torch.isfinite(loss)
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("kind", ["das", "sam"])
def test_compiled_model_trains_like_eager(kind):
    eager, compiled = _train_compiled(kind, False), _train_compiled(kind, True)
    assert all(torch.isfinite(p).all() for p in compiled)
    assert max_diff(compiled, eager) < 1e-10
    assert max_diff(eager, [p.detach() for p in make_model().parameters()]) > 1e-3


def test_das_device_path_rescale_compiles_without_graph_breaks():
    """The multi-tensor (GPU) scaling path is one graph; the CPU host path reads norms back on purpose."""
    torch._dynamo.reset()
    results = []
    for compiled in (False, True):
        module = make_model()
        opt = make_opt("das", module)
        opt._host_path = False  # the path CUDA takes
        x, y = make_data(0)
        nn.functional.mse_loss(module(x), y).backward()
        if compiled:
            explained = torch._dynamo.explain(opt.rescale_cores)()
            assert explained.graph_break_count == 0, explained.break_reasons
            for p, saved in zip(module.parameters(), results[0][1]):  # explain ran it once: undo
                p.data.copy_(saved)
        before = [p.detach().clone() for p in module.parameters()]
        rescale = (
            torch.compile(opt.rescale_cores, backend="aot_eager", fullgraph=True) if compiled else opt.rescale_cores
        )
        rescale()
        results.append(([p.detach().clone() for p in module.parameters()], before))
    assert max_diff(results[0][0], results[1][0]) < 1e-12
    assert max_diff(results[0][0], results[0][1]) > 1e-4  # the scaling did something
