"""The raw netlink floor: the least work that builds N hosts, for `netlab bench topology`.

What a lab of N plain pods cannot beat: N network namespaces, each with `lo` up and one
veth to a hub namespace (its peer enslaved to a bridge there), one address per host,
made in this process with one netlink socket per namespace (unshare/setns, no fork per
object; the measurement mesh-facts §11 describes), then removed. No record, no rules,
no processes: a floor to compare `up` against, not a lab.

Everything it makes is removed before `build` returns or raises, even on Ctrl-C (the
namespaces are deleted in a `finally`), so the floor never leaves anything behind.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass

from pyroute2 import IPRoute

from netlab.kernel import netns as nsmod
from netlab.plan import naming

HUB_BRIDGE = "br0"
FLOOR_CIDR = ipaddress.IPv4Network("10.250.0.0/16")


@dataclass
class FloorTimes:
    hosts: int
    up: float  # namespaces, veths, bridge ports, addresses, links up
    down: float  # every namespace unpinned (the kernel frees links with them)


def floor_names(tag: str, hosts: int) -> tuple[str, list[str]]:
    """(hub, hosts) namespace names, under netlab's prefix so they read as netlab's."""
    base = f"{naming.PREFIX}{tag}-floor"
    return f"{base}-hub", [f"{base}-h{i}" for i in range(hosts)]


def build(tag: str, hosts: int) -> FloorTimes:
    """Build the floor for `hosts` hosts, time it, remove it, time that."""
    if hosts + 2 > FLOOR_CIDR.num_addresses:
        raise ValueError(f"the floor has addresses for at most {FLOOR_CIDR.num_addresses - 2} hosts")
    hub, names = floor_names(tag, hosts)
    made: list[str] = []
    sockets: list[IPRoute] = []
    up = 0.0
    started = time.perf_counter()
    try:
        nsmod.create(hub)
        made.append(hub)
        with nsmod.entered(hub):
            hub_ipr = IPRoute()
        sockets.append(hub_ipr)
        hub_ipr.link("add", ifname=HUB_BRIDGE, kind="bridge", state="up")
        bridge = hub_ipr.link("get", ifname=HUB_BRIDGE)[0]["index"]
        for i, name in enumerate(names):
            nsmod.create(name)
            made.append(name)
            with nsmod.entered(name):
                ipr = IPRoute()
            sockets.append(ipr)
            ipr.link("set", index=1, state="up")  # lo
            fd = os.open(nsmod.path(hub), os.O_RDONLY)
            try:
                ipr.link("add", ifname="eth0", kind="veth", state="up",
                         peer={"ifname": f"h{i}", "net_ns_fd": fd})
            finally:
                os.close(fd)
            eth0 = ipr.link("get", ifname="eth0")[0]["index"]
            ipr.addr("add", index=eth0, address=str(FLOOR_CIDR.network_address + 2 + i),
                     prefixlen=FLOOR_CIDR.prefixlen)
            port = hub_ipr.link("get", ifname=f"h{i}")[0]["index"]
            hub_ipr.link("set", index=port, master=bridge, state="up")
        up = time.perf_counter() - started
    finally:
        for s in sockets:
            s.close()
        t = time.perf_counter()
        for name in reversed(made):
            nsmod.delete(name)
        down = time.perf_counter() - t
    return FloorTimes(hosts, up, down)
