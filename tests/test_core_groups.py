"""Discovery of core groups and the one group protocol (core_groups=, core_groups() methods, finders)."""

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


def test_all_frozen_raises_saying_the_cores_are_frozen():
    m = Nested()
    m.requires_grad_(False)
    with pytest.raises(ValueError, match="frozen") as info:
        td.find_core_groups(m)
    assert "'enc.cp'" in str(info.value) and "requires_grad" in str(info.value)
    assert "\n" not in str(info.value)


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
            return [td.CoreGroup("lr", [module.left, module.right])]  # named relative to the module
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


# ------------------------------------------------------------------ one group protocol
class Pair(nn.Module):
    """A third-party two-factor layer ``W = L R`` that gives its groups in a shape chosen per test."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.left = nn.Parameter(torch.randn(5, 2, generator=g))
        self.right = nn.Parameter(torch.randn(2, 3, generator=g))
        self.extra = nn.Parameter(torch.randn(3, 3, generator=g))
        self.other = nn.Parameter(torch.randn(3, 2, generator=g))


# shape name -> (groups of a Pair in that shape, expected (relative name, cores) per group)
SHAPES = {
    "CoreGroup": (lambda m: td.CoreGroup("lr", [m.left, m.right]), [("lr", "left right")]),
    "list of tensors": (lambda m: [m.left, m.right], [("", "left right")]),
    "tuple of tensors": (lambda m: (m.left, m.right), [("", "left right")]),
    "dict": (
        lambda m: {"lr": [m.left, m.right], "xo": (m.extra, m.other)},
        [("lr", "left right"), ("xo", "extra other")],
    ),
    "list of CoreGroups": (
        lambda m: [td.CoreGroup("lr", [m.left, m.right]), td.CoreGroup("xo", [m.extra, m.other])],
        [("lr", "left right"), ("xo", "extra other")],
    ),
    "list of lists": (
        lambda m: [[m.left, m.right], [m.extra, m.other]],
        [("group0", "left right"), ("group1", "extra other")],
    ),
    "mixed list": (
        lambda m: [td.CoreGroup("lr", [m.left, m.right]), [m.extra, m.other]],
        [("lr", "left right"), ("group1", "extra other")],
    ),
    "list with a dict": (lambda m: [{"lr": [m.left, m.right]}], [("lr", "left right")]),
    "ParameterList": (lambda m: nn.ParameterList([m.left, m.right]), [("", "left right")]),
    "generator": (lambda m: (t for t in (m.left, m.right)), [("", "left right")]),
}


def expected(module, path, rows, root_unnamed="group0"):
    out = []
    for rel, attrs in rows:
        name = f"{path}.{rel}" if path and rel else path or rel or root_unnamed
        out.append((name, [id(getattr(module, a)) for a in attrs.split()]))
    return out


def as_rows(groups):
    return [(g.name, [id(c) for c in g.cores]) for g in groups]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_entry_point_accepts_the_same_shapes(shape):
    make, rows = SHAPES[shape]

    class WithMethod(Pair):
        def core_groups(self):
            return make(self)

    # 1. a module's own core_groups(), at two paths: names are the module path + the given name
    model = nn.Sequential(nn.Linear(2, 2), WithMethod(0), nn.Sequential(WithMethod(1)))
    found = as_rows(td.find_core_groups(model))
    assert found == expected(model[1], "1", rows) + expected(model[2][0], "2.0", rows)
    # 2. a registered finder for a module that cannot implement core_groups()
    td.register_core_group_finder("pairs", lambda name, m: make(m) if type(m) is Pair else None)
    model = nn.Sequential(Pair(0), nn.ModuleList([nn.ReLU(), Pair(1)]))
    assert as_rows(td.find_core_groups(model)) == expected(model[0], "0", rows) + expected(model[1][1], "1.1", rows)
    # 3. core_groups= of DAS and BAR (no module path)
    m = Pair(2)
    for cls in (td.DAS, td.BAR):
        if cls is td.BAR and len(rows) != 1:
            continue  # BAR takes two-core groups; these shapes hold two groups of two, also fine
        opt = cls(m.parameters(), torch.optim.SGD, core_groups=make(m), lr=0.1)
        assert as_rows(opt.core_groups) == expected(m, "", rows)


def test_two_layers_never_share_a_name():
    """The issue's case: a finder naming every group 'weight' gave ['weight', 'weight']."""
    td.register_core_group_finder("pairs", lambda name, m: {"weight": [m.left, m.right]} if type(m) is Pair else None)
    names = [g.name for g in td.find_core_groups(nn.Sequential(Pair(0), Pair(1)))]
    assert names == ["0.weight", "1.weight"]


def test_root_module_groups_keep_their_own_names():
    class WithMethod(Pair):
        def core_groups(self):
            return [[self.left, self.right]]

    (g,) = td.find_core_groups(WithMethod())
    assert g.name == "group0"
    td.register_core_group_finder("pairs", lambda name, m: {"lr": [m.left, m.right]} if type(m) is Pair else None)
    assert [g.name for g in td.find_core_groups(Pair())] == ["lr"]


def pair_das(core_groups):
    m = Pair()
    return td.DAS(m.parameters(), torch.optim.SGD, core_groups=core_groups(m), lr=0.1)


@pytest.mark.parametrize(
    ("core_groups", "error", "pattern"),
    [
        (lambda m: nn.Linear(2, 2), TypeError, r"got a Linear \(an nn.Module\); pass td.find_core_groups\(model\)"),
        (lambda m: Nested(), TypeError, r"got a Nested \(an nn.Module\)"),
        (lambda m: m.left, TypeError, r"got a Parameter; pass .*\[U, V\]"),
        (lambda m: 3, TypeError, r"got an int; pass"),
        (lambda m: "left", TypeError, r"got a str; pass"),
        (lambda m: [m.left, [m.right, m.extra]], TypeError, r"mixes tensors and other items \(Parameter, list\)"),
        (lambda m: [[m.left, "right"]], TypeError, r"group 'group0' holds a str, not a tensor"),
        (lambda m: [[m.left, m.right], nn.Linear(2, 2)], TypeError, r"group 'group1' is a Linear \(an nn.Module\)"),
        (lambda m: {"lr": m.left}, TypeError, r"group 'lr' is a Parameter, not a list of cores"),
        (lambda m: {1: [m.left, m.right]}, TypeError, r"group names must be strings, got an int key 1"),
        (lambda m: [[m.left]], ValueError, r"'group0' needs at least 2 cores, got 1"),
        (
            lambda m: [td.CoreGroup("g", [m.left, m.right]), td.CoreGroup("g", [m.extra, m.other])],
            ValueError,
            r"two core groups named 'g'",
        ),
    ],
    ids=[
        "module",
        "model",
        "tensor",
        "int",
        "str",
        "mixed",
        "str core",
        "module group",
        "dict of tensors",
        "int key",
        "one core",
        "duplicate names",
    ],
)
def test_wrong_shapes_get_a_one_line_error_naming_the_type(core_groups, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        pair_das(core_groups)
    assert "\n" not in str(info.value)


def test_a_finder_or_method_returning_a_wrong_shape_is_named_in_the_error():
    td.register_core_group_finder("broken", lambda name, m: 7 if type(m) is Pair else None)
    with pytest.raises(TypeError, match=r"core-group finder 'broken' got an int"):
        td.find_core_groups(nn.Sequential(Pair()))

    class BadMethod(Pair):
        def core_groups(self):
            return self.left

    with pytest.raises(TypeError, match=r"BadMethod.core_groups\(\) got a Parameter"):
        td.find_core_groups(nn.Sequential(BadMethod()))
