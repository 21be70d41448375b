"""DAS and SAM under FSDP2 (``torch.distributed.fsdp.fully_shard``, DTensor parameters).

As in test_distributed.py: one module-scoped fixture spawns two CPU ranks (gloo) once; each rank
runs every scenario on its half of the same global batch under ``fully_shard`` and saves the
full (gathered) parameters after every step; the tests compare them in float64 with the same
scenario run in this single process on the full batch.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from _ranks import run_on_ranks
from torch import nn

import tensordas as td
from tensordas.optim._core_scaling import CoreScalingOptimizer

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)
try:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
except ImportError:
    pytest.skip("torch.distributed.fsdp.fully_shard is not available", allow_module_level=True)

F64 = torch.float64
WORLD = 2
BATCH = 16  # global batch; each rank gets BATCH // WORLD rows
STEPS = 3
TOL = 1e-9
KINDS = ["das", "das_global", "das_device", "das_global_expand", "sam", "asam"]


def make_model(seed: int = 0) -> nn.Module:
    """Two core groups (a TT and a CP layer, both with a non-core bias). Several cores have a
    leading dimension of 1, so one rank holds an empty shard of them."""
    torch.manual_seed(seed)
    return nn.Sequential(
        td.TensorizedLinear(12, 8, "tt", rank=3, dtype=F64),
        nn.Tanh(),
        td.TensorizedLinear(8, 4, "cp", rank=3, dtype=F64),
    )


def make_data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2000 + step)
    return torch.randn(BATCH, 12, generator=g, dtype=F64), torch.randn(BATCH, 4, generator=g, dtype=F64)


def make_opt(kind: str, module: nn.Module):
    if kind.startswith("das"):
        opt = td.DAS(
            module.parameters(),
            torch.optim.SGD,
            core_groups=td.find_core_groups(module),
            alpha=0.5,
            grad_norm="global" if "global" in kind else "group",
            lr=0.05,
            momentum=0.9,
        )
        if kind in ("das_device", "das_global_expand"):
            opt._host_path = False  # the multi-tensor path CUDA takes
        if kind == "das_global_expand":  # CUDA's expand-to-elements multiply, forced on CPU

            def expand(plan, scales, expand):
                CoreScalingOptimizer._apply_scales(plan, scales, expand=True)

            opt._apply_scales = expand
        return opt
    return td.SAM(module.parameters(), torch.optim.SGD, rho=0.1, adaptive=kind == "asam", lr=0.05, momentum=0.9)


def full(p: torch.Tensor) -> torch.Tensor:
    p = p.detach()
    return p.full_tensor() if hasattr(p, "full_tensor") else p.clone()


def run(kind: str, rank: int = 0, world: int = 1) -> list[list[torch.Tensor]]:
    """Train ``STEPS`` steps; with ``world > 1`` this is one FSDP2 rank. Returns the full
    parameters after every step."""
    module = make_model()
    if world > 1:
        mesh = init_device_mesh("cpu", (world,))
        for layer in (module[0], module[2]):
            fully_shard(layer, mesh=mesh)
        fully_shard(module, mesh=mesh)  # the optimizer and core groups are built after sharding
        assert all(type(p).__name__ == "DTensor" for p in module.parameters())
    opt = make_opt(kind, module)
    loss_fn = nn.MSELoss()
    history = []
    for step in range(STEPS):
        x, y = make_data(step)
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        x, y = x[rows], y[rows]
        opt.zero_grad()
        loss_fn(module(x), y).backward()  # FSDP2 reduce-scatters (averages) the gradients
        if kind.startswith("das"):
            opt.step()
        else:
            opt.first_step(zero_grad=True)
            loss_fn(module(x), y).backward()
            opt.second_step(zero_grad=True)
        history.append([full(p) for p in module.parameters()])
    return history


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("fsdp")
    return run_on_ranks(run, KINDS, WORLD, outdir)


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
