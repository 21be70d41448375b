"""FSDP2 support: parameters that are ``DTensor``s (``torch.distributed.fsdp.fully_shard``).

DTensor's own dispatch does not fit the optimizers' fused kernels: ``torch._foreach_norm`` returns
``_NormPartial`` norms whose in-place ``square_()`` raises (and would reduce once per core), and
``aten._foreach_copy_`` has no sharding strategy. So the optimizers run their foreach kernels on
the local shards (``to_local()`` views share the parameters' storage) and sum the sharded
squared norms themselves, with one all-reduce over the shard dimension's process group.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import torch


def is_dtensor(t: torch.Tensor) -> bool:
    # No DTensor exists unless its module was imported; importing it here would add ~0.5 s to
    # ``import tensordas``.
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a view of its storage); any other tensor itself."""
    return t.to_local() if is_dtensor(t) else t


class ShardGroup(NamedTuple):
    """The process group that holds the shards, and the device type its backend reduces on."""

    group: Any
    device_type: str


def shard_group(tensors: list[torch.Tensor]) -> ShardGroup | None:
    """Where the shards of ``tensors`` (all DTensors) must be summed, or None when no mesh
    dimension is sharded (the local tensors are whole). Under HSDP only the shard dimension
    counts: the replicas along the other dimension hold equal values."""
    keys = set()
    for t in tensors:
        if not is_dtensor(t):
            raise NotImplementedError("mixing DTensor (FSDP2) and plain tensors in one optimizer is not supported")
        dims = tuple(i for i, p in enumerate(t.placements) if p.is_shard())
        keys.add((t.device_mesh, dims))
    if len(keys) != 1:
        raise NotImplementedError("all DTensor parameters must share one device mesh and sharding layout")
    mesh, dims = keys.pop()
    if not dims:
        return None
    if len(dims) > 1:
        raise NotImplementedError(f"parameters sharded over {len(dims)} mesh dimensions are not supported")
    return ShardGroup(mesh.get_group(dims[0]), mesh.device_type)


def all_reduce_sum(t: torch.Tensor, shards: ShardGroup | None) -> torch.Tensor:
    """Sum ``t`` in place over the shard group (nothing to do without one).

    With ``CPUOffloadPolicy`` the shards, and so ``t``, live on the host while the mesh (and an
    NCCL group) is on the GPU: the sum then goes through the mesh's device and back.
    """
    if shards is None:
        return t
    import torch.distributed as dist

    if t.device.type == shards.device_type:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=shards.group)
        return t
    on_mesh = t.to(shards.device_type)
    dist.all_reduce(on_mesh, op=dist.ReduceOp.SUM, group=shards.group)
    return t.copy_(on_mesh)
