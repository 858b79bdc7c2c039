"""Shared terminal output: one stderr console and a progress bar helper."""

from __future__ import annotations

import io
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)
WIDE = 170  # per-layer tables have 13 columns: never squeeze them to a pipe's 80


def print_wide(renderable: object, stderr: bool = False) -> None:
    """Print a table at least ``WIDE`` characters wide (wider on a wider terminal)."""
    Console(stderr=stderr, width=max(WIDE, console.width)).print(renderable)


def as_text(renderable: object) -> str:
    """A table as plain text ``WIDE`` characters wide, for writing to a file."""
    rec = Console(file=io.StringIO(), width=WIDE, record=True)
    rec.print(renderable)
    return rec.export_text()


@contextmanager
def progress_bar(title: str, total: int, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """Yield ``advance(status)``; draws a bar on a terminal and stays silent otherwise."""
    if not enabled or not console.is_terminal:
        yield lambda status="": None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(title, total=total, status="")
        yield lambda status="": progress.update(task, advance=1, status=status)
