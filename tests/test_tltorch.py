"""Core groups of TensorLy-Torch factorized layers and tensors, and DAS on them.

Expected groups are read off the parameter names (every parameter of a factorized tensor is a
core, a layer's bias is not); scale invariance, the Euler identity and the DAS step are checked
against float64 computations that do not use tensordas.
"""

import subprocess
import sys
import textwrap

import pytest
import torch
from _scale_invariance import assert_euler_identity, assert_unit_product_scaling_keeps
from conftest import reference_scales
from torch import nn

import tensordas as td

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def tlt():
    """tltorch, imported here and not at collection: importing it sets TensorLy's global backend
    to PyTorch, which is put back after this module."""
    import tensorly as tl

    before = tl.get_backend()
    tltorch = pytest.importorskip("tltorch")
    tl.set_backend("pytorch")
    yield tltorch
    tl.set_backend(before)


def linear(tlt, factorization, rank, in_shape=(2, 3), out_shape=(2, 2), **kwargs):
    return tlt.FactorizedLinear(in_shape, out_shape, factorization=factorization, rank=rank, dtype=F64, **kwargs)


class Holder(nn.Module):
    """A module of ours holding a bare factorized tensor ``t``: ``y = x @ t.reshape(in, -1)``."""

    def __init__(self, tensor, in_features):
        super().__init__()
        self.t = tensor.normal_()
        self.in_features = in_features

    def forward(self, x):
        dense = self.t.to_tensor()
        if dense.is_complex():  # a real loss of a complex tensor: both parts enter
            dense = torch.cat([dense.real, dense.imag], dim=-1)
        return x @ dense.reshape(self.in_features, -1).to(x.dtype)


class TwoLayers(nn.Module):
    """Both layers of one jointly factorized FactorizedLinear (``n_layers=2``)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x, 0) + 2.0 * self.layer(x, 1)


class SubLayers(nn.Module):
    """Two ``get_linear`` views of one tensor, as a network would use them."""

    def __init__(self, main):
        super().__init__()
        self.a, self.b = main.get_linear(0), main.get_linear(1)

    def forward(self, x):
        return self.a(x) - self.b(x)


def from_linear_list(tlt):
    g = torch.Generator().manual_seed(3)
    dense = [nn.Linear(6, 4, dtype=F64) for _ in range(2)]
    for lin in dense:
        lin.weight.data.normal_(generator=g)
    main = tlt.FactorizedLinear.from_linear_list(dense, (2, 3), (2, 2), rank=3, factorization="cp")
    return SubLayers(main)


# case -> (builder(tlt) -> (model, input), expected {group name: prefix of its parameters' names})
CASES = {
    "linear-cp": (lambda t: (nn.Sequential(linear(t, "cp", 3)), (5, 6)), {"0.weight.cp": "0.weight."}),
    "linear-tucker": (
        lambda t: (nn.Sequential(nn.Tanh(), linear(t, "tucker", (2, 2, 2, 2))), (5, 6)),
        {"1.weight.tucker": "1.weight."},
    ),
    "linear-blocktt": (
        lambda t: (nn.Sequential(linear(t, "blocktt", 2, (2, 3, 2), (2, 2, 2))), (5, 12)),
        {"0.weight.blocktt": "0.weight."},
    ),
    "conv-tt": (
        lambda t: (
            t.FactorizedConv(3, 4, kernel_size=3, order=2, factorization="tt", rank=0.5, dtype=F64),
            (2, 3, 5, 5),
        ),
        {"weight.tt": "weight."},
    ),
    "conv-cp": (
        lambda t: (t.FactorizedConv(3, 4, kernel_size=3, order=2, factorization="cp", rank=3, dtype=F64), (2, 3, 5, 5)),
        {"weight.cp": "weight."},
    ),
    "embedding-blocktt": (
        lambda t: (nn.ModuleDict({"emb": t.FactorizedEmbedding(16, 6, rank=3, dtype=F64)}), "ids"),
        {"emb.weight.blocktt": "emb.weight."},
    ),
    "tensor-tt": (
        lambda t: (Holder(t.FactorizedTensor.new((3, 4, 2), rank=2, factorization="tt", dtype=F64), 3), (5, 3)),
        {"t.tt": "t."},
    ),
    "tensor-tucker": (
        lambda t: (Holder(t.FactorizedTensor.new((3, 4, 2), rank=2, factorization="tucker", dtype=F64), 3), (5, 3)),
        {"t.tucker": "t."},
    ),
    "tensor-complex-cp": (
        lambda t: (
            Holder(t.FactorizedTensor.new((3, 4, 2), rank=2, factorization="ComplexCP", dtype=torch.cdouble), 3),
            (5, 3),
        ),
        {"t.complexcp": "t."},
    ),
    "linear-cp-2-layers": (
        lambda t: (TwoLayers(linear(t, "cp", 3, n_layers=2)), (5, 6)),
        {"layer.weight.cp": "layer.weight."},
    ),
    "linear-blocktt-2-layers": (
        lambda t: (TwoLayers(linear(t, "blocktt", 2, (2, 3), (2, 2), n_layers=2)), (5, 6)),
        {"layer.weight.blocktt": "layer.weight."},
    ),
    "from-linear-list": (lambda t: (from_linear_list(t), (5, 6)), {"a.main_linear.weight.cp": "a.main_linear.weight."}),
    "tcl": (lambda t: (nn.Sequential(t.TCL((3, 4), (2, 2), dtype=F64)), (5, 3, 4)), {"0.tcl": "0.factor_"}),
    "trl-tucker": (
        lambda t: (t.TRL((3, 4), (2,), factorization="tucker", rank=(2, 2, 2), dtype=F64), (5, 3, 4)),
        {"weight.tucker": "weight."},
    ),
}


def build(tlt, case, seed=0):
    """The case's model with every parameter moved off its initialisation, and an input."""
    torch.manual_seed(seed)
    model, shape = CASES[case][0](tlt)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 + 0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    if shape == "ids":
        return model, torch.tensor([0, 5, 7, 15, 5])
    return model, torch.randn(shape, generator=g, dtype=F64)


