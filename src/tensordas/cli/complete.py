"""``tensordas complete``: the completion family — CP/Tucker/TT/TR models fitted to a tensor's observed entries."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..tasks import TASKS
from ..tasks.completion import PAPER_PROTOCOL
from ._common import _datasets_help, comparison_command, parse_rank

_COMPLETION = TASKS["completion"]
_C = _COMPLETION.config()


def _protocol_presets(settings: dict[str, Any]) -> dict[str, Any]:
    """With ``--protocol paper``, the paper's Table 1 settings for every option left at its default."""
    return dict(PAPER_PROTOCOL) if settings.get("protocol") == "paper" else {}


@comparison_command(_COMPLETION, out="runs/completion", presets=_protocol_presets)
def complete_command(
    data: Annotated[
        str,
        typer.Option(
            help=_datasets_help("tensor") + " | synthetic:shape=AxBxC,rank=R,noise=S[,nnz=M] | "
            "a dense .npy/.npz/.mat file (NaN = missing) | observed entries: a .npz with indices (nnz x N), "
            "values (nnz) and shape (N), or a .csv/.parquet table with one 0-based integer column per mode "
            "and a value column."
        ),
    ] = _C.data,
    value_column: Annotated[
        str | None, typer.Option(help="Value column of a .csv/.parquet --data file (default: the last column).")
    ] = None,
    model: Annotated[str, typer.Option(help="Tensor format of the model: cp | tucker | tt | tr.")] = _C.model,
    rank: Annotated[str, typer.Option(help="Rank: R, or one per mode/bond, e.g. 8,6,8.")] = str(_C.rank),
    missing: Annotated[
        float, typer.Option(help="Fraction of known entries held out for testing, in (0, 1).")
    ] = _C.missing,
    validation: Annotated[
        float | None,
        typer.Option(
            help="Fraction of the rest kept for validation / early stopping, and for picking each method's strength "
            "when --alpha/--rho list several values (default 0.2 then, else 0)."
        ),
    ] = None,
    patience: Annotated[int | None, typer.Option(help="Early stopping: evaluations without validation gain.")] = None,
    tol: Annotated[
        float,
        typer.Option(
            help="Stop a run once its objective (validation MSE with --validation, else the training loss) has "
            "decreased by less than this relative amount at two evaluations in a row; --steps is the upper "
            "bound and the record's stop_reason says which ended it. 0: run every step."
        ),
    ] = _C.tol,
    init_scale: Annotated[
        float,
        typer.Option(help="Initial model entries' RMS as a share of the training values' RMS (balanced, unbalanced)."),
    ] = _C.init_scale,
    standardize: Annotated[
        str, typer.Option(help="none | global (z-score from the observed entries).")
    ] = _C.standardize,
    init: Annotated[
        str,
        typer.Option(
            help="auto (spectral for cp and tucker, else balanced) | spectral (from the observed entries' "
            "mode subspaces; cp, tucker) | balanced | unbalanced (random, see --init-scale) | tensorly (masked "
            "decomposition; dense, refused over the dense budget)."
        ),
    ] = _C.init,
    restarts: Annotated[
        int,
        typer.Option(
            help="Starts per run: the first is --init's, the others random (balanced); the run keeps the one "
            "with the lowest objective (validation MSE with --validation, else training loss). Steps and "
            "times add up over every start."
        ),
    ] = _C.restarts,
    steps: Annotated[int, typer.Option(help="Optimizer steps per run at most (see --tol).")] = _C.steps,
    batch_size: Annotated[int | None, typer.Option(help="Observed entries per step (default: all).")] = None,
    eval_every: Annotated[int, typer.Option(help="Steps between evaluations (curves).")] = _C.eval_every,
    als: Annotated[
        bool,
        typer.Option(
            help="Add TensorLy's masked ALS reference row (CP, Tucker); dense, so skipped with a note when the "
            f"tensor needs more than {_C.dense_budget_gb:g} GB."
        ),
    ] = True,
    dtype: Annotated[str, typer.Option(help="float32 | float64.")] = _C.dtype,
    protocol: Annotated[
        str,
        typer.Option(
            help="task | paper: the DAS paper's Table 1 protocol (covid19 raw values, Tucker 8,6,8, training mask "
            "rand < 0.3, TensorLy random start, summed squared error, Adam lr 1e-3, SAM rho 0.01, DAS alpha 0.001 "
            "decayed linearly, 50,000 steps, seeds 42,87,100; options you give override) recording the paper's "
            "training-entry R² (train_r2) beside the held-out one."
        ),
    ] = _C.protocol,
) -> dict[str, Any]:
    """Family completion: fit a low-rank model to the observed entries of a tensor and predict the held-out ones.

    Runs the completion family. Writes OUT/curves.csv, OUT/completion.png, OUT/config.json and, last,
    OUT/results.json (one record per optimizer and seed); prints mean ± std over seeds.
    """
    return dict(
        data=data,
        value_column=value_column,
        model=model,
        rank=parse_rank(rank),
        missing=missing,
        validation=validation,
        patience=patience,
        tol=tol,
        init_scale=init_scale,
        standardize=standardize,
        init=init,
        restarts=restarts,
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
        als=als,
        dtype=dtype,
        protocol=protocol,
    )
