"""The README's training-loop example runs as printed (a user copies it first)."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Use it in your training loop") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_training_loop_example_runs_and_prints_plain_floats():
    torch.manual_seed(0)
    scope: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_example(), str(README), "exec"), scope)
    lines = out.getvalue().splitlines()
    groups = scope["groups"]
    assert len(lines) == 2 * len(groups) + 1 and len(groups) == 2
    for line in lines[: len(groups)]:  # "<name> Q <float>"
        name, label, value = line.split()
        assert label == "Q" and math.isfinite(float(value)) and name in {g.name for g in groups}
    deviation = float(lines[-1].rsplit(" ", 1)[1])
    assert 0 < deviation < 1  # DAS moved the norms, within its clamp
    assert all(torch.isfinite(p).all() for p in scope["model"].parameters())
