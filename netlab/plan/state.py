"""Desired kernel state: plain data the planner produces and `netlab.kernel` applies.

Every object names the network namespace it lives in by its full netns name
(`nl-<lab>-...`), so the applier never has to guess and a test can compare a plan
with what `ip -n <netns> ...` shows. Pods and Services are the snapshot classes
(`netlab.snapshot`) the proxies load too: one shape from plan to dataplane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from netlab.snapshot import Service, Workload

NetnsRole = Literal["fabric", "node", "pod"]


@dataclass(frozen=True)
class NetnsSpec:
    name: str
    role: NetnsRole
    node: str | None = None  # the node a pod runs on, or the node itself
    pod: str | None = None  # "ns/name" for pods


@dataclass(frozen=True)
class BridgeSpec:
    netns: str
    name: str


@dataclass(frozen=True)
class VethSpec:
    """A veth pair created directly between two lab namespaces (never the host's)."""

    netns: str
    name: str
    peer_netns: str
    peer_name: str
    mac: str | None = None
    peer_mac: str | None = None
    master: str | None = None  # bridge in `netns` to enslave `name` to


@dataclass(frozen=True)
class AddressSpec:
    netns: str
    ifname: str
    cidr: str  # "10.244.1.2/32"


@dataclass(frozen=True)
class RouteSpec:
    netns: str
    dst: str  # "default" or a CIDR
    dev: str | None = None
    via: str | None = None
    onlink: bool = False
    table: int | None = None
    type: str = "unicast"  # "local" for TPROXY-style table-100 routes


@dataclass(frozen=True)
class NeighSpec:
    netns: str
    ifname: str
    ip: str
    mac: str


@dataclass(frozen=True)
class IpRuleSpec:
    netns: str
    fwmark: int
    mask: int
    table: int
    priority: int


@dataclass(frozen=True)
class SysctlSpec:
    netns: str
    key: str  # "net.ipv4.ip_forward"
    value: str


@dataclass(frozen=True)
class RulesetSpec:
    """iptables-restore input for one namespace, applied atomically (as istio-cni does)."""

    netns: str
    text: str
    owner: str  # who wants it: "kube-proxy", "istio-ambient", "istio-hostprobe", ...


@dataclass(frozen=True)
class IpsetSpec:
    netns: str
    name: str
    type: str  # "hash:ip"
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScrapeTarget:
    """A metrics endpoint a process serves, and the pod it stands for in Prometheus' eyes.

    The Prometheus addon (netlab/plan/addons/prometheus.py) scrapes every process that
    has one, with the relabelling of Istio's sample config: `labels` are the pod's labels
    (so ztunnel's `app: ztunnel` becomes `app="ztunnel"` on its series, as in a cluster),
    `namespace` and `pod` become the `namespace` and `pod` labels.
    """

    address: str  # "ip:port" reachable from the lab's fabric netns
    namespace: str
    pod: str
    node: str
    labels: tuple[tuple[str, str], ...] = ()
    path: str = "/metrics"


@dataclass(frozen=True)
class ReadyCheck:
    """How to know a foreign process is serving: a TCP or UDP listener in a namespace.

    Only for commands that cannot say so themselves (a user's `command:`); netlab's own
    processes set `ProcessSpec.signals_ready` and answer on the ready pipe instead.
    """

    netns: str
    port: int
    proto: Literal["tcp", "udp"] = "tcp"
    address: str = "0.0.0.0"


@dataclass(frozen=True)
class ProcessSpec:
    """A long-lived process the lab owns. `argv` runs inside `netns` with `resolv_conf`."""

    name: str  # unique within the lab: "dns", "ztunnel/node-1", "app/default/ratings-0"
    netns: str
    argv: tuple[str, ...]
    ready: tuple[ReadyCheck, ...] = ()
    signals_ready: bool = False  # netlab's own process: it says "ready" on the ready pipe
    resolv_conf: str | None = None  # file content bind-mounted over /etc/resolv.conf
    config: str | None = None  # JSON handed to the process through its state file
    uid: int = 0
    gid: int = 0
    env: tuple[tuple[str, str], ...] = ()  # added to the environment (a container's `env:`)
    scrape: ScrapeTarget | None = None  # its metrics endpoint, for the lab's Prometheus


@dataclass(frozen=True)
class NodeInfo:
    name: str
    netns: str
    ip: str  # on the fabric
    pod_cidr: str


@dataclass
class DesiredState:
    lab: str
    netns: list[NetnsSpec] = field(default_factory=list)
    bridges: list[BridgeSpec] = field(default_factory=list)
    veths: list[VethSpec] = field(default_factory=list)
    addresses: list[AddressSpec] = field(default_factory=list)
    routes: list[RouteSpec] = field(default_factory=list)
    neighbours: list[NeighSpec] = field(default_factory=list)
    ip_rules: list[IpRuleSpec] = field(default_factory=list)
    sysctls: list[SysctlSpec] = field(default_factory=list)
    ipsets: list[IpsetSpec] = field(default_factory=list)
    rulesets: list[RulesetSpec] = field(default_factory=list)
    processes: list[ProcessSpec] = field(default_factory=list)
    nodes: list[NodeInfo] = field(default_factory=list)
    pods: list[Workload] = field(default_factory=list)  # `mode` set once the modes enrolled them
    services: list[Service] = field(default_factory=list)
    dns_ip: str = ""
