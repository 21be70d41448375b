"""FSDP2 support: parameters that are ``DTensor``s (``torch.distributed.fsdp.fully_shard``).

DTensor's own dispatch does not fit the optimizers' fused kernels: ``torch._foreach_norm`` returns
``_NormPartial`` norms whose in-place ``square_()`` raises (and would reduce once per core), and
``aten._foreach_copy_`` has no sharding strategy. So the optimizers run their foreach kernels on
the local shards (``to_local()`` views share the parameters' storage) and sum the sharded
squared norms themselves, with one all-reduce over the shard dimension's process group.
"""

from __future__ import annotations

import sys

import torch


def is_dtensor(t: torch.Tensor) -> bool:
    # No DTensor exists unless its module was imported; importing it here would add ~0.5 s to
    # ``import tensordas``.
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a view of its storage); any other tensor itself."""
    return t.to_local() if is_dtensor(t) else t


def shard_group(tensors: list[torch.Tensor]):
    """The process group over which the shards of ``tensors`` (all DTensors) must be summed, or
    None when no mesh dimension is sharded (the local tensors are whole)."""
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
    return mesh.get_group(dims[0])


def all_reduce_sum(t: torch.Tensor, group) -> torch.Tensor:
    """Sum ``t`` in place over ``group`` (nothing to do without one)."""
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t
