"""How a reproduction runs each experiment family: settings in, records and figures out.

A family is registered once, here, with a function that builds the task's configuration from a
spec's settings, runs it into its own folder (resuming finished runs) and returns its records; with
the task's configuration class, against which an experiment file's settings are checked before
anything runs, and with the record fields its report table may show.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..reporting import ProgressFn

if TYPE_CHECKING:
    from .specs import ExperimentSpec

__all__ = ["FAMILIES", "Family", "FamilyOutcome", "check_family", "count_runs", "family_metric", "run_family"]


@dataclass
class FamilyOutcome:
    """Records of one experiment (one per optimizer and seed) and the figures it wrote."""

    records: list[dict[str, Any]]
    figures: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


Runner = Callable[["ExperimentSpec", Path, bool, str, "ProgressFn | None"], FamilyOutcome]


@dataclass(frozen=True)
class Family:
    """One experiment family.

    Attributes:
        run: ``run(spec, out_dir, resume, device, progress)``.
        count: number of (optimizer, seed) runs of a spec's settings, for the overall progress.
        config: returns the task's configuration dataclass (imported on demand); ``None`` skips
            checking the settings.
        metrics: record fields a spec's ``metric`` may name, the default first; empty when the
            family's table has fixed columns (no ``metric``).
        supplied: settings the reproduction sets itself (not allowed in an experiment file).
    """

    run: Runner
    count: Callable[[dict], int]
    config: Callable[[], type] | None = None
    metrics: tuple[str, ...] = ()
    supplied: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {}


def register_family(
    name: str,
    count: Callable[[dict], int],
    *,
    config: Callable[[], type] | None = None,
    metrics: tuple[str, ...] = (),
    supplied: tuple[str, ...] = (),
) -> Callable[[Runner], Runner]:
    """Decorator: ``run(spec, out_dir, resume, device, progress)`` runs family ``name``."""

    def wrap(fn: Runner) -> Runner:
        FAMILIES[name] = Family(fn, count, config, metrics, supplied)
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
    return FAMILIES[spec.family].count(spec.settings)


def run_family(
    spec: ExperimentSpec, out_dir: Path, resume: bool, device: str, progress: ProgressFn | None
) -> FamilyOutcome:
    """Run ``spec`` into ``out_dir`` with its family's runner."""
    _known(spec.family)
    return FAMILIES[spec.family].run(spec, out_dir, resume, device, progress)


def family_metric(spec: ExperimentSpec) -> str | None:
    """The record field of the spec's table: its ``metric``, or its family's default."""
    _known(spec.family)
    metrics = FAMILIES[spec.family].metrics
    return spec.metric or (metrics[0] if metrics else None)


# ------------------------------------------------------------------ checking an experiment file
# Hand-written on purpose: the task configurations are plain dataclasses and TOML gives only a few
# value types, so a short check of those against the annotations gives one-line messages; pydantic
# would be a new core dependency with multi-line errors and coercions ("5" -> 5) we do not want.
_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          str: ("a string", "strings")}  # fmt: skip


def _arms(tp: Any) -> tuple[Any, ...]:
    """The types of a union (``None`` dropped: TOML has no null), or ``(tp,)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp) if a is not type(None))
    return (tp,)


def _sequence_of(tp: Any) -> tuple[Any, int | None] | None:
    """``(element type, length or None)`` of ``tuple[X, ...]``, ``Sequence[X]`` or ``tuple[X, X]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0], None
    if origin is collections.abc.Sequence and len(args) == 1:
        return args[0], None
    if origin is tuple and args and all(a == args[0] for a in args):
        return args[0], len(args)
    return None


def _matches(value: Any, tp: Any) -> bool:
    """Whether the TOML ``value`` can be given for a setting annotated ``tp`` (unknown types pass)."""
    for arm in _arms(tp):
        seq = _sequence_of(arm)
        if seq is not None:
            element, length = seq
            if isinstance(value, list):
                if (length is None or len(value) == length) and all(_matches(v, element) for v in value):
                    return True
            elif length is not None and _matches(value, element):  # (m, n) given as one number
                return True
        elif arm is bool:
            if isinstance(value, bool):
                return True
        elif arm is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif arm is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif arm is str:
            if isinstance(value, str):
                return True
        else:
            return True  # a type this check does not know: the configuration validates it
    return False


def _describe(tp: Any) -> str:
    parts = []
    for arm in _arms(tp):
        seq = _sequence_of(arm)
        if seq is not None:
            element, length = seq
            plural = _NAMES.get(element, ("", "values"))[1]
            if length is not None:
                parts.append(f"{_NAMES.get(element, ('a value',))[0]} or a list of {length} {plural}")
            else:
                parts.append(f"a list of {plural}")
        else:
            parts.append(_NAMES.get(arm, (getattr(arm, "__name__", str(arm)),))[0])
    return " or ".join(parts)


