"""Starting processes inside lab namespaces, and stopping them.

A process is placed the way `ip netns exec` places it: setns() into the network
namespace, a private mount namespace, and the pod's own resolv.conf bind-mounted over
/etc/resolv.conf, so real clients (curl, Python) resolve cluster names. Nothing is
written under the host's /etc.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Sequence

from netlab.kernel import netns as nsmod
from netlab.kernel.ownership import ProcessRecord, pid_alive, starttime
from netlab.plan import naming
from netlab.plan.state import ReadyCheck
from netlab.readiness import ReadyPipe

SPEC_FILE = "supervise.json"


def _enter(netns_name: str, resolv_conf: str | None, uid: int, gid: int) -> None:
    """Runs in the child between fork and exec (single-threaded there)."""
    fd = os.open(nsmod.path(netns_name), os.O_RDONLY)
    nsmod.setns(fd, nsmod.CLONE_NEWNET)
    os.close(fd)
    nsmod.unshare(nsmod.CLONE_NEWNS)
    nsmod.mount("none", "/", None, nsmod.MS_REC | nsmod.MS_SLAVE)
    # Remount /sys so /sys/class/net shows this namespace's links, as ip netns exec does.
    try:
        nsmod.umount("/sys")
        nsmod.mount("sysfs", "/sys", "sysfs", 0)
    except OSError:
        pass
    if resolv_conf:
        nsmod.mount(resolv_conf, "/etc/resolv.conf", None, nsmod.MS_BIND)
    if gid:
        os.setgroups([gid])
        os.setgid(gid)
    if uid:
        os.setuid(uid)


def spawn(name: str, netns_name: str, argv: Sequence[str], log_path: str,
          resolv_conf_path: str | None = None, env: dict[str, str] | None = None,
          uid: int = 0, gid: int = 0, ready: ReadyPipe | None = None) -> ProcessRecord:
    """Start a daemon owned by the lab: own session, output to its log file.

    With `ready`, the process inherits the write end of that ready pipe (netlab's own
    processes say "ready" on it); the caller then waits with `ready.wait()`.
    """
    proc = start(netns_name, argv, log_path, resolv_conf_path, env, uid, gid, ready)
    return record(name, netns_name, proc.pid, log_path)


def start(netns_name: str, argv: Sequence[str], log_path: str,
          resolv_conf_path: str | None = None, env: dict[str, str] | None = None,
          uid: int = 0, gid: int = 0, ready: ReadyPipe | None = None,
          pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """`spawn`, returning the Popen: for a parent that stays to reap it (the supervisor).

    `pass_fds`: more fds the child inherits (the zygote's control socket, kernel/zygote.py)."""
    log: IO[bytes] = open(log_path, "ab", buffering=0)
    try:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
            env={**os.environ, **(env or {}), **(ready.env() if ready else {})},
            pass_fds=(ready.pass_fds() if ready else ()) + tuple(pass_fds),
            preexec_fn=lambda: _enter(netns_name, resolv_conf_path, uid, gid))
    finally:
        log.close()
        if ready is not None:
            ready.started()


def record(name: str, netns_name: str, pid: int, log_path: str) -> ProcessRecord:
    return ProcessRecord(name=name, pid=pid, starttime=starttime(pid), netns=netns_name, log=log_path)


@dataclass(frozen=True)
class RestartSpec:
    """How to start one process again, exactly as `up` started it."""

    name: str
    netns: str
    argv: tuple[str, ...]
    log: str
    resolv_conf: str | None = None  # path of the file bind-mounted over /etc/resolv.conf
    env: dict[str, str] = field(default_factory=dict)
    uid: int = 0
    gid: int = 0
    signals_ready: bool = False
    ready: tuple[ReadyCheck, ...] = ()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RestartSpec":
        return cls(**{**d, "argv": tuple(d["argv"]),
                      "ready": tuple(ReadyCheck(**c) for c in d.get("ready", ()))})


def write_specs(lab: str, specs: list[RestartSpec]) -> None:
    """What the lab's supervisor reads to start a process again (kernel/supervisor.py)."""
    path = os.path.join(naming.state_dir(lab), SPEC_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump([asdict(s) for s in specs], f, indent=1)
    os.replace(path + ".tmp", path)


def read_specs(lab: str) -> list[RestartSpec]:
    with open(os.path.join(naming.state_dir(lab), SPEC_FILE)) as f:
        return [RestartSpec.from_json(d) for d in json.load(f)]


def run_in(netns_name: str, argv: Sequence[str], resolv_conf_path: str | None = None,
           **kwargs: object) -> subprocess.CompletedProcess:
    """Run a command to completion inside a namespace (used by `netlab exec` and tests)."""
    return subprocess.run(list(argv), preexec_fn=lambda: _enter(netns_name, resolv_conf_path, 0, 0),
                          **kwargs)  # type: ignore[arg-type]


def is_ours(rec: ProcessRecord) -> bool:
    try:
        return pid_alive(rec.pid) and starttime(rec.pid) == rec.starttime
    except (FileNotFoundError, ValueError, IndexError):
        return False


def stop(pids: list[int], grace: float = 2.0) -> None:
    """SIGTERM each process group, then SIGKILL what is still alive after `grace` seconds."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    wait_exited(pids, grace)
    for pid in pids:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)
    # Reap our own children so they do not linger as zombies holding a pid.
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def wait_exited(pids: list[int], timeout: float) -> None:
    """Return once every pid has exited, or at the deadline.

    Each process' pidfd (Linux 5.3) becomes readable when it exits, child or not, so
    the wait ends the moment the last one is gone, with no polling of /proc."""
    poller = select.poll()
    fds: dict[int, int] = {}
    try:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue  # already gone
            fds[fd] = pid
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while fds:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                os.close(fd)
                del fds[fd]
    finally:
        for fd in fds:
            os.close(fd)


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
    except ProcessLookupError:
        pass
