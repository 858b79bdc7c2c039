"""Shared terminal output: one stderr console and a progress bar helper."""

from __future__ import annotations

import io
import shutil
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
UNBOUNDED = 1000  # columns for a table going to a pipe or a file: as wide as its contents


def _render(table: object, width: int, terminal: bool) -> str:
    rec = Console(
        file=io.StringIO(),
        width=width,
        force_terminal=terminal,
        color_system="standard" if terminal else None,
        highlight=False,
    )
    rec.print(table)
    return rec.file.getvalue()


def as_text(table: object) -> str:
    """A table as plain text, every column at full width (for a file or a pipe)."""
    return _render(table, UNBOUNDED, terminal=False)


def width_of(table: object) -> int:
    """The columns ``table`` takes when nothing squeezes it."""
    return Console(file=io.StringIO(), width=UNBOUNDED).measure(table).maximum


def fitted(
    make: Callable[[Sequence[str]], object],
    layouts: Sequence[Sequence[str]],
    wide: bool = False,
    stream: TextIO | None = None,
) -> str:
    """The table ``make(columns)`` as text for ``stream`` (stdout by default). ``layouts`` are
    column sets from every column to the fewest: a pipe, a file or ``wide`` gets the first, at
    full width; a terminal the first that fits its width (else the narrowest), so that no row
    wraps and no heading breaks."""
    stream = sys.stdout if stream is None else stream
    if wide or stream is None or not stream.isatty():
        return as_text(make(layouts[0]))
    width = shutil.get_terminal_size((UNBOUNDED, 24)).columns
    tables = (make(columns) for columns in layouts)
    table = next((t for t in tables if width_of(t) <= width), None) or make(layouts[-1])
    return _render(table, width, terminal=True)


@contextmanager
def progress_bar(title: str, total: int, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """Yield ``advance(status)``; draws a bar on a terminal and stays silent otherwise."""
    if not enabled or not console.is_terminal:
        yield lambda status="": None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(title, total=total, status="")
        yield lambda status="": progress.update(task, advance=1, status=status)
