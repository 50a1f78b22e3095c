"""What every command group prints with: two consoles, an error line, a progress bar.

Consoles are made on first use, not at import, so importing the command line does
nothing; stderr carries messages and progress, stdout only results (tables, JSON), so
`--json` output can be piped.

Off a terminal (a pipe, a file, a CI log) nothing is wrapped: rich would otherwise cut
every line at 80 columns, and a grep for an error's second half, or a table row,
would miss. A terminal wraps long lines itself, so there rich keeps the window width.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any, Callable, NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


# Wide enough that no line a command prints is ever cut; tables take only the width
# their cells need (rich tables do not expand unless asked).
UNWRAPPED_WIDTH = 100_000


def console(stderr: bool = False) -> Console:
    """A console for stdout or stderr: the terminal's width on a TTY, no wrapping off one."""
    c = Console(stderr=stderr)
    if c.is_terminal:
        return c
    return Console(stderr=stderr, width=UNWRAPPED_WIDTH, soft_wrap=True)


@cache
def err() -> Console:
    return console(stderr=True)


@cache
def out() -> Console:
    return console()


def fail(message: str, code: int = 2) -> NoReturn:
    """One plain error line and an exit code; never a traceback."""
    err().print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def progress_bars() -> tuple[Progress, Callable[[str, int, int], None]]:
    """A transient bar per build step, and the (step, done, total) callback that feeds it."""
    prog = Progress(TextColumn("{task.description:<22}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=err(), transient=True)
    tasks: dict[str, Any] = {}

    def update(step: str, done: int, total: int) -> None:
        # "step: detail" (e.g. "ready: app/monitoring/prometheus-0/prometheus") updates the
        # step's one bar and shows what it is on now.
        key = step.partition(": ")[0]
        if key not in tasks:
            tasks[key] = prog.add_task(step, total=total)
        prog.update(tasks[key], completed=done, total=total, description=step)

    return prog, update
