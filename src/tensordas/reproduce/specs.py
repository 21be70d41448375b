"""Experiment specifications: one TOML file per experiment, shipped in ``reproduce/configs/``.

A file names its ``family`` (the task that runs it), a ``title``, the task ``[settings]`` shared by
every profile, and ``[profiles.<name>]`` tables that override them (``smoke``, ``quick``, ``full``);
optionally the ``metric`` its verdict is decided on and that verdict's ``match_tolerance`` (default:
the metric's, see :class:`~tensordas.tasks.Metric`).
Users can pass their own files in the same format.

Seeds come in two disjoint sets (docs/experiments.md): ``exploration_seeds``, on which an experiment's
settings are chosen, and ``seeds``, the confirmation seeds its reported comparison runs on. Both are
keys of ``[settings]`` or of a profile's table; the parser checks, for every profile, that they share no
seed, so a reported interval never rests on the seeds that chose the settings.
``parse_spec(..., seed_set="exploration")`` runs the exploration seeds instead (``reproduce --explore``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..tasks import TASKS, Task, check_seeds

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROFILES = ("smoke", "quick", "full")
SEED_SETS = ("confirmation", "exploration")  # which seeds a reproduction runs: ``seeds`` or ``exploration_seeds``
EXPLORATION_KEY = "exploration_seeds"  # a key of the file's settings tables, not of the task's configuration


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment of a reproduction: which task runs it, with which settings."""

    name: str
    family: str
    title: str
    settings: dict[str, Any]
    metric: str | None = None
    metric_label: str | None = None
    match_tolerance: float | None = None
    source: str = ""
    profile: str = "quick"
    extra: dict[str, Any] = field(default_factory=dict)
    in_profiles: tuple[str, ...] = PROFILES  # the bundled profiles that run it (``in_profiles`` key)
    exploration_seeds: tuple[int, ...] = ()  # the seeds its settings were chosen on (none: not declared)
    seed_set: str = "confirmation"  # which seeds ``settings["seeds"]`` holds: SEED_SETS


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


def supplied_settings(task: Task) -> tuple[str, ...]:
    """Settings the reproduction sets itself (its ``--device``), not an experiment file."""
    return tuple(k for k in ("device",) if k in task.settings_fields())


def check_settings(family: str, settings: Mapping[str, Any], where: str) -> None:
    """``ValueError`` naming ``where`` and the key if a setting is unknown to the family's task or of the wrong type."""
    task = TASKS[family]
    supplied = supplied_settings(task)
    allowed = [name for name in task.settings_fields() if name not in supplied]
    try:
        hints = typing.get_type_hints(task.config)
    except Exception:  # an annotation that cannot be resolved: check the keys only
        hints = {}
    for key, value in settings.items():
        if key in supplied:
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
    if family not in TASKS:
        raise ValueError(f"{source}: unknown family {family!r} (expected one of {', '.join(TASKS)})")
    task = TASKS[family]
    if not task.metrics and (metric is not None or metric_label is not None):
        raise ValueError(f"{source}: family {family!r} has a table with fixed columns; remove 'metric'/'metric_label'")
    try:
        task.get_metric(metric)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    for table, settings in tables.items():
        check_settings(family, settings, f"{source} {table}")


TOP_KEYS = ("family", "title", "metric", "metric_label", "match_tolerance", "settings", "profiles", "in_profiles")


