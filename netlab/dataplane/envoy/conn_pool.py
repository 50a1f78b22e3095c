"""Envoy's HTTP/1.1 upstream connection pool: idle connections kept per cluster and host.

Shared by the sidecar (one pool per sidecar, plus one per downstream connection for HBONE
upstreams) and the waypoint (one per downstream connection, docs/waypoint.md). A pooled
connection is anything with an asyncio (reader, writer) pair and `close()`: a TCP or mTLS
connection, or an HBONE stream bridged to a socketpair.

Why one pool for the whole sidecar, not per downstream connection: Envoy's HTTP/1.1
connection pool belongs to an upstream host of a cluster and binds each request to whichever
of its connections is free, whatever downstream connection the request came on
(envoyproxy/envoy `docs/intro/arch_overview/connection_pooling.rst`; pools are kept per
key in `source/common/upstream/conn_pool_map.h`). A client that opens a fresh connection
per request (curl in a loop, a health checker) therefore pays the upstream TCP connect and
Istio mTLS handshake once, not per request: on a sidecar pair that handshake costs more than
the rest of the request (docs/sidecar.md, "Latency").

A connection is partitioned by everything that makes it differ: the cluster, the upstream
host (`ip:port`; the original destination for ORIGINAL_DST clusters) and, under TPROXY,
the downstream's address the inbound connection is spoofed from: with `original_src` an
upstream connection can only carry requests from that source, so Envoy keeps a pool per
source address (envoyproxy/envoy#16682).
A connection goes back only when HTTP/1.1 allows another exchange on it (both h11 sides
DONE); one the upstream closed while idle is dropped at the next take. Idle connections
live until the upstream closes them or the sidecar stops, as with Istio's default upstream
`idle_timeout` of one hour within a lab's life.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import h11

from netlab.dataplane import http1

PoolKey = tuple[str, str, str]  # (cluster, upstream host, spoofed source or "")


class Conn(Protocol):
    """What the pool needs of an upstream connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None: ...


C = TypeVar("C", bound=Conn)


@dataclass
class Pooled(Generic[C]):
    """One upstream connection and the h11 client state that frames it."""

    up: C
    conn: http1.ClientConnection

    @classmethod
    def of(cls, up: C) -> "Pooled[C]":
        return cls(up, http1.ClientConnection(up.reader, up.writer))

    def alive(self) -> bool:
        return not self.up.reader.at_eof() and not self.up.writer.transport.is_closing()

    def reusable(self) -> bool:
        h = self.conn.h11
        return h.our_state is h11.DONE and h.their_state is h11.DONE and self.alive()


class HttpPool(Generic[C]):
    """Idle upstream connections of one proxy (or one downstream connection), most recently
    used first out."""

    def __init__(self) -> None:
        self._idle: dict[PoolKey, list[Pooled[C]]] = {}

    def take(self, key: PoolKey) -> Pooled[C] | None:
        """An idle live connection for `key` (now the caller's alone), or None."""
        idle = self._idle.get(key)
        while idle:
            p = idle.pop()
            if p.alive():
                return p
            p.up.close()
        return None

    def give(self, key: PoolKey, p: Pooled[C]) -> None:
        """Hand back a connection after an exchange: kept if HTTP/1.1 allows, else closed."""
        if not p.reusable():
            p.up.close()
            return
        p.conn.h11.start_next_cycle()
        idle = self._idle.setdefault(key, [])
        for q in [q for q in idle if not q.alive()]:  # closed by the upstream while idle
            idle.remove(q)
            q.up.close()
        idle.append(p)

    def connections(self) -> list[Pooled[C]]:
        """Every idle connection, live or not yet noticed closed."""
        return [p for idle in self._idle.values() for p in idle]

    def close(self) -> None:
        for idle in self._idle.values():
            for p in idle:
                p.up.close()
        self._idle.clear()
