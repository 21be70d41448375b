"""Core groups: the tuples of parameters that enter a model through a multilinear map.

A module takes part in discovery by implementing ``core_groups() -> list[CoreGroup]``
(the project's own decompositions, layers and adapters do). Other kinds of modules are
recognised by *finders* registered with :func:`register_core_group_finder`; PEFT's
tuners plug in there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "CoreGroup",
    "as_core_groups",
    "find_core_groups",
    "register_core_group_finder",
    "unregister_core_group_finder",
]


@dataclass(eq=False)  # groups compare by identity: their cores are tensors
class CoreGroup:
    """A named tuple of cores ``G_1..G_N`` whose product map is linear in each core.

    Such a group is scale-invariant: multiplying the cores by factors whose product is 1
    leaves the model unchanged.
    """

    name: str
    cores: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cores = list(self.cores)
        if len(self.cores) < 2:
            raise ValueError(f"core group {self.name!r} needs at least 2 cores, got {len(self.cores)}")
        ids = [id(c) for c in self.cores]
        if len(set(ids)) != len(ids):
            raise ValueError(f"core group {self.name!r} lists the same tensor twice")

    def __len__(self) -> int:
        return len(self.cores)

    def __iter__(self):
        return iter(self.cores)


# A finder inspects one module (with its qualified name) and returns the groups it owns,
# or None when it does not recognise the module.
Finder = Callable[[str, nn.Module], "list[CoreGroup] | None"]
_FINDERS: list[tuple[str, Finder]] = []


def register_core_group_finder(name: str, finder: Finder) -> None:
    """Register ``finder`` for modules that cannot implement ``core_groups()`` themselves."""
    if any(n == name for n, _ in _FINDERS):
        raise ValueError(f"a core-group finder named {name!r} is already registered")
    _FINDERS.append((name, finder))


def unregister_core_group_finder(name: str) -> None:
    """Remove the finder registered under ``name``."""
    for i, (n, _) in enumerate(_FINDERS):
        if n == name:
            del _FINDERS[i]
            return
    raise ValueError(f"no core-group finder named {name!r} is registered")


def _own_groups(prefix: str, module: nn.Module) -> list[CoreGroup] | None:
    method = getattr(module, "core_groups", None)
    if not callable(method):
        return None
    groups = list(method())
    return [CoreGroup(f"{prefix}.{g.name}" if prefix else g.name, g.cores) for g in groups]


def find_core_groups(model: nn.Module) -> list[CoreGroup]:
    """Return every core group of ``model``, named by module path.

    A module that implements ``core_groups()`` contributes its groups and its children are
    not searched further (it speaks for its whole subtree); otherwise each registered finder
    is asked. Cores that do not require gradients (frozen) are left out; a group left with
    fewer than two trainable cores is dropped.

    Raises:
        ValueError: if the model has no core group.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"find_core_groups expects an nn.Module, got {type(model).__name__}")
    groups: list[CoreGroup] = []
    claimed: list[str] = []  # module paths whose subtree is already covered
    for name, module in model.named_modules():
        if any(c == "" or name.startswith(c + ".") for c in claimed):
            continue
        found = _own_groups(name, module)
        if found is None:
            for _, finder in _FINDERS:
                found = finder(name, module)
                if found is not None:
                    break
        if found is None:
            continue
        claimed.append(name)
        for g in found:
            trainable = [c for c in g.cores if c.requires_grad]
            if len(trainable) >= 2:
                groups.append(CoreGroup(g.name, trainable))
    if not groups:
        looked_for = ["modules with a core_groups() method"] + [n for n, _ in _FINDERS]
        raise ValueError(
            f"no core groups found in {type(model).__name__}: looked for {', '.join(looked_for)} "
            "(tensorized layers, decomposition models, LoRA/tensor adapters)"
        )
    seen: dict[int, str] = {}
    for g in groups:
        for c in g.cores:
            if id(c) in seen:
                raise ValueError(f"a core is shared by groups {seen[id(c)]!r} and {g.name!r}")
            seen[id(c)] = g.name
    return groups


def as_core_groups(groups: Iterable[CoreGroup | Sequence[torch.Tensor]]) -> list[CoreGroup]:
    """Normalise a list of ``CoreGroup`` or plain lists of tensors into ``CoreGroup`` objects."""
    out = []
    for i, g in enumerate(groups):
        if isinstance(g, CoreGroup):
            out.append(g)
        elif isinstance(g, torch.Tensor):
            raise TypeError("core_groups must be a list of groups (lists of tensors), not a list of tensors")
        else:
            out.append(CoreGroup(f"group{i}", list(g)))
    return out
