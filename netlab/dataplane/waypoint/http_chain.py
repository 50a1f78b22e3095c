"""An HTTP chain inside one tunnel: RBAC, route, load balance, second HBONE, per request.

The order is the HTTP filter chain's: the route is chosen first (so a denial still logs
%ROUTE_NAME%), the RBAC filter then allows or answers 403 `RBAC: access denied`
(`l7.authz`), and the router picks a backend by weight (`l7.routes`), an endpoint at
random (`upstream.pick`), and sends the request through `connect_originate`.

Upstream HTTP/1.1 connections are kept alive in a pool (`envoy.conn_pool`, Envoy's pool
per cluster host), keyed by the backend Service and the selected endpoint; each is one
HBONE stream (CONNECT) on the pooled HBONE connection to the endpoint's 15008. A
connection goes back only when HTTP/1.1 allows (not after `Connection: close`, not once
the upstream closed it). The pool is this downstream connection's own and is closed with
it, as the sidecar's HBONE upstreams are: the destination ztunnel logs and counts a
stream when it closes, so each client connection is logged when it ends rather than when
a shared pool would let go of it (docs/waypoint.md, "Telemetry"). The load balancer still
picks per request.

Local replies and flags are Envoy's (`envoy.local_reply`): 404 `NR route_not_found`, 503
`UH no healthy upstream`, 503 `UC`/`UF` when the second tunnel fails (the destination
ztunnel's 401 closes the tunnel before any response head). No retries: Istio's default
retry policy is not applied on the waypoint here (docs/waypoint.md).

HTTP/1.1 is parsed by h11 (`http1.py`); h2 with prior knowledge (`PRI * HTTP/2.0`) by the
h2 state machine (`h2_server.py`), each request then sent upstream as HTTP/1.1, as Envoy
does for an `http` cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from netlab import mesh
from netlab.dataplane import hbone, http1
from netlab.dataplane.envoy import headers as hdrs
from netlab.dataplane.envoy.conn_pool import HttpPool, Pooled, PoolKey
from netlab.dataplane.envoy import local_reply as lr
from netlab.dataplane.envoy.accesslog import AccessEntry
from netlab.dataplane.l7 import authz, routes
from netlab.dataplane.waypoint import upstream
from netlab.dataplane.waypoint.context import Downstream, Env, cluster_name, edge
from netlab.dataplane.waypoint.target import Target
from netlab.snapshot import Workload

log = logging.getLogger("waypoint")
INVALID_BACKEND = "invalid_backend"  # netlab's details for the Gateway API's 500


def _reply(status: int, body: bytes, reply_headers: list[tuple[str, str]]) -> http1.Response:
    return http1.Response(status=status, headers=list(reply_headers), body=body)


class HttpChain:
    def __init__(self, env: Env, down: Downstream, target: Target) -> None:
        self.env, self.down, self.target = env, down, target
        self._pool: HttpPool[upstream.Tunnel] = HttpPool()
        self._relays: set[asyncio.Task[None]] = set()  # of every tunnel still open

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await http1.serve(reader, writer, self.handle,
                          lambda e: log.info("bad HTTP from %s: %s", self.down.remote, e))

    async def close(self) -> None:
        """End every upstream tunnel this downstream connection opened: each closes its
        write side, and its relay ends once the destination closes too (cancelled with us)."""
        self._pool.close()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def handle(self, req: http1.Request, protocol: str = "") -> http1.Response:
        """One request to one response; records the access log and the metrics."""
        start = time.time()
        req = hdrs.downstream_request(req, tls=False)
        entry = AccessEntry(start, method=req.method, path=req.target,
                            protocol=protocol or f"HTTP/{req.http_version}",
                            bytes_received=req.body_size, x_forwarded_for=req.header(hdrs.FORWARDED_FOR),
                            user_agent=req.header("user-agent"), request_id=req.header(hdrs.REQUEST_ID),
                            authority=req.header("host") or req.header(":authority"),
                            downstream_local_address=self.down.local,
                            downstream_remote_address=self.down.remote)
        t, svc = self.target, self.target.service
        route: routes.Route | None = None
        if svc is not None:
            route = routes.choose(self.env.cfg.routes, svc.namespace, svc.name, t.port,
                                  routes.Request(req.method, req.target,
                                                 {k.lower(): v for k, v in req.headers}))
            entry.route_name = route.name or None
            self.env.ignored_filters.update(route.ignored)
        # The route's cluster is known before any filter runs: a 403 still carries its service.
        fqdn: str | None = svc.fqdn if svc else None
        if route is not None and route.backend is not None and svc is not None:
            fqdn = mesh.service_fqdn(route.backend.name, route.backend.namespace, svc.domain)
            entry.upstream_cluster = cluster_name(route.backend.port, "http", fqdn)
        decision = authz.authorize(self.env.cfg.policies, authz.Target(
            svc.namespace if svc else None, svc.name if svc else None,
            self.env.me.namespace, self.env.me.labels.get(mesh.GATEWAY_NAME_LABEL, "")), authz.L7Request(
                method=req.method, path=req.target, host=entry.authority or "",
                headers={k.lower(): v for k, v in req.headers}, src_ip=self.down.peer[0],
                src_identity=self.down.identity, dst_ip=t.ip, dst_port=t.port))
        if not decision.allowed:
            log.info("RBAC: %s", decision.reason)
            return self._local(entry, authz.DENIED_STATUS, authz.DENIED_BODY, [("content-type", "text/plain")],
                               "-", decision.details, fqdn)
        if route is not None and route.backend is None:
            if route.status == 404:
                r = lr.route_not_found()
                return self._local(entry, r.status, r.body, r.headers(), r.flag_text, r.details, fqdn)
            return self._local(entry, 500, b"", [], "-", INVALID_BACKEND, fqdn)
        if route is not None and route.backend is not None and fqdn is not None:
            picked = upstream.pick(self.env.cfg, fqdn, route.backend.port)
        else:
            picked = upstream.direct(self.env.cfg, t.ip, t.port)
        if picked is None:
            r = lr.no_healthy_upstream()
            return self._local(entry, r.status, r.body, r.headers(), r.flag_text, r.details, fqdn)
        return await self._forward(req, entry, picked, fqdn, start)

    async def _forward(self, req: http1.Request, entry: AccessEntry, picked: upstream.Picked,
                       fqdn: str | None, start: float) -> http1.Response:
        entry.upstream_host = picked.upstream_host
        key: PoolKey = (fqdn or "", picked.address, "")
        pooled = self._pool.take(key)
        if pooled is None:
            fwd = hbone.make_headers(forwarded_for=self.down.peer, forwarded_host=fqdn)
            try:
                tunnel = upstream.Tunnel(*await upstream.open_tunnel(
                    self.env.pool, self.env.identity, picked, self.env.trust_domain, fwd))
            except hbone.HboneError as e:
                log.info("connect_originate to %s answered %s", picked.address, e.status)
                return self._failed(entry, lr.upstream_reset(lr.CONNECTION_TERMINATION), picked.workload, fqdn)
            except Exception as e:  # noqa: BLE001 - dial, TLS or identity failure
                log.info("connect_originate to %s failed: %s", picked.address, e)
                return self._failed(entry, lr.upstream_reset(lr.CONNECTION_FAILURE), picked.workload, fqdn)
            self._relays.add(tunnel.relay)
            tunnel.relay.add_done_callback(self._relays.discard)
            pooled = Pooled.of(tunnel)
        try:
            sent = time.time()
            await pooled.conn.send_request(hdrs.upstream_request(req, 1))
            resp = await pooled.conn.read_response()
        except (http1.HttpError, OSError, ConnectionError) as e:
            pooled.up.close()
            log.info("upstream %s broke: %s", picked.address, e)
            return self._failed(entry, lr.upstream_reset(lr.CONNECTION_TERMINATION), picked.workload, fqdn)
        except BaseException:  # cancelled mid-exchange: the connection is in an unknown state
            pooled.up.close()
            raise
        self._pool.give(key, pooled)  # kept only if HTTP/1.1 allows another exchange
        upstream_ms = int((time.time() - sent) * 1000)
        out = hdrs.downstream_response(resp, upstream_ms)
        entry.response_code, entry.response_code_details = resp.status, "via_upstream"
        entry.upstream_service_time = str(upstream_ms)
        self._record(entry, len(out.body), picked.workload, fqdn)
        return out

    def _failed(self, entry: AccessEntry, reply: lr.LocalReply, dst: Workload, fqdn: str | None) -> http1.Response:
        entry.upstream_transport_failure_reason = reply.transport_failure
        return self._local(entry, reply.status, reply.body, reply.headers(), reply.flag_text, reply.details,
                           fqdn, dst)

    def _local(self, entry: AccessEntry, status: int, body: bytes, reply_headers: list[tuple[str, str]],
               flags: str, details: str, fqdn: str | None, dst: Workload | None = None) -> http1.Response:
        entry.response_code, entry.response_flags, entry.response_code_details = status, flags, details
        self._record(entry, len(body), dst, fqdn)
        return _reply(status, body, reply_headers)

    def _record(self, entry: AccessEntry, response_bytes: int, dst: Workload | None, fqdn: str | None) -> None:
        entry.bytes_sent = response_bytes
        entry.finish()
        self.env.stats.request(edge(self.env, self.down, dst, fqdn), entry.response_code,
                               entry.response_flags, entry.duration_ms, entry.bytes_received, response_bytes)
        self.env.log.write(entry)


Handler = Callable[[http1.Request, str], Awaitable[http1.Response]]
