"""The host facts behind the collectors, for `netlab doctor`: root, bcc, kernel headers,
tracefs, the iptables backend, the conntrack module.

Why beside the collectors' own probes: when a collector says "cannot run", the user
needs the fact underneath (headers missing, tracefs not mounted) and the command that
fixes it, in the same table.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


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
    build = f"/lib/modules/{os.uname().release}/build"
    ok = os.path.isdir(os.path.join(build, "include"))
    return HostCheck("kernel headers", ok, f"{build} -> {os.path.realpath(build)}" if ok
                     else f"{build}/include missing: install linux-headers")


def _tracefs() -> HostCheck:
    from netlab.observe.bpf.tracefs import TRACEFS, mounted

    ok = mounted(TRACEFS)
    return HostCheck("tracefs", ok, f"{TRACEFS} mounted" if ok
                     else f"{TRACEFS} not mounted: mount -t tracefs nodev {TRACEFS}")


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
