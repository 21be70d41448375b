"""``tensordas dynamics``: the dynamics family — Q and C under GD, SAM and DAS on a Tucker-2 model (Figure 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..tasks import TASKS
from ._common import build_config, parse_pair, run_task

_DYNAMICS = TASKS["dynamics"]
_D = _DYNAMICS.config()


def dynamics_command(
    steps: Annotated[int, typer.Option(help="Iterations per optimizer (>= 1).")] = _D.steps,
    noise: Annotated[float, typer.Option(help="Noise strength a of the target T + a*N (>= 0).")] = _D.noise,
    seed: Annotated[int, typer.Option(help="Seed of the target and the shared initialisation.")] = _D.seed,
    eta: Annotated[float, typer.Option(help="Learning rate of GD, SAM and DAS (> 0).")] = _D.eta,
    rho: Annotated[float, typer.Option(help="SAM radius (>= 0).")] = _D.rho,
    alpha: Annotated[float | None, typer.Option(help="DAS strength (>= 0); default: rho.")] = None,
    size: Annotated[str, typer.Option(help="Matrix size N or MxN.")] = "x".join(map(str, _D.size)),
    rank: Annotated[str, typer.Option(help="Tucker-2 ranks R or R1xR2 (<= size).")] = "x".join(map(str, _D.rank)),
    target_rank: Annotated[int | None, typer.Option(help="Rank of the clean target T; default: min(rank).")] = None,
    base: Annotated[
        str, typer.Option(help="Base optimizer: sgd (plain GD) | momentum (heavy-ball 0.9) | adam.")
    ] = _D.base,
    balance: Annotated[
        float | None, typer.Option(help="Add a 4th curve: DAS with balance=BETA (>= 0); default: none.")
    ] = None,
    msam_rho: Annotated[
        float | None, typer.Option(help="MSAM radius (>= 0; curve on the momentum and adam bases); default: rho.")
    ] = None,
    optimizer: Annotated[
        str | None,
        typer.Option(
            help="Curves: methods of the registry, comma-separated, base among them (e.g. base,sam,das,msam); "
            "each on --base with --eta, --rho, --alpha and --msam-rho. Default: base,sam,das,das-gradient "
            "(and msam on the momentum and adam bases)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder (created if needed).")] = Path("runs/dynamics"),
    progress: Annotated[bool, typer.Option(help="Show a progress bar (only on a terminal).")] = True,
) -> None:
    """Family dynamics: norm dynamics of GD, SAM and DAS on a Tucker-2 model A G B^T fitted to T + a*N.

    Records the loss, the norm deviation Q and the norm-gradient covariance C at every iteration,
    and Q when the loss has converged (run more steps to see the late phase).

    Checks SAM's first-step drift dQ_SAM - dQ_GD against the prediction 4*eta*rho*C/||g||.

    Writes OUT/dynamics.csv, OUT/dynamics.png and, last, OUT/dynamics.json.
    """
    config = build_config(
        _DYNAMICS.config,
        steps=steps,
        noise=noise,
        seed=seed,
        eta=eta,
        rho=rho,
        alpha=alpha,
        size=parse_pair(size, "--size"),
        rank=parse_pair(rank, "--rank"),
        target_rank=target_rank,
        base=base,
        balance=balance,
        msam_rho=msam_rho,
        optimizers=None if optimizer is None else tuple(o.strip() for o in optimizer.split(",")),
    )
    run_task(TASKS["dynamics"], config, out, resume=False, progress=progress)
