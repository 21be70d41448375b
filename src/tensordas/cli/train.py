"""``tensordas train``: the noisy-label family — tensorized networks trained on noisy labels."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..tasks import TASKS
from ._common import classification_data_options, comparison_command, label_noise_options, parse_ints, parse_rank

_NOISY = TASKS["noisy"]
_C = _NOISY.config()


@comparison_command(
    _NOISY,
    out="runs/train",
    groups=(label_noise_options, classification_data_options),
    resume_help="Reuse finished runs in OUT/runs and continue unfinished ones from OUT/checkpoints.",
)
def train_command(
    model: Annotated[
        str, typer.Option(help="tt-mlp | tr-mlp | cp-mlp | tucker-mlp | tt-cnn | tr-resnet20 | ... | mlp | cnn.")
    ] = _C.model,
    rank: Annotated[str | None, typer.Option(help="Rank of the tensorized layers: R, or one per bond.")] = None,
    hidden: Annotated[str | None, typer.Option(help="MLP hidden sizes, e.g. 256,256.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = _C.epochs,
    batch_size: Annotated[int, typer.Option(help="Mini-batch size.")] = _C.batch_size,
    lr_schedule: Annotated[str, typer.Option(help="cosine | step | none (stepped per optimizer step).")] = (
        _C.lr_schedule
    ),
) -> dict[str, Any]:
    """Family noisy: train a (tensorized) classifier on labels with symmetric or asymmetric noise; clean test accuracy.

    Runs the noisy-label family. Writes OUT/curves.csv (per epoch), OUT/noisy.png, OUT/config.json, a
    checkpoint per run in OUT/checkpoints/ and, last, OUT/results.json (one record per optimizer and
    seed); prints mean ± std over seeds.
    """
    return dict(
        model=model,
        rank=parse_rank(rank),
        hidden=None if hidden is None else tuple(parse_ints(hidden, "--hidden")),
        epochs=epochs,
        batch_size=batch_size,
        lr_schedule=lr_schedule,
    )
