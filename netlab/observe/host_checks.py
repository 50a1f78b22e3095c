"""The host facts behind the collectors, for `netlab doctor`: root, bcc, kernel headers,
tracefs, the iptables backend, the conntrack module.

Why beside the collectors' own probes: when a collector says "cannot run", the user
needs the fact underneath (headers missing, tracefs not mounted) and the command that
fixes it, in the same table.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from netlab.observe.bpf.btf import BTF_PATH


@dataclass(frozen=True)
class HostCheck:
    name: str
    ok: bool
    detail: str  # what it uses when ok; why not, and the fix, when not


def host_checks() -> list[HostCheck]:
    return [_root(), _bcc(), _kernel_headers(), _tracefs(), _iptables_backend(), _conntrack()]


def _root() -> HostCheck:
    euid = os.geteuid()
    return HostCheck("root", euid == 0, "euid 0" if euid == 0 else f"euid {euid}: run with sudo")


def _bcc() -> HostCheck:
    try:
        import bcc
    except Exception as e:  # noqa: BLE001 - any import failure is the answer
        return HostCheck("bcc import", False,
                         f"{e}: install python3-bpfcc, venv with --system-site-packages")
    return HostCheck("bcc import", True, os.path.dirname(bcc.__file__))


def _kernel_headers() -> HostCheck:
    """Headers for bcc to compile trace.c with, and how much their version matters.

    Rated on what netlab takes from them: bcc needs *some* headers to compile, but every
    struct offset trace.c reads comes from the running kernel's BTF (bpf/offsets.py) and
    the drop-reason names from tracefs (bpf/tracefs.py). So headers of another kernel
    (Debian 6.1 on a 6.18 kernel) are fine when BTF is there, and the row says so.
    """
    release = os.uname().release
    build = f"/lib/modules/{release}/build"
    if not os.path.isdir(os.path.join(build, "include")):
        return HostCheck("kernel headers", False, f"{build}/include missing: install linux-headers-{release} "
                         "(or any linux-headers package and link it there; offsets come from BTF)")
    found = headers_release(build)
    where = f"{build} -> {os.path.realpath(build)}"
    if found == release:
        return HostCheck("kernel headers", True, f"{where}: headers {found}, same as the running kernel")
    what = f"headers {found or 'of unknown version'} for kernel {release}"
    if os.path.exists(BTF_PATH):
        return HostCheck("kernel headers", True,
                         f"{where}: {what}, a mismatch that is harmless here: bcc compiles with them, "
                         f"but struct offsets come from the running kernel's BTF ({BTF_PATH}) and "
                         "drop reasons from tracefs")
    return HostCheck("kernel headers", False,
                     f"{where}: {what}, and no {BTF_PATH} to take offsets from: "
                     f"install linux-headers-{release} or boot a kernel with CONFIG_DEBUG_INFO_BTF")


def headers_release(build: str) -> str | None:
    """The kernel release the headers at `build` describe (UTS_RELEASE), or None."""
    path = os.path.join(build, "include", "generated", "utsrelease.h")
    try:
        with open(path) as f:
            m = re.search(r'UTS_RELEASE\s+"([^"]+)"', f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def _tracefs() -> HostCheck:
    """Mounted or not is read from the mount table, which any user may read: tracefs is
    mode 0700, so a non-root user cannot look inside it and must not be told to mount it."""
    from netlab.observe.bpf.tracefs import TRACEFS, mounted

    if mounted(TRACEFS):
        return HostCheck("tracefs", True, f"{TRACEFS} mounted")
    if not mount_listed(TRACEFS, "tracefs"):
        fix = f"mount -t tracefs nodev {TRACEFS}"
        return HostCheck("tracefs", False, f"{TRACEFS} not mounted: {fix}" if os.geteuid() == 0
                         else f"{TRACEFS} not mounted: `sudo {fix}` (netlab trace mounts it itself when run as root)")
    return HostCheck("tracefs", False, f"{TRACEFS} is mounted, but only root may read it "
                     f"(euid {os.geteuid()}): run netlab with sudo")


def mount_listed(path: str, fstype: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """`path` is a mount point of type `fstype` in this process's mount table."""
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                if " - " not in line or len(fields) < 5:
                    continue
                after = line.split(" - ", 1)[1].split()
                if fields[4] == path and after and after[0] == fstype:
                    return True
    except OSError:
        return False
    return False


def _iptables_backend() -> HostCheck:
    try:
        ver = subprocess.run(["iptables", "--version"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return HostCheck("iptables backend", False, f"iptables not runnable: {e}")
    nft = "nf_tables" in ver
    return HostCheck("iptables backend", nft, ver if nft else f"{ver}: nftrace needs iptables-nft")


def _conntrack() -> HostCheck:
    ok = os.path.isdir("/sys/module/nf_conntrack")
    return HostCheck("conntrack module", ok, "nf_conntrack loaded" if ok
                     else "nf_conntrack not loaded: modprobe nf_conntrack")
