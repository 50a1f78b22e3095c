"""The three in-pod listeners of one ambient pod and what each does (mesh-facts §3).

15001 outbound: find the original destination, resolve a VIP to one endpoint, then
HBONE (destination speaks HBONE) or plain passthrough, always from a socket made in
the *source* pod's netns with SO_MARK 0x539. 15008 inbound HBONE and 15006 inbound
plaintext: policy first, then connect to the app spoofing the client's IP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
from typing import Any

from netlab import mesh
from netlab.dataplane import hbone
from netlab.dataplane.identity import CertManager, Identity
from netlab.dataplane.policy import Connection, Evaluator
from netlab.dataplane.telemetry import (NONE_ALLOWED, ConnRecord, ZtunnelTelemetry, denied_by,
                                        http_status_error, io_error, rejection_error)
from netlab.dataplane.proxy import sockets
from netlab.dataplane.proxy.relay import STREAM_LIMIT, CountingReader, CountingWriter, pipe
from netlab.dataplane.ztunnel import dns_proxy, routing
from netlab.snapshot import Endpoint, ProxySnapshot, ServicePort, Workload

log = logging.getLogger("ztunnel")
OUTBOUND, INBOUND_PLAIN, INBOUND_HBONE = mesh.OUTBOUND_PORT, mesh.INBOUND_PORT, mesh.HBONE_PORT
OWN_PORTS = mesh.ZTUNNEL_POD_PORTS
CONNECT_TIMEOUT = 10.0


def _addr(a: Any) -> str:
    return f"{a[0]}:{a[1]}" if a else ""


def _flags(rec: ConnRecord, flags: str) -> ConnRecord:
    return dataclasses.replace(rec, response_flags=flags)


def pick(port: ServicePort) -> Endpoint | None:
    """ztunnel load-balances a VIP itself, before kube-proxy sees it: one random endpoint."""
    return random.choice(port.endpoints) if port.endpoints else None


class PodProxy:
    """ztunnel's in-pod proxy instance for one workload on this node."""

    def __init__(self, pod: Workload, cfg: ProxySnapshot, certs: CertManager,
                 telemetry: ZtunnelTelemetry, policy: Evaluator) -> None:
        self.pod, self.cfg, self.certs, self.tel, self.policy = pod, cfg, certs, telemetry, policy
        self.td = cfg.trust_domain
        self.identity = pod.identity(self.td)
        self.tproxy = cfg.capture == "tproxy"
        self.pool = hbone.HbonePool(self._client_ctx, sock_factory=lambda _dst: sockets.outbound_socket(pod.netns))
        self._servers: list[asyncio.AbstractServer] = []
        self._hbone: hbone.HboneServer | None = None
        self.dns = dns_proxy.for_pod(pod.netns, pod.namespace, cfg.services, cfg.dns.upstream,
                                     cfg.dns.domain, forward_in_pod=cfg.dns.forward_in_pod)

    async def start(self) -> None:
        await self.dns.start()  # first: when ztunnel says ready, DNS answers too
        mk = lambda port: sockets.listener(self.pod.netns, port, self.tproxy)  # noqa: E731
        out_sock, plain_sock, hbone_sock = mk(OUTBOUND), mk(INBOUND_PLAIN), mk(INBOUND_HBONE)
        self._servers.append(await asyncio.start_server(self._outbound, sock=out_sock, limit=STREAM_LIMIT))
        self._servers.append(await asyncio.start_server(self._inbound_plain, sock=plain_sock, limit=STREAM_LIMIT))
        self._hbone = hbone.HboneServer(
            lambda: self.certs.server_context(self.pod.namespace, self.pod.service_account),
            self._inbound_hbone, trust_domain=self.td)
        await self._hbone.start(hbone_sock)

    async def close(self) -> None:
        await self.dns.close()
        for s in self._servers:
            s.close()
        if self._hbone:
            await self._hbone.close()
        await self.pool.close()

    def _client_ctx(self, src_identity: str) -> Any:
        ident = Identity.parse(src_identity)
        return self.certs.client_context(ident.namespace, ident.service_account)

    def _inbound_service(self, port: int, headers: dict[str, str] | None = None) -> str | None:
        svc = routing.inbound_service(self.cfg, self.pod, port, headers or {})
        return svc.fqdn if svc else None

    # --- outbound (15001) ------------------------------------------------------------
    async def _outbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("peername")
        dst = sockets.original_dst(writer.get_extra_info("socket"))
        if dst[1] in OWN_PORTS and dst[0] in (self.pod.ip, "127.0.0.1"):
            log.info("refused self-call from %s to ztunnel port %s", _addr(client), _addr(dst))
            writer.close()
            return
        # The path (waypoint, HBONE to the pod, passthrough) is routing's decision.
        route = routing.outbound(self.cfg, self.pod, dst)
        if route.refusal:
            log.info("%s (%s)", route.refusal, _addr(dst))
            writer.close()
            return
        if route.hbone_addr is not None and route.dst is not None:
            # Via a waypoint, route.dst is the waypoint pod and route.target the VIP:port dialled.
            await self._outbound_hbone(reader, writer, client, route.target, route.dst, route.service)
        else:
            await self._passthrough(reader, writer, client, route.target, route.dst, route.service)

    async def _outbound_hbone(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              client: Any, target: tuple[str, int], dst_wl: Workload,
                              service: str | None) -> None:
        authority = _addr(target)
        dst_id = dst_wl.identity(self.td)
        rec = ConnRecord(reporter="source", src=self.pod, dst=dst_wl,
                         src_addr=_addr(client), dst_addr=f"{dst_wl.ip}:{INBOUND_HBONE}",
                         hbone_addr=authority, src_identity=self.identity, dst_identity=dst_id,
                         security="mutual_tls", direction="outbound", dst_service=service)
        self.tel.opened(rec)
        headers = hbone.make_headers(forwarded_for=(client[0], client[1]), forwarded_host=service, baggage={
            "k8s.cluster.name": mesh.TELEMETRY_CLUSTER, "k8s.namespace.name": self.pod.namespace,
            "k8s.deployment.name": self.pod.deployment, "service.name": self.pod.canonical_service,
            "service.version": self.pod.canonical_revision})
        try:
            stream = await self.pool.connect((dst_wl.ip, INBOUND_HBONE), authority, self.identity,
                                             dst_id, headers)
        except hbone.HboneError as e:
            # ztunnel 1.24's outbound records no flag: only the destination says DENY.
            self.tel.closed(rec, 0, 0, error=http_status_error(e.status))
            _drop(reader, writer)
            return
        except Exception as e:  # noqa: BLE001 - TLS, identity or socket failure: close the client
            self.tel.closed(rec, 0, 0, error=io_error(e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}")
            _drop(reader, writer)
            return
        down_r = CountingReader(reader, self.tel.counter(rec, "received"))
        down_w = CountingWriter(writer, lambda: self.tel.closed(rec, down_r.count, down_w.count),
                                self.tel.counter(rec, "sent"))
        await hbone.relay(stream, down_r, down_w)  # type: ignore[arg-type]

    async def _passthrough(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           client: Any, target: tuple[str, int], dst_wl: Workload | None,
                           service: str | None) -> None:
        rec = ConnRecord(reporter="source", src=self.pod, dst=dst_wl,
                         src_addr=_addr(client), dst_addr=_addr(target), hbone_addr=None,
                         src_identity=self.identity,
                         dst_identity=dst_wl.identity(self.td) if dst_wl else None,
                         security="unknown", direction="outbound", dst_service=service)
        self.tel.opened(rec)
        sock = sockets.outbound_socket(self.pod.netns)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.get_running_loop().sock_connect(sock, target)
            up_r, up_w = await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT)
        except (OSError, asyncio.TimeoutError) as e:
            sock.close()
            self.tel.closed(rec, 0, 0, error=f"io error: {io_error(e)}")
            writer.close()
            return
        down_r = CountingReader(reader, self.tel.counter(rec, "received"))
        down_w = CountingWriter(writer, on_bytes=self.tel.counter(rec, "sent"))
        err = await pipe(down_r, down_w, up_r, up_w)
        self.tel.closed(rec, down_r.count, down_w.count, error=err)

    # --- inbound ----------------------------------------------------------------------
    async def _connect_app(self, client_ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = sockets.spoofed_socket(self.pod.netns, client_ip)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):  # not wait_for: no extra Task per connection
                await asyncio.get_running_loop().sock_connect(sock, (self.pod.ip, port))
            return await asyncio.open_connection(sock=sock, limit=STREAM_LIMIT)
        except BaseException:
            sock.close()
            raise

    async def _inbound_hbone(self, authority: str, headers: dict[str, str], peer_identity: str,
                             peer: tuple[str, int]) -> Any:
        target = hbone.parse_authority(authority)
        refusal = _bad_authority(authority, target, self.pod.ip)
        if refusal is not None:  # ztunnel's log_early_deny, then 400
            self.tel.failed(_addr(peer), f"{self.pod.ip}:{INBOUND_HBONE}", "inbound", refusal)
            return 400
        assert target is not None
        src_ip = peer[0]
        rec = ConnRecord(reporter="destination", src=self.cfg.workload_by_ip(src_ip),
                         dst=self.pod, src_addr=_addr(peer),
                         dst_addr=f"{self.pod.ip}:{INBOUND_HBONE}", hbone_addr=authority,
                         src_identity=peer_identity, dst_identity=self.identity,
                         security="mutual_tls", direction="inbound",
                         dst_service=self._inbound_service(target[1], headers))
        self.tel.opened(rec)
        decision = self.policy.authorize(Connection.to_workload(src_ip, peer_identity, target[0], target[1], self.pod))
        if not decision.allowed:
            self.tel.closed(_flags(rec, "DENY"), 0, 0, error=_rejection(decision.policy))
            return 401
        try:
            up_r, up_w = await self._connect_app(src_ip, target[1])
        except (OSError, asyncio.TimeoutError) as e:
            self.tel.closed(_flags(rec, "CONNECT"), 0, 0, error=f"connection failed: {io_error(e)}")
            return 503
        r = CountingReader(up_r, self.tel.counter(rec, "sent"))
        w = CountingWriter(up_w, lambda: self.tel.closed(rec, w.count, r.count), self.tel.counter(rec, "received"))
        return r, w

    async def _inbound_plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("peername")
        dst = sockets.original_dst(writer.get_extra_info("socket"))
        if dst[1] in OWN_PORTS:
            self.tel.failed(_addr(client), _addr(dst), "inbound", "attempted recursive call to ourselves")
            writer.close()
            return
        rec = ConnRecord(reporter="destination", src=self.cfg.workload_by_ip(client[0]),
                         dst=self.pod, src_addr=_addr(client), dst_addr=_addr(dst),
                         hbone_addr=None, src_identity=None, dst_identity=self.identity,
                         security="unknown", direction="inbound",
                         dst_service=self._inbound_service(dst[1]))
        self.tel.opened(rec)
        mode = self.policy.peer_auth_mode(self.pod.namespace, self.pod.labels, dst[1])
        if mode == "STRICT":  # istiod hands ztunnel STRICT as a DENY policy
            decision_error: str | None = rejection_error(denied_by(
                self.policy.strict_policy_key(self.pod.namespace, self.pod.labels)))
        else:
            d = self.policy.authorize(Connection.to_workload(client[0], None, self.pod.ip, dst[1], self.pod))
            decision_error = None if d.allowed else _rejection(d.policy)
        if decision_error:
            self.tel.closed(_flags(rec, "DENY"), 0, 0, error=decision_error)
            _reset(writer)
            return
        try:
            up_r, up_w = await self._connect_app(client[0], dst[1])
        except (OSError, asyncio.TimeoutError) as e:  # 1.24 plaintext: no flag on a connect failure
            self.tel.closed(rec, 0, 0, error=f"connection failed: {io_error(e)}")
            _reset(writer)
            return
        down_r = CountingReader(reader, self.tel.counter(rec, "received"))
        down_w = CountingWriter(writer, on_bytes=self.tel.counter(rec, "sent"))
        err = await pipe(down_r, down_w, up_r, up_w)
        self.tel.closed(rec, down_r.count, down_w.count, error=err)


def _rejection(policy: str | None) -> str:
    """The error a policy refusal logs: the DENY policy that matched, or no ALLOW matched."""
    return rejection_error(denied_by(policy) if policy else NONE_ALLOWED)


def _bad_authority(authority: str, target: tuple[str, int] | None, pod_ip: str) -> str | None:
    """Why ztunnel answers 400 to a CONNECT, in its words; None when the target is ours."""
    if target is None:
        return f"invalid CONNECT address {authority}"
    if target[1] in OWN_PORTS:
        return "attempted recursive call to ourselves"
    if target[0] != pod_ip:
        return f"ip mismatch: {pod_ip} != {target[0]}"
    return None


def _drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close the app's connection as ztunnel does when its tunnel failed: it drops the
    socket without reading what the app sent, and Linux answers a close with unread data
    by RST (so curl exits 56, "Connection reset by peer", as on istio.io's L4-policy page).
    asyncio has already read those bytes into the StreamReader; if any wait there, reset."""
    if getattr(reader, "_buffer", b""):  # asyncio keeps no public count of buffered bytes
        _reset(writer)
    else:
        writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a refused connection looks to the client."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
    writer.transport.abort()
