"""The lab's kubelet stand-in: restart every process the lab runs when it dies, with back-off.

In a cluster, ztunnel is a DaemonSet pod and istiod, CoreDNS and the apps are
Deployment pods: when one exits, the kubelet on its node starts it again, with
restartPolicy Always. This process does that for a lab. `up` starts it as its last
step (`python -m netlab.kernel.supervisor LAB`, in the lab's fabric netns, recorded
in the lab's state like any process); teardown stops it first, so it never restarts
what teardown is stopping.

What it reads: `supervise.json` in the lab's state directory, written by `up`: how to
start each process again (argv, netns, resolv.conf, env, uid/gid, how it says ready),
and the pids `up` started. What it writes: `supervisor.json` (ownership.py), the only
file it writes: each process' current pid, restarts, state and last exit. It never
edits the lab record, so `up`, the labs and the supervisor never race on one file.

How it notices a death: a pidfd per process (Linux 5.3), polled with the ready pipes
of processes that are starting and a self-pipe for SIGTERM; no polling of /proc.

Back-off follows the kubelet (pkg/kubelet/kuberuntime/kuberuntime_manager.go
`doBackOff`, and "Container restart policy" in the Kubernetes pod-lifecycle docs): the
first exit is restarted at once; each further exit waits 10 s, doubling up to 5 min;
a process that ran 10 minutes without exiting starts again from no back-off. A
restarted process that does not say ready within READY_TIMEOUT is killed, and that
counts as an exit (a failed startup probe).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

from netlab.kernel import processes
from netlab.kernel.apply import listening
from netlab.kernel.interrupts import deferred
from netlab.kernel.ownership import LabRecord, Supervised, pid_alive, write_supervision
from netlab.kernel.processes import RestartSpec, read_specs
from netlab.readiness import LINE, ReadyPipe, announce

INITIAL_BACKOFF = 10.0
MAX_BACKOFF = 300.0
BACKOFF_RESET = 600.0  # the kubelet forgets a container's back-off after 2 x MAX_BACKOFF
READY_TIMEOUT = 20.0
LISTEN_POLL = 0.1  # while a foreign command starts: how often its listener is looked for


def next_delay(backoff: float, ran_for: float) -> tuple[float, float]:
    """(wait before this restart, back-off to use after it) for a process that ran `ran_for` s.

    Pure, so the kubelet's schedule is tested without processes: 0, 10, 20, 40, ... 300.
    """
    if ran_for >= BACKOFF_RESET:
        backoff = 0.0
    after = INITIAL_BACKOFF if backoff == 0 else min(backoff * 2, MAX_BACKOFF)
    return backoff, after


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "exited (status unknown: not started by the supervisor)"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Child:
    """One supervised process: its spec, the live process, and its back-off."""

    def __init__(self, spec: RestartSpec, pid: int, starttime: int) -> None:
        self.spec = spec
        self.pid, self.starttime = pid, starttime
        self.popen: subprocess.Popen[bytes] | None = None  # None for what `up` started
        self.pidfd: int | None = None
        self.pipe: ReadyPipe | None = None
        self.ready_buf = b""
        self.state = "running"
        self.since = self.started = time.time()
        self.restarts = 0
        self.backoff = 0.0
        self.last_exit: str | None = None
        self.next_start: float | None = None

    def view(self) -> Supervised:
        return Supervised(self.pid, self.starttime, self.restarts, self.state, self.since,
                          self.last_exit, self.next_start)


class Supervisor:
    def __init__(self, lab: str, specs: list[RestartSpec], pids: dict[str, tuple[int, int]]) -> None:
        self.lab = lab
        self.children: list[Child] = []
        for spec in specs:
            pid, start = pids.get(spec.name, (0, 0))
            self.children.append(Child(spec, pid, start))

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        with deferred() as guard:
            for child in self.children:
                self._watch(child)
            self._save()
            announce()
            while guard.received is None:
                self._step(guard.fd)
        for child in self.children:
            self._close_fds(child)

    def _step(self, wake_fd: int) -> None:
        now = time.time()
        poller = select.poll()
        poller.register(wake_fd, select.POLLIN)
        fds: dict[int, tuple[Child, str]] = {}
        deadline: float | None = None
        for child in self.children:
            if child.pidfd is not None:
                fds[child.pidfd] = (child, "exit")
            if child.pipe is not None:
                fds[child.pipe._read] = (child, "ready")
            if child.state == "down" and child.next_start is not None:
                deadline = _earliest(deadline, child.next_start)
            if child.state == "starting":
                deadline = _earliest(deadline, child.since + READY_TIMEOUT)
                if child.spec.ready and child.pipe is None:
                    deadline = _earliest(deadline, now + LISTEN_POLL)
        for fd in fds:
            poller.register(fd, select.POLLIN)
        timeout = None if deadline is None else max(0.0, deadline - now) * 1000
        for fd, _ in poller.poll(timeout):
            if fd in fds:
                child, what = fds[fd]
                if what == "exit":
                    self._exited(child)
                elif child.pipe is not None:
                    self._read_ready(child)
        self._due()

    def _due(self) -> None:
        now = time.time()
        changed = False
        for child in self.children:
            if child.state == "down" and child.next_start is not None and now >= child.next_start:
                self._restart(child)
                changed = True
            elif child.state == "starting":
                if child.spec.ready and child.pipe is None and all(listening(c) for c in child.spec.ready):
                    self._set(child, "running")
                    changed = True
                elif now - child.since >= READY_TIMEOUT:
                    print(f"{child.spec.name} (pid {child.pid}) not ready after {READY_TIMEOUT:g}s: "
                          "killing it", flush=True)
                    try:
                        os.kill(child.pid, signal.SIGKILL)  # its pidfd reports the exit
                    except ProcessLookupError:
                        pass
        if changed:
            self._save()

    # -- events -----------------------------------------------------------------------
    def _watch(self, child: Child) -> None:
        """Open a pidfd for the child's pid; a pid already gone counts as an exit now."""
        try:
            alive = pid_alive(child.pid) and processes.starttime(child.pid) == child.starttime
            child.pidfd = os.pidfd_open(child.pid) if alive else None
        except (OSError, ValueError, IndexError):  # gone between the two looks
            child.pidfd = None
        if child.pidfd is None:
            self._exited(child)

    def _exited(self, child: Child) -> None:
        returncode = None
        if child.popen is not None:
            try:
                returncode = child.popen.wait(timeout=1)
            except subprocess.TimeoutExpired:
                return  # a pidfd fires only on exit; not yet reapable: look again next turn
        self._close_fds(child)
        ran_for = time.time() - child.started
        delay, child.backoff = next_delay(child.backoff, ran_for)
        child.last_exit = describe_exit(returncode)
        child.next_start = time.time() + delay
        self._set(child, "down")
        print(f"{child.spec.name} (pid {child.pid}) {child.last_exit} after {ran_for:.1f}s; "
              f"restarting in {delay:g}s", flush=True)
        self._save()

    def _restart(self, child: Child) -> None:
        spec = child.spec
        child.pipe = ReadyPipe() if spec.signals_ready else None
        child.ready_buf = b""
        try:
            child.popen = processes.start(spec.netns, spec.argv, spec.log, spec.resolv_conf, spec.env,
                                          spec.uid, spec.gid, child.pipe)
        except OSError as e:  # e.g. the program is gone: try again after the back-off
            print(f"{spec.name}: could not start: {e}", flush=True)
            if child.pipe is not None:
                child.pipe.close()
                child.pipe = None
            child.popen = None
            delay, child.backoff = next_delay(child.backoff, 0.0)
            child.next_start = time.time() + max(delay, 1.0)
            return
        child.pid = child.popen.pid
        try:
            child.starttime = processes.starttime(child.pid)
        except (OSError, ValueError, IndexError):
            child.starttime = 0
        child.restarts += 1
        child.started = time.time()
        child.next_start = None
        child.pidfd = os.pidfd_open(child.pid)
        self._set(child, "starting" if (spec.signals_ready or spec.ready) else "running")
        print(f"{spec.name} restarted as pid {child.pid} (restart {child.restarts})", flush=True)

    def _read_ready(self, child: Child) -> None:
        assert child.pipe is not None
        try:
            chunk = os.read(child.pipe._read, 64)
        except OSError:
            chunk = b""
        if chunk:
            child.ready_buf += chunk
            if LINE in child.ready_buf:
                child.pipe.close()
                child.pipe = None
                self._set(child, "running")
                self._save()
            return
        # EOF without "ready": the process is exiting (its pidfd says so) or closed the pipe.
        child.pipe.close()
        child.pipe = None

    # -- helpers ----------------------------------------------------------------------
    @staticmethod
    def _set(child: Child, state: str) -> None:
        child.state = state
        child.since = time.time()

    @staticmethod
    def _close_fds(child: Child) -> None:
        if child.pidfd is not None:
            os.close(child.pidfd)
            child.pidfd = None
        if child.pipe is not None:
            child.pipe.close()
            child.pipe = None

    def _save(self) -> None:
        write_supervision(self.lab, {c.spec.name: c.view() for c in self.children})


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m netlab.kernel.supervisor LAB")
    lab = args[0]
    record = LabRecord.load(lab)
    if record is None:
        sys.exit(f"no lab {lab!r}")
    specs = read_specs(lab)
    pids = {p.name: (p.pid, p.starttime) for p in record.processes}
    print(f"supervising {len(specs)} processes of lab {lab}", flush=True)
    Supervisor(lab, specs, pids).run()


if __name__ == "__main__":
    main()
