"""DAS and SAM under PyTorch Lightning give the plain PyTorch loop's parameters; what cannot work
(SAM with accumulation or value clipping) is a clear error, not a silently wrong step.

The module, data and Trainer come from ``examples/lightning_train.py`` (so the example is tested
too); the plain loops below are written out by hand.
"""

import importlib.util
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("lightning")

F64 = torch.float64
pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # see conftest.py
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated"),
]

_spec = importlib.util.spec_from_file_location(
    "lightning_train", Path(__file__).parents[1] / "examples" / "lightning_train.py"
)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

STEPS, BATCH = 3, 8
STRENGTH = {"das": 2.0, "sam": 0.2}  # large enough that DAS's scales and SAM's perturbation show


def lightning_params(kind, dtype=F64, accumulate=1, precision="32-true", **trainer_kwargs):
    module = example.TensorizedRegressor(kind, lr=0.1, strength=STRENGTH[kind], dtype=dtype)
    loader = DataLoader(example.dataset(64, dtype), batch_size=BATCH, shuffle=False)
    example.trainer(STEPS, accumulate, precision, **trainer_kwargs).fit(module, loader)
    return [p.detach().clone() for p in module.net.parameters()]


def plain_params(kind, dtype=F64, accumulate=1, autocast=None, clip=None):
    """The loop a user writes without Lightning: ``accumulate`` micro-batches of ``loss / accumulate``
    per step; SAM runs them all again at ``w + e``; ``clip(parameters)`` after each pass."""
    module = example.TensorizedRegressor(kind, lr=0.1, strength=STRENGTH[kind], dtype=dtype)
    opt = module.configure_optimizers()
    data = example.dataset(64, dtype).tensors
    batches = [(data[0][i : i + BATCH], data[1][i : i + BATCH]) for i in range(0, 64, BATCH)]

    def loss_of(batch):
        if autocast is None:
            return module.loss(batch)
        with torch.autocast("cpu", dtype=autocast):
            return module.loss(batch)

    for step in range(STEPS):
        micro = batches[step * accumulate : (step + 1) * accumulate]

        def closure(micro=micro):
            opt.zero_grad()
            for batch in micro:
                (loss_of(batch) / accumulate).backward()
            if clip is not None:
                clip(module.net.parameters())

        if kind == "sam":
            opt.step(closure)
        else:
            closure()
            opt.step()
    return [p.detach().clone() for p in module.net.parameters()]


def assert_same(actual, expected, rtol=0.0, atol=0.0):
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


def max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("kind", ["das", "sam"])
def test_automatic_optimization_gives_the_plain_loop_exactly(kind):
    lightning = lightning_params(kind)
    plain = plain_params(kind)
    assert_same(lightning, plain)  # float64, the same operations in the same order: bit for bit
    # control: DAS and SAM end in different places, so the equality above is not trivial
    assert max_diff(lightning, plain_params("das" if kind == "sam" else "sam")) > 1e-4


def test_das_with_accumulate_grad_batches_gives_the_plain_loop():
    assert_same(lightning_params("das", accumulate=2), plain_params("das", accumulate=2))


@pytest.mark.parametrize("kind", ["das", "sam"])
def test_norm_clipping_gives_the_plain_loop_with_clipping(kind):
    """Lightning clips after each closure call; for SAM that includes the first pass, which cannot
    change ``rho g / ||g||`` (up to SAM's 1e-12 in the denominator)."""
    clipped = lightning_params(kind, gradient_clip_val=0.05)
    norm = partial(torch.nn.utils.clip_grad_norm_, max_norm=0.05)
    assert_same(clipped, plain_params(kind, clip=norm), rtol=1e-12, atol=1e-14)
    assert max_diff(clipped, plain_params(kind)) > 1e-3  # the clipping bites


@pytest.mark.parametrize("kind", ["das", "sam"])
def test_bf16_mixed_gives_the_plain_loop_under_autocast(kind):
    """``precision="bf16-mixed"`` is ``torch.autocast("cpu", bfloat16)`` around ``training_step``,
    float32 parameters and steps. The plain loop runs the same bf16 kernels on the same inputs in
    the same order, so we expect equality up to float32 rounding of the step (rtol 1e-5 + atol
    1e-6, about 1e-5 on parameters of order 1): 10x below the gap between a bf16 and a float32 run,
    which the test requires to exceed 1e-4, and far below what a wrong step would move."""
    lightning = lightning_params(kind, dtype=torch.float32, precision="bf16-mixed")
    assert_same(lightning, plain_params(kind, torch.float32, autocast=torch.bfloat16), rtol=1e-5, atol=1e-6)
    assert max_diff(lightning, plain_params(kind, torch.float32)) > 1e-4  # bf16 really ran


