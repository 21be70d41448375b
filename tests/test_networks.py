"""Networks built by name, core-group discovery in them, a DAS step on a tensorized ResNet-20, and tensorize()."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

import tensordas as td
from tensordas.layers import FORMATS, TensorizedConv2d, TensorizedLinear, tensorize
from tensordas.networks import MLP, ResNet, SmallCNN, available_networks, build_network, parse_network_name


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", available_networks())
def test_every_network_builds_and_maps_inputs_to_logits(name):
    torch.manual_seed(0)
    fmt, base = parse_network_name(name)
    if base == "mlp":
        net, x = build_network(name, 20, 5, hidden=(16, 12)), torch.randn(3, 20)
    elif base == "cnn":
        net, x = build_network(name, (1, 8, 8), 5, channels=(8, 16)), torch.randn(3, 1, 8, 8)
    else:
        net, x = build_network(name, (3, 8, 8), 5, width=4), torch.randn(3, 3, 8, 8)
    out = net(x)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    tensorized = [m for m in net.modules() if isinstance(m, (TensorizedLinear, TensorizedConv2d))]
    assert all(m.format == fmt for m in tensorized)
    if fmt is None:
        assert not tensorized
        with pytest.raises(ValueError, match="no core groups"):
            td.find_core_groups(net)
    else:
        assert len(td.find_core_groups(net)) == len(tensorized) > 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_resnet_tensorizes_every_block_conv_and_groups_are_found(fmt):
    net = build_network(f"{fmt}-resnet20", (3, 8, 8), 10, rank=2)
    convs = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, TensorizedConv2d))]
    assert len(convs) == 19  # stem + 9 blocks x 2
    groups = td.find_core_groups(net)
    assert len(groups) == 18
    assert {g.name.rsplit(".", 1)[0] for g in groups} == {n for n in convs if n != "conv1"}
    assert isinstance(net.conv1, nn.Conv2d) and isinstance(net.fc, nn.Linear)
    assert len(td.find_core_groups(ResNet(32, format=fmt, rank=2, width=4))) == 30
    assert len(td.find_core_groups(ResNet(20, format=fmt, rank=2, width=4, tensorize_stem=True))) == 19


def test_resnet20_has_the_standard_shape():
    net = build_network("resnet20", (3, 32, 32), 10)
    assert n_params(net) == 269_722  # He et al.'s 0.27M
    shapes = {}
    for name in ("layer1", "layer2", "layer3"):
        net.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape))
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert shapes == {"layer1": (2, 16, 32, 32), "layer2": (2, 32, 16, 16), "layer3": (2, 64, 8, 8)}
    assert build_network("resnet32", (3, 32, 32), 10).depth == 32


def test_mlp_and_cnn_group_counts_and_flat_digits_inputs():
    mlp = build_network("tt-mlp", 64, 10, hidden=(32, 16))
    assert len(td.find_core_groups(mlp)) == 2 and isinstance(mlp.head, nn.Linear)
    assert len(td.find_core_groups(MLP(64, 10, (32, 16), format="tr", rank=2, tensorize_head=True))) == 3
    cnn = build_network("tucker-cnn", 64, 10, channels=(8, 16))  # flat 64 features read as 1x8x8 images
    assert isinstance(cnn, SmallCNN) and len(td.find_core_groups(cnn)) == 3
    flat = torch.randn(4, 64)
    torch.testing.assert_close(cnn.eval()(flat), cnn(flat.reshape(4, 1, 8, 8)))
    resnet = build_network("cp-resnet20", 64, 10, width=4)
    assert resnet(flat).shape == (4, 10)


def test_build_network_rejects_bad_requests():
    with pytest.raises(ValueError, match="Unknown network 'vgg16'"):
        build_network("vgg16", 64, 10)
    with pytest.raises(ValueError, match="Unknown network 'qr-mlp'"):
        build_network("qr-mlp", 64, 10)
    with pytest.raises(ValueError, match="rank=4"):
        build_network("mlp", 64, 10, rank=4)
    with pytest.raises(ValueError, match="input_shape=\\(10,\\)"):
        build_network("cnn", 10, 10)
    with pytest.raises(ValueError, match="num_classes 0"):
        build_network("mlp", 64, 0)
    with pytest.raises(ValueError, match="depth 21"):
        ResNet(21)
    with pytest.raises(ValueError, match="from the name"):
        build_network("mlp", 64, 10, format="tt")


def test_das_step_on_a_tensorized_resnet20():
    torch.manual_seed(0)
    net = build_network("tr-resnet20", (3, 8, 8), 10, rank=3)
    groups = td.find_core_groups(net)
    opt = td.DAS(net.parameters(), torch.optim.SGD, core_groups=groups, alpha=0.5, lr=0.05, momentum=0.9)
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    before = [c.detach().clone() for g in groups for c in g.cores]
    norms_before = torch.stack([c.pow(2).sum() for c in before])
    for _ in range(2):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    after = [c.detach() for g in groups for c in g.cores]
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
    assert opt.skipped_steps == 0
    assert not torch.allclose(torch.stack([c.pow(2).sum() for c in after]), norms_before)


# --- tensorize -----------------------------------------------------------------------------------------------


def small_dense_model() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(1, 4, 3, padding=1),
            act=nn.ReLU(),
            body=nn.Conv2d(4, 8, 3, stride=2, padding=1),
            flat=nn.Flatten(),
            fc1=nn.Linear(8 * 4 * 4, 24),
            act2=nn.ReLU(),
            fc2=nn.Linear(24, 10, bias=False),
        )
    )


def test_tensorize_swaps_the_chosen_layers_and_reports_them():
    model = small_dense_model()
    before = n_params(model)
    new, report = tensorize(model, "tt", rank=3, exclude=["stem", "fc2"])
    assert new is not model and isinstance(model.body, nn.Conv2d)  # the original is untouched
    assert isinstance(new.body, TensorizedConv2d) and isinstance(new.fc1, TensorizedLinear)
    assert isinstance(new.stem, nn.Conv2d) and isinstance(new.fc2, nn.Linear)
    assert [r.name for r in report.layers] == ["body", "fc1"] and not report.skipped
    assert [r.kind for r in report.layers] == ["Conv2d", "Linear"]
    for r in report.layers:
        dense, swapped = model.get_submodule(r.name), new.get_submodule(r.name)
        assert r.params_before == n_params(dense) and r.params_after == n_params(swapped)
        assert r.weight_params == dense.weight.numel()
        assert r.core_params == sum(c.numel() for c in swapped.cores)
        assert math.isclose(r.ratio, r.weight_params / r.core_params)
        assert r.rank == swapped.rank and r.format == "tt"
        w = dense.weight.detach()
        assert math.isclose(
            r.relative_error, float((swapped.dense_weight().detach() - w).norm() / w.norm()), rel_tol=1e-5
        )
    assert report.model_params_before == before
    assert report.model_params_after == n_params(new)
    assert math.isclose(report.model_ratio, before / n_params(new))
    cores = sum(r.core_params for r in report.layers)
    assert math.isclose(report.layer_ratio, sum(r.weight_params for r in report.layers) / cores)
    assert len(td.find_core_groups(new)) == 2
    assert report.to_dict()["layers"][0]["name"] == "body"


def test_tensorize_full_rank_tt_keeps_the_function():
    model = small_dense_model().double()
    new, report = tensorize(model, "tt", rank=10_000)
    assert len(report.layers) == 4
    assert all(r.relative_error < 1e-10 for r in report.layers)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(new(x), model(x), rtol=1e-9, atol=1e-10)


def test_tensorize_selection_by_type_and_pattern_and_inplace():
    model = small_dense_model()
    same, report = tensorize(model, "cp", rank=2, include=[nn.Linear], init="random", inplace=True)
    assert same is model and [r.name for r in report.layers] == ["fc1", "fc2"]
    assert all(r.relative_error is None for r in report.layers)
    _, report = tensorize(small_dense_model(), "tucker", rank=2, include="fc*", exclude="fc2")
    assert [r.name for r in report.layers] == ["fc1"]
    _, report = tensorize(small_dense_model(), "tucker", rank=2, exclude=nn.Linear)
    assert [r.name for r in report.layers] == ["stem", "body"]
    with pytest.raises(ValueError, match="no nn.Linear"):
        tensorize(small_dense_model(), "tt", rank=2, include="fc*", exclude=nn.Linear)


def test_tensorize_ratio_and_errors_policy():
    model = small_dense_model()
    new, report = tensorize(model, "tr", ratio=2.0, include=["body", "fc*"], errors="skip", n_iter_max=5)
    reached = {r.name for r in report.layers}
    assert all(r.ratio >= 2.0 for r in report.layers)
    assert reached | {name for name, _ in report.skipped} == {"body", "fc1", "fc2"}
    with pytest.raises(ValueError, match="layer 'stem'.*compression ratio 50"):
        tensorize(model, "tt", ratio=50.0)
    _, report = tensorize(model, "tt", ratio=50.0, errors="skip")
    assert {name for name, _ in report.skipped} >= {"stem"}
    for reason in (r for _, r in report.skipped):
        assert "compression ratio 50" in reason


def test_tensorize_bad_arguments():
    model = small_dense_model()
    with pytest.raises(ValueError, match="no nn.Linear/nn.Conv2d layer"):
        tensorize(model, "tt", rank=2, include=["nothing*"])
    with pytest.raises(ValueError, match="exactly one of rank and ratio"):
        tensorize(model, "tt")
    with pytest.raises(ValueError, match="Unknown tensor format 'svd'"):
        tensorize(model, "svd", rank=2)
    with pytest.raises(ValueError, match="init 'zeros'"):
        tensorize(model, "tt", rank=2, init="zeros")
    with pytest.raises(ValueError, match="selector 3"):
        tensorize(model, "tt", rank=2, include=[3])
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 8, 3))
    with pytest.raises(ValueError, match="layer '0'.*groups=2"):
        tensorize(grouped, "tt", rank=2)
    _, report = tensorize(grouped, "tt", rank=2, errors="skip")
    assert [r.name for r in report.layers] == ["1"] and report.skipped[0][0] == "0"


def test_tensorize_a_bare_layer_and_attention_is_left_alone():
    layer, report = tensorize(nn.Linear(12, 10), "tt", rank=2)
    assert isinstance(layer, TensorizedLinear) and report.layers[0].name == "<model>"
    attn = nn.Sequential(nn.MultiheadAttention(8, 2), nn.Linear(8, 8))
    new, report = tensorize(attn, "tt", rank=2)
    assert [r.name for r in report.layers] == ["1"]
    assert type(new[0].out_proj) is type(attn[0].out_proj)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("mlp", {"hiden": (8,)}),  # a typo used to vanish silently in a dense network
        ("mlp", {"init": "balanced"}),
        ("cnn", {"factorization": 2}),
        ("resnet20", {"init": "balanced"}),
    ],
)
def test_dense_networks_reject_tensorized_layer_options(name, kwargs):
    with pytest.raises(ValueError, match="dense"):
        build_network(name, (1, 8, 8), 10, **kwargs)


@pytest.mark.parametrize("name", ["tt-mlp", "cp-cnn", "tr-resnet20", "mlp", "resnet20"])
def test_dtype_applies_to_the_whole_network(name):
    # dtype used to reach only the tensorized layers, leaving a float32 head: forward then failed
    model = build_network(name, (1, 8, 8), 10, dtype=torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model(torch.randn(2, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    "build",
    [
        lambda: build_network("resnet20", (3, 8, 8), 10, width=0),
        lambda: build_network("cnn", (1, 8, 8), 10, channels=(0, 4)),
        lambda: build_network("tt-cnn", (1, 8, 8), 10, channels=(8, -4)),
    ],
)
def test_non_positive_widths_raise(build):
    with pytest.raises(ValueError, match="Invalid"):
        build()
