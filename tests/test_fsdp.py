"""DAS and SAM under FSDP2 (``torch.distributed.fsdp.fully_shard``, DTensor parameters).

As in test_distributed.py: one module-scoped fixture spawns two CPU ranks (gloo) once; each rank
runs every scenario on its share of the same global batch under ``fully_shard`` and saves the
full (gathered) parameters after every step; the tests compare them in float64 with the same
scenario run in this single process on the full batch. A second fixture spawns four ranks for
HSDP (a 2 x 2 mesh: replicate x shard). The mixed-precision scenario (bf16 compute, float32
parameters and gradients) is checked step by step against a float64 DAS fed the same gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from _ranks import run_on_ranks
from torch import nn

import tensordas as td

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)
try:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
except ImportError:
    pytest.skip("torch.distributed.fsdp.fully_shard is not available", allow_module_level=True)

F64 = torch.float64
WORLD = 2
BATCH = 16  # global batch; each rank gets BATCH // WORLD rows
STEPS = 3
ACCUM = 2  # micro-batches per step in the accumulation scenarios
TOL = 1e-9
KINDS = ["das", "das_global", "das_device", "das_global_expand", "das_accum", "sam", "asam", "sam_accum"]
HSDP_WORLD = 4  # a 2 x 2 mesh
HSDP_KINDS = ["hsdp_das", "hsdp_das_global", "hsdp_sam"]


def make_model(seed: int = 0, dtype: torch.dtype = F64) -> nn.Module:
    """Two core groups (a TT and a CP layer, both with a non-core bias). Several cores have a
    leading dimension of 1, so one rank holds an empty shard of them."""
    torch.manual_seed(seed)
    return nn.Sequential(
        td.TensorizedLinear(12, 8, "tt", rank=3, dtype=dtype),
        nn.Tanh(),
        td.TensorizedLinear(8, 4, "cp", rank=3, dtype=dtype),
    )


def make_data(step: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2000 + step)
    x, y = torch.randn(BATCH, 12, generator=g, dtype=F64), torch.randn(BATCH, 4, generator=g, dtype=F64)
    return x.to(dtype), y.to(dtype)


def make_opt(kind: str, module: nn.Module, **overrides):
    kind = kind.removeprefix("hsdp_")
    if kind.startswith("das"):
        kwargs = dict(alpha=0.5, grad_norm="global" if "global" in kind else "group", lr=0.05, momentum=0.9)
        groups = td.find_core_groups(module)
        opt = td.DAS(module.parameters(), torch.optim.SGD, core_groups=groups, **kwargs | overrides)
        if kind in ("das_device", "das_global_expand"):
            opt._host_path = False  # the device path CUDA takes (expand-to-elements multiply), forced on CPU
        return opt
    return td.SAM(module.parameters(), torch.optim.SGD, rho=0.1, adaptive=kind == "asam", lr=0.05, momentum=0.9)


def full(p: torch.Tensor) -> torch.Tensor:
    p = p.detach()
    return p.full_tensor() if hasattr(p, "full_tensor") else p.clone()


def shard(module: nn.Module, kind: str, world: int, **policies) -> None:
    """FSDP2 on each tensorized layer, then the root; HSDP kinds on a (replicate, shard) mesh."""
    if kind.startswith("hsdp"):
        mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh("cpu", (world,))
    for layer in (module[0], module[2]):
        fully_shard(layer, mesh=mesh, **policies)
    fully_shard(module, mesh=mesh, **policies)  # the optimizer and core groups are built after sharding
    assert all(type(p).__name__ == "DTensor" for p in module.parameters())


def backward(module: nn.Module, kind: str, world: int, x: torch.Tensor, y: torch.Tensor) -> None:
    """One backward pass of the mean loss; accumulation kinds split it into ``ACCUM`` micro-batches
    (loss / ACCUM each), and under FSDP2 only the last one reduce-scatters."""
    loss_fn = nn.MSELoss()
    if "accum" not in kind:
        loss_fn(module(x), y).backward()  # FSDP2 reduce-scatters (averages) the gradients
        return
    for i, (xm, ym) in enumerate(zip(x.chunk(ACCUM), y.chunk(ACCUM))):
        if world > 1:
            module.set_requires_gradient_sync(i == ACCUM - 1)
        (loss_fn(module(xm), ym) / ACCUM).backward()


def run(kind: str, rank: int = 0, world: int = 1):
    """Train ``STEPS`` steps; with ``world > 1`` this is one FSDP2 rank. Returns the full
    parameters after every step (``das_mp``: see :func:`run_mixed_precision`)."""
    if kind == "das_mp":
        return run_mixed_precision(rank, world)
    module = make_model()
    if world > 1:
        shard(module, kind, world)
    opt = make_opt(kind, module)
    history = []
    for step in range(STEPS):
        x, y = make_data(step)
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        x, y = x[rows], y[rows]
        opt.zero_grad()
        backward(module, kind, world, x, y)
        if "das" in kind:
            opt.step()
        else:
            opt.first_step(zero_grad=True)
            backward(module, kind, world, x, y)
            opt.second_step(zero_grad=True)
        history.append([full(p) for p in module.parameters()])
    return history


def run_mixed_precision(rank: int, world: int) -> dict:
    """FSDP2 with ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=float32)`` on a float32
    model: records the full gradients DAS sees and the full parameters before and after each step."""
    module = make_model(dtype=torch.float32)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    shard(module, "das_mp", world, mp_policy=policy)
    opt = make_opt("das", module)
    record = {"params": [[full(p) for p in module.parameters()]], "grads": [], "output_dtype": None}
    for step in range(STEPS):
        x, y = make_data(step, torch.float32)
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        opt.zero_grad()
        out = module(x[rows])
        record["output_dtype"] = out.dtype
        nn.functional.mse_loss(out.float(), y[rows]).backward()
        record["grads"].append([full(p.grad) for p in module.parameters()])
        opt.step()
        record["params"].append([full(p) for p in module.parameters()])
    return record


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("fsdp")
    return run_on_ranks(run, KINDS + ["das_mp"], WORLD, outdir)


@pytest.fixture(scope="module")
def hsdp_results(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("hsdp")
    return run_on_ranks(run, HSDP_KINDS, HSDP_WORLD, outdir)


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("kind", KINDS)
def test_fsdp2_equals_single_process_on_global_batch(fsdp_results, kind):
    single = run(kind)
    for rank_results in fsdp_results:
        assert len(rank_results[kind]) == STEPS
        for step, (got, want) in enumerate(zip(rank_results[kind], single)):
            assert max_diff(got, want) < TOL, (kind, step)
    # the run is not trivial: the parameters moved
    assert max_diff(single[-1], [p.detach() for p in make_model().parameters()]) > 1e-3


def test_fsdp2_model_has_empty_shards_and_a_non_core_bias():
    """The comparisons cover a rank with an empty local shard and parameters outside every group."""
    module = make_model()
    params = list(module.parameters())
    core_ids = {id(c) for g in td.find_core_groups(module) for c in g.cores}
    assert len(td.find_core_groups(module)) == 2
    assert any(id(p) not in core_ids for p in params)
    assert any(id(p) in core_ids and p.shape[0] < WORLD for p in params)


def test_das_scaling_matters_in_this_scenario():
    """DAS differs from its base optimizer here, so the DAS comparisons are not vacuous."""
    das = run("das")
    module = make_model()
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    for step in range(STEPS):
        x, y = make_data(step)
        opt.zero_grad()
        nn.functional.mse_loss(module(x), y).backward()
        opt.step()
    assert max_diff(das[-1], [p.detach() for p in module.parameters()]) > 1e-6


def test_fsdp2_accumulation_without_gradient_sync_equals_one_full_batch_step(fsdp_results):
    """``set_requires_gradient_sync(False)`` on all but the last micro-batch: DAS scales once, on the
    reduce-scattered sum, and the result equals one step on the full batch."""
    for kind, plain in (("das_accum", "das"), ("sam_accum", "sam")):
        full_batch = run(plain)
        for rank_results in fsdp_results:
            assert max_diff(rank_results[kind][-1], full_batch[-1]) < TOL, kind


@pytest.mark.parametrize("kind", HSDP_KINDS)
def test_hsdp_equals_single_process_on_global_batch(hsdp_results, kind):
    """HSDP (replicate x shard mesh): the squared norms are summed over the shard dimension only."""
    single = run(kind)
    assert len(hsdp_results) == HSDP_WORLD
    for rank_results in hsdp_results:
        for step, (got, want) in enumerate(zip(rank_results[kind], single)):
            assert max_diff(got, want) < TOL, (kind, step)


def _reference_das_steps(record: dict, alpha: float) -> list[list[torch.Tensor]]:
    """Single-process float64 DAS (the per-tensor reference path) fed the gradients FSDP2 produced,
    from the parameters FSDP2 held before each step."""
    module = make_model()
    params = list(module.parameters())
    opt = make_opt("das", module, alpha=alpha, foreach=False)
    after = []
    for step in range(STEPS):
        with torch.no_grad():
            for p, value, grad in zip(params, record["params"][step], record["grads"][step]):
                p.copy_(value.double())
                p.grad = grad.double()
        opt.step()
        after.append([p.detach().clone() for p in params])
    return after


def test_fsdp2_mixed_precision_das_matches_float64_reference(fsdp_results):
    """MixedPrecisionPolicy(bf16 compute, float32 reduce): DAS sees float32 gradients of float32
    parameters and takes exactly the single-process DAS step on them."""
    for record in (r["das_mp"] for r in fsdp_results):
        assert record["output_dtype"] == torch.bfloat16  # the forward really ran in bf16
        assert all(g.dtype == torch.float32 for grads in record["grads"] for g in grads)
        want = _reference_das_steps(record, alpha=0.5)
        unscaled = _reference_das_steps(record, alpha=0.0)
        for step in range(STEPS):
            got = [p.double() for p in record["params"][step + 1]]
            assert max_diff(got, want[step]) < 1e-6, step
            assert max_diff(got, unscaled[step]) > 1e-4, step  # alpha matters at this tolerance
    # both ranks hold the same full parameters
    for a, b in zip(fsdp_results[0]["das_mp"]["params"][-1], fsdp_results[1]["das_mp"]["params"][-1]):
        assert torch.equal(a, b)
