"""DAS's device (CUDA) path: a constant, small number of operators per step, no host reads, the
same results as the reference and host paths, and torch.compile.

Operators are counted with a ``TorchDispatchMode`` (every ATen operator dispatched at the top
level), independently of the code under test. The device path is forced on CPU tensors (and run
on CUDA too where a GPU is present).
"""

import itertools
import warnings

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import tensordas as td

F64 = torch.float64
MAX_OPS = 30
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Operators that read a value back to the host or have data-dependent output shapes.
HOST_READS = ("_local_scalar_dense", "item", "nonzero", "is_nonzero", "equal", "masked_select", "unique", "any", "all")


class OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


class ManyGroups(nn.Module):
    """``groups`` three-core groups (odd shapes, a multilinear coupling) plus a non-core bias."""

    def __init__(self, groups: int, dtype=F64, device="cpu", seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        shapes = [(3, 2), (2, 4, 2), (5,)]
        self.cores = nn.ParameterList(
            nn.Parameter(((0.5 + k) * torch.randn(s, generator=g, dtype=dtype)).to(device))
            for _ in range(groups)
            for k, s in enumerate(shapes)
        )
        self.w = [
            (torch.randn(s, generator=g, dtype=dtype) / torch.Size(s).numel()).to(device)
            for _ in range(groups)
            for s in shapes
        ]
        self.bias = nn.Parameter(torch.randn(4, generator=g, dtype=dtype).to(device))
        self.n = groups

    def groups(self):
        return [list(self.cores[3 * i : 3 * i + 3]) for i in range(self.n)]

    def loss(self, step: int = 0) -> torch.Tensor:
        total = 0.5 * (self.bias - step).pow(2).sum()
        for i in range(self.n):
            prod = 1.0
            for c, w in zip(self.cores[3 * i : 3 * i + 3], self.w[3 * i : 3 * i + 3]):
                prod = prod * (c * w).sum()
            total = total + 0.5 * (prod - 1.0 - 0.1 * step - 0.01 * i) ** 2
        return total


def make(groups, path, device="cpu", split_lrs=False, dtype=F64, **kw):
    m = ManyGroups(groups, dtype=dtype, device=device)
    params = m.parameters()
    if split_lrs:
        cores = list(m.cores)
        params = [{"params": cores[::2], "lr": 0.02}, {"params": cores[1::2], "lr": 0.07}, {"params": [m.bias]}]
    opt = td.DAS(params, torch.optim.SGD, core_groups=m.groups(), lr=0.05, foreach=path != "reference", **kw)
    opt._host_path = path == "host"
    return m, opt


CONFIGS = [
    dict(variant=v, grad_norm=g, balance=b, split_lrs=s)
    for v, g, b, s in itertools.product(["sam-matched", "reference"], ["group", "global"], [0.0, 0.3], [False, True])
]
CONFIG_IDS = [f"{c['variant']}-{c['grad_norm']}-b{c['balance']}-{'lrs' if c['split_lrs'] else 'lr'}" for c in CONFIGS]


def rescale_ops(groups, device, **config):
    m, opt = make(groups, "device", device=device, alpha=0.5, **config)
    gen = torch.Generator().manual_seed(1)
    logs = []
    for _ in range(3):  # the first step builds the plan; later steps reuse it
        for p in m.parameters():  # gradients without a backward pass (a 384-core loss is slow to build)
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(device)
        with OpLog() as log:
            opt.rescale_cores()
        logs.append(log.ops)
    return logs


def without_powsum(monkeypatch):
    """torch without the fused ``_foreach_powsum`` (before 2.11?): norms, then a fused square."""
    from tensordas.optim import _core_scaling

    monkeypatch.setattr(_core_scaling, "_POWSUM", None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("powsum", [True, False], ids=["powsum", "norm-then-square"])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_device_path_operator_count_is_constant_and_small(config, powsum, device, monkeypatch):
    if not powsum:
        without_powsum(monkeypatch)
    small, large = rescale_ops(2, device, **config), rescale_ops(128, device, **config)
    assert len(small[1]) == len(large[1]) == len(small[2]) == len(large[2]), (small[1], large[1])
    assert len(small[1]) <= MAX_OPS, small[1]
    for ops in small[1:] + large[1:]:
        assert not [op for op in ops if op in HOST_READS], ops
    assert not [op for op in small[0] + large[0] if op in HOST_READS]  # building the plan reads nothing back


def test_operator_count_grows_with_groups_on_a_per_core_implementation():
    """The counter can fail: a per-core loop of small operators is counted as growing."""

    def per_core(groups):
        m = ManyGroups(groups)
        m.loss().backward()
        with OpLog() as log, torch.no_grad():
            for c in m.cores:
                c.mul_(c.grad.pow(2).sum().clamp(0.5, 2.0))
        return len(log.ops)

    assert per_core(128) > per_core(2) * 32


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("missing", [False, True], ids=["all-grads", "missing-grads"])
def test_device_path_equals_reference_and_host_paths(config, missing, monkeypatch):
    """Three steps of SGD with momentum on 5 groups: device, host and reference paths agree in float64
    (with torch's fused squared norms, and without them where gradients are missing)."""
    if missing:
        without_powsum(monkeypatch)
    results = []
    for path in ("device", "host", "reference"):
        m, opt = make(5, path, alpha=20.0, momentum=0.9, **config)  # scales within about 10% of 1
        for step in range(3):
            opt.zero_grad()
            m.loss(step).backward()
            if missing:
                m.groups()[0][1].grad = None
                for c in m.groups()[3]:
                    c.grad = None
            opt.step()
        results.append((m, opt))
    (m_dev, opt_dev), *others = results
    moved = max(float((a - b).abs().max()) for a, b in zip(m_dev.parameters(), ManyGroups(5).parameters()))
    assert moved > 1e-3
    for m, opt in others:
        for a, b in zip(m_dev.parameters(), m.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert opt.skipped_per_group() == opt_dev.skipped_per_group()
        assert float(opt.max_scale_deviation) == pytest.approx(float(opt_dev.max_scale_deviation), rel=1e-5)


def test_device_path_keeps_its_buffers_between_steps():
    """What depends only on the set of cores is built once: the same buffers serve every step, and a
    new plan is made only when that set changes."""
    m, opt = make(4, "device", alpha=0.5)
    m.loss().backward()
    opt.step()
    plan = opt._run.plan
    buffers = [plan.flat.buf, plan.flat.s, plan.flat.apply.buffer]
    for step in range(1, 3):
        opt.zero_grad()
        m.loss(step).backward()
        opt.step()
    assert opt._run.plan is plan
    assert all(a is b for a, b in zip(buffers, [plan.flat.buf, plan.flat.s, plan.flat.apply.buffer]))
    opt.zero_grad()
    m.loss(3).backward()
    m.groups()[1][0].grad = None
    opt.step()
    assert opt._run.plan is not plan


def test_compiled_optimizer_step_matches_eager():
    """``torch.compile(opt.step)`` (DAS's scaling and the base SGD step with momentum) trains like the
    eager step over several steps. On CPU tensors the eager step takes the host path; under compile
    DAS takes the device path (host floats would be specialised into the graph)."""
    torch._dynamo.reset()
    results = []
    for compiled in (False, True):
        m, opt = make(2, "host", alpha=0.5, momentum=0.9)
        step_fn = torch.compile(opt.step, backend="aot_eager") if compiled else opt.step
        for step in range(3):
            opt.zero_grad()
            m.loss(step).backward()
            step_fn()
        assert opt.step_count == 3
        results.append([p.detach().clone() for p in m.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert max(float((a - b).abs().max()) for a, b in zip(results[0], ManyGroups(2).parameters())) > 1e-3


@pytest.mark.parametrize("balance", [0.0, 0.3])
def test_device_path_rescale_is_one_graph(balance):
    m, opt = make(3, "device", alpha=0.5, balance=balance)
    m.loss().backward()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(opt.rescale_cores)()
    assert explained.graph_break_count == 0, explained.break_reasons


def guarded(fn):
    """Run ``fn`` with CUDA host synchronisation turned into an error."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        return fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "config", [{}, {"balance": 0.3, "grad_norm": "global", "split_lrs": True}], ids=["default", "all"]
)
def test_das_step_does_not_synchronise_the_host_on_cuda(config):
    """No host sync inside DAS.step() on CUDA, the first step (which builds the plan) included,
    also when a non-finite gradient is counted and the warning is read back later."""
    m, opt = make(8, "device", device="cuda", alpha=0.5, momentum=0.9, **config)
    for step in range(4):
        opt.zero_grad()
        m.loss(step).backward()
        if step == 1:
            m.cores[0].grad[0, 0] = float("nan")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            guarded(opt.step)
        if step >= 2 and caught:
            assert "group0" in str(caught[0].message)
            break
    else:
        pytest.fail("the non-finite gradient of step 1 was never reported")
    assert opt.skipped_per_group()["group0"] >= 1