def test_bf16_mixed_with_accumulation_gives_the_plain_loop_for_das():
    lightning = lightning_params("das", torch.float32, accumulate=2, precision="bf16-mixed")
    assert_same(lightning, plain_params("das", torch.float32, 2, torch.bfloat16), rtol=1e-5, atol=1e-6)


def test_sam_with_accumulate_grad_batches_is_a_clear_error_before_any_change():
    """Without the check Lightning's closure would give SAM's second pass only the last micro-batch
    (1/2 of the batch at 1/2 scale); the error comes at the first step, before any parameter moves."""
    module = example.TensorizedRegressor("sam", lr=0.1, strength=STRENGTH["sam"], dtype=F64)
    before = [p.detach().clone() for p in module.net.parameters()]
    loader = DataLoader(example.dataset(64, F64), batch_size=BATCH, shuffle=False)
    with pytest.raises(ValueError, match=r"accumulate_grad_batches=2: its second pass would see only the last") as e:
        example.trainer(STEPS, 2).fit(module, loader)
    assert "\n" not in str(e.value) and "DAS" in str(e.value)
    assert_same([p.detach() for p in module.net.parameters()], before)


def test_sam_with_value_clipping_is_a_clear_error():
    with pytest.raises(ValueError, match=r"gradient_clip_algorithm='value'.*use gradient_clip_algorithm='norm'"):
        lightning_params("sam", gradient_clip_val=0.05, gradient_clip_algorithm="value")
    clipped = lightning_params("das", gradient_clip_val=0.05, gradient_clip_algorithm="value")  # one pass: fine
    value = partial(torch.nn.utils.clip_grad_value_, clip_value=0.05)
    assert_same(clipped, plain_params("das", clip=value))
    assert max_diff(clipped, plain_params("das")) > 1e-3  # the clipping bites


def test_sam_with_fp16_grad_scaler_is_a_clear_error():
    """``precision="16-mixed"`` steps through a GradScaler, which calls ``step()`` without a closure.
    (On a CPU Lightning turns "16-mixed" into "bf16-mixed", so the plugin is built explicitly.)"""
    from lightning.pytorch.plugins import MixedPrecision

    fp16 = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match=r"needs a closure.*precision='16-mixed'.*bf16-mixed"):
        lightning_params("sam", dtype=torch.float32, precision=None, plugins=[fp16])
    lightning_params("das", dtype=torch.float32, precision=None, plugins=[fp16])  # DAS: the scaler drives it


class ManualSAM(example.TensorizedRegressor):
    """Manual optimization: the closure runs every micro-batch, so SAM accumulates correctly."""

    def __init__(self, accumulate, **kwargs):
        super().__init__("sam", **kwargs)
        self.automatic_optimization = False
        self.accumulate = accumulate

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        micro = list(zip(batch[0].chunk(self.accumulate), batch[1].chunk(self.accumulate)))

        def closure():
            opt.zero_grad()
            for mb in micro:
                self.manual_backward(self.loss(mb) / self.accumulate)

        opt.step(closure=closure)


def test_sam_manual_optimization_accumulates_like_the_plain_loop():
    module = ManualSAM(2, lr=0.1, strength=STRENGTH["sam"], dtype=F64)
    loader = DataLoader(example.dataset(64, F64), batch_size=2 * BATCH, shuffle=False)
    example.trainer(STEPS).fit(module, loader)
    manual = [p.detach().clone() for p in module.net.parameters()]
    assert_same(manual, plain_params("sam", accumulate=2))


def test_example_trains_and_prints(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = example.main(["--optimizer", "das", "--steps", "30"])
    assert result["loss_after"] < 0.5 * result["loss_before"]
    assert set(result) == {"loss_before", "loss_after", "Q[0.tt]", "Q[2.cp]"}
    assert "das: loss_before" in capsys.readouterr().out


def test_sam_check_also_covers_the_pytorch_lightning_package():
    """The same Trainer shipped as ``pytorch_lightning`` (its own LightningModule class)."""
    pl = pytest.importorskip("pytorch_lightning")

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.inner = example.TensorizedRegressor("sam", dtype=F64)

        def training_step(self, batch, batch_idx):
            return self.inner.loss(batch)

        def configure_optimizers(self):
            return self.inner.configure_optimizers()

    trainer = pl.Trainer(max_steps=2, accumulate_grad_batches=2, **example.QUIET)
    loader = DataLoader(example.dataset(64, F64), batch_size=BATCH, shuffle=False)
    with pytest.raises(ValueError, match="accumulate_grad_batches=2"):
        trainer.fit(Module(), loader)
