"""Core groups: the tuples of parameters that enter a model through a multilinear map.

One protocol, converted in one place (:func:`as_core_groups`): the ``core_groups=`` argument of
DAS/BAR, a module's own ``core_groups()`` method and a finder registered with
:func:`register_core_group_finder` may all give

- a :class:`CoreGroup`,
- a sequence of tensors ``[U, V]`` (one group),
- a mapping ``{name: [U, V], ...}``,
- or a list of any of these.

Groups found in a model are named by the module path plus the name the module or finder gave
(``"blocks.0.tt"``), so two layers never come back under one name. The project's own
decompositions, layers and adapters implement ``core_groups()``; PEFT's tuners and
TensorLy-Torch's factorized tensors are recognised by finders (``tensordas.integrations``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "CoreGroup",
    "GroupsLike",
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


# What every entry point of the protocol accepts (see the module docstring).
GroupLike = CoreGroup | Sequence[torch.Tensor] | Mapping[str, Sequence[torch.Tensor]]
GroupsLike = GroupLike | Iterable[GroupLike]

_WHAT_TO_PASS = (
    "pass td.find_core_groups(model), a CoreGroup, a list of cores [U, V], a dict {name: [U, V]}, or a list of those"
)


def _a(x: Any) -> str:
    """``"a Linear"``, ``"an int"``: the type of ``x`` with its article, for error messages."""
    name = type(x).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _not_a_list(x: Any) -> bool:
    """True for what cannot be a list of cores or groups (an nn.ParameterList can)."""
    if isinstance(x, (torch.Tensor, str, bytes)) or not isinstance(x, Iterable):
        return True
    return isinstance(x, nn.Module) and not isinstance(x, nn.ParameterList)


def _refuse(source: str, x: Any) -> TypeError:
    module = " (an nn.Module)" if isinstance(x, nn.Module) else ""
    return TypeError(f"{source} got {_a(x)}{module}; {_WHAT_TO_PASS}")


def _group(name: str, cores: Any, source: str) -> CoreGroup:
    """One group from an iterable of tensors (or a CoreGroup, whose cores are taken)."""
    if isinstance(cores, CoreGroup):
        cores = cores.cores
    elif isinstance(cores, Mapping) or _not_a_list(cores):
        module = " (an nn.Module)" if isinstance(cores, nn.Module) else ""
        raise TypeError(f"{source}: group {name!r} is {_a(cores)}{module}, not a list of cores; {_WHAT_TO_PASS}")
    cores = list(cores)
    for c in cores:
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"{source}: core group {name!r} holds {_a(c)}, not a tensor")
    return CoreGroup(name, cores)


def _named(prefix: str, mapping: Mapping, source: str) -> list[CoreGroup]:
    out = []
    for key, cores in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"{source}: group names must be strings, got {_a(key)} key {key!r}")
        out.append(_group(_join(prefix, key), cores, source))
    return out


def as_core_groups(groups: GroupsLike, prefix: str = "", source: str = "core_groups") -> list[CoreGroup]:
    """Convert any shape of the group protocol into a list of :class:`CoreGroup`.

    ``prefix`` (a module path) is put in front of every name; a group given without a name is
    called ``prefix`` when it is the only group, else ``<prefix>.group<i>`` (``i`` its position;
    ``group<i>`` without a prefix). ``source`` names the caller in error messages.

    Raises:
        TypeError: for a shape outside the protocol (a module, a tensor, a number, ...).
        ValueError: for a group with fewer than 2 cores or two groups with the same name.
    """
    if isinstance(groups, CoreGroup):
        out = [CoreGroup(_join(prefix, groups.name), groups.cores)]
    elif isinstance(groups, Mapping):
        out = _named(prefix, groups, source)
    elif _not_a_list(groups):
        raise _refuse(source, groups)
    else:
        items = list(groups)
        tensors = [isinstance(x, torch.Tensor) for x in items]
        if items and all(tensors):  # one group: [U, V]
            out = [_group(prefix or "group0", items, source)]
        elif any(tensors):
            kinds = sorted({type(x).__name__ for x in items})
            raise TypeError(
                f"{source} mixes tensors and other items ({', '.join(kinds)}): give one group as a list of "
                "tensors [U, V], or several as a list of such lists [[U, V], [X, Y]]"
            )
        else:
            out = []
            for i, item in enumerate(items):
                if isinstance(item, CoreGroup):
                    out.append(CoreGroup(_join(prefix, item.name), item.cores))
                elif isinstance(item, Mapping):
                    out.extend(_named(prefix, item, source))
                else:
                    name = prefix if prefix and len(items) == 1 else _join(prefix, f"group{i}")
                    out.append(_group(name, item, source))
    seen: set[str] = set()
    for g in out:
        if g.name in seen:
            raise ValueError(f"{source} gives two core groups named {g.name!r}; give each group its own name")
        seen.add(g.name)
    return out


# A finder inspects one module (with its qualified name) and returns the groups it owns, in any
# shape of the protocol with names relative to the module (find_core_groups puts the module path
# in front), or None when it does not recognise the module.
Finder = Callable[[str, nn.Module], "GroupsLike | None"]
_FINDERS: list[tuple[str, Finder]] = []


def register_core_group_finder(name: str, finder: Finder) -> None:
    """Register ``finder(path, module)`` for modules that cannot implement ``core_groups()`` themselves.

    The finder returns the module's groups in any shape :func:`as_core_groups` accepts, named
    relative to the module (``{"lr": [U, V]}`` on module ``blocks.1`` becomes ``blocks.1.lr``), or
    ``None`` when it does not recognise the module.
    """
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


def _groups_of(path: str, module: nn.Module) -> list[CoreGroup] | None:
    """The module's groups from its own ``core_groups()`` or the first finder that knows it."""
    method = getattr(module, "core_groups", None)
    if callable(method):
        return as_core_groups(method(), path, source=f"{type(module).__name__}.core_groups()")
    for finder_name, finder in _FINDERS:
        found = finder(path, module)
        if found is not None:
            return as_core_groups(found, path, source=f"core-group finder {finder_name!r}")
    return None


