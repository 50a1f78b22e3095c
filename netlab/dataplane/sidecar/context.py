"""What every chain of one sidecar shares (`Env`) and what it knows about one downstream
connection (`Downstream`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from netlab.dataplane.envoy.accesslog import AccessLog
from netlab.dataplane.envoy.conn_pool import HttpPool
from netlab.dataplane.envoy.headers import mx_headers, node_id
from netlab.dataplane.envoy.stats import IstioStats, PeerInfo
from netlab.dataplane.http1 import Header
from netlab.dataplane.sidecar.upstream import Connector, Upstream
from netlab.snapshot import Workload
from netlab.xds import Cluster, RouteConfiguration, SidecarSnapshot

Direction = Literal["outbound", "inbound"]


@dataclass
class Env:
    snap: SidecarSnapshot
    connector: Connector
    stats: IstioStats
    access_log: AccessLog | None
    me: PeerInfo = field(init=False)
    node_id: str = field(init=False)
    http_pool: HttpPool[Upstream] = field(init=False)  # upstream HTTP connections, shared by all chains
    mx: list[Header] = field(init=False)  # our metadata-exchange headers (they never change)
    _clusters: dict[str, Cluster] = field(init=False, repr=False)
    _route_configs: dict[str, RouteConfiguration] = field(init=False, repr=False)
    _by_ip: dict[str, Workload] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Index the snapshot once: a lab's config never changes after `up`, and these
        look-ups run on every request."""
        w = self.snap.workload
        self.me = PeerInfo.of(w)
        self.node_id = node_id("sidecar", w.ip, w.name, w.namespace)
        self.http_pool = HttpPool()
        self.mx = mx_headers(self.node_id, self.me)
        self._clusters = {}
        for c in self.snap.clusters:
            self._clusters.setdefault(c.name, c)  # the first of a name, as snap.cluster()
        self._route_configs = {}
        for rc in self.snap.route_configs:
            self._route_configs.setdefault(rc.name, rc)
        self._by_ip = {}
        for wl in self.snap.workloads:
            self._by_ip.setdefault(wl.ip, wl)

    def cluster(self, name: str) -> Cluster | None:
        return self._clusters.get(name)

    def route_config(self, name: str) -> RouteConfiguration | None:
        return self._route_configs.get(name)

    def workload_by_ip(self, ip: str) -> Workload | None:
        return self._by_ip.get(ip)

    @property
    def local_san(self) -> str:
        return self.snap.identity


@dataclass
class Downstream:
    """One accepted connection, after the listener filters and (maybe) TLS."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    direction: Direction
    local: tuple[str, int]  # the original destination (%DOWNSTREAM_LOCAL_ADDRESS%)
    remote: tuple[str, int]  # the client (%DOWNSTREAM_REMOTE_ADDRESS%)
    tls: bool = False  # TLS terminated here (or by the HBONE listener)
    sni: str | None = None  # %REQUESTED_SERVER_NAME%
    alpn: str | None = None  # negotiated
    peer_san: str | None = None
    local_san: str | None = None
    peer_cert_der: bytes | None = None
    hbone: bool = False  # arrived through connect_terminate

    @property
    def local_text(self) -> str:
        return f"{self.local[0]}:{self.local[1]}"

    @property
    def remote_text(self) -> str:
        return f"{self.remote[0]}:{self.remote[1]}"
