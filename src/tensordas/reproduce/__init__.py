"""Reproduce the paper's comparison: every experiment family, base vs SAM vs DAS, one report."""

from .families import FAMILIES, FamilyOutcome, register_family
from .run import ReproduceResult, run_reproduce, select_specs
from .specs import PROFILES, ExperimentSpec, bundled_specs, load_spec

__all__ = [
    "FAMILIES",
    "PROFILES",
    "ExperimentSpec",
    "FamilyOutcome",
    "ReproduceResult",
    "bundled_specs",
    "load_spec",
    "register_family",
    "run_reproduce",
    "select_specs",
]
