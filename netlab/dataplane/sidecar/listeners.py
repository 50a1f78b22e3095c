"""The sidecar's three bound listeners and how a connection finds its filter chain.

- `virtualOutbound` (15001, `use_original_dst`): a connection to port 15001 itself is
  black-holed; otherwise the original destination picks the listener `<ip>_<port>` or
  `0.0.0.0_<port>`, whose listener filters peek (`tls_inspector`, `http_inspector`) before a
  chain is matched; with no such listener the catch-all chain sends it to PassthroughCluster.
- `virtualInbound` (15006): peek, match on destination port, transport and ALPN. No chain
  (STRICT and plaintext) → the listener's access log gets `NR filter_chain_not_found` and
  the connection is closed: the client sees it end before any response.
- `connect_terminate` (15008): HBONE terminated by `netlab.dataplane.hbone`'s server; each
  CONNECT stream becomes a connection to the internal listener `main_internal` (a socketpair
  here), matched and served like inbound, with the peer principal from the HBONE TLS.

Listeners are plain sockets in the pod netns, IP_TRANSPARENT under TPROXY interception.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from typing import Any, Awaitable, Callable

from netlab import mesh
from netlab.dataplane import hbone
from netlab.dataplane import identity as ident
from netlab.dataplane.envoy import inspector, istio_tls
from netlab.dataplane.envoy import local_reply as lr
from netlab.dataplane.envoy.accesslog import AccessEntry
from netlab.dataplane.proxy.relay import STREAM_LIMIT
from netlab.dataplane.proxy.sockets import original_dst
from netlab.dataplane.sidecar import tcp_chain
from netlab.dataplane.sidecar.context import Direction, Downstream, Env
from netlab.dataplane.sidecar.http_chain import HttpChain
from netlab.dataplane.sidecar.routing import match_chain
from netlab.xds import CONNECT_TERMINATE, MAIN_INTERNAL, VIRTUAL_INBOUND, VIRTUAL_OUTBOUND, FilterChain, Listener

log = logging.getLogger("sidecar")
IP_TRANSPARENT = 19
INSPECT_TIMEOUT = 15.0  # Envoy's default listener_filters_timeout
HANDSHAKE_TIMEOUT = 10.0
_INSPECTORS = ("tls_inspector", "http_inspector")


def bound_socket(port: int, transparent: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if transparent:
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        s.bind(("0.0.0.0", port))
        s.listen(512)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


async def _streams(sock: socket.socket, ctx: ssl.SSLContext | None = None
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Reader and writer over an accepted socket, server-side TLS first when `ctx` is given."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_LIMIT)
    proto = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(
        lambda: proto, sock=sock, ssl=ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT if ctx else None)
    return reader, asyncio.StreamWriter(transport, proto, reader, loop)


class Listeners:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.snap = env.snap
        self.transparent = self.snap.capture == "tproxy"
        self._accepting: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sockets: list[socket.socket] = []
        self._hbone: hbone.HboneServer | None = None
        self._server_ctx: dict[tuple[int, tuple[str, ...]], ssl.SSLContext] = {}

    async def start(self) -> None:
        for name, port, handler in ((VIRTUAL_OUTBOUND, mesh.OUTBOUND_PORT, self._outbound),
                                    (VIRTUAL_INBOUND, mesh.INBOUND_PORT, self._inbound)):
            if self.snap.listener(name) is None:
                continue
            sock = bound_socket(port, self.transparent)
            self._sockets.append(sock)
            self._accepting.append(asyncio.create_task(self._accept(sock, handler)))
        if self.snap.hbone and self.snap.listener(CONNECT_TERMINATE) is not None:
            pod = self.snap.workload
            self._hbone = hbone.HboneServer(
                lambda: self.env.connector.certs.server_context(pod.namespace, pod.service_account),
                self._connect, trust_domain=self.snap.trust_domain)
            await self._hbone.start(bound_socket(mesh.HBONE_PORT, False))

    async def close(self) -> None:
        for t in self._accepting:
            t.cancel()
        for s in self._sockets:
            s.close()
        if self._hbone is not None:
            await self._hbone.close()
        for t in list(self._tasks):
            t.cancel()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _accept(self, lsock: socket.socket, handler: Callable[[socket.socket], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(lsock)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._spawn(self._guard(conn, handler))

    async def _guard(self, conn: socket.socket, handler: Callable[[socket.socket], Awaitable[None]]) -> None:
        try:
            await handler(conn)
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception:  # noqa: BLE001 - one connection must never take the sidecar down
            log.exception("connection failed")
            conn.close()

    # -- outbound -----------------------------------------------------------------------
    async def _outbound(self, conn: socket.socket) -> None:
        dst = original_dst(conn)
        client = conn.getpeername()[:2]
        virtual = self.snap.listener(VIRTUAL_OUTBOUND)
        assert virtual is not None
        listener = None if dst[1] == mesh.OUTBOUND_PORT else self.snap.outbound_listener_for(*dst)
        if listener is None:
            chain = match_chain(virtual, dst[0], dst[1], inspector.Inspection("raw_buffer"))
        else:
            seen = await self._peek(conn, listener)
            chain = match_chain(listener, dst[0], dst[1], seen)
        if chain is None:
            conn.close()
            return
        reader, writer = await _streams(conn)
        await self._run(chain, Downstream(reader, writer, "outbound", dst, client))

    async def _peek(self, conn: socket.socket, listener: Listener) -> inspector.Inspection:
        if not any(f in listener.listener_filters for f in _INSPECTORS):
            return inspector.Inspection("raw_buffer")
        return await inspector.peek(conn, INSPECT_TIMEOUT)

    async def _run(self, chain: FilterChain, down: Downstream) -> None:
        if chain.http is not None:
            await HttpChain(self.env, down, chain.http).serve()
        elif chain.tcp is not None:
            await tcp_chain.serve(self.env, down, chain.tcp, chain.metadata_exchange)
        else:
            down.writer.close()

    # -- inbound ------------------------------------------------------------------------
    async def _inbound(self, conn: socket.socket) -> None:
        dst = original_dst(conn)
        client = conn.getpeername()[:2]
        listener = self.snap.listener(VIRTUAL_INBOUND)
        assert listener is not None
        seen = await inspector.peek(conn, INSPECT_TIMEOUT)
        chain = match_chain(listener, dst[0], dst[1], seen)
        if chain is None:
            self._filter_chain_not_found(dst, client)
            conn.close()
            return
        if chain.tls is None:
            reader, writer = await _streams(conn)
            await self._run(chain, Downstream(reader, writer, "inbound", dst, client))
            return
        try:
            ctx = await self._server_context(tuple(chain.tls.alpn_protocols))
            reader, writer = await _streams(conn, ctx)
            sslobj = writer.get_extra_info("ssl_object")
            peer = istio_tls.verify_client(sslobj, self.snap.trust_domain)
        except (OSError, ssl.SSLError, ident.IdentityError, TimeoutError, ConnectionError) as e:
            log.info("inbound TLS from %s:%s refused: %s", *client, e)
            conn.close()
            return
        down = Downstream(reader, writer, "inbound", dst, client, tls=True, sni=seen.sni,
                          alpn=sslobj.selected_alpn_protocol(), peer_san=str(peer),
                          local_san=self.env.local_san, peer_cert_der=sslobj.getpeercert(True))
        await self._run(chain, down)

    async def _server_context(self, alpn: tuple[str, ...]) -> ssl.SSLContext:
        pod = self.snap.workload
        cert = await self.env.connector.certs.get(pod.namespace, pod.service_account)
        key = (cert.serial, alpn)
        if key not in self._server_ctx:
            self._server_ctx[key] = istio_tls.server_context(cert, alpn)
        return self._server_ctx[key]

    def _filter_chain_not_found(self, dst: tuple[str, int], client: tuple[str, int]) -> None:
        if self.env.access_log is None:
            return
        reply = lr.filter_chain_not_found()
        entry = AccessEntry(start=time.time(),
                            response_code=reply.status, response_flags=reply.flag_text,
                            response_code_details=reply.details,
                            downstream_local_address=f"{dst[0]}:{dst[1]}",
                            downstream_remote_address=f"{client[0]}:{client[1]}")
        self.env.access_log.write(entry.finish())

    # -- HBONE --------------------------------------------------------------------------
    async def _connect(self, authority: str, _headers: dict[str, str], peer_identity: str,
                       peer: tuple[str, int]) -> int | tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        target = hbone.parse_authority(authority)
        if target is None or target[0] != self.snap.workload.ip:
            return 400
        internal = self.snap.listener(MAIN_INTERNAL)
        if internal is None:
            return 503
        a, b = socket.socketpair()
        a.setblocking(False)
        self._spawn(self._internal(a, internal, target, peer, peer_identity))
        return await asyncio.open_connection(sock=b, limit=STREAM_LIMIT)

    async def _internal(self, sock: socket.socket, listener: Listener, target: tuple[str, int],
                        peer: tuple[str, int], peer_identity: str) -> None:
        try:
            seen = await inspector.peek(sock, INSPECT_TIMEOUT)
            chain = match_chain(listener, target[0], target[1], seen)
            if chain is None:
                self._filter_chain_not_found(target, peer)
                sock.close()
                return
            reader, writer = await _streams(sock)
            direction: Direction = "inbound"
            await self._run(chain, Downstream(reader, writer, direction, target, peer,
                                              peer_san=peer_identity, local_san=self.env.local_san,
                                              hbone=True))
        except Exception:  # noqa: BLE001
            log.exception("internal listener failed")
            sock.close()
