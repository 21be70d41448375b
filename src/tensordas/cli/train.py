"""``tensordas train``: tensorized networks trained on noisy labels under base, SAM and DAS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..tasks.noisy import NoisyConfig, noisy_table, run_noisy, write_noisy
from ._common import (
    Alpha,
    AlphaSchedule,
    BaseOpt,
    Compare,
    DasVariant,
    Device,
    GradNorm,
    Methods,
    Momentum,
    Progress,
    Rho,
    Seeds,
    WeightDecay,
    build_config,
    parse_ints,
    parse_methods,
    parse_rank,
    parse_seeds,
    run_comparison,
)

_C = NoisyConfig()


def train_command(
    data: Annotated[
        str, typer.Option(help="digits (bundled) | cifar10 (with --data-dir) | an .npz file with arrays X and y.")
    ] = _C.data,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with torchvision's cifar-10-batches-py (for --data cifar10).")
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Fetch CIFAR-10 into --data-dir with torchvision if it is missing.")
    ] = False,
    test_fraction: Annotated[
        float, typer.Option(help="Share of each class held out for testing (digits, .npz without X_test).")
    ] = _C.test_fraction,
    train_size: Annotated[int | None, typer.Option(help="Keep this many random training samples.")] = None,
    test_size: Annotated[int | None, typer.Option(help="Keep this many random test samples.")] = None,
    noise: Annotated[float, typer.Option(help="Label-noise rate in [0, 1) (training labels only).")] = _C.noise,
    noise_type: Annotated[
        str, typer.Option(help="symmetric (uniform over the other classes) | asymmetric (class-pair flips).")
    ] = _C.noise_type,
    model: Annotated[
        str, typer.Option(help="tt-mlp | tr-mlp | cp-mlp | tucker-mlp | tt-cnn | tr-resnet20 | ... | mlp | cnn.")
    ] = _C.model,
    rank: Annotated[str | None, typer.Option(help="Rank of the tensorized layers: R, or one per bond.")] = None,
    hidden: Annotated[str | None, typer.Option(help="MLP hidden sizes, e.g. 256,256.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = _C.epochs,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = _C.batch_size,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = _C.lr,
    lr_schedule: Annotated[str, typer.Option(help="cosine | step | none (stepped per optimizer step).")] = (
        _C.lr_schedule
    ),
    momentum: Momentum = _C.momentum,
    weight_decay: WeightDecay = _C.weight_decay,
    base: BaseOpt = _C.base,
    optimizer: Methods = "das",
    compare: Compare = False,
    alpha: Alpha = _C.alpha,
    alpha_schedule: AlphaSchedule = _C.alpha_schedule,
    das_variant: DasVariant = _C.das_variant,
    grad_norm: GradNorm = _C.grad_norm,
    rho: Rho = _C.rho,
    seeds: Seeds = "0",
    device: Device = _C.device,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (1 is fastest for small models on a busy machine).", min=1)
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/train"),
    resume: Annotated[
        bool, typer.Option(help="Reuse finished runs in OUT/runs and continue unfinished ones from OUT/checkpoints.")
    ] = True,
    progress: Progress = True,
) -> None:
    """Train a (tensorized) classifier on labels with symmetric or asymmetric noise; clean test accuracy.

    Writes OUT/curves.csv (per epoch), OUT/noisy.png, OUT/config.json, a checkpoint per run in
    OUT/checkpoints/ and, last, OUT/results.json (one record per optimizer and seed); prints mean ± std
    over seeds.
    """
    config = build_config(
        NoisyConfig,
        data=data,
        data_dir=None if data_dir is None else str(data_dir),
        download=download,
        test_fraction=test_fraction,
        train_size=train_size,
        test_size=test_size,
        noise=noise,
        noise_type=noise_type,
        model=model,
        rank=parse_rank(rank),
        hidden=None if hidden is None else tuple(parse_ints(hidden, "--hidden")),
        epochs=epochs,
        batch_size=batch_size,
        lr_schedule=lr_schedule,
        base=base,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        optimizers=parse_methods(optimizer, compare),
        alpha=alpha,
        rho=rho,
        alpha_schedule=alpha_schedule,
        das_variant=das_variant,
        grad_norm=grad_norm,
        seeds=parse_seeds(seeds),
        device=device,
    )
    run_comparison(
        config,
        out,
        run=run_noisy,
        write=write_noisy,
        table=noisy_table,
        resume=resume,
        progress=progress,
        threads=threads,
    )
