"""`connect_originate`: the waypoint's second HBONE, to the chosen pod's 15008.

Istio's `connect_originate` cluster is ORIGINAL_DST with the port overridden to 15008,
h2 CONNECT with `:authority = %DOWNSTREAM_LOCAL_ADDRESS%` (the selected endpoint's
podIP:targetPort) and TLS with the waypoint's certificate, checking the endpoint's
identity (istio@1.24.0 `cluster_waypoint.go`; mesh-facts-2 §C2).

The tunnel is handed to the chains as an ordinary asyncio (reader, writer) pair: one end
of a socketpair, whose other end `hbone.relay` copies to the HBONE stream. The HTTP/1.1
client and the TCP relay then stay the same code as everywhere else (h11 via
`http1.py`), at the price of one local copy per byte. As a `Tunnel` it can sit in the
HTTP chain's upstream pool (`envoy.conn_pool`): one HBONE stream per pooled upstream
HTTP/1.1 connection, as Envoy's `inbound-vip` cluster opens one internal connection to
`connect_originate`, and so one CONNECT, per upstream connection of its pool.
"""

from __future__ import annotations

import asyncio
import random
import socket
from dataclasses import dataclass
from typing import Any

from netlab import mesh
from netlab.dataplane import hbone
from netlab.dataplane.proxy.relay import STREAM_LIMIT
from netlab.snapshot import Endpoint, ProxySnapshot, Workload

CONNECT_ORIGINATE = "connect_originate"


@dataclass(frozen=True)
class Picked:
    """One endpoint chosen by the waypoint's load balancer, and its workload."""

    endpoint: Endpoint
    workload: Workload

    @property
    def address(self) -> str:
        return f"{self.endpoint.ip}:{self.endpoint.port}"

    @property
    def upstream_host(self) -> str:
        """How an Envoy waypoint's access log names the upstream: the internal listener."""
        return f"envoy://{CONNECT_ORIGINATE}/{self.address}"


def pick(cfg: ProxySnapshot, fqdn: str, port: int) -> Picked | None:
    """L7 load balancing: one endpoint of Service `fqdn` port `port`, chosen per request.

    Istio's default is LEAST_REQUEST, which with idle endpoints is a random pick; netlab
    picks at random.
    """
    svc = cfg.service_by_fqdn(fqdn)
    sp = svc.port(port) if svc else None
    usable = [(e, cfg.workload_by_key(e.pod)) for e in (sp.endpoints if sp else ())]
    usable = [(e, w) for e, w in usable if w is not None]
    if not usable:
        return None
    e, w = random.choice(usable)
    assert w is not None
    return Picked(e, w)


def direct(cfg: ProxySnapshot, ip: str, port: int) -> Picked | None:
    """A pod-IP request goes to that pod after policy."""
    w = cfg.workload_by_ip(ip)
    return Picked(Endpoint(w.key, ip, port), w) if w is not None else None


@dataclass
class Tunnel:
    """One CONNECT to an endpoint as an upstream connection: closing the writer ends it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    relay: "asyncio.Task[None]"

    def close(self) -> None:
        self.writer.close()


async def open_tunnel(pool: hbone.HbonePool, src_identity: str, dst: Picked, trust_domain: str,
                      headers: dict[str, str]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                        "asyncio.Task[None]"]:
    """CONNECT to `dst`; raises hbone.HboneError (non-200) or the dial/TLS error.

    Returns (reader, writer, relay task): closing the writer ends the tunnel.
    """
    stream = await pool.connect((dst.endpoint.ip, mesh.HBONE_PORT), dst.address, src_identity,
                                dst.workload.identity(trust_domain), headers)
    mine, theirs = socket.socketpair()
    try:
        r, w = await asyncio.open_connection(sock=theirs, limit=STREAM_LIMIT)
        reader, writer = await asyncio.open_connection(sock=mine, limit=STREAM_LIMIT)
    except BaseException:
        mine.close()
        theirs.close()
        stream.reset()
        raise
    task: asyncio.Task[None] = asyncio.create_task(hbone.relay(stream, r, w))
    return reader, writer, task


def local_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of stream sockets in this process: (chain's end, relay's end)."""
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    return a, b


async def close_quietly(writer: Any) -> None:
    try:
        writer.close()
        await writer.wait_closed()
    except (OSError, ConnectionError):
        pass
