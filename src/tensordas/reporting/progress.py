"""Progress reporting: library code calls a plain callback; the CLI turns it into a rich progress bar.

Library functions take ``progress: ProgressFn | None`` and call ``progress(task, done, total)``
(e.g. ``("SAM", 120, 1000)``); they never import rich themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["ProgressFn", "progress_bar"]

ProgressFn = Callable[[str, int, int], None]


@contextlib.contextmanager
def progress_bar(console: Console | None = None, *, enabled: bool | None = None) -> Iterator[ProgressFn]:
    """A rich progress bar (one row per task name) behind a :data:`ProgressFn` callback.

    Args:
        console: where to draw; standard error by default, so standard output keeps only results.
        enabled: ``None`` draws only when the console is an interactive terminal (logs and pipes
            stay clean); ``False`` never draws.
    """
    console = console or Console(stderr=True)
    if enabled is None:
        enabled = console.is_terminal
    if not enabled:
        yield lambda task, done, total: None
        return
    columns = (
        TextColumn("{task.description:>6}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    tasks: dict[str, int] = {}
    with Progress(*columns, console=console) as bar:

        def update(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done, total=total)

        yield update
