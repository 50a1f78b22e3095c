"""One waypoint: `connect_terminate` on 15008, a chain per tunnel, admin and metrics ports.

Its identity is its own service account's (`spiffe://<td>/ns/<ns>/sa/<gateway>`), asked
from the lab CA with a pod-bound bootstrap (`proxy.certs.pod_cert_manager`): a waypoint
pod runs on a node like any pod, and istiod gives a pod its own identity, no node check.

Ports, as a waypoint pod's: 15008 HBONE, 15021 readiness, 15020 and 15090 Prometheus
(`/stats/prometheus` too). It is ready once all of them listen.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry

from netlab import mesh
from netlab.dataplane import hbone
from netlab.dataplane.envoy import flags as F
from netlab.dataplane.envoy import inspector
from netlab.dataplane.envoy.accesslog import AccessEntry, AccessLog
from netlab.dataplane.envoy.stats import IstioStats
from netlab.dataplane.proxy import certs
from netlab.dataplane.proxy.admin import listen, serve_metrics, serve_readiness
from netlab.dataplane.proxy.relay import STREAM_LIMIT
from netlab.dataplane.waypoint import h2_server, http_chain, tcp_chain
from netlab.dataplane.waypoint.context import Downstream, Env
from netlab.dataplane.waypoint.target import Target, resolve
from netlab.dataplane.waypoint.upstream import local_pair
from netlab.snapshot import ProxySnapshot, Workload

log = logging.getLogger("waypoint")
WARM_TIMEOUT = 20.0  # seconds to get the first certificate before giving up
CERT_RETRY = 0.2
SNIFF_TIMEOUT = 15.0  # Envoy's listener-filter timeout; then the connection is TCP
H2C = "h2c"


def own_pod(cfg: ProxySnapshot) -> Workload:
    """The waypoint pod this process runs as: its Service's endpoint on this node."""
    svc = cfg.service_by_fqdn(cfg.waypoint)
    port = svc.port(mesh.HBONE_PORT) if svc else None
    for ep in port.endpoints if port else ():
        w = cfg.workload_by_key(ep.pod)
        if w is not None and w.node == cfg.node:
            return w
    raise SystemExit(f"waypoint: no pod of {cfg.waypoint} on node {cfg.node} in the config")


class Waypoint:
    def __init__(self, cfg: ProxySnapshot) -> None:
        me = own_pod(cfg)
        self.cfg, self.me = cfg, me
        self.certs = certs.pod_cert_manager(cfg, me)
        self.registry = CollectorRegistry()
        pool = hbone.HbonePool(lambda _src: self.certs.client_context(me.namespace, me.service_account))
        self.env = Env(cfg, me, me.identity(cfg.trust_domain), pool, IstioStats(self.registry),
                       AccessLog(sys.stdout))
        self.server = hbone.HboneServer(
            lambda: self.certs.server_context(me.namespace, me.service_account), self._connect,
            trust_domain=cfg.trust_domain)
        self._ready: asyncio.AbstractServer | None = None
        self._metrics: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> "Waypoint":
        try:
            await self._warm()
            await self.server.start(listen(mesh.HBONE_PORT, backlog=512))
            self._ready = await serve_readiness(mesh.HEALTH_PORT)
            self._metrics = [serve_metrics(p, self.registry)
                             for p in (mesh.METRICS_PORT, mesh.ENVOY_STATS_PORT)]
        except BaseException:
            await self.close()
            raise
        return self

    async def _warm(self) -> None:
        """Ready only with a certificate, as Envoy's listeners warm only once SDS has it.

        The lab CA starts beside the waypoint, so the first fetches may be refused; each
        retry is the certificate manager's own (it refetches a failed identity after its
        retry interval), and this waits for the outcome of each, up to WARM_TIMEOUT.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WARM_TIMEOUT
        ns, sa = self.me.namespace, self.me.service_account
        while True:
            try:
                await self.certs.get(ns, sa)
                return
            except Exception as e:  # noqa: BLE001 - refused, timed out, not yet authorised
                if loop.time() >= deadline:
                    raise SystemExit(f"waypoint: no certificate for {self.env.identity} from the CA "
                                     f"{self.cfg.ca.url} within {WARM_TIMEOUT:.0f}s: {e}") from e
                await asyncio.sleep(CERT_RETRY)  # the pace of CertManager's own retries

    def announce(self) -> None:
        attached = sorted(s.fqdn for s in self.cfg.services if s.waypoint == self.cfg.waypoint)
        pods = sorted(w.key for w in self.cfg.workloads if w.waypoint == self.cfg.waypoint)
        print(f"waypoint {self.me.key} ({self.env.identity}) serving services {attached} and "
              f"workloads {pods}", flush=True)

    async def close(self) -> None:
        if self._ready is not None:
            self._ready.close()
        for t in self._metrics:
            t.cancel()
        await self.server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.env.pool.close()
        await self.certs.close()
        if self.env.ignored_filters:
            log.info("HTTPRoute filters met and not modelled: %s", sorted(self.env.ignored_filters))

    # -- connect_terminate ------------------------------------------------------------
    async def _connect(self, authority: str, headers: dict[str, str], peer_identity: str,
                       peer: tuple[str, int]) -> Any:
        """Accept a CONNECT only for a Service or pod that uses this waypoint."""
        addr = hbone.parse_authority(authority)
        target = resolve(self.cfg, *addr) if addr else None
        if target is None:
            # No filter chain of main_internal matches: Envoy closes the connection.
            self.env.log.write(AccessEntry(
                time.time(), response_flags=F.NO_ROUTE_FOUND, response_code_details="filter_chain_not_found",
                downstream_local_address=authority, downstream_remote_address=f"{peer[0]}:{peer[1]}"))
            return 400
        down = Downstream(peer, peer_identity, target.authority)
        mine, theirs = local_pair()
        try:
            reader, writer = await asyncio.open_connection(sock=theirs, limit=STREAM_LIMIT)
        except BaseException:
            mine.close()
            theirs.close()
            raise
        self._spawn(self._chain(mine, down, target))
        return reader, writer

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _chain(self, sock: socket.socket, down: Downstream, target: Target) -> None:
        protocol = target.protocol
        alpn: tuple[str, ...] = ()
        if protocol != "tcp":
            alpn = (await inspector.peek(sock, SNIFF_TIMEOUT)).alpn
            if protocol == "sniff":
                protocol = "http" if alpn else "tcp"
        reader, writer = await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT)
        chain: http_chain.HttpChain | None = None
        try:
            if protocol == "tcp":
                await tcp_chain.serve(self.env, down, target, reader, writer)
            elif H2C in alpn:
                chain = http_chain.HttpChain(self.env, down, target)
                await h2_server.serve(reader, writer, chain.handle)
            else:
                chain = http_chain.HttpChain(self.env, down, target)
                await chain.serve(reader, writer)
        except (ConnectionError, OSError) as e:
            log.info("chain for %s from %s ended: %s", target.authority, down.remote, e)
        finally:
            writer.close()
            if chain is not None:
                await chain.close()  # its pooled upstream tunnels end with the downstream
