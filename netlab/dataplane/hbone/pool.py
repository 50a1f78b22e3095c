"""ztunnel's outbound side of HBONE: pooled TLS+h2 connections, one stream per tunnel."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Awaitable, Callable, Union

from h2.errors import ErrorCodes

from netlab.dataplane import identity as ident
from netlab.dataplane.hbone.conn import H2Conn
from netlab.dataplane.hbone.stream import HboneStream
from netlab.dataplane.hbone.wire import HboneError, maybe_await
from netlab.dataplane.tlsutil import require_alpn

ClientCtxProvider = Callable[[str], Union[ssl.SSLContext, Awaitable[ssl.SSLContext]]]
SockFactory = Callable[[tuple[str, int]], socket.socket]


def _default_sock(dst: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in dst[0] else socket.AF_INET
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)


class HbonePool:
    """ztunnel's outbound HBONE pool: connections keyed by {src id, dst id, dst IP(:port)}.

    `ctx_provider(src_identity)` returns the client SSLContext for that source
    workload; `sock_factory(dst)` returns an unconnected socket (ztunnel sets
    SO_MARK 0x539 on it). A connection carries up to `max_streams` streams, then
    another one is dialled.
    """

    def __init__(self, ctx_provider: ClientCtxProvider, *, sock_factory: SockFactory | None = None,
                 max_streams: int = 100, connect_timeout: float = 10.0) -> None:
        self._ctx_provider = ctx_provider
        self._sock_factory = sock_factory or _default_sock
        self._max_streams = max_streams
        self._timeout = connect_timeout
        self._pools: dict[tuple[str, str, str, int], list[H2Conn]] = {}
        self._locks: dict[tuple[str, str, str, int], asyncio.Lock] = {}
        self.dialled = 0

    def connections(self) -> int:
        return sum(1 for conns in self._pools.values() for c in conns if not c.closed.is_set())

    async def connect(self, dst_addr: tuple[str, int], authority: str, src_identity: str,
                      dst_identity: str, headers: dict[str, str] | None = None) -> HboneStream:
        """Open one tunnel; raises HboneError(status) unless the server answers 200."""
        src = ident.Identity.parse(src_identity)
        ident.require_workload(src)
        key = (src_identity, dst_identity, dst_addr[0], dst_addr[1])
        lock = self._locks.setdefault(key, asyncio.Lock())
        hdrs = [(":method", "CONNECT"), (":authority", authority)]
        hdrs += [(k.lower(), v) for k, v in (headers or {}).items()]
        async with lock:
            conns = [c for c in self._pools.get(key, []) if not c.closed.is_set()]
            conn = next((c for c in conns if c.capacity(self._max_streams)), None)
            if conn is None:
                conn = await asyncio.wait_for(self._dial(dst_addr, src_identity, dst_identity),
                                              self._timeout)
                conns.append(conn)
            self._pools[key] = conns
            stream = conn.open_stream(hdrs)
        try:
            # asyncio.timeout, not wait_for: wait_for wraps the await in a new Task, a
            # measurable share of a warm-pool connection's latency.
            async with asyncio.timeout(self._timeout):
                status = await asyncio.shield(stream._response)
        except BaseException:
            stream.reset(ErrorCodes.CANCEL)
            raise
        if status != 200:
            stream.close()
            raise HboneError(status)
        return stream

    async def _dial(self, dst: tuple[str, int], src_identity: str, dst_identity: str) -> H2Conn:
        loop = asyncio.get_running_loop()
        ctx = await maybe_await(self._ctx_provider(src_identity))
        sock = self._sock_factory(dst)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, dst)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw, conn = await loop.create_connection(
                lambda: H2Conn(client_side=True, max_streams=self._max_streams), sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            tls = await loop.start_tls(raw, conn, ctx, server_side=False, server_hostname=None,
                                       ssl_handshake_timeout=self._timeout)
            assert tls is not None
            sslobj = tls.get_extra_info("ssl_object")
            require_alpn(sslobj)
            ident.verify_server_identity(sslobj, dst_identity)
        except BaseException:
            raw.abort()
            raise
        self.dialled += 1
        conn.start(tls, dst_identity)
        return conn

    async def close(self) -> None:
        for conns in self._pools.values():
            for c in conns:
                c.close()
        await asyncio.gather(*(c.closed.wait() for conns in self._pools.values() for c in conns))
        self._pools.clear()
