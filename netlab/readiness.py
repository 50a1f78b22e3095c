"""The ready pipe: how a process netlab starts tells its starter "I am serving now".

Why a pipe instead of polling `/proc/net/tcp` from outside: only the process knows
when *all* of its work is ready (every pod listener of a ztunnel, every node's DNS
socket, the steal agent's rules), and a pipe reports an early exit for free: when the
process dies, its end closes and the starter reads EOF at once instead of waiting
out a timeout.

The protocol, both halves of it here so neither side can drift:
- the starter makes a pipe and passes the write end to the child (inherited fd, its
  number in the `NETLAB_READY_FD` environment variable), then closes its own copy;
- the child writes exactly one line, `ready\\n`, once it serves, and closes the fd;
- the starter reads until that line (ready), EOF (the process exited or closed the
  pipe without a word) or its deadline.

A process started without the variable (a test, a user at a shell) skips the signal.
Commands netlab did not write (a user's `command:`, socat, Prometheus) cannot signal;
their starter keeps checking for a listener instead.
"""

from __future__ import annotations

import os
import select
import time
from typing import Callable, Mapping, MutableMapping

ENV = "NETLAB_READY_FD"
LINE = b"ready\n"


class NotReady(Exception):
    """The process did not say it was ready; `exited` tells an early exit from a timeout."""

    def __init__(self, message: str, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


# -- the process' half -------------------------------------------------------------------


def announce(environ: MutableMapping[str, str] | None = None) -> bool:
    """Say ready on the pipe named in the environment, once; False when there is none.

    The variable is removed so that children this process starts later do not write
    on (or hold open) a pipe that was never theirs.
    """
    env = os.environ if environ is None else environ
    raw = env.pop(ENV, None)
    if raw is None:
        return False
    fd = int(raw)
    try:
        os.write(fd, LINE)
    except BrokenPipeError:
        pass  # the starter gave up waiting; serving on is still right
    finally:
        os.close(fd)
    return True


# -- the starter's half ------------------------------------------------------------------


class ReadyPipe:
    """The starter's end of one process' ready pipe.

    Use: `pipe = ReadyPipe()`; start the child with `env={**pipe.env()}` and
    `pass_fds=pipe.pass_fds()`; call `pipe.started()` right after (closes the write
    end here, so EOF means the child's end is gone); then `pipe.wait(timeout)`.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_CLOEXEC)
        self._buf = b""

    def env(self) -> Mapping[str, str]:
        return {ENV: str(self._write)}

    def pass_fds(self) -> tuple[int, ...]:
        return (self._write,)

    def started(self) -> None:
        if self._write >= 0:
            os.close(self._write)
            self._write = -1

    def close(self) -> None:
        self.started()
        if self._read >= 0:
            os.close(self._read)
            self._read = -1

    def wait(self, timeout: float, wake_fd: int | None = None,
             on_wake: Callable[[], None] | None = None) -> None:
        """Return once the process says ready; raise NotReady on EOF or at the deadline.

        `wake_fd` (a self-pipe that a signal handler writes to) ends the wait early:
        `on_wake()` runs, and raises to stop waiting (an interrupt) or returns to go on.
        """
        self.started()
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self._read, select.POLLIN)
        if wake_fd is not None:
            poller.register(wake_fd, select.POLLIN)
        try:
            while LINE not in self._buf:
                left = deadline - time.monotonic()
                events = poller.poll(left * 1000) if left > 0 else []
                if not events:
                    raise NotReady(f"not ready after {timeout:g}s", exited=False)
                if any(fd == wake_fd for fd, _ in events):
                    if on_wake is not None:
                        on_wake()
                    _drain(wake_fd)  # type: ignore[arg-type]
                    if not any(fd == self._read for fd, _ in events):
                        continue
                chunk = os.read(self._read, 64)
                if not chunk:
                    raise NotReady("exited (or closed its ready pipe) before it was ready",
                                   exited=True)
                self._buf += chunk
        finally:
            self.close()

    def __enter__(self) -> "ReadyPipe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 64):
            pass
    except BlockingIOError:
        pass
