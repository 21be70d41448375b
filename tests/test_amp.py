"""Mixed precision: DAS and SAM driven by torch.amp.GradScaler (CPU scaler, bf16 autocast on CPU).

References are plain float steps without a scaler; loss scales are powers of two, so scaling and
unscaling are exact and a float64 scaled step must equal the plain step to rounding.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import tensordas as td
from tensordas.optim import sam_amp_step

F64 = torch.float64


def make_model(dtype=torch.float32, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        td.TensorizedLinear(12, 8, "tt", rank=3, dtype=dtype),
        nn.Tanh(),
        td.TensorizedLinear(8, 4, "cp", rank=3, dtype=dtype),
    )


def data(step, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 12, generator=g).to(dtype), torch.randn(16, 4, generator=g).to(dtype)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def max_diff(a, b):
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b))


def make_das(model, **kw):
    return td.DAS(
        model.parameters(), torch.optim.SGD, core_groups=td.find_core_groups(model), alpha=0.5, lr=0.05, momentum=0.9
    )


def make_sam(model):
    return td.SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.05, momentum=0.9)


def scaler_(init_scale=2.0**10, **kw):
    return torch.amp.GradScaler("cpu", init_scale=init_scale, **kw)


# ---------------------------------------------------------------- DAS + GradScaler
def test_das_inf_gradient_step_is_skipped_entirely():
    model = make_model()
    opt, scaler = make_das(model), scaler_()
    x, y = data(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    core = td.find_core_groups(model)[0].cores[1]
    core.grad.view(-1)[0] = float("inf")
    before = params_of(model)
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), before))
    assert opt.step_count == 0
    assert opt.skipped_steps == 0  # DAS was not even called: the scaler skipped the step
    assert len(opt.state) == 0  # no momentum buffer was created
    assert scaler.get_scale() == 2.0**9
    # the next, finite step goes through
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert opt.step_count == 1
    assert max_diff(params_of(model), before) > 1e-4


def _das_run(scaled: bool, steps=3):
    model = make_model(F64)
    opt, scaler = make_das(model), scaler_(2.0**12, growth_interval=1)
    for step in range(steps):
        x, y = data(step, F64)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        if scaled:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    return params_of(model), opt


def test_das_sees_unscaled_gradients():
    scaled, opt = _das_run(True)
    plain, _ = _das_run(False)
    assert opt.step_count == 3
    assert max_diff(scaled, plain) < 1e-12
    assert max_diff(plain, params_of(make_model(F64))) > 1e-3


def test_das_bf16_autocast_tracks_float32():
    ref, amp = make_model(), make_model()
    opt_ref, opt_amp, scaler = make_das(ref), make_das(amp), scaler_()
    for step in range(3):
        x, y = data(step)
        opt_ref.zero_grad()
        opt_amp.zero_grad()
        nn.functional.mse_loss(ref(x), y).backward()
        opt_ref.step()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(amp(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt_amp)
        scaler.update()
    assert opt_amp.step_count == 3
    got, want = params_of(amp), params_of(ref)
    assert all(torch.isfinite(p).all() for p in got)
    moved = max_diff(want, params_of(make_model()))
    assert max_diff(got, want) < 0.1 * moved  # bf16 matmuls: close, not equal


# ---------------------------------------------------------------- SAM + GradScaler
def _sam_plain_step(model, sam, x, y):
    def closure():
        sam.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    return sam.step(closure)


@pytest.mark.parametrize("enabled", [True, False])
def test_sam_amp_step_equals_plain_sam_step(enabled):
    ref, amp = make_model(F64), make_model(F64)
    sam_ref, sam_amp = make_sam(ref), make_sam(amp)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1, enabled=enabled)
    for step in range(3):  # several steps: no "unscale_() has already been called" error
        x, y = data(step, F64)
        want = _sam_plain_step(ref, sam_ref, x, y)
        got = sam_amp_step(sam_amp, scaler, lambda x=x, y=y: nn.functional.mse_loss(amp(x), y))
        assert float(got) == pytest.approx(float(want.detach()), rel=1e-12)
    if enabled:
        assert scaler.get_scale() == 2.0**11  # grew every step: no overflow was seen
    assert max_diff(params_of(amp), params_of(ref)) < 1e-12
    assert max_diff(params_of(ref), params_of(make_model(F64))) > 1e-3
    assert all(p.grad is None for p in amp.parameters())


@pytest.mark.parametrize("bad_call", [0, 1], ids=["first-pass", "second-pass"])
def test_sam_amp_step_overflow_in_either_pass_skips_and_restores(bad_call):
    model = make_model(F64)
    sam, scaler = make_sam(model), scaler_(2.0**8)
    x, y = data(0, F64)
    calls = []

    def loss_fn():
        calls.append(1)
        loss = nn.functional.mse_loss(model(x), y)
        return loss * math.inf if len(calls) - 1 == bad_call else loss

    before = params_of(model)
    sam_amp_step(sam, scaler, loss_fn)
    assert len(calls) == (1 if bad_call == 0 else 2)  # a first-pass overflow saves the second pass
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), before))  # w exactly
    assert len(sam.state) == 0  # the base optimizer did not step (no momentum buffer)
    assert scaler.get_scale() == 2.0**7  # the scaler backed off
    # the next step works and equals a plain SAM step from the same weights
    ref = make_model(F64)
    sam_ref = make_sam(ref)
    _sam_plain_step(ref, sam_ref, x, y)
    sam_amp_step(sam, scaler, lambda: nn.functional.mse_loss(model(x), y))
    assert max_diff(params_of(model), params_of(ref)) < 1e-12


def test_sam_amp_step_bf16_autocast_tracks_float32():
    ref, amp = make_model(), make_model()
    sam_ref, sam_amp = make_sam(ref), make_sam(amp)
    scaler = scaler_()

    def amp_loss(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return nn.functional.mse_loss(amp(x).float(), y)

    for step in range(3):
        x, y = data(step)
        _sam_plain_step(ref, sam_ref, x, y)
        sam_amp_step(sam_amp, scaler, lambda x=x, y=y: amp_loss(x, y))
    got, want = params_of(amp), params_of(ref)
    assert all(torch.isfinite(p).all() for p in got)
    assert max_diff(got, want) < 0.1 * max_diff(want, params_of(make_model()))


def test_low_precision_norms_accumulate_in_float32():
    """bf16 cores and gradients: DAS's squared norms and SAM's gradient norm are float32-accurate
    (a bf16 result would be off by up to 0.4%)."""
    gen = torch.Generator().manual_seed(0)
    cores = [torch.nn.Parameter((torch.rand(n, 7, generator=gen) + 0.5).to(torch.bfloat16)) for n in (300, 41)]
    for c in cores:
        c.grad = (torch.rand(c.shape, generator=gen) + 0.25).to(torch.bfloat16)
    exact = [float(t.detach().double().pow(2).sum()) for t in (*cores, *(c.grad for c in cores))]
    for host in (True, False):  # the CPU host path and the device path (its flat norm buffer)
        das = td.DAS(cores, torch.optim.SGD, core_groups=[cores], lr=0.1, alpha=0.0, balance=1e-9)
        das._host_path = host
        das.rescale_cores()
        record = das._run.record.data
        views = None if host else record[1].views()
        sq = torch.cat([views.n, views.gamma]) if not host else torch.tensor(record[1] + record[2])
        assert not host or record[0].cores[0].dtype == torch.bfloat16
        assert host or sq.dtype == torch.float32
        for got, want in zip(sq.tolist(), exact):
            assert got == pytest.approx(want, rel=1e-6)
    sam = td.SAM(cores, torch.optim.SGD, rho=0.05, lr=0.1)
    assert float(sam._grad_norm()) == pytest.approx(sum(exact[2:]) ** 0.5, rel=1e-6)


@pytest.mark.parametrize("enabled", [True, False])
def test_sam_amp_step_restores_w_when_second_pass_raises(enabled):
    model = make_model(F64)
    sam = make_sam(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, enabled=enabled)
    x, y = data(0, F64)
    calls = []

    def loss_fn():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("second pass failed")
        return nn.functional.mse_loss(model(x), y)

    before = params_of(model)
    with pytest.raises(RuntimeError, match="second pass failed"):
        sam_amp_step(sam, scaler, loss_fn)
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), before))  # w, not w + e
    sam_amp_step(sam, scaler, lambda: nn.functional.mse_loss(model(x), y))  # no "first_step() called twice"


def test_sam_amp_step_none_scaler_is_plain_sam():
    ref, amp = make_model(F64), make_model(F64)
    sam_ref, sam_amp = make_sam(ref), make_sam(amp)
    for step in range(2):
        x, y = data(step, F64)
        _sam_plain_step(ref, sam_ref, x, y)
        sam_amp_step(sam_amp, None, lambda x=x, y=y: nn.functional.mse_loss(amp(x), y))
    assert max_diff(params_of(amp), params_of(ref)) == 0.0


@pytest.mark.parametrize("overflow", [False, True])
def test_sam_amp_step_tells_lr_scheduler_about_the_step(overflow, recwarn):
    model = make_model(F64)
    sam, scaler = make_sam(model), scaler_(2.0**8)
    sched = torch.optim.lr_scheduler.StepLR(sam, step_size=1, gamma=0.5)
    x, y = data(0, F64)
    calls = []

    def loss_fn():
        calls.append(1)
        loss = nn.functional.mse_loss(model(x), y)
        return loss * math.inf if overflow and len(calls) == 2 else loss

    sam_amp_step(sam, scaler, loss_fn)
    assert getattr(sam, "_opt_called", False) is not overflow  # a skipped step is not a step
    sched.step()
    before_step = [w for w in recwarn if "lr_scheduler.step()` before `optimizer.step()" in str(w.message)]
    assert len(before_step) == int(overflow)  # torch's own warning only when the step really was skipped


def test_sam_amp_step_rejects_a_closure_and_non_sam():
    model = make_model(F64)
    sam = make_sam(model)
    x, y = data(0, F64)

    def closure():  # SAM.step's closure: runs backward itself
        sam.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    before = params_of(model)
    with pytest.raises(ValueError, match="only run the forward pass"):
        sam_amp_step(sam, scaler_(), closure)
    assert all(torch.equal(a, b) for a, b in zip(params_of(model), before))
    with pytest.raises(TypeError, match="DAS"):
        sam_amp_step(make_das(model), scaler_(), lambda: nn.functional.mse_loss(model(x), y))
