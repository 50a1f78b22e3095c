"""Named network namespaces, created and entered in-process.

`ip netns add` and pyroute2's `IPRoute(netns=...)` each fork a helper per namespace
(about 13 ms each, mesh-facts §11). Here the calling *thread* unshares or setns()es,
so a netlink socket or a listening socket opened inside stays bound to that namespace
after the thread returns. Namespaces are pinned the way iproute2 pins them (a bind
mount under /run/netns), so `ip netns exec` and `ip -n` work on them too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from contextlib import contextmanager
from typing import Iterator

NETNS_RUN_DIR = "/run/netns"

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_lock = threading.Lock()
_run_dir_ready = False  # set once /run/netns is known to be a shared mount point


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def loopback_up() -> None:
    """Bring `lo` up in the calling thread's network namespace (a fresh one has it down)."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1  # linux/sockios.h, linux/if.h
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, ifreq))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    _check(_libc.mount(source.encode(), target.encode(),
                       fstype.encode() if fstype else None, flags, None),
           f"mount {source} on {target}")


def umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def _ensure_run_dir() -> None:
    """Make /run/netns a shared mount point, exactly as iproute2 does, once per process.

    Checked once: mountinfo grows by one line per pinned namespace, so re-reading it
    for every create would make building N namespaces O(N^2).
    """
    global _run_dir_ready
    if _run_dir_ready:
        return
    _run_dir_ready = True
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    with open("/proc/self/mountinfo") as f:
        if any(line.split()[4] == NETNS_RUN_DIR for line in f):
            return
    mount(NETNS_RUN_DIR, NETNS_RUN_DIR, None, MS_BIND | MS_REC)
    mount("", NETNS_RUN_DIR, None, MS_SHARED | MS_REC)


def create(name: str) -> None:
    """Create and pin a new network namespace without forking."""
    with _lock:
        _ensure_run_dir()
    target = path(name)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        # unshare inside the try: a Ctrl-C right after it must still bring the thread home
        # (setns to the namespace we are already in is harmless).
        try:
            unshare(CLONE_NEWNET)
            mount("/proc/thread-self/ns/net", target, None, MS_BIND)
        finally:
            setns(home)
    except BaseException:
        os.unlink(target)
        raise
    finally:
        os.close(home)


def delete(name: str) -> bool:
    """Unpin a namespace. It disappears (with its links) when no process holds it."""
    target = path(name)
    if not os.path.exists(target):
        return False
    try:
        umount(target)
    except OSError:
        pass  # never mounted (a crash between create and mount): just unlink
    os.unlink(target)
    return True


def inode(name: str) -> int:
    return os.stat(path(name)).st_ino


@contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread inside the namespace; always come back.

    Sockets opened in the body stay in the namespace. Other threads are unaffected.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path(name), os.O_RDONLY)
    try:
        # setns inside the try: a signal arriving right after it must not strand the
        # thread in the lab's namespace (going home when we never left is harmless).
        try:
            setns(target)
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


class KeptOpen:
    """Namespaces held open for repeated entry by one long-lived process.

    ztunnel makes a socket inside a pod's netns for every proxied connection; opening
    /run/netns/<pod> and the thread's own namespace each time costs four syscalls per
    socket. The kept fds pin the namespaces, so only a process that ends with the lab
    (ztunnel) should use this; short-lived callers use `entered`.
    """

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._home = threading.local()

    @contextmanager
    def entered(self, name: str) -> Iterator[None]:
        home = getattr(self._home, "fd", None)
        if home is None:
            home = self._home.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = self._fds.get(name)
        if target is None:
            target = self._fds[name] = os.open(path(name), os.O_RDONLY)
        try:
            setns(target)
            yield
        finally:
            setns(home)


def pids_in(names: list[str]) -> dict[int, str]:
    """Processes whose network namespace is one of `names` (what `ip netns pids` does)."""
    wanted: dict[tuple[int, int], str] = {}
    for n in names:
        try:
            st = os.stat(path(n))
            wanted[(st.st_dev, st.st_ino)] = n
        except FileNotFoundError:
            continue
    found: dict[int, str] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        hit = wanted.get((st.st_dev, st.st_ino))
        if hit:
            found[int(entry)] = hit
    return found
