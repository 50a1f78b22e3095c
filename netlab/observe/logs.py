"""Follow a lab's process logs as they grow (`netlab logs --follow`).

The applier writes one log file per process (kernel/query.log_files finds them); this
yields their lines, what is there and then what is appended, until the caller stops.
"""

from __future__ import annotations

import os
import threading
from typing import Iterator

POLL_S = 0.2  # a file has no readiness to wait on: look again after this long when idle


def follow(paths: list[str], stop: threading.Event | None = None) -> Iterator[tuple[str, str]]:
    """(path, line) for every line of `paths`, then each one appended, until `stop` is set."""
    stop = stop or threading.Event()
    handles = {p: open(p, errors="replace") for p in paths if os.path.exists(p)}
    try:
        while not stop.is_set():
            idle = True
            for path, f in handles.items():
                while line := f.readline():
                    idle = False
                    yield path, line
            if idle:
                stop.wait(POLL_S)
    finally:
        for f in handles.values():
            f.close()
