"""How a reproduction runs each experiment family: settings in, records and figures out.

A family is registered once, here, with a function that builds the task's configuration from a
spec's settings, runs it into its own folder (resuming finished runs) and returns its records.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..reporting import ProgressFn
from .specs import ExperimentSpec

__all__ = ["FAMILIES", "FamilyOutcome", "count_runs", "run_family"]


@dataclass
class FamilyOutcome:
    """Records of one experiment (one per optimizer and seed) and the figures it wrote."""

    records: list[dict[str, Any]]
    figures: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


Runner = Callable[[ExperimentSpec, Path, bool, str, "ProgressFn | None"], FamilyOutcome]
FAMILIES: dict[str, tuple[Runner, Callable[[dict], int]]] = {}


def register_family(name: str, count: Callable[[dict], int]) -> Callable[[Runner], Runner]:
    """Decorator: ``run(spec, out_dir, resume, device, progress)`` runs family ``name``."""

    def wrap(fn: Runner) -> Runner:
        FAMILIES[name] = (fn, count)
        return fn

    return wrap


def _tuples(settings: dict[str, Any]) -> dict[str, Any]:
    """TOML arrays become tuples, as the task configurations expect."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}


def _known(name: str) -> None:
    if name not in FAMILIES:
        raise ValueError(f"Unknown experiment family {name!r} (expected one of {', '.join(FAMILIES)})")


def count_runs(spec: ExperimentSpec) -> int:
    """How many (optimizer, seed) runs the spec's experiment has, for the overall progress."""
    _known(spec.family)
    return FAMILIES[spec.family][1](spec.settings)


def run_family(
    spec: ExperimentSpec, out_dir: Path, resume: bool, device: str, progress: ProgressFn | None
) -> FamilyOutcome:
    """Run ``spec`` into ``out_dir`` with its family's runner."""
    _known(spec.family)
    return FAMILIES[spec.family][0](spec, out_dir, resume, device, progress)


def _seeded_count(settings: dict) -> int:
    return len(settings.get("optimizers", ("das",))) * len(settings.get("seeds", (0,)))


# ---------------------------------------------------------------------------------- families
@register_family("dynamics", count=lambda settings: 3)  # GD, SAM, DAS
def _dynamics(spec, out_dir, resume, device, progress) -> FamilyOutcome:
    from ..tasks.dynamics import JSON_NAME, PNG_NAME, DynamicsConfig, run_dynamics, write_dynamics

    config = DynamicsConfig(**_tuples(spec.settings))
    done = out_dir / JSON_NAME
    stored = json.loads(done.read_text()) if resume and done.exists() else None
    if stored is not None and stored.get("config") == json.loads(json.dumps(config.to_dict())):
        summary = stored["summary"]
        if progress is not None:
            for name in summary:
                progress(name, 1, 1)
    else:
        result = run_dynamics(config, progress=progress)
        write_dynamics(result, out_dir)
        summary = json.loads(done.read_text())["summary"]
    records = [
        {"optimizer": name, "seed": config.seed, **{k: v for k, v in row.items() if not isinstance(v, list)}}
        for name, row in summary.items()
    ]
    return FamilyOutcome(records=records, figures=[out_dir / PNG_NAME], config=config.to_dict())


def _register_seeded(family: str, module: str, config_cls: str, run: str, write: str) -> None:
    """A family whose task runs a (optimizer, seed) grid: ``Config(**settings)``, ``run_x``, ``write_x``.

    The task module is imported only when the family runs (finetune pulls in transformers)."""

    @register_family(family, count=_seeded_count)
    def runner(spec, out_dir, resume, device, progress) -> FamilyOutcome:
        task = importlib.import_module(f"tensordas.tasks.{module}")
        config = getattr(task, config_cls)(**{**_tuples(spec.settings), "device": device})
        results = getattr(task, run)(config, out_dir=out_dir, resume=resume, progress=progress)
        paths = getattr(task, write)(results, config, out_dir)
        return FamilyOutcome(records=[r.record for r in results], figures=[paths["figure"]], config=config.to_dict())


for _family, _module, _names in (
    ("completion", "completion", ("CompletionConfig", "run_completion", "write_completion")),
    ("noisy", "noisy", ("NoisyConfig", "run_noisy", "write_noisy")),
    ("compress", "compress", ("CompressConfig", "run_compress", "write_compress")),
    ("finetune", "finetune", ("FinetuneConfig", "run_finetune", "write_finetune")),
):
    _register_seeded(_family, _module, *_names)
