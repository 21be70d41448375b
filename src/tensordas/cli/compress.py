"""``tensordas compress``: the compression family — decompose a trained dense network's layers, then fine-tune."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..tasks import TASKS
from ._common import classification_data_options, comparison_command, label_noise_options, parse_ints, parse_rank

_COMPRESS = TASKS["compress"]
_C = _COMPRESS.config(train_dense=True, ratio=4.0)


def _patterns(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(p.strip() for p in value.split(",") if p.strip())


@comparison_command(
    _COMPRESS,
    out="runs/compress",
    groups=(label_noise_options, classification_data_options),
    resume_help="Reuse finished runs, the trained dense model and checkpoints found in OUT.",
    seeds_help="Comma-separated fine-tuning seeds, e.g. 0,1,2.",
)
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
    format: Annotated[
        str, typer.Option("--format", help="Tensor format of the decomposition: tt | tr | cp | tucker.")
    ] = _C.format,
    method: Annotated[str | None, typer.Option("--method", hidden=True, help="Deprecated name of --format.")] = None,
    ratio: Annotated[
        float | None, typer.Option(help="Target compression ratio per layer (dense weight / core entries).")
    ] = None,
    rank: Annotated[str | None, typer.Option(help="Rank instead of --ratio: R, or one per bond.")] = None,
    layers: Annotated[
        str | None, typer.Option(help="Layers to decompose: comma-separated name patterns (default: all but the last).")
    ] = None,
    exclude: Annotated[str | None, typer.Option(help="Comma-separated name patterns to keep dense.")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/test split (and of --train-dense).")] = 0,
    per_seed_split: Annotated[
        bool,
        typer.Option(
            "--per-seed-split",
            help="Each seed draws its own split, dense model and decomposition (split seed = seed; --train-dense).",
        ),
    ] = False,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = _C.epochs,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = _C.batch_size,
    lr_schedule: Annotated[str, typer.Option(help="cosine | step | none (stepped per optimizer step).")] = (
        _C.lr_schedule
    ),
) -> dict[str, Any]:
    """Family compress: compress a dense network's layers into TT/TR/CP/Tucker form at a ratio or rank,
    then fine-tune it.

    Runs the compression family. Reports accuracy of the dense model, right after decomposition and
    after fine-tuning, parameter counts and the achieved ratio. Writes OUT/curves.csv (per fine-tuning
    epoch; epoch 0 is right after decomposition), OUT/compress.png, OUT/config.json and, last,
    OUT/results.json; prints mean ± std over seeds. --lr is the fine-tuning learning rate.
    """
    if method is not None:  # the old name, kept working (hidden from --help)
        format = method
    return dict(
        split_seed=split_seed,
        per_seed_split=per_seed_split,
        checkpoint=None if checkpoint is None else str(checkpoint),
        train_dense=train_dense,
        model=model,
        hidden=None if hidden is None else tuple(parse_ints(hidden, "--hidden")),
        dense_epochs=dense_epochs,
        dense_lr=dense_lr,
        format=format,
        ratio=ratio,
        rank=parse_rank(rank),
        layers=_patterns(layers),
        exclude=_patterns(exclude) or (),
        epochs=epochs,
        batch_size=batch_size,
        lr_schedule=lr_schedule,
    )
