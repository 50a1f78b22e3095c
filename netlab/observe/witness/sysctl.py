"""A sysctl read back from /proc/sys inside a netns: what the kernel holds, not what was
written (a write can fail, or be undone when its writer exits)."""

from __future__ import annotations

from netlab.kernel import netns as nsmod


def read(netns: str, key: str) -> str:
    """`net.ipv4.conf.all.route_localnet` → its value in `netns`, as text."""
    with nsmod.entered(netns):
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()