def find_core_groups(model: nn.Module) -> list[CoreGroup]:
    """Return every core group of ``model``, named by module path.

    A module that implements ``core_groups()`` or that a registered finder recognises contributes
    its groups, and its children are not searched further (it speaks for its whole subtree).
    Cores that do not require gradients (frozen) are left out; a group left with fewer than two
    trainable cores is dropped.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``.
        ValueError: if the model has no core group (the message names what was looked for, or
            says that the groups found are frozen).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"find_core_groups expects an nn.Module, got {_a(model)}")
    groups: list[CoreGroup] = []
    frozen: list[str] = []  # groups dropped because fewer than two of their cores train
    claimed: list[str] = []  # module paths whose subtree is already covered
    for path, module in model.named_modules():
        if any(c == "" or path.startswith(c + ".") for c in claimed):
            continue
        found = _groups_of(path, module)
        if found is None:
            continue
        claimed.append(path)
        for g in found:
            trainable = [c for c in g.cores if c.requires_grad]
            if len(trainable) >= 2:
                groups.append(CoreGroup(g.name, trainable))
            else:
                frozen.append(g.name)
    if not groups:
        if frozen:
            shown = ", ".join(repr(n) for n in frozen[:3]) + (f" and {len(frozen) - 3} more" if len(frozen) > 3 else "")
            raise ValueError(
                f"the cores of {type(model).__name__}'s core groups {shown} are frozen (requires_grad=False), so no "
                "group has two trainable cores; unfreeze the cores to train (e.g. module.requires_grad_(True))"
            )
        looked_for = ["modules with a core_groups() method"] + [n for n, _ in _FINDERS]
        raise ValueError(f"no core groups found in {type(model).__name__}: looked for {', '.join(looked_for)}")
    seen_names: set[str] = set()
    seen: dict[int, str] = {}
    for g in groups:
        if g.name in seen_names:
            raise ValueError(f"two core groups of {type(model).__name__} are named {g.name!r}")
        seen_names.add(g.name)
        for c in g.cores:
            if id(c) in seen:
                raise ValueError(f"a core is shared by groups {seen[id(c)]!r} and {g.name!r}")
            seen[id(c)] = g.name
    return groups
