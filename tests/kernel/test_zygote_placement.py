"""A process forked from a zygote is placed as one started afresh (kernel/zygote.py).

The same argv is started both ways in a scratch namespace each, and what the kernel shows of
the two processes is compared: /proc/PID/{cmdline,environ,cwd,exe,comm,status,fd,ns},
the session and process group, and the resolv.conf mounted in its mount namespace.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Iterator

import pytest

from netlab.kernel import netns as nsmod
from netlab.kernel import processes, zygote
from netlab.labs.context import poll_until
from netlab.readiness import ENV, ReadyPipe

pytestmark = pytest.mark.kernel

LAB = f"nl-zplace{os.getpid() % 10000}"
NETNS = {"fresh": f"{LAB}-pod-a.fresh", "forked": f"{LAB}-pod-a.forked"}  # a pod each: same port
ARGV = [sys.executable, "-m", "netlab.dataplane.apps", "tcp-echo", "--port", "9000"]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[dict[str, int]]:
    for name in NETNS.values():
        nsmod.create(name)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\nsearch a.svc.cluster.local\n")
    pids: dict[str, int] = {}
    try:
        for how, start in (("fresh", processes.spawn), ("forked", zygote.spawn)):
            ready = ReadyPipe()
            rec = start(f"app/{how}", NETNS[how], ARGV, str(tmp_path / f"{how}.log"), str(resolv),
                        env={"EXTRA": how.upper()}, ready=ready)
            ready.wait(30)
            pids[how] = rec.pid
            # The child closes its ready fd just after the line it wrote: compare fd
            # tables once it has.
            assert poll_until(lambda: "pipe:" not in _fds(rec.pid), 10)
        yield pids
    finally:
        processes.stop(list(pids.values()))
        for name in NETNS.values():
            nsmod.delete(name)


def _read(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def _environ(pid: int) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in _read(pid, "environ").decode().split("\0") if item)
    env = dict(pairs)
    env.pop(ENV, None)  # the ready pipe's fd number: whichever fd it got
    return env


def _stat(pid: int) -> list[str]:
    return _read(pid, "stat").decode().rsplit(")", 1)[1].split()


def _fds(pid: int) -> list[str]:
    """Open fds as kinds, without the numbers that differ (socket inodes, the ready fd)."""
    kinds = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        kinds.append(re.sub(r"/[^/]+\.log$", "/LOG", re.sub(r"\[\d+\]", "", target)))
    return sorted(kinds)


def _status(pid: int, *keys: str) -> dict[str, str]:
    lines = _read(pid, "status").decode().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines) if k in keys}


def test_the_kernel_shows_a_forked_process_as_one_started_afresh(pair: dict[str, int]) -> None:
    fresh, forked = pair["fresh"], pair["forked"]
    assert _read(forked, "cmdline") == _read(fresh, "cmdline") == b"".join(a.encode() + b"\0" for a in ARGV)
    env = {how: _environ(pid) for how, pid in pair.items()}
    assert env["forked"].pop("EXTRA") == "FORKED" and env["fresh"].pop("EXTRA") == "FRESH"
    assert env["forked"] == env["fresh"]
    for link in ("cwd", "exe"):
        assert os.readlink(f"/proc/{forked}/{link}") == os.readlink(f"/proc/{fresh}/{link}")
    assert _read(forked, "comm") == _read(fresh, "comm")
    keys = ("Uid", "Gid", "Groups", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp")
    assert _status(forked, *keys) == _status(fresh, *keys)
    for pid in (fresh, forked):
        state = _stat(pid)
        assert int(state[2]) == int(state[3]) == pid  # its own process group and session
    assert _fds(forked) == _fds(fresh)
    # The pod's network namespace; a mount namespace of its own, with the pod's resolv.conf.
    for how, pid in pair.items():
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == nsmod.inode(NETNS[how])
    mnt = {os.stat(f"/proc/{pid}/ns/mnt").st_ino for pid in (fresh, forked, os.getpid())}
    assert len(mnt) == 3
    for pid in (fresh, forked):
        assert _read(pid, "root/etc/resolv.conf").startswith(b"nameserver 10.96.0.10\n")
