"""SIGINT and SIGTERM during a build: recorded by a handler, acted on between steps.

Why not raise from the handler (Python's default for SIGINT): a handler runs between
any two bytecodes of the main thread, including inside `logging`'s at-fork hooks
while `subprocess.Popen` forks. CPython reports an exception raised there as
"Exception ignored" and drops it, so the interrupt was lost and `up` finished and
exited 0 (3 times in 20). An exception raised inside a `finally` or a cleanup is
just as bad. So the handler here only records the signal and writes a byte to a
self-pipe; the builder calls `check()` between steps (a pure function call, cheap)
and waits that may last seconds also watch `fd`, so an interrupt ends them at once.

One guard is active at a time in a process: a nested `deferred()` (the command line
guards all of `up`, and `lifecycle.up` guards itself for callers without one) joins
the outer guard, so a signal is recorded once and seen by both.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM arrived; raised only at a check, never from a handler.

    A KeyboardInterrupt, so callers that already treat Ctrl-C as "stop and clean up"
    treat SIGTERM the same way.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a death by that signal


class Guard:
    """What one `deferred()` block knows: the first signal that came, and a pipe to wake on."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def fd(self) -> int:
        """Readable once a signal came: add it to a poll to stop waiting at once."""
        return self._read

    def check(self) -> None:
        """Raise Interrupted if a signal came since the guard was installed."""
        if self.received is not None:
            raise Interrupted(self.received)

    def drain(self) -> None:
        """Empty the self-pipe (a waiter that woke for nothing polls again)."""
        try:
            while os.read(self._read, 64):
                pass
        except BlockingIOError:
            pass

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # Nothing here may raise or allocate much: it runs between any two bytecodes.
        if self.received is None:
            self.received = signum
        try:
            os.write(self._write, b"!")
        except OSError:  # the pipe is full: a wake-up is already pending
            pass

    def _close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


class NoGuard(Guard):
    """For code that runs outside the main thread, where Python cannot take signals: never fires."""

    def __init__(self) -> None:
        super().__init__()


_active: Guard | None = None


@contextmanager
def deferred() -> Iterator[Guard]:
    """Record SIGINT and SIGTERM instead of acting on them, for the body; yield the guard.

    Leaving the block restores the handlers that were there before. It does not raise:
    the body decides with `check()` where a signal takes effect (a build rolls back
    first), and a caller that must not lose a late signal checks once more at its end.
    """
    global _active
    if _active is not None:
        yield _active
        return
    guard: Guard
    if threading.current_thread() is not threading.main_thread():
        guard = NoGuard()
        try:
            yield guard
        finally:
            guard._close()
        return
    guard = Guard()
    old: dict[int, Any] = {}
    try:
        for s in SIGNALS:
            old[s] = signal.signal(s, guard._handler)
        _active = guard
        yield guard
    finally:
        _active = None
        for s, handler in old.items():
            signal.signal(s, handler)
        guard._close()


def block() -> None:
    """Hold SIGINT and SIGTERM pending from here on (they die with the process at exit).

    For the last instant of a command: after its final `check()`, a signal can no
    longer change what happened, so it must not start a rollback of a result that was
    already reported.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
