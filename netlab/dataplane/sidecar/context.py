"""What every chain of one sidecar shares (`Env`) and what it knows about one downstream
connection (`Downstream`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from netlab.dataplane.envoy.accesslog import AccessLog
from netlab.dataplane.envoy.headers import node_id
from netlab.dataplane.envoy.stats import IstioStats, PeerInfo
from netlab.dataplane.sidecar.upstream import Connector
from netlab.xds import SidecarSnapshot

Direction = Literal["outbound", "inbound"]


@dataclass
class Env:
    snap: SidecarSnapshot
    connector: Connector
    stats: IstioStats
    access_log: AccessLog | None
    me: PeerInfo = field(init=False)
    node_id: str = field(init=False)

    def __post_init__(self) -> None:
        w = self.snap.workload
        self.me = PeerInfo.of(w)
        self.node_id = node_id("sidecar", w.ip, w.name, w.namespace)

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
