"""Names of everything a lab owns. One place, so teardown and status agree with apply.

Every network namespace is `nl-<lab>-...`: that prefix plus the state directory
`/run/netlab/<lab>/` is the ownership mark. Interfaces are created only inside lab
namespaces (never in the host's), so they need no global uniqueness and die with
their namespace; their names stay within the kernel's 15 characters.
"""

from __future__ import annotations

import re

PREFIX = "nl-"
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
STATE_ROOT = "/run/netlab"

POD_IFNAME = "eth0"  # what an app in a pod sees, as in Kubernetes
NODE_IFNAME = "eth0"  # a node's link to the fabric
FABRIC_BRIDGE = "br0"
# Calico's trick: every node-side pod veth carries this MAC and pods reach the node
# through a static neighbour for a link-local gateway, so no per-pod proxy_arp sysctl.
GATEWAY_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY_IP = "169.254.1.1"


def lab_prefix(lab: str) -> str:
    return f"{PREFIX}{lab}-"


def fabric_netns(lab: str) -> str:
    return f"{PREFIX}{lab}-fabric"


def node_netns(lab: str, node: str) -> str:
    return f"{PREFIX}{lab}-node-{node}"


POD_SEPARATOR = "."
"""Between namespace and pod in a pod's netns name. A Kubernetes namespace name is a DNS
label, which cannot hold a '.', so `fz-a` + `b` and `fz` + `a-b` (both `fz-a-b` with a
'-') get different names: the mapping is injective. Netns names are files under
/run/netns, limited to 255 bytes, not to an interface name's 15 characters; the longest
(20-character lab, 63-character namespace and pod name) is under 170."""


def pod_netns(lab: str, namespace: str, pod: str) -> str:
    return f"{PREFIX}{lab}-pod-{namespace}{POD_SEPARATOR}{pod}"


def pod_host_veth(index: int) -> str:
    return f"nlp{index}"  # node side of pod #index; unique within the node netns


def fabric_port(index: int) -> str:
    return f"nln{index}"  # fabric side of node #index


def state_dir(lab: str) -> str:
    return f"{STATE_ROOT}/{lab}"


def valid_lab_name(name: str) -> bool:
    return bool(LAB_NAME_RE.match(name))
