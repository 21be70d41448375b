"""``tensordas compress``: decompose a trained dense network's layers, then fine-tune with base, SAM and DAS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..tasks.compress import CompressConfig, compress_table, run_compress, write_compress
from ._common import (
    Alpha,
    AlphaSchedule,
    BaseOpt,
    DasVariant,
    Device,
    GradNorm,
    Methods,
    Momentum,
    Progress,
    Rho,
    WeightDecay,
    build_config,
    parse_ints,
    parse_methods,
    parse_rank,
    parse_seeds,
    run_comparison,
)

_C = CompressConfig(train_dense=True, ratio=4.0)


def _patterns(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(p.strip() for p in value.split(",") if p.strip())


def compress_command(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Dense model to compress: OUT/dense.pt of a --train-dense run, a 'tensordas train' checkpoint of a "
            "dense model, or a bare state dict (with --model)."
        ),
    ] = None,
    train_dense: Annotated[
        bool, typer.Option("--train-dense", help="Train the dense model first (base optimizer); saves OUT/dense.pt.")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(help="Dense architecture: mlp | cnn | resnet20 | resnet32 (default mlp; checked against a file)."),
    ] = None,
    hidden: Annotated[str | None, typer.Option(help="MLP hidden sizes for --train-dense, e.g. 256,256.")] = None,
    dense_epochs: Annotated[int, typer.Option(help="Epochs of --train-dense.")] = _C.dense_epochs,
    dense_lr: Annotated[float, typer.Option(help="Learning rate of --train-dense.")] = _C.dense_lr,
    method: Annotated[str, typer.Option(help="Decomposition: tt | tr | cp | tucker.")] = _C.method,
    ratio: Annotated[
        float | None, typer.Option(help="Target compression ratio per layer (dense weight / core entries).")
    ] = None,
    rank: Annotated[str | None, typer.Option(help="Rank instead of --ratio: R, or one per bond.")] = None,
    layers: Annotated[
        str | None, typer.Option(help="Layers to decompose: comma-separated name patterns (default: all but the last).")
    ] = None,
    exclude: Annotated[str | None, typer.Option(help="Comma-separated name patterns to keep dense.")] = None,
    data: Annotated[
        str, typer.Option(help="digits (bundled) | cifar10 (with --data-dir) | an .npz file with arrays X and y.")
    ] = _C.data,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with torchvision's cifar-10-batches-py (for --data cifar10).")
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Fetch CIFAR-10 into --data-dir with torchvision if it is missing.")
    ] = False,
    test_fraction: Annotated[float, typer.Option(help="Share of each class held out for testing.")] = _C.test_fraction,
    train_size: Annotated[int | None, typer.Option(help="Keep this many random training samples.")] = None,
    test_size: Annotated[int | None, typer.Option(help="Keep this many random test samples.")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/test split (and of --train-dense).")] = 0,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = _C.epochs,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = _C.batch_size,
    lr: Annotated[float, typer.Option(help="Fine-tuning learning rate.")] = _C.lr,
    lr_schedule: Annotated[str, typer.Option(help="cosine | step | none (stepped per optimizer step).")] = (
        _C.lr_schedule
    ),
    momentum: Momentum = _C.momentum,
    weight_decay: WeightDecay = _C.weight_decay,
    base: BaseOpt = _C.base,
    optimizer: Methods = "das",
    compare: Annotated[bool, typer.Option("--compare", help="Fine-tune with base, SAM and DAS.")] = False,
    alpha: Alpha = _C.alpha,
    alpha_schedule: AlphaSchedule = _C.alpha_schedule,
    das_variant: DasVariant = _C.das_variant,
    grad_norm: GradNorm = _C.grad_norm,
    rho: Rho = _C.rho,
    seeds: Annotated[str, typer.Option(help="Comma-separated fine-tuning seeds, e.g. 0,1,2.")] = "0",
    device: Device = _C.device,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (1 is fastest for small models on a busy machine).", min=1)
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/compress"),
    resume: Annotated[
        bool, typer.Option(help="Reuse finished runs, the trained dense model and checkpoints found in OUT.")
    ] = True,
    progress: Progress = True,
) -> None:
    """Compress a dense network's layers into TT/TR/CP/Tucker form at a ratio or rank, then fine-tune it.

    Reports accuracy of the dense model, right after decomposition and after fine-tuning, parameter
    counts and the achieved ratio. Writes OUT/curves.csv (per fine-tuning epoch; epoch 0 is right after
    decomposition), OUT/compress.png, OUT/config.json and, last, OUT/results.json; prints mean ± std over seeds.
    """
    config = build_config(
        CompressConfig,
        data=data,
        data_dir=None if data_dir is None else str(data_dir),
        download=download,
        test_fraction=test_fraction,
        train_size=train_size,
        test_size=test_size,
        split_seed=split_seed,
        checkpoint=None if checkpoint is None else str(checkpoint),
        train_dense=train_dense,
        model=model,
        hidden=None if hidden is None else tuple(parse_ints(hidden, "--hidden")),
        dense_epochs=dense_epochs,
        dense_lr=dense_lr,
        method=method,
        ratio=ratio,
        rank=parse_rank(rank),
        layers=_patterns(layers),
        exclude=_patterns(exclude) or (),
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
        run=run_compress,
        write=write_compress,
        table=compress_table,
        resume=resume,
        progress=progress,
        threads=threads,
    )
