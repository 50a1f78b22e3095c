"""The console script's first moments: signals before imports, and the last-resort guard.

Order matters. `signal` and `sys` are cheap and imported first; SIGINT and SIGTERM are
then only recorded while the command groups are imported, so a Ctrl-C there ends the
run with exit 130 (143 for SIGTERM) and one line, never an import traceback. After the
imports, Python's usual handling is back (Ctrl-C raises KeyboardInterrupt, SIGTERM
ends the process) and commands that must not be cut anywhere (`up`) install their own
recording guard (netlab.kernel.interrupts).

The guard: any exception that is not a NetlabError (which the group turns into a plain
message) becomes one line, `internal error: <type>: <message> (details in FILE)`, with
the traceback written to FILE, and exit code 70 (EX_SOFTWARE). The goal is that it
never fires: every user mistake has its own located error.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType


def main() -> None:
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    signal.signal(signal.SIGINT, hold)
    signal.signal(signal.SIGTERM, hold)
    try:
        from netlab.cli.app import main as group
        from netlab.cli.guard import internal_error
    except BaseException:
        if caught:
            _interrupted(caught[0])
        raise
    if caught:
        _interrupted(caught[0])
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        group(prog_name="netlab")
    except KeyboardInterrupt:  # outside any command (click's own parsing, its exit)
        _interrupted(signal.SIGINT)
    except Exception as e:  # noqa: BLE001 - the last-resort guard
        sys.exit(internal_error(e))


def _interrupted(signum: int) -> None:
    sys.stderr.write("interrupted\n")
    sys.exit(128 + signum)
