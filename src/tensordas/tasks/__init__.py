"""Experiment families: library functions behind the ``tensordas`` commands, callable from Python.

Each family is one :class:`Task` (see :mod:`tensordas.tasks.protocol`): a validated configuration
dataclass, ``run``, ``write``, ``table``, ``plot``, its metrics with their direction. :data:`TASKS`
registers them by name; the CLI and ``tensordas reproduce`` read this registry. A new family is its
module plus one line below.

===========  ==================  ==================================================
family       CLI command         what it does
===========  ==================  ==================================================
completion   ``complete``        tensor completion by gradient methods
noisy        ``train``           noisy-label training of tensorized classifiers
compress     ``compress``        decompose a trained dense network, then fine-tune
finetune     ``finetune``        adapters on a pretrained transformer
dynamics     ``dynamics``        Q and C under GD, SAM and DAS (the paper's Figure 1)
===========  ==================  ==================================================
"""

from . import completion, compress, dynamics, finetune, noisy
from .completion import CompletionConfig
from .compress import CompressConfig
from .config import ComparisonConfig, check_seeds
from .display import diverged_runs
from .dynamics import DynamicsConfig, DynamicsResult, dynamics_table, plot_dynamics, run_dynamics, write_dynamics
from .finetune import FinetuneConfig
from .grid import run_grid
from .noisy import NoisyConfig
from .protocol import Metric, Task
from .records import RECORD_KEYS, check_record
from .runstore import RunResult, data_digest, fingerprint, run_store

TASKS: dict[str, Task] = {t.TASK.name: t.TASK for t in (completion, noisy, compress, finetune, dynamics)}


def get_task(name: str) -> Task:
    """The registered family ``name``; ``ValueError`` naming it otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown experiment family {name!r} (expected one of {', '.join(TASKS)})") from None


__all__ = [
    "RECORD_KEYS",
    "TASKS",
    "ComparisonConfig",
    "CompletionConfig",
    "CompressConfig",
    "DynamicsConfig",
    "DynamicsResult",
    "FinetuneConfig",
    "Metric",
    "NoisyConfig",
    "RunResult",
    "Task",
    "check_record",
    "check_seeds",
    "data_digest",
    "diverged_runs",
    "dynamics_table",
    "fingerprint",
    "get_task",
    "plot_dynamics",
    "run_dynamics",
    "run_grid",
    "run_store",
    "write_dynamics",
]
