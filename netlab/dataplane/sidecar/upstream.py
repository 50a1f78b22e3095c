"""Reaching a cluster's endpoint the way the sidecar's Envoy would: plaintext, Istio mTLS, HBONE.

Every way ends as an asyncio (reader, writer) pair plus what the access log and istio_stats
need (%UPSTREAM_HOST%, %UPSTREAM_LOCAL_ADDRESS%, the SANs, the negotiated ALPN, the peer's
endpoint metadata). A failure is an `UpstreamFailure` carrying Envoy's reset reason and
transport failure reason, so the HTTP chain can word its local reply exactly.

- EDS endpoints say how they are reached (`LbEndpoint.transport`, decided by istiod's
  stand-in): `mtls` uses the cluster's `UpstreamTls` (SNI, ALPN, SANs) with the pod's own
  certificate; `hbone` opens a CONNECT to `<ip>:15008` (Envoy's `connect_originate`);
  `plaintext` is a plain TCP connect.
- ORIGINAL_DST clusters go to the original destination: `PassthroughCluster` as is, the
  inbound ones from 127.0.0.6 (`upstream_bind_address`) — or, under TPROXY, from the
  client's own address with mark 1337 (Envoy's `original_src` listener filter, which istiod
  adds to inbound listeners in TPROXY mode).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from netlab import mesh
from netlab.dataplane import hbone
from netlab.dataplane import identity as ident
from netlab.dataplane.envoy import istio_tls
from netlab.dataplane.envoy import local_reply as lr
from netlab.dataplane.envoy.stats import PeerInfo
from netlab.dataplane.identity import CertManager
from netlab.dataplane.proxy.relay import STREAM_LIMIT
from netlab.xds import Cluster, LbEndpoint, SidecarSnapshot

log = logging.getLogger("sidecar.upstream")
IP_TRANSPARENT = 19
SO_MARK = 36
HBONE_UPSTREAM_HOST = "envoy://connect_originate/{}"  # how Envoy logs an internal-listener hop
HBONE_UPSTREAM_LOCAL = "envoy://internal_client_address/"


class UpstreamFailure(Exception):
    """The upstream could not be reached: Envoy's reset reason and transport failure reason."""

    def __init__(self, reason: str, transport_failure: str | None = None,
                 host: str | None = None) -> None:
        super().__init__(f"{reason}" + (f", {transport_failure}" if transport_failure else ""))
        self.reason, self.transport_failure, self.host = reason, transport_failure, host


@dataclass
class Upstream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: str  # %UPSTREAM_HOST%
    local: str  # %UPSTREAM_LOCAL_ADDRESS%
    local_san: str | None = None  # ours, when the hop is Istio mTLS or HBONE
    peer_san: str | None = None
    alpn: str | None = None
    peer: PeerInfo | None = None  # endpoint metadata (istio_stats' fallback)
    reusable: bool = True  # may go back to the HTTP pool

    def close(self) -> None:
        self.writer.close()


def _addr(a: Any) -> str:
    return f"{a[0]}:{a[1]}" if a else "-"


def pick(cluster: Cluster, tried: set[str]) -> LbEndpoint | None:
    """A random endpoint, preferring ones not tried yet (the `previous_hosts` predicate)."""
    eps = list(cluster.endpoints)
    if not eps:
        return None
    fresh = [e for e in eps if f"{e.address}:{e.port}" not in tried]
    return random.choice(fresh or eps)


def endpoint_peer(snap: SidecarSnapshot, ep: LbEndpoint) -> PeerInfo | None:
    """istio_stats' endpoint-metadata fallback: workload, namespace, canonical name and
    revision, cluster (the `istio` filter metadata istiod puts on each endpoint)."""
    ns, _, name = ep.workload.partition("/")
    w = next((w for w in snap.workloads if w.key == ep.workload), None)
    if w is None:
        return None
    return PeerInfo(workload=w.workload_name, namespace=ns, app=w.canonical_service,
                    version=w.canonical_revision, canonical_service=w.canonical_service,
                    canonical_revision=w.canonical_revision, cluster=mesh.TELEMETRY_CLUSTER)


