"""``tensordas complete``: tensor completion with CP/Tucker/TT/TR models under base, SAM and DAS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..tasks.completion import CompletionConfig, completion_table, run_completion, write_completion
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
    parse_methods,
    parse_rank,
    parse_seeds,
    run_comparison,
)

_C = CompletionConfig()


def complete_command(
    data: Annotated[
        str,
        typer.Option(
            help="covid19 | il2 | kinetic | indian_pines | synthetic:shape=AxBxC,rank=R,noise=S[,nnz=M] | "
            "a dense .npy/.npz/.mat file (NaN = missing) | observed entries: a .npz with indices (nnz x N), "
            "values (nnz) and shape (N), or a .csv/.parquet table with one 0-based integer column per mode "
            "and a value column."
        ),
    ] = _C.data,
    value_column: Annotated[
        str | None, typer.Option(help="Value column of a .csv/.parquet --data file (default: the last column).")
    ] = None,
    model: Annotated[str, typer.Option(help="cp | tucker | tt | tr.")] = _C.model,
    rank: Annotated[str, typer.Option(help="Rank: R, or one per mode/bond, e.g. 8,6,8.")] = str(_C.rank),
    missing: Annotated[
        float, typer.Option(help="Fraction of known entries held out for testing, in (0, 1).")
    ] = _C.missing,
    validation: Annotated[float, typer.Option(help="Fraction of the rest kept for validation / early stopping.")] = 0.0,
    patience: Annotated[int | None, typer.Option(help="Early stopping: evaluations without validation gain.")] = None,
    standardize: Annotated[
        str, typer.Option(help="none | global (z-score from the observed entries).")
    ] = _C.standardize,
    init: Annotated[
        str,
        typer.Option(
            help="balanced | unbalanced | tensorly (masked decomposition; dense, refused over the dense budget)."
        ),
    ] = _C.init,
    base: BaseOpt = _C.base,
    optimizer: Methods = "das",
    compare: Compare = False,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = _C.lr,
    momentum: Momentum = _C.momentum,
    weight_decay: WeightDecay = _C.weight_decay,
    alpha: Alpha = _C.alpha,
    alpha_schedule: AlphaSchedule = _C.alpha_schedule,
    das_variant: DasVariant = _C.das_variant,
    grad_norm: GradNorm = _C.grad_norm,
    rho: Rho = _C.rho,
    steps: Annotated[int, typer.Option(help="Optimizer steps per run.")] = _C.steps,
    batch_size: Annotated[int | None, typer.Option(help="Observed entries per step (default: all).")] = None,
    eval_every: Annotated[int, typer.Option(help="Steps between evaluations (curves).")] = _C.eval_every,
    seeds: Seeds = "0",
    als: Annotated[
        bool,
        typer.Option(
            help="Add TensorLy's masked ALS reference row (CP, Tucker); dense, so skipped with a note when the "
            f"tensor needs more than {_C.dense_budget_gb:g} GB."
        ),
    ] = True,
    dtype: Annotated[str, typer.Option(help="float32 | float64.")] = _C.dtype,
    device: Device = _C.device,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/completion"),
    resume: Annotated[bool, typer.Option(help="Reuse finished runs found in OUT/runs.")] = True,
    progress: Progress = True,
) -> None:
    """Fit a low-rank model to the observed entries of a tensor and predict the held-out ones.

    Writes OUT/curves.csv, OUT/completion.png, OUT/config.json and, last, OUT/results.json
    (one record per optimizer and seed); prints mean ± std over seeds.
    """
    config = build_config(
        CompletionConfig,
        data=data,
        value_column=value_column,
        model=model,
        rank=parse_rank(rank),
        missing=missing,
        validation=validation,
        patience=patience,
        standardize=standardize,
        init=init,
        base=base,
        optimizers=parse_methods(optimizer, compare),
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        alpha=alpha,
        alpha_schedule=alpha_schedule,
        das_variant=das_variant,
        grad_norm=grad_norm,
        rho=rho,
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
        seeds=parse_seeds(seeds),
        als=als,
        dtype=dtype,
        device=device,
    )
    run_comparison(
        config,
        out,
        run=run_completion,
        write=write_completion,
        table=completion_table,
        resume=resume,
        progress=progress,
    )
