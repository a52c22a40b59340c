"""What the CLI shows while it works: progress on stderr and tables that never cut a number.

Progress goes to stderr: a bar in a terminal, otherwise a plain line per task every
``AIGC_EVAL_PROGRESS_INTERVAL`` seconds (default 10); ``--quiet`` turns it off.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO

from aigc_eval.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from aigc_eval.execute import ProgressFactory

PROGRESS_INTERVAL_ENV = "AIGC_EVAL_PROGRESS_INTERVAL"


def _progress_interval() -> float:
    raw = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not raw:
        return 10.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:
        raise UserError(
            f"{PROGRESS_INTERVAL_ENV}={raw!r}: not a number of seconds; set it to e.g. 10, or unset it"
        )
    return seconds


@dataclass
class _Task:
    description: str
    total: int
    started: float
    done: int = 0
    printed: float = -math.inf
    first: tuple[float, int] | None = None  # (time, done) at the first update: where the rate starts


class LineProgress:
    """Progress for logs and CI, where a bar would be an escape-code mess: one plain line per task
    at its start, then at most every ``interval`` seconds as it advances, and at its end.

    The rate counts from a task's first update on, so samples a resumed run already had (reported
    at once) do not inflate it.
    """

    def __init__(self, interval: float, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._stream = stream
        self._clock = clock

    def __call__(self, description: str, total: int) -> Callable[[int], None]:
        task = _Task(description, total, self._clock())
        self._print(task, task.started)

        def advance(n: int) -> None:
            now = self._clock()
            if task.done >= task.total:
                return  # finished and reported
            task.done += n
            if task.first is None:
                task.first = (now, task.done)
            if n and (task.done >= task.total or now - task.printed >= self._interval):
                self._print(task, now)

        return advance

    def _print(self, task: _Task, now: float) -> None:
        task.printed = now
        line = f"aigc-eval: {task.description}: {task.done}/{task.total}"
        if task.done >= task.total:
            line += f", done in {_duration(now - task.started)}"
        else:
            if task.total:
                line += f" ({100 * task.done / task.total:.0f}%)"
            start, start_done = task.first or (now, task.done)
            if now > start and task.done > start_done:
                rate = (task.done - start_done) / (now - start)
                eta = (task.total - task.done) / rate
                line += f", {rate:.3g}/s, ETA {_duration(eta)}"
        print(line, file=self._stream, flush=True)


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


@contextmanager
def show_progress(quiet: bool) -> Iterator[ProgressFactory]:
    """On stderr: nothing when quiet, a rich bar with ETA in a terminal, else plain lines."""
    if quiet:
        from aigc_eval.execute import no_progress

        yield no_progress
        return
    if not sys.stderr.isatty():
        yield LineProgress(_progress_interval(), sys.stderr)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:

        def factory(description: str, total: int) -> Callable[[int], None]:
            task_id = progress.add_task(description, total=total)
            return lambda n: progress.advance(task_id, n)

        yield factory


def print_table(title: str, frame: pd.DataFrame) -> None:
    """A task's table, never cutting a cell: columns that do not fit the width (the terminal's,
    or 240 in a log or pipe) go on into further tables that repeat the model column."""
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=240)
    names = [str(name) for name in frame.index]
    headers = [str(column) for column in frame.columns]
    cells = [[str(value) for value in frame.iloc[:, i].tolist()] for i in range(len(headers))]
    widths = [max(map(cell_len, [h, *c])) for h, c in zip(headers, cells, strict=True)]
    groups = _column_groups(max(map(cell_len, ["model", *names])), widths, console.width)
    for part, group in enumerate(groups, 1):
        suffix = f" (part {part} of {len(groups)})" if len(groups) > 1 else ""
        table = Table(title=f"task: {title}{suffix}", title_justify="left")
        table.add_column("model", no_wrap=True)
        for i in group:
            table.add_column(headers[i], justify="right", no_wrap=True)
        for row, name in enumerate(names):
            table.add_row(name, *(cells[i][row] for i in group))
        needed = _table_width(max(map(cell_len, ["model", *names])), [widths[i] for i in group])
        (console if needed <= console.width else Console(width=needed)).print(table)


def _table_width(first: int, widths: list[int]) -> int:
    """A rich box table's width: each column plus one space either side, and a border between."""
    return sum(w + 3 for w in [first, *widths]) + 1


def _column_groups(first: int, widths: list[int], limit: int) -> list[list[int]]:
    """Consecutive column indices packed into tables of at most ``limit`` cells (one column each
    at least, however wide)."""
    groups: list[list[int]] = [[]]
    for i, width in enumerate(widths):
        if groups[-1] and _table_width(first, [*(widths[j] for j in groups[-1]), width]) > limit:
            groups.append([])
        groups[-1].append(i)
    return groups
