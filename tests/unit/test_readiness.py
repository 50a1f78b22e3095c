"""The ready pipe: a process says ready on it; its starter fails fast, with the log, if it exits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from netlab import readiness
from netlab.errors import KernelError
from netlab.kernel.apply import wait_signalled
from netlab.kernel.ownership import ProcessRecord
from netlab.readiness import NotReady, ReadyPipe
from tests.conftest import stop_process

# Says ready, then blocks on stdin until the test lets it go (no sleeps).
SIGNALS = ("import sys; from netlab import readiness; "
           "print('announced', readiness.announce(), flush=True); sys.stdin.read()")
EXITS = "import sys; print('cannot bind: address in use', flush=True); sys.exit(3)"
SILENT = "import sys; sys.stdin.read()"


def start(code: str, pipe: ReadyPipe | None, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(pipe.env() if pipe else {})},
            pass_fds=pipe.pass_fds() if pipe else ())
    if pipe:
        pipe.started()
    return proc


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        stop_process(p)


def record(proc: subprocess.Popen[bytes], log: Path) -> ProcessRecord:
    return ProcessRecord(name="app/default/x-0/x", pid=proc.pid, starttime=0, netns="nl-t-pod", log=str(log))


def test_a_child_that_signals_is_ready(tmp_path: Path, procs: list) -> None:
    pipe = ReadyPipe()
    proc = start(SIGNALS, pipe, tmp_path / "x.log")
    procs.append(proc)
    wait_signalled(pipe, record(proc, tmp_path / "x.log"), timeout=30)
    assert proc.poll() is None  # ready and still serving


def test_a_child_that_exits_first_fails_at_once_naming_its_log(tmp_path: Path, procs: list) -> None:
    pipe = ReadyPipe()
    log = tmp_path / "x.log"
    proc = start(EXITS, pipe, log)
    procs.append(proc)
    began = time.monotonic()
    with pytest.raises(KernelError) as e:
        wait_signalled(pipe, record(proc, log), timeout=60)
    assert time.monotonic() - began < 30  # EOF, not the deadline
    msg = str(e.value)
    assert "app/default/x-0/x" in msg and "exited" in msg and str(log) in msg
    assert "cannot bind: address in use" in msg  # the log's tail


def test_a_silent_child_times_out(tmp_path: Path, procs: list) -> None:
    pipe = ReadyPipe()
    proc = start(SILENT, pipe, tmp_path / "x.log")
    procs.append(proc)
    with pytest.raises(NotReady) as e:
        pipe.wait(0.2)
    assert not e.value.exited
    assert proc.poll() is None


def test_without_a_pipe_announce_is_a_no_op(tmp_path: Path, procs: list) -> None:
    env: dict[str, str] = {}
    assert readiness.announce(env) is False
    proc = start(SIGNALS, None, tmp_path / "x.log")
    procs.append(proc)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert (tmp_path / "x.log").read_text() == "announced False\n"


def test_announce_is_once_and_not_inherited() -> None:
    r, w = os.pipe()
    env = {readiness.ENV: str(w)}  # what a child finds in its environment
    assert readiness.announce(env) is True
    assert readiness.ENV not in env  # a grandchild cannot write on it again
    assert os.read(r, 64) == readiness.LINE and os.read(r, 64) == b""  # written once, then closed
    os.close(r)


def test_a_built_in_app_says_ready_on_the_pipe(tmp_path: Path, procs: list) -> None:
    """The lifecycle every netlab process uses writes the pipe after it listens."""
    pipe = ReadyPipe()
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "netlab.dataplane.apps", "tcp-echo",
                                 "--port", "0", "--listen", "127.0.0.1"],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **pipe.env()}, pass_fds=pipe.pass_fds())
    procs.append(proc)
    pipe.wait(30)
    assert '"ready": true' in log.read_text()  # the ready line came first
