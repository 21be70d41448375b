"""Reproduce the paper's comparison: every experiment family, base vs SAM vs DAS, one report.

The families are the task registry's (:data:`tensordas.tasks.TASKS`); an experiment file names one.
"""

from .families import FamilyOutcome
from .run import ReproduceResult, run_reproduce, select_specs
from .specs import PROFILES, ExperimentSpec, bundled_specs, load_spec

__all__ = [
    "PROFILES",
    "ExperimentSpec",
    "FamilyOutcome",
    "ReproduceResult",
    "bundled_specs",
    "load_spec",
    "run_reproduce",
    "select_specs",
]
