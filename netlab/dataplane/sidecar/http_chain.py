"""The HTTP connection manager of one chain: parse, route by Host, retry, reply, log, count.

One downstream connection is served request by request (HTTP/1.1 keep-alive, h11 through
`netlab.dataplane.http1`). Each request is routed on its own: the virtual host by Host
(port ignored), the first route whose prefix fits, its cluster, an endpoint. The router
then tries the upstream up to `1 + num_retries` times under the route's retry policy (Istio's
default on `default` routes, none on `allow_any`), and what comes back is either the
upstream's response or one of Envoy's local replies (`netlab.dataplane.envoy.local_reply`).
Upstream connections come from the sidecar's pool (`envoy.conn_pool.HttpPool`, Envoy's per-cluster
connection pool) and go back to it while HTTP/1.1 allows. HBONE upstreams (sidecar → ambient
pod) are the exception: they are reused only within their downstream connection and end
with it, so the destination ztunnel, which logs a connection when it closes, logs each
client connection when it ends instead of when a shared pooled stream would (docs/sidecar.md).

The access log line and the istio_stats update of a request are written once its response
has gone out, as Envoy logs at the end of a stream (%DURATION% runs to the last byte sent),
so neither sits between the upstream's answer and the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from functools import lru_cache

from netlab.dataplane import http1
from netlab.dataplane.envoy import headers as H
from netlab.dataplane.envoy import local_reply as lr
from netlab.dataplane.envoy import retry
from netlab.dataplane.envoy.accesslog import AccessEntry
from netlab.dataplane.envoy.stats import PASSTHROUGH_CLUSTER, Edge, PeerInfo, ServiceRef, client_edge, server_edge
from netlab.dataplane.sidecar.context import Downstream, Env
from netlab.dataplane.envoy.conn_pool import HttpPool, Pooled, PoolKey
from netlab.dataplane.sidecar.routing import match_route, match_vhost
from netlab.dataplane.sidecar.upstream import Upstream, UpstreamFailure, endpoint_peer, pick
from netlab.xds import ALLOW_ANY, Cluster, HttpConnectionManager, LbEndpoint, Route, RouteConfiguration

log = logging.getLogger("sidecar.http")
VIA_UPSTREAM = "via_upstream"


@lru_cache(maxsize=1024)
def _policy(route: Route) -> retry.RetryPolicy:
    p = route.retry_policy
    if p is None:
        return retry.NONE
    return retry.RetryPolicy(p.num_retries, frozenset(x.strip() for x in p.retry_on.split(",")),
                             frozenset(p.retriable_status_codes))


def _service(cluster: Cluster | None, route: Route | None, host: str | None,
             down: Downstream) -> ServiceRef | None:
    if down.direction == "outbound" and (route is not None and route.name == ALLOW_ANY
                                         or cluster is not None and cluster.name == PASSTHROUGH_CLUSTER):
        return ServiceRef.passthrough(host)  # §D1: Host fallback on outbound passthrough
    if cluster is not None and cluster.services:
        s = cluster.services[0]
        return ServiceRef(s.host, s.name, s.namespace)
    return None


def _local(reply: lr.LocalReply) -> http1.Response:
    hdrs = reply.headers() + [("date", formatdate(usegmt=True)), ("server", "envoy")]
    return http1.Response(status=reply.status, headers=hdrs, body=reply.body)


class HttpChain:
    """Serves one downstream connection through `hcm`."""

    def __init__(self, env: Env, down: Downstream, hcm: HttpConnectionManager) -> None:
        self.env, self.down, self.hcm = env, down, hcm
        self._pending: list[tuple[AccessEntry, Edge]] = []  # logged once the response is out
        self._xfcc: str | None = None  # this connection's XFCC element (same peer throughout)
        # Under TPROXY the inbound upstream is spoofed from the client (original_src): its
        # connections are pooled apart per source address, as Envoy's are.
        self._src = down.remote[0] if env.connector.tproxy and down.direction == "inbound" else ""
        # HBONE upstreams stay this connection's own and end with it (module docstring).
        self._own: HttpPool[Upstream] = HttpPool()

    def route_config(self) -> RouteConfiguration | None:
        return self.hcm.route_config or self.env.route_config(self.hcm.rds)

    async def serve(self) -> None:
        conn = http1.ServerConnection(self.down.reader, self.down.writer)
        try:
            while True:
                try:
                    req = await conn.read_request()
                except http1.HttpError as e:
                    await conn.send_error(e.status)
                    await conn.linger()
                    return
                if req is None:
                    return
                resp = await self.handle(req)
                try:
                    again = await conn.send_response(resp)
                finally:
                    self._flush()
                if not again:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._flush()
            self._own.close()
            self.down.writer.close()

    # -- one request ---------------------------------------------------------------------
    async def handle(self, req: http1.Request) -> http1.Response:
        env, down = self.env, self.down
        start = time.time()
        H.downstream_request(req, tls=down.tls)
        req.headers, peer_mx = H.take_mx(req.headers)
        if not self.hcm.metadata_exchange:
            peer_mx = None
        host = req.header("host")
        path = req.target
        rc = self.route_config()
        vhost = match_vhost(rc, host) if rc is not None else None
        route = match_route(vhost, req.method, path.split("?", 1)[0]) if vhost is not None else None
        entry = AccessEntry(start=start, method=req.method, path=path,
                            protocol=f"HTTP/{req.http_version}", bytes_received=req.body_size,
                            x_forwarded_for=req.header(H.FORWARDED_FOR),
                            user_agent=req.header("user-agent"), request_id=req.header(H.REQUEST_ID),
                            authority=host, downstream_local_address=down.local_text,
                            downstream_remote_address=down.remote_text,
                            requested_server_name=down.sni,
                            route_name=route.name if route is not None else None)
        if route is None:
            return self._finish(entry, lr.route_not_found(), None, None, peer_mx)
        cluster = env.cluster(route.cluster)
        service = _service(cluster, route, host, down)
        entry.upstream_cluster = route.cluster
        if cluster is None:
            reply = lr.LocalReply(503, b"", frozenset({"NC"}), "cluster_not_found")
            return self._finish(entry, reply, None, service, peer_mx)
        if down.direction == "inbound" and down.peer_san and down.local_san and down.peer_cert_der:
            if self._xfcc is None:
                self._xfcc = H.client_cert_header(down.local_san, down.peer_san, down.peer_cert_der)
            H.append_client_cert(req, self._xfcc)
        return await self._route(req, entry, route, cluster, service, peer_mx)

    async def _route(self, req: http1.Request, entry: AccessEntry, route: Route, cluster: Cluster,
                     service: ServiceRef | None, peer_mx: PeerInfo | None) -> http1.Response:
        policy = _policy(route)
        tried: set[str] = set()
        attempt = 1
        last: http1.Response | None = None
        while True:
            ep = pick(cluster, tried) if cluster.type == "EDS" else None
            if cluster.type == "EDS" and ep is None:
                return self._finish(entry, lr.no_healthy_upstream(), None, service, peer_mx)
            key = (cluster.name, f"{ep.address}:{ep.port}" if ep else self.down.local_text, self._src)
            tried.add(key[1])
            extra = self.env.mx if self.down.direction == "outbound" else []
            try:
                pooled = await self._upstream(key, cluster, ep)
            except UpstreamFailure as f:
                entry.upstream_host = f.host
                if policy.retries_reset(f.reason) and attempt <= policy.num_retries:
                    await asyncio.sleep(policy.backoff(attempt))  # Envoy's retry back-off timer
                    attempt += 1
                    continue
                reply = lr.upstream_reset(f.reason, f.transport_failure,
                                          retried=policy.retries_reset(f.reason))
                return self._finish(entry, reply, None, service, peer_mx,
                                    peer=endpoint_peer(self.env.snap, ep) if ep else None)
            up = pooled.up
            entry.upstream_host, entry.upstream_local_address = up.host, up.local
            sent = time.time()
            try:
                await pooled.conn.send_request(H.upstream_request(req, attempt, extra))
                resp = await pooled.conn.read_response()
            except (http1.HttpError, OSError, asyncio.IncompleteReadError) as e:
                up.close()
                log.debug("upstream %s closed before a response: %s", up.host, e)
                reason = lr.CONNECTION_TERMINATION
                if policy.retries_reset(reason) and attempt <= policy.num_retries:
                    attempt += 1
                    continue
                reply = lr.upstream_reset(reason, retried=policy.retries_reset(reason))
                return self._finish(entry, reply, up, service, peer_mx)
            except BaseException:  # cancelled mid-exchange: the connection is in an unknown state
                up.close()
                raise
            upstream_ms = int((time.time() - sent) * 1000)
            self._pool(ep).give(key, pooled)
            if policy.retries_status(resp.status) and attempt <= policy.num_retries:
                last = resp
                attempt += 1
                await asyncio.sleep(policy.backoff(attempt - 1))
                continue
            exhausted = last is not None and policy.retries_status(resp.status)
            return self._respond(entry, resp, up, upstream_ms, service, peer_mx, exhausted)

    def _pool(self, ep: LbEndpoint | None) -> HttpPool[Upstream]:
        return self._own if ep is not None and ep.transport == "hbone" else self.env.http_pool

    async def _upstream(self, key: PoolKey, cluster: Cluster, ep: LbEndpoint | None) -> Pooled[Upstream]:
        pooled = self._pool(ep).take(key)
        if pooled is not None:
            return pooled
        up = await self.env.connector.connect(cluster, ep, self.down.local,
                                              "http/1.1", downstream_src=self.down.remote)
        return Pooled.of(up)

    # -- answers, logs and metrics -------------------------------------------------------
    def _respond(self, entry: AccessEntry, resp: http1.Response, up: Upstream, upstream_ms: int,
                 service: ServiceRef | None, peer_mx: PeerInfo | None, exhausted: bool) -> http1.Response:
        out = H.downstream_response(resp, upstream_ms)
        peer = up.peer
        if self.down.direction == "outbound":
            out.headers, mx = H.take_mx(out.headers)
            peer = mx or peer
        elif peer_mx is not None:
            out.headers += self.env.mx
        entry.response_code = resp.status
        entry.response_flags = "URX" if exhausted else "-"
        entry.response_code_details = VIA_UPSTREAM
        entry.upstream_service_time = str(upstream_ms)
        entry.bytes_sent = len(resp.body)
        self._record(entry, self._edge(up, service, peer_mx, peer))
        return out

    def _finish(self, entry: AccessEntry, reply: lr.LocalReply, up: Upstream | None,
                service: ServiceRef | None, peer_mx: PeerInfo | None,
                peer: PeerInfo | None = None) -> http1.Response:
        entry.response_code = reply.status
        entry.response_flags = reply.flag_text
        entry.response_code_details = reply.details
        entry.upstream_transport_failure_reason = reply.transport_failure
        entry.bytes_sent = len(reply.body)
        self._record(entry, self._edge(up, service, peer_mx, peer or (up.peer if up else None)))
        return _local(reply)

    def _edge(self, up: Upstream | None, service: ServiceRef | None, peer_mx: PeerInfo | None,
              peer: PeerInfo | None) -> Edge:
        env, down = self.env, self.down
        if down.direction == "outbound":
            return client_edge(env.me, up.local_san if up else None, peer,
                               up.peer_san if up else None, service)
        if peer_mx is None and env.snap.metadata_discovery:
            w = env.workload_by_ip(down.remote[0])
            peer_mx = PeerInfo.of(w) if w is not None else None
        return server_edge(env.me, down.local_san, peer_mx, down.peer_san, service)

    def _record(self, entry: AccessEntry, edge: Edge) -> None:
        """Queue the request's log line and metrics until its response has been sent."""
        self._pending.append((entry, edge))

    def _flush(self) -> None:
        """Envoy's end of stream: %DURATION% ends now; then istio_stats and the access log."""
        pending, self._pending = self._pending, []
        for entry, edge in pending:
            entry.finish()
            self.env.stats.request(edge, entry.response_code, entry.response_flags,
                                   entry.duration_ms, entry.bytes_received, entry.bytes_sent)
            if self.env.access_log is not None:
                self.env.access_log.write(entry)

