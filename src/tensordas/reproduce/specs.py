"""Experiment specifications: one TOML file per experiment, shipped in ``reproduce/configs/``.

A file names its ``family`` (the task that runs it), a ``title``, the task ``[settings]`` shared by
every profile, and ``[profiles.<name>]`` tables that override them (``smoke``, ``quick``, ``full``).
Users can pass their own files in the same format.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .families import check_family

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROFILES = ("smoke", "quick", "full")


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment of a reproduction: which task runs it, with which settings."""

    name: str
    family: str
    title: str
    settings: dict[str, Any]
    metric: str | None = None
    metric_label: str | None = None
    source: str = ""
    profile: str = "quick"
    extra: dict[str, Any] = field(default_factory=dict)


TOP_KEYS = ("family", "title", "metric", "metric_label", "settings", "profiles")


def _table(value: Any, where: str, header: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {header.strip('[]')!r} should be a table ({header}), not {value!r}")
    return value


def parse_spec(text: str, name: str, profile: str, source: str = "") -> ExperimentSpec:
    """An :class:`ExperimentSpec` from TOML ``text`` with ``profile``'s overrides applied.

    The whole file is checked first (keys, types, every profile's settings against the family's
    task, the metric against the family's records): a ``ValueError`` names the file and the key."""
    if profile not in PROFILES:
        raise ValueError(f"Invalid profile {profile!r} (expected one of {', '.join(PROFILES)})")
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
    settings = _table(doc.get("settings", {}), where, "[settings]")
    profiles = _table(doc.get("profiles", {}), where, "[profiles.<name>]")
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise ValueError(f"{where}: unknown profile(s) {unknown} (expected {', '.join(PROFILES)})")
    tables = {"[settings]": settings}
    tables.update({f"[profiles.{p}]": _table(t, where, f"[profiles.{p}]") for p, t in profiles.items()})
    check_family(family, doc.get("metric"), doc.get("metric_label"), tables, where)
    return ExperimentSpec(
        name=name,
        family=family,
        title=doc.get("title", name),
        settings={**settings, **profiles.get(profile, {})},
        metric=doc.get("metric"),
        metric_label=doc.get("metric_label"),
        source=source,
        profile=profile,
    )


def load_spec(path: str | Path, profile: str) -> ExperimentSpec:
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
    return parse_spec(text, path.stem, profile, source=str(path))


def bundled_specs(profile: str) -> list[ExperimentSpec]:
    """The experiments shipped with the package, in file-name order."""
    folder = resources.files("tensordas.reproduce") / "configs"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    return [parse_spec(f.read_text(), f.name.removesuffix(".toml"), profile, source=f"configs/{f.name}") for f in files]