def forward(model, x):
    if isinstance(model, nn.ModuleDict):  # the embedding
        return model["emb"](x)
    return model(x)


def expected_groups(model, case):
    """{name: parameters whose names start with the case's prefix, in registration order}."""
    return {
        name: [p for n, p in model.named_parameters() if n.startswith(prefix) and not n.endswith("bias")]
        for name, prefix in CASES[case][1].items()
    }


@pytest.mark.parametrize("case", CASES)
def test_discovery_finds_one_group_per_factorized_tensor(tlt, case):
    model, _ = build(tlt, case)
    groups = td.find_core_groups(model)
    expected = expected_groups(model, case)
    assert [g.name for g in groups] == list(expected)
    for g in groups:
        assert [id(c) for c in g.cores] == [id(c) for c in expected[g.name]]
        assert len(g.cores) >= 2
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    assert not {id(b) for b in biases} & {id(c) for g in groups for c in g.cores}


def test_cp_group_holds_the_weights_vector_and_every_factor(tlt):
    layer = linear(tlt, "cp", 3)
    (g,) = td.find_core_groups(layer)
    assert g.name == "weight.cp"
    assert [tuple(c.shape) for c in g.cores] == [(3,), (2, 3), (2, 3), (2, 3), (3, 3)]
    assert g.cores[0] is layer.weight.weights