class Connector:
    """Opens upstream connections for one sidecar."""

    def __init__(self, snap: SidecarSnapshot, certs: CertManager) -> None:
        self.snap = snap
        self.certs = certs
        self.pod = snap.workload
        self.tproxy = snap.capture == "tproxy"
        self._contexts: dict[tuple[int, tuple[str, ...]], ssl.SSLContext] = {}
        self.pool = hbone.HbonePool(self._hbone_ctx, sock_factory=lambda _dst: _plain_socket())
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await self.pool.close()

    @property
    def local_san(self) -> str:
        return self.snap.identity

    async def _cert(self) -> ident.WorkloadCert:
        return await self.certs.get(self.pod.namespace, self.pod.service_account)

    async def client_context(self, alpn: tuple[str, ...]) -> ssl.SSLContext:
        cert = await self._cert()
        key = (cert.serial, alpn)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = istio_tls.client_context(cert, alpn)
        return ctx

    async def _hbone_ctx(self, _src: str) -> ssl.SSLContext:
        return await self.certs.client_context(self.pod.namespace, self.pod.service_account)

    # -- the ways out ------------------------------------------------------------------
    async def connect(self, cluster: Cluster, ep: LbEndpoint | None, original_dst: tuple[str, int],
                      http_protocol: str | None, downstream_src: tuple[str, int] | None = None
                      ) -> Upstream:
        """Connect to `ep` of `cluster` (EDS), or to `original_dst` (ORIGINAL_DST clusters).

        `http_protocol` ("http/1.1") selects the HTTP ALPN override; None is a TCP proxy.
        """
        timeout = cluster.connect_timeout_ms / 1000
        if cluster.type == "ORIGINAL_DST":
            bind = None
            if cluster.upstream_bind_address:
                bind = ("transparent", downstream_src) if self.tproxy and downstream_src \
                    else (cluster.upstream_bind_address, 0)
            return await self._tcp(original_dst, timeout, bind)
        if ep is None:
            raise UpstreamFailure("no healthy upstream")
        peer = endpoint_peer(self.snap, ep)
        if ep.transport == "hbone":
            up = await self._hbone(ep, timeout)
        elif ep.transport == "mtls" and cluster.tls is not None:
            alpn = istio_tls.client_alpn(http_protocol) if http_protocol else \
                tuple(cluster.tls.alpn_protocols)
            up = await self._mtls(ep, cluster, alpn, timeout)
        else:
            up = await self._tcp((ep.address, ep.port), timeout, None)
        up.peer = peer
        return up

    async def _open(self, target: tuple[str, int], timeout: float, bind: Any,
                    ctx: ssl.SSLContext | None = None, sni: str | None = None
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = _plain_socket()
        try:
            if bind is not None and bind[0] == "transparent":
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mesh.PROXY_MARK)
                sock.bind((bind[1][0], 0))
            elif bind is not None:
                sock.bind(bind)
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, target)
                return await asyncio.open_connection(sock=sock, ssl=ctx, limit=STREAM_LIMIT,
                                                     server_hostname=sni if ctx else None,
                                                     ssl_handshake_timeout=timeout if ctx else None)
        except BaseException:
            sock.close()
            raise

    async def _tcp(self, target: tuple[str, int], timeout: float, bind: Any) -> Upstream:
        try:
            r, w = await self._open(target, timeout, bind)
        except (OSError, TimeoutError) as e:
            raise UpstreamFailure(lr.CONNECTION_FAILURE, istio_tls.transport_failure(e),
                                  _addr(target)) from e
        return Upstream(r, w, _addr(target), _addr(w.get_extra_info("sockname")))

    async def _mtls(self, ep: LbEndpoint, cluster: Cluster, alpn: tuple[str, ...],
                    timeout: float) -> Upstream:
        assert cluster.tls is not None
        target = (ep.address, ep.port)
        try:
            ctx = await self.client_context(alpn)
            r, w = await self._open(target, timeout, None, ctx, cluster.tls.sni)
        except (OSError, TimeoutError, ssl.SSLError, ident.IdentityError,
                ConnectionError) as e:
            raise UpstreamFailure(lr.CONNECTION_FAILURE, istio_tls.transport_failure(e),
                                  _addr(target)) from e
        sslobj = w.get_extra_info("ssl_object")
        try:
            sans = tuple(cluster.tls.subject_alt_names)
            got = istio_tls.verify_server(sslobj, sans)
            prefixes = tuple(cluster.tls.subject_alt_name_prefixes)
            if prefixes and not sans and not str(got).startswith(prefixes):
                raise ident.IdentityMismatch(f"server identity {got} outside {prefixes}")
        except ident.IdentityError as e:
            w.transport.abort()
            raise UpstreamFailure(lr.CONNECTION_FAILURE, istio_tls.transport_failure(e),
                                  _addr(target)) from e
        return Upstream(r, w, _addr(target), _addr(w.get_extra_info("sockname")),
                        local_san=self.local_san, peer_san=str(got),
                        alpn=sslobj.selected_alpn_protocol())

    async def _hbone(self, ep: LbEndpoint, timeout: float) -> Upstream:
        ns = ep.workload.partition("/")[0]
        dst_id = mesh.spiffe_uri(self.snap.trust_domain, ns, ep.service_account)
        authority = f"{ep.address}:{ep.port}"
        try:
            async with asyncio.timeout(timeout):
                stream = await self.pool.connect((ep.address, ep.hbone_port), authority,
                                                 self.local_san, dst_id)
        except hbone.HboneError as e:
            raise UpstreamFailure(lr.CONNECTION_FAILURE, f"HBONE CONNECT answered {e.status}",
                                  HBONE_UPSTREAM_HOST.format(authority)) from e
        except (OSError, TimeoutError, ssl.SSLError, ident.IdentityError, ConnectionError) as e:
            raise UpstreamFailure(lr.CONNECTION_FAILURE, istio_tls.transport_failure(e),
                                  HBONE_UPSTREAM_HOST.format(authority)) from e
        r, w = await self._bridge(stream)
        return Upstream(r, w, HBONE_UPSTREAM_HOST.format(authority), HBONE_UPSTREAM_LOCAL,
                        local_san=self.local_san, peer_san=dst_id, alpn=None)

    async def _bridge(self, stream: hbone.HboneStream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """An HBONE stream as a (reader, writer) pair: Envoy's internal listener, as a socketpair."""
        a, b = socket.socketpair()
        ra, wa = await asyncio.open_connection(sock=a, limit=STREAM_LIMIT)
        task = asyncio.create_task(hbone.relay(stream, ra, wa))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.open_connection(sock=b, limit=STREAM_LIMIT)


def _plain_socket() -> socket.socket:
    """An unbound, non-blocking TCP socket in our own netns (the pod's).

    No mark: the sidecar's own traffic is exempt from the capture rules by its uid/gid 1337.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setblocking(False)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
