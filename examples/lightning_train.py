"""DAS or SAM in a PyTorch Lightning module: return them from ``configure_optimizers``.

    python examples/lightning_train.py                                  # DAS, automatic optimization
    python examples/lightning_train.py --optimizer sam
    python examples/lightning_train.py --accumulate 2 --precision bf16-mixed

A tiny tensorized MLP (a TT layer and a CP layer of tensordas) learns a noisy random linear map,
offline on the CPU in seconds. DAS needs nothing from Lightning but its core groups; SAM's
``step(closure)`` runs Lightning's closure twice. Lightning settings under which SAM's second pass
would be wrong (``accumulate_grad_batches > 1``, value clipping) raise a ``ValueError`` at the
first step; DAS works with both. Prints the loss before and after, and each core group's norm
deviation Q.
"""

from __future__ import annotations

import argparse
import warnings

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import tensordas as td


class TensorizedRegressor(L.LightningModule):
    """``TT(16 -> 16) -> tanh -> CP(16 -> 4)``, trained by DAS, SAM or SGD (all with momentum)."""

    def __init__(
        self, optimizer: str = "das", lr: float = 0.05, strength: float = 0.5, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            td.TensorizedLinear(16, 16, "tt", rank=4), nn.Tanh(), td.TensorizedLinear(16, 4, "cp", rank=4)
        ).to(dtype)
        self.optimizer, self.lr, self.strength = optimizer, lr, strength

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = self.net.parameters()
        if self.optimizer == "das":  # the groups: one per tensorized layer ("0.tt", "2.cp")
            groups = td.find_core_groups(self.net)
            return td.DAS(params, torch.optim.SGD, core_groups=groups, alpha=self.strength, lr=self.lr, momentum=0.9)
        if self.optimizer == "sam":
            return td.SAM(params, torch.optim.SGD, rho=self.strength, lr=self.lr, momentum=0.9)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9)


def dataset(n: int = 256, dtype: torch.dtype = torch.float32) -> TensorDataset:
    """``y = x W + 0.1 noise`` with a fixed random ``W`` (16 -> 4)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 16, generator=g, dtype=dtype)
    w = torch.randn(16, 4, generator=g, dtype=dtype) / 4
    return TensorDataset(x, x @ w + 0.1 * torch.randn(n, 4, generator=g, dtype=dtype))


# A quiet CPU Trainer: no logger files, checkpoints, progress bar or model summary.
QUIET = dict(
    accelerator="cpu",
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


def trainer(steps: int, accumulate: int = 1, precision: str = "32-true", **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=steps, accumulate_grad_batches=accumulate, precision=precision, **QUIET, **kwargs)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=["das", "sam", "sgd"], default="das")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--accumulate", type=int, default=1, help="Lightning's accumulate_grad_batches")
    parser.add_argument("--precision", default="32-true", help="32-true or bf16-mixed")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--strength", type=float, default=0.5, help="alpha for DAS, rho for SAM")
    args = parser.parse_args(argv)

    data = dataset()
    module = TensorizedRegressor(args.optimizer, args.lr, args.strength)
    full = data.tensors
    before = float(module.loss(full))
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():  # Lightning's advice on dataloader workers, irrelevant here
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer(args.steps, args.accumulate, args.precision).fit(module, loader)
    with torch.no_grad():
        after = float(module.loss(full))
    result = {"loss_before": before, "loss_after": after}
    result.update({f"Q[{g.name}]": float(td.norm_deviation(g)) for g in td.find_core_groups(module.net)})
    print(f"{args.optimizer}: " + "  ".join(f"{k} {v:.4f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