def loss_of(model, x, seed=9):
    out = forward(model, x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return (out * weights).sum() + 0.1 * out.pow(2).sum()


@pytest.mark.parametrize("case", CASES)
def test_groups_are_scale_invariant_and_satisfy_euler_identity(tlt, case):
    model, x = build(tlt, case)
    groups = td.find_core_groups(model)
    loss_of(model, x).backward()
    assert_euler_identity(groups, min_abs=1e-3)
    assert_unit_product_scaling_keeps(groups, lambda: forward(model, x), base=1.5)


def test_a_bias_or_a_single_core_is_not_scale_invariant(tlt):
    """Control: the check above would catch a group holding the bias."""
    model, x = build(tlt, "linear-cp")
    before = forward(model, x).detach()
    with torch.no_grad():
        model[0].bias.mul_(2.0)
        model[0].weight.weights.mul_(0.5)
    assert (forward(model, x) - before).abs().max() > 1e-3


def test_dense_tltorch_layer_has_no_group_and_the_error_names_tltorch(tlt):
    layer = linear(tlt, "dense", None)
    with pytest.raises(ValueError, match="TensorLy-Torch factorized tensors"):
        td.find_core_groups(layer)


def test_frozen_tltorch_layer_says_frozen(tlt):
    model, _ = build(tlt, "linear-tucker")
    model.requires_grad_(False)
    with pytest.raises(ValueError, match=r"'1.weight.tucker' are frozen"):
        td.find_core_groups(model)


class Net(nn.Module):
    """Tucker FactorizedLinear -> tanh -> CP FactorizedLinear, with biases (in no group)."""

    def __init__(self, tlt):
        super().__init__()
        self.fc1 = linear(tlt, "tucker", (2, 2, 2, 2))
        self.fc2 = linear(tlt, "cp", 3, in_shape=(2, 2), out_shape=(3,))

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def test_das_step_on_tltorch_model_matches_design_formula(tlt):
    torch.manual_seed(0)
    model = Net(tlt)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 + 0.5 * torch.randn(p.shape, generator=g, dtype=F64))
    x = torch.randn(7, 6, generator=g, dtype=F64)
    y = torch.randint(0, 3, (7,), generator=g)
    nn.functional.cross_entropy(model(x), y).backward()
    # the groups by hand from the parameter names: every non-bias parameter of fc1, of fc2
    by_hand = [[p for n, p in model.named_parameters() if n.startswith(f"{layer}.weight.")] for layer in ("fc1", "fc2")]
    alpha, lr = 2.0, 0.1
    scales = reference_scales(by_hand, alpha=alpha, lr_of=lambda c: lr)
    assert all(0.5 < s < 2.0 for row in scales for s in row)  # no clamp
    assert max(abs(s - 1) for row in scales for s in row) > 1e-3  # visible
    before = {id(p): p.detach().clone() for p in model.parameters()}
    grads = {id(p): p.grad.clone() for p in model.parameters()}
    opt = td.DAS(model.parameters(), torch.optim.SGD, core_groups=td.find_core_groups(model), alpha=alpha, lr=lr)
    opt.step()
    scale_of = {id(c): s for cores, row in zip(by_hand, scales) for c, s in zip(cores, row)}
    assert len(scale_of) == 9 and len(list(model.parameters())) == 11  # two biases in no group
    for p in model.parameters():
        expected = scale_of.get(id(p), 1.0) * before[id(p)] - lr * grads[id(p)]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)


def test_plain_models_never_import_tltorch():
    """Discovery on a model without tltorch modules imports neither tltorch nor peft, and a SAM step
    does not import Lightning (fresh process)."""
    code = textwrap.dedent(
        """
        import sys, torch, tensordas as td
        model = torch.nn.Sequential(td.TensorizedLinear(8, 6, format="tt", rank=2))
        td.find_core_groups(model)
        try:
            td.find_core_groups(torch.nn.Linear(2, 2))
        except ValueError as e:
            print("error:", e)
        sam = td.SAM(model.parameters(), torch.optim.SGD, lr=0.1)
        sam.step(lambda: (sam.zero_grad(), model(torch.ones(1, 8)).sum().backward()))
        optional = ("tltorch", "peft", "lightning", "pytorch_lightning")
        print("imported:", sorted(m for m in optional if m in sys.modules))
        import tltorch  # a model that holds tltorch modules: found
        layer = tltorch.FactorizedLinear((2, 2), (2, 2), factorization="tucker", rank=(2, 2, 2, 2))
        print("found:", [g.name for g in td.find_core_groups(torch.nn.Sequential(layer))])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "imported: []" in out
    assert "TensorLy-Torch factorized tensors" in out.split("error:")[1]
    assert "found: ['0.weight.tucker']" in out
