"""Discovery of core groups (DESIGN.md section 2)."""

import pytest
import torch
from torch import nn

import tensordas as td
import tensordas.core_groups as cg_module


@pytest.fixture(autouse=True)
def isolated_finders(monkeypatch):
    """Finders registered by a test do not leak into other tests."""
    monkeypatch.setattr(cg_module, "_FINDERS", list(cg_module._FINDERS))


def small_cp(seed=0):
    return td.CPModel((3, 4, 2), 2, generator=torch.Generator().manual_seed(seed))


def small_tucker(seed=0):
    return td.TuckerModel((3, 4), 2, generator=torch.Generator().manual_seed(seed))


class LowRank(nn.Module):
    """A user module implementing core_groups(): W = U V^T."""

    def __init__(self):
        super().__init__()
        self.u = nn.Parameter(torch.randn(4, 2))
        self.v = nn.Parameter(torch.randn(3, 2))

    def core_groups(self):
        return [td.CoreGroup("uv", [self.u, self.v])]


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = small_cp()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(3, 3), small_tucker()), LowRank()])
        self.head = nn.Linear(3, 2)


def ids(tensors):
    return [id(t) for t in tensors]


def test_single_model_group():
    m = small_cp()
    (g,) = td.find_core_groups(m)
    assert isinstance(g, td.CoreGroup)
    assert g.name == "cp"
    assert ids(g.cores) == ids(m.factors)


def test_nested_groups_are_prefixed_by_module_path():
    m = Nested()
    groups = td.find_core_groups(m)
    assert [g.name for g in groups] == ["enc.cp", "blocks.0.1.tucker", "blocks.1.uv"]
    assert ids(groups[0].cores) == ids(m.enc.factors)
    tk = m.blocks[0][1]
    assert ids(groups[1].cores) == ids([tk.core, *tk.factors])
    assert ids(groups[2].cores) == ids([m.blocks[1].u, m.blocks[1].v])
    # no Linear weight or bias is a core
    all_cores = {id(c) for g in groups for c in g.cores}
    assert id(m.head.weight) not in all_cores and id(m.blocks[0][0].weight) not in all_cores


def test_module_with_core_groups_speaks_for_its_subtree():
    class Owner(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = small_cp()

        def core_groups(self):
            return [td.CoreGroup("mine", list(self.inner.factors)[:2])]

    groups = td.find_core_groups(nn.Sequential(Owner()))
    assert [g.name for g in groups] == ["0.mine"]
    assert len(groups[0].cores) == 2


def test_frozen_cores_are_left_out():
    m = Nested()
    m.enc.factors[1].requires_grad_(False)  # CP group keeps 2 of its 3 cores
    m.blocks[1].u.requires_grad_(False)  # LowRank group keeps 1 core -> dropped
    groups = td.find_core_groups(m)
    assert [g.name for g in groups] == ["enc.cp", "blocks.0.1.tucker"]
    assert ids(groups[0].cores) == ids([m.enc.factors[0], m.enc.factors[2]])
    assert all(c.requires_grad for g in groups for c in g.cores)


def test_all_frozen_raises():
    m = small_cp()
    m.requires_grad_(False)
    with pytest.raises(ValueError, match="core_groups"):
        td.find_core_groups(m)


def test_no_groups_raises_naming_what_was_looked_for():
    with pytest.raises(ValueError, match=r"core_groups\(\)") as info:
        td.find_core_groups(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    assert "Sequential" in str(info.value)


def test_not_a_module_raises_type_error():
    with pytest.raises(TypeError):
        td.find_core_groups([torch.zeros(2)])


def test_register_core_group_finder():
    class Factorised(nn.Module):  # a third-party module that cannot implement core_groups()
        def __init__(self):
            super().__init__()
            self.left = nn.Parameter(torch.randn(5, 2))
            self.right = nn.Parameter(torch.randn(2, 3))

    def finder(name, module):
        if isinstance(module, Factorised):
            return [td.CoreGroup(f"{name}.lr" if name else "lr", [module.left, module.right])]
        return None

    model = nn.Sequential(nn.Linear(2, 2), Factorised())
    with pytest.raises(ValueError):
        td.find_core_groups(model)
    td.register_core_group_finder("factorised", finder)
    (g,) = td.find_core_groups(model)
    assert g.name == "1.lr"
    assert ids(g.cores) == ids([model[1].left, model[1].right])
    # the finder's name shows up in the error for a model without groups
    with pytest.raises(ValueError, match="factorised"):
        td.find_core_groups(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="factorised"):
        td.register_core_group_finder("factorised", finder)


def test_core_shared_by_two_groups_raises():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = (nn.Parameter(torch.randn(2, 2)) for _ in range(3))

        def core_groups(self):
            return [td.CoreGroup("ab", [self.a, self.b]), td.CoreGroup("bc", [self.b, self.c])]

    with pytest.raises(ValueError, match="shared"):
        td.find_core_groups(Shared())


@pytest.mark.parametrize("cores", [[], [torch.zeros(2)]])
def test_core_group_needs_two_cores(cores):
    with pytest.raises(ValueError):
        td.CoreGroup("g", cores)


def test_core_group_rejects_duplicates():
    t = torch.zeros(2)
    with pytest.raises(ValueError):
        td.CoreGroup("g", [t, t])


def test_found_groups_drive_das():
    m = Nested()
    opt = td.DAS(m.parameters(), torch.optim.SGD, core_groups=td.find_core_groups(m), lr=0.1)
    assert [g.name for g in opt.core_groups] == ["enc.cp", "blocks.0.1.tucker", "blocks.1.uv"]


def test_unregister_core_group_finder():
    td.register_core_group_finder("lowrank", lambda name, m: None)
    td.unregister_core_group_finder("lowrank")
    td.register_core_group_finder("lowrank", lambda name, m: None)  # the name is free again
    with pytest.raises(ValueError, match="'nope'"):
        td.unregister_core_group_finder("nope")


def test_core_groups_compare_by_identity():
    a, b, c = (nn.Parameter(torch.randn(3, 2)) for _ in range(3))
    g1, g2 = td.CoreGroup("g", [a, b]), td.CoreGroup("g", [a, c])
    assert g1 != g2 and g1 == g1 and g1 in [g2, g1]
    assert len({g1, g2}) == 2
