"""The TCP proxy of one chain: one upstream connection per downstream one, bytes both ways.

Only these chains count `istio_tcp_*` (§E): opened when the upstream is connected, closed
with the bytes read from (`received`) and written to (`sent`) the downstream. Metadata
exchange on TCP happens in-band when the mTLS ALPN is `istio-peer-exchange`; netlab's
stand-in is to look the peer up in the snapshot by address in that case (docs/sidecar.md).
The access-log line has `-` for method, path and protocol, and code 0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from netlab.dataplane.envoy.accesslog import AccessEntry
from netlab.dataplane.envoy.istio_tls import PEER_EXCHANGE
from netlab.dataplane.envoy.stats import Edge, PeerInfo, ServiceRef, client_edge, server_edge
from netlab.dataplane.proxy.relay import CountingReader, CountingWriter, pipe
from netlab.dataplane.sidecar.context import Downstream, Env
from netlab.dataplane.sidecar.upstream import Upstream, UpstreamFailure, endpoint_peer, pick
from netlab.xds import BLACKHOLE_CLUSTER, TcpProxy

log = logging.getLogger("sidecar.tcp")


def _peer_by_ip(env: Env, ip: str) -> PeerInfo | None:
    w = env.workload_by_ip(ip)
    return PeerInfo.of(w) if w is not None else None


async def serve(env: Env, down: Downstream, tcp: TcpProxy, mx: bool) -> None:
    """Proxy `down` to `tcp.cluster`. `mx`: the chain has the metadata-exchange filter."""
    start = time.time()
    entry = AccessEntry(start=start, upstream_cluster=tcp.cluster,
                        downstream_local_address=down.local_text,
                        downstream_remote_address=down.remote_text, requested_server_name=down.sni)
    cluster = env.cluster(tcp.cluster)
    if cluster is None or cluster.name == BLACKHOLE_CLUSTER:
        down.writer.close()
        return
    service = ServiceRef(cluster.services[0].host, cluster.services[0].name,
                         cluster.services[0].namespace) if cluster.services else None
    ep = pick(cluster, set()) if cluster.type == "EDS" else None
    try:
        if cluster.type == "EDS" and ep is None:
            raise UpstreamFailure("no healthy upstream")
        up = await env.connector.connect(cluster, ep, down.local, None, downstream_src=down.remote)
    except UpstreamFailure as f:
        flag = "UH" if ep is None and cluster.type == "EDS" else "UF"
        entry.response_flags = flag
        entry.upstream_host = f.host
        entry.upstream_transport_failure_reason = f.transport_failure
        edge = _edge(env, down, None, service, mx, endpoint_peer(env.snap, ep) if ep else None)
        env.stats.tcp_opened(edge, flag)
        env.stats.tcp_closed(edge, 0, 0, flag)
        _log(env, entry)
        down.writer.close()
        return
    entry.upstream_host, entry.upstream_local_address = up.host, up.local
    peer = up.peer
    if down.direction == "outbound" and up.alpn == PEER_EXCHANGE and ep is not None:
        peer = _peer_by_ip(env, ep.address) or peer
    edge = _edge(env, down, up, service, mx, peer)
    env.stats.tcp_opened(edge)
    r, w = CountingReader(down.reader), CountingWriter(_half_close(down.writer))  # type: ignore[arg-type]
    err = await pipe(r, w, up.reader, _half_close(up.writer))  # type: ignore[arg-type]
    if err:
        log.debug("tcp proxy %s ended: %s", tcp.cluster, err)
    entry.bytes_received, entry.bytes_sent = r.count, w.count
    env.stats.tcp_closed(edge, r.count, w.count)
    _log(env, entry)


class _CloseOnEof:
    """A TLS writer as the relay sees it: TLS has no half-close, so a FIN from the other side
    closes the connection (close_notify, then FIN), as Envoy's TLS transport socket does."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._w = writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._w, name)

    def can_write_eof(self) -> bool:
        return not self._w.transport.is_closing()

    def write_eof(self) -> None:
        self._w.close()


def _half_close(writer: asyncio.StreamWriter) -> Any:
    return _CloseOnEof(writer) if writer.get_extra_info("ssl_object") is not None else writer


def _edge(env: Env, down: Downstream, up: Upstream | None, service: ServiceRef | None,
          mx: bool, peer: PeerInfo | None) -> Edge:
    if down.direction == "outbound":
        return client_edge(env.me, up.local_san if up else None, peer,
                           up.peer_san if up else None, service)
    src: PeerInfo | None = None
    if mx and down.alpn == PEER_EXCHANGE or env.snap.metadata_discovery:
        src = _peer_by_ip(env, down.remote[0])
    return server_edge(env.me, down.local_san, src, down.peer_san, service)


def _log(env: Env, entry: AccessEntry) -> None:
    entry.finish()
    if env.access_log is not None:
        env.access_log.write(entry)