def check_settings(family: str, settings: Mapping[str, Any], where: str) -> None:
    """``ValueError`` naming ``where`` and the key if a setting is unknown to the family's task or of the wrong type."""
    _known(family)
    fam = FAMILIES[family]
    if fam.config is None:
        return
    cls = fam.config()
    allowed = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in fam.supplied]
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved: check the keys only
        hints = {}
    for key, value in settings.items():
        if key in fam.supplied:
            raise ValueError(f"{where}: {key!r} is set by the reproduction (its --{key} option), not in the file")
        if key not in allowed:
            raise ValueError(
                f"{where}: unknown setting {key!r} for family {family!r} (allowed: {', '.join(sorted(allowed))})"
            )
        if key in hints and not _matches(value, hints[key]):
            raise ValueError(f"{where}: setting {key!r} = {value!r} should be {_describe(hints[key])}")


def check_family(
    family: str, metric: str | None, metric_label: str | None, tables: Mapping[str, Mapping[str, Any]], source: str
) -> None:
    """Check an experiment file's family, metric and settings tables (``{"[settings]": {...}, ...}``) up front."""
    if family not in FAMILIES:
        raise ValueError(f"{source}: unknown family {family!r} (expected one of {', '.join(FAMILIES)})")
    metrics = FAMILIES[family].metrics
    if not metrics and (metric is not None or metric_label is not None):
        raise ValueError(f"{source}: family {family!r} has a table with fixed columns; remove 'metric'/'metric_label'")
    if metric is not None and metric not in metrics:
        raise ValueError(
            f"{source}: invalid metric {metric!r} for family {family!r} (expected one of {', '.join(metrics)})"
        )
    for table, settings in tables.items():
        check_settings(family, settings, f"{source} {table}")


def _read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` if it is missing, unreadable or not an object (then: redo)."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def _seeded_count(settings: dict) -> int:
    return len(settings.get("optimizers", ("das",))) * len(settings.get("seeds", (0,)))


def _config_class(module: str, name: str) -> Callable[[], type]:
    return lambda: getattr(importlib.import_module(f"tensordas.tasks.{module}"), name)


# ---------------------------------------------------------------------------------- families
@register_family(
    "dynamics", count=lambda settings: 3, config=_config_class("dynamics", "DynamicsConfig")
)  # GD, SAM, DAS
def _dynamics(spec, out_dir, resume, device, progress) -> FamilyOutcome:
    from ..tasks.dynamics import JSON_NAME, PNG_NAME, DynamicsConfig, run_dynamics, write_dynamics

    config = DynamicsConfig(**_tuples(spec.settings))
    done = out_dir / JSON_NAME
    stored = _read_json_object(done) if resume else None
    if (
        stored is not None
        and stored.get("config") == json.loads(json.dumps(config.to_dict()))
        and isinstance(stored.get("summary"), dict)
        and all(isinstance(row, dict) for row in stored["summary"].values())
    ):
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


def _register_seeded(family: str, module: str, config_cls: str, run: str, write: str, metrics: tuple[str, ...]) -> None:
    """A family whose task runs a (optimizer, seed) grid: ``Config(**settings)``, ``run_x``, ``write_x``.

    The task module is imported only when the family runs or its settings are checked."""

    @register_family(
        family, count=_seeded_count, config=_config_class(module, config_cls), metrics=metrics, supplied=("device",)
    )
    def runner(spec, out_dir, resume, device, progress) -> FamilyOutcome:
        task = importlib.import_module(f"tensordas.tasks.{module}")
        config = getattr(task, config_cls)(**{**_tuples(spec.settings), "device": device})
        results = getattr(task, run)(config, out_dir=out_dir, resume=resume, progress=progress)
        paths = getattr(task, write)(results, config, out_dir)
        return FamilyOutcome(records=[r.record for r in results], figures=[paths["figure"]], config=config.to_dict())


# The metrics a report table may show, the default first (each is a field of every record).
for _family, _names, _metrics in (
    (
        "completion",
        ("CompletionConfig", "run_completion", "write_completion"),
        ("test_r2", "test_rmse", "train_loss", "norm_deviation"),
    ),
    (
        "noisy",
        ("NoisyConfig", "run_noisy", "write_noisy"),
        ("final_test_acc", "best_test_acc", "final_train_acc", "final_train_loss", "memorized", "recovered", "Q_mean"),
    ),
    (
        "compress",
        ("CompressConfig", "run_compress", "write_compress"),
        ("final_test_acc", "best_test_acc", "final_train_loss", "decomposed_test_acc", "dense_test_acc", "Q_mean"),
    ),
    (
        "finetune",
        ("FinetuneConfig", "run_finetune", "write_finetune"),
        ("test_acc", "test_f1", "init_test_acc", "train_loss", "norm_deviation", "peak_memory_mb"),
    ),
):
    _register_seeded(_family, _family, *_names, metrics=_metrics)
