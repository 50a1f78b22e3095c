"""The last-resort guard's report: one line for the user, the traceback in a file."""

from __future__ import annotations

import os
import tempfile
import time
import traceback

from netlab.plan.naming import STATE_ROOT

INTERNAL_ERROR = 70  # sysexits.h EX_SOFTWARE


def report_dir() -> str:
    """/run/netlab when netlab may write there (root), else the temp directory.

    A file, never a directory, in /run/netlab: each directory there is a lab."""
    if os.path.isdir(STATE_ROOT) and os.access(STATE_ROOT, os.W_OK):
        return STATE_ROOT
    return tempfile.gettempdir()


def internal_error(e: BaseException) -> int:
    """Write the traceback of `e` to a file, print one line naming it; the exit code."""
    import sys

    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        fd, path = tempfile.mkstemp(prefix=f"internal-error-{time.strftime('%Y%m%dT%H%M%S')}-",
                                    suffix=".txt", dir=report_dir())
        with os.fdopen(fd, "w") as f:
            f.write(f"netlab {' '.join(sys.argv[1:])}\n\n{text}")
        where = path
    except OSError as write_error:
        where = f"not saved: {write_error.strerror}"
    message = str(e).splitlines()[0] if str(e) else ""
    sys.stderr.write(f"internal error: {type(e).__name__}: {message} (details in {where})\n")
    return INTERNAL_ERROR
