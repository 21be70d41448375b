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


def parse_spec(text: str, name: str, profile: str, source: str = "") -> ExperimentSpec:
    """An :class:`ExperimentSpec` from TOML ``text`` with ``profile``'s overrides applied."""
    if profile not in PROFILES:
        raise ValueError(f"Invalid profile {profile!r} (expected one of {', '.join(PROFILES)})")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{source or name}: not valid TOML ({e})") from None
    family = doc.get("family")
    if not isinstance(family, str):
        raise ValueError(f"{source or name}: missing 'family = \"...\"' (the task that runs this experiment)")
    settings = dict(doc.get("settings", {}))
    profiles = doc.get("profiles", {})
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise ValueError(f"{source or name}: unknown profile(s) {unknown} (expected {', '.join(PROFILES)})")
    settings.update(profiles.get(profile, {}))
    return ExperimentSpec(
        name=name,
        family=family,
        title=str(doc.get("title", name)),
        settings=settings,
        metric=doc.get("metric"),
        metric_label=doc.get("metric_label"),
        source=source,
        profile=profile,
    )


def load_spec(path: str | Path, profile: str) -> ExperimentSpec:
    """Read a user's experiment file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"experiment file not found: {path}") from None
    return parse_spec(text, path.stem, profile, source=str(path))


def bundled_specs(profile: str) -> list[ExperimentSpec]:
    """The experiments shipped with the package, in file-name order."""
    folder = resources.files("tensordas.reproduce") / "configs"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    return [parse_spec(f.read_text(), f.name.removesuffix(".toml"), profile, source=f"configs/{f.name}") for f in files]
