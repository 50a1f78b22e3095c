"""ztunnel's outbound side of HBONE: pooled TLS+h2 connections, one stream per tunnel."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Awaitable, Callable, Union

from h2.errors import ErrorCodes

from netlab.dataplane import identity as ident
from netlab.dataplane.hbone.conn import H2Conn
from netlab.dataplane.hbone.stream import HboneStream
from netlab.dataplane.hbone.wire import HboneError, maybe_await
from netlab.dataplane.tlsutil import require_alpn

log = logging.getLogger("netlab.dataplane.hbone")

PoolKey = tuple[str, str, str, int]
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

    `idle_timeout` is ztunnel's `pool_unused_release_timeout` (POOL_UNUSED_RELEASE_TIMEOUT,
    default 5 min): a connection that carries no stream for that long is closed (GOAWAY)
    and dropped, so idle peers do not hold sockets and TLS state forever. `<= 0` disables.
    """

    def __init__(self, ctx_provider: ClientCtxProvider, *, sock_factory: SockFactory | None = None,
                 max_streams: int = 100, connect_timeout: float = 10.0,
                 idle_timeout: float = 300.0) -> None:
        self._ctx_provider = ctx_provider
        self._sock_factory = sock_factory or _default_sock
        self._max_streams = max_streams
        self._timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._pools: dict[PoolKey, list[H2Conn]] = {}
        self._locks: dict[PoolKey, asyncio.Lock] = {}
        # conn -> (idle since, or None while busy; h2's highest stream id at the last sweep)
        self._idle: dict[H2Conn, tuple[float | None, int]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.dialled = 0

    def connections(self) -> int:
        return sum(1 for conns in self._pools.values() for c in conns if not c.closed.is_set())

    async def connect(self, dst_addr: tuple[str, int], authority: str, src_identity: str,
                      dst_identity: str, headers: dict[str, str] | None = None) -> HboneStream:
        """Open one tunnel; raises HboneError(status) unless the server answers 200."""
        src = ident.Identity.parse(src_identity)
        ident.require_workload(src)
        key = (src_identity, dst_identity, dst_addr[0], dst_addr[1])
        hdrs = [(":method", "CONNECT"), (":authority", authority)]
        hdrs += [(k.lower(), v) for k, v in (headers or {}).items()]
        if self._idle_timeout > 0 and (self._sweeper is None or self._sweeper.done()):
            self._sweeper = asyncio.ensure_future(self._sweep())
        while True:
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                if self._locks.get(key) is not lock:
                    continue  # the sweeper retired this key while we waited: queue on the new lock
                conns = [c for c in self._pools.get(key, []) if not c.closed.is_set()]
                conn = next((c for c in conns if c.capacity(self._max_streams)), None)
                if conn is None:
                    conn = await asyncio.wait_for(self._dial(dst_addr, src_identity, dst_identity),
                                                  self._timeout)
                    conns.append(conn)
                self._pools[key] = conns
                stream = conn.open_stream(hdrs)
                break
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

    async def _sweep(self) -> None:
        """Close connections idle for `idle_timeout`; exits once the pool is empty.

        Polls (4 times per timeout, at most every 30 s) rather than timing each
        connection: cheap, and closing up to two intervals late does not matter.
        """
        interval = min(self._idle_timeout / 4, 30.0)
        loop = asyncio.get_running_loop()
        while self._pools or self._locks:
            await asyncio.sleep(interval)
            try:
                self._sweep_once(loop.time())
            except Exception:  # noqa: BLE001 - a bug here must not stop later sweeps
                log.exception("HBONE pool idle sweep failed")

    def _sweep_once(self, now: float) -> None:
        """One pass, synchronous so that no `connect` runs in between.

        A key whose lock is held is skipped: a `connect` is choosing or dialling a
        connection there (and holds its own copy of the list). Otherwise closing here
        cannot race a `connect`: whoever takes the lock next reads the pruned list.
        """
        for key in list(self._locks.keys() | self._pools.keys()):
            lock = self._locks.get(key)
            if lock is not None and lock.locked():
                continue
            keep: list[H2Conn] = []
            for c in self._pools.get(key, []):
                if c.closed.is_set():
                    self._idle.pop(c, None)
                elif self._expired(c, now):
                    self._idle.pop(c, None)
                    log.debug("HBONE pool: closing connection to %s idle for %.1fs",
                              c.peer_address, self._idle_timeout)
                    c.close()  # sends GOAWAY; dropped now, so no later connect picks it
                else:
                    keep.append(c)
            if keep:
                self._pools[key] = keep
            else:
                # Nobody holds the lock; a connect woken on it but not yet running sees
                # the key retired and retries on a fresh lock.
                self._pools.pop(key, None)
                self._locks.pop(key, None)
        for c in [c for c in self._idle if c.closed.is_set()]:  # e.g. dropped by connect
            del self._idle[c]

    def _expired(self, conn: H2Conn, now: float) -> bool:
        """Track when `conn` went idle; a stream opened since the last sweep counts as use."""
        since, last_sid = self._idle.get(conn, (None, -1))
        sid = conn.h2.highest_outbound_stream_id
        if conn.streams:
            self._idle[conn] = (None, sid)
            return False
        if since is None or sid != last_sid:
            self._idle[conn] = (now, sid)
            return False
        return now - since >= self._idle_timeout

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
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for conns in self._pools.values():
            for c in conns:
                c.close()
        await asyncio.gather(*(c.closed.wait() for conns in self._pools.values() for c in conns))
        self._pools.clear()
        self._locks.clear()
        self._idle.clear()