def _table(value: Any, where: str, header: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {header.strip('[]')!r} should be a table ({header}), not {value!r}")
    return value


def _seed_list(value: Any, where: str, key: str) -> list[int]:
    """``value`` as a list of distinct seeds, else a ``ValueError`` naming ``where`` and ``key``."""
    if not isinstance(value, list):
        raise ValueError(f"{where}: {key!r} should be a list of seeds, not {value!r}")
    try:
        check_seeds(value)
    except ValueError as e:
        raise ValueError(f"{where}: {key}: {e}") from None
    return value


def _check_seed_sets(family: str, tables: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Per profile, the confirmation ``seeds`` (the family's default when not given) and the
    ``exploration_seeds`` must be disjoint."""
    default = next((f.default for f in dataclasses.fields(TASKS[family].config) if f.name == "seeds"), None)
    base = tables["[settings]"]
    for profile in PROFILES:
        merged = {**base, **tables.get(f"[profiles.{profile}]", {})}
        if EXPLORATION_KEY not in merged:
            continue
        seeds = merged.get("seeds", default)
        if not isinstance(seeds, (list, tuple)):
            continue  # check_settings names the wrong type; a family without seeds has nothing to overlap
        shared = sorted(set(seeds) & set(_seed_list(merged[EXPLORATION_KEY], where, EXPLORATION_KEY)))
        if shared:
            raise ValueError(
                f"{where}: profile {profile}: seeds {shared} are both exploration_seeds and seeds "
                f"(the confirmation seeds must be disjoint from the seeds the settings were chosen on)"
            )


def parse_spec(text: str, name: str, profile: str, source: str = "", seed_set: str = "confirmation") -> ExperimentSpec:
    """An :class:`ExperimentSpec` from TOML ``text`` with ``profile``'s overrides applied.

    The whole file is checked first (keys, types, every profile's settings against the family's
    task, the metric against the family's records, disjoint seed sets): a ``ValueError`` names the
    file and the key. With ``seed_set="exploration"`` the spec runs the file's ``exploration_seeds``
    as its ``seeds`` (a file without them is an error)."""
    if profile not in PROFILES:
        raise ValueError(f"Invalid profile {profile!r} (expected one of {', '.join(PROFILES)})")
    if seed_set not in SEED_SETS:
        raise ValueError(f"Invalid seed set {seed_set!r} (expected one of {', '.join(SEED_SETS)})")
    where = source or name
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{where}: not valid TOML ({e})") from None
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(TOP_KEYS)})")
    family = doc.get("family")
    if not isinstance(family, str):
        raise ValueError(f"{where}: missing 'family = \"...\"' (the task that runs this experiment)")
    for key in ("title", "metric", "metric_label"):
        if key in doc and not isinstance(doc[key], str):
            raise ValueError(f"{where}: {key!r} should be a string, not {doc[key]!r}")
    tolerance = doc.get("match_tolerance")
    if tolerance is not None and not (
        isinstance(tolerance, (int, float)) and not isinstance(tolerance, bool) and 0 <= tolerance < float("inf")
    ):
        raise ValueError(f"{where}: 'match_tolerance' should be a number >= 0, not {tolerance!r}")
    settings = _table(doc.get("settings", {}), where, "[settings]")
    profiles = _table(doc.get("profiles", {}), where, "[profiles.<name>]")
    in_profiles = doc.get("in_profiles", list(PROFILES))
    if not (isinstance(in_profiles, list) and in_profiles and set(in_profiles) <= set(PROFILES)):
        raise ValueError(
            f"{where}: 'in_profiles' should be a non-empty list of {', '.join(PROFILES)}, not {in_profiles!r}"
        )
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise ValueError(f"{where}: unknown profile(s) {unknown} (expected {', '.join(PROFILES)})")
    tables = {"[settings]": settings}
    tables.update({f"[profiles.{p}]": _table(t, where, f"[profiles.{p}]") for p, t in profiles.items()})
    for table, values in tables.items():
        if EXPLORATION_KEY in values:
            _seed_list(values[EXPLORATION_KEY], f"{where} {table}", EXPLORATION_KEY)
    task_tables = {t: {k: v for k, v in values.items() if k != EXPLORATION_KEY} for t, values in tables.items()}
    check_family(family, doc.get("metric"), doc.get("metric_label"), task_tables, where)
    _check_seed_sets(family, tables, where)
    chosen = {**settings, **profiles.get(profile, {})}
    exploration = chosen.pop(EXPLORATION_KEY, [])
    if seed_set == "exploration" and "seeds" in TASKS[family].settings_fields():  # dynamics has one seed
        if not exploration:
            raise ValueError(
                f"{where}: no exploration_seeds in profile {profile} (needed to run the exploration seeds)"
            )
        chosen["seeds"] = list(exploration)
    return ExperimentSpec(
        name=name,
        family=family,
        title=doc.get("title", name),
        settings=chosen,
        metric=doc.get("metric"),
        metric_label=doc.get("metric_label"),
        match_tolerance=None if tolerance is None else float(tolerance),
        source=source,
        profile=profile,
        in_profiles=tuple(in_profiles),
        exploration_seeds=tuple(exploration),
        seed_set=seed_set,
    )


def load_spec(path: str | Path, profile: str, seed_set: str = "confirmation") -> ExperimentSpec:
    """Read a user's experiment file (UTF-8 TOML, with or without a byte-order mark)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"experiment file {path} is a folder, not a TOML file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"experiment file not found: {path}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"experiment file {path} is not UTF-8 text (byte {e.start}); TOML files must be UTF-8"
        ) from None
    return parse_spec(text, path.stem, profile, source=str(path), seed_set=seed_set)


def bundled_specs(profile: str, seed_set: str = "confirmation") -> list[ExperimentSpec]:
    """The experiments shipped with the package that run in ``profile`` (their ``in_profiles``), in file-name
    order, on ``seed_set``'s seeds. A user's own file (``--config``) always runs."""
    folder = resources.files("tensordas.reproduce") / "configs"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    specs = [
        parse_spec(f.read_text(), f.name.removesuffix(".toml"), profile, source=f"configs/{f.name}", seed_set=seed_set)
        for f in files
    ]
    return [s for s in specs if profile in s.in_profiles]


def left_out_of(profile: str, ran: Sequence[str] | None = None) -> dict[str, Any]:
    """What the bundled ``profile`` runs less than the ``full`` profile: ``experiments`` (names) and
    ``methods`` (per experiment both run, the full profile's methods it leaves out; only those in ``ran``
    when given, e.g. under ``--only``). Computed from the bundled files, so a report says what a profile
    dropped without anyone typing it. An experiment whose file lists no ``optimizers`` in one of the two
    profiles (the family's default) is not compared method by method."""
    ours = {s.name: s for s in bundled_specs(profile)}
    full = {s.name: s for s in bundled_specs("full")}
    methods = {}
    both = set(ours) & set(full) if ran is None else set(ours) & set(full) & set(ran)
    for name in sorted(both):
        if "optimizers" not in ours[name].settings or "optimizers" not in full[name].settings:
            continue
        kept = set(ours[name].settings["optimizers"])
        dropped = [m for m in full[name].settings["optimizers"] if m not in kept]
        if dropped:
            methods[name] = dropped
    return {"experiments": sorted(set(full) - set(ours)), "methods": methods}
