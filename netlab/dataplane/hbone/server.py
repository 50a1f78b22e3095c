"""ztunnel's inbound side of HBONE: TLS handshake, peer identity, CONNECT → upstream.

Two limits protect the server from a client that authenticates and then does nothing
useful:

- identity: the client certificate must carry exactly one SPIFFE workload ID of the
  trust domain (`identity.workload_identity`), so a node's bootstrap certificate is
  refused at the handshake;
- idle connections: one that carries no stream for `idle_timeout` is closed (GOAWAY,
  then TLS close). The default is ztunnel's own bound on an unused HBONE connection,
  `DEFAULT_POOL_UNUSED_RELEASE_TIMEOUT` = 5 minutes in ztunnel's src/config.rs
  (env POOL_UNUSED_RELEASE_TIMEOUT). ztunnel applies it in its client pool; its
  server (src/proxy/h2/server.rs) only drops peers that stop answering PINGs (every
  10 s, 20 s timeout, src/proxy/h2.rs), so a live peer that opens no stream is held
  there until the peer's pool releases it. Applying the same bound on the server
  side means a client that never releases (or never opens a stream at all) cannot
  hold a socket and TLS state forever.

No byte is read from an accepted connection before its TLS layer exists: the server
accepts the socket, waits for the workload's certificate (which may still be on its
way from the CA just after start), and only then hands the socket to asyncio with
`ssl=`. Creating a plain transport first and calling `start_tls` later loses the
client's ClientHello whenever the certificate wait suspends: on Python 3.11 a
`pause_reading()` in `connection_made` is undone by the reader the transport registers
right after it (CPython gh-103607, fixed in 3.12), so the hello went to the plain
protocol and the handshake hung until its timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Awaitable, Callable, Union

from h2.errors import ErrorCodes

from netlab.dataplane import identity as ident
from netlab.dataplane.hbone.conn import H2Conn
from netlab.dataplane.hbone.stream import HboneStream, relay
from netlab.dataplane.hbone.wire import maybe_await, parse_authority
from netlab.dataplane.tlsutil import MeshContext, require_alpn

log = logging.getLogger("netlab.dataplane.hbone")

Upstream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Handler = Callable[[str, dict[str, str], str, tuple[str, int]], Awaitable[Union[int, Upstream]]]
CtxProvider = Callable[[], Union[ssl.SSLContext, Awaitable[ssl.SSLContext]]]
ACCEPT_RETRY_DELAY = 1.0  # asyncio's constant for the same case (base_events)
IDLE_TIMEOUT = 300.0  # ztunnel's DEFAULT_POOL_UNUSED_RELEASE_TIMEOUT (src/config.rs): 5 minutes


class HboneServer:
    """ztunnel's inbound port 15008: answers CONNECT streams through `handler`.

    `ssl_ctx_provider()` is called per accepted connection (so a rotated cert is
    picked up by the next handshake). The handler gets (authority, extra headers,
    peer SPIFFE identity, peer address) and returns a status (400/401/503) or an
    upstream (reader, writer) that is already connected; only then is 200 sent.
    """

    def __init__(self, ssl_ctx_provider: CtxProvider, handler: Handler, *,
                 trust_domain: str | None = None, max_streams: int = 100,
                 handshake_timeout: float = 10.0, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self._ctx_provider = ssl_ctx_provider
        self._handler = handler
        self._trust_domain = trust_domain
        self._max_streams = max_streams
        self._handshake_timeout = handshake_timeout
        self._idle_timeout = idle_timeout
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._conns: set[H2Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0  # TLS connections that passed the handshake and identity checks
        self.rejected = 0  # connections refused during TLS or identity checks
        self.idle_closed = 0  # authenticated connections closed for carrying no stream

    async def start(self, sock: socket.socket) -> None:
        """Serve on an already bound, listening socket (ztunnel makes it inside the pod netns)."""
        sock.setblocking(False)
        self._listener = sock
        self._acceptor = asyncio.ensure_future(self._accept(sock))

    async def serve(self, sock: socket.socket) -> None:
        """Serve until `close()` or cancellation."""
        await self.start(sock)
        assert self._acceptor is not None
        try:
            await self._acceptor
        except asyncio.CancelledError:
            pass
        finally:
            await self.close()

    async def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.gather(self._acceptor, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        for c in list(self._conns):
            c.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(listener)
            except (ConnectionAbortedError, InterruptedError):
                continue  # the peer gave up before we accepted: nothing to serve
            except OSError as e:
                # Out of descriptors or memory: asyncio's own servers stop accepting for
                # a second in that case (ACCEPT_RETRY_DELAY); do the same, and say so.
                log.warning("HBONE accept failed: %s; retrying in %gs", e, ACCEPT_RETRY_DELAY)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            sock.setblocking(False)
            self._spawn(self._handshake(sock, (addr[0], addr[1])))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_conn(self) -> H2Conn:
        return H2Conn(client_side=False, max_streams=self._max_streams,
                      on_request=lambda s: self._spawn(self._stream(s)))

    async def _handshake(self, sock: socket.socket, peer_addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        tls: asyncio.BaseTransport | None = None
        try:
            # May wait for the CA (the first certificate of a workload just after start).
            ctx = await maybe_await(self._ctx_provider())
            td = self._trust_domain or (ident.Identity.parse(ctx.identity).trust_domain
                                        if isinstance(ctx, MeshContext) and ctx.identity else None)
            if td is None:
                raise ident.IdentityError("HboneServer needs trust_domain= or a MeshContext")
            tls, conn = await loop.connect_accepted_socket(
                self._new_conn, sock, ssl=ctx, ssl_handshake_timeout=self._handshake_timeout)
            sslobj = tls.get_extra_info("ssl_object")
            require_alpn(sslobj)
            peer = ident.verify_client_workload(sslobj, td)
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception as e:  # noqa: BLE001 - no certificate (CA refused, unreachable), TLS, identity
            self.rejected += 1
            log.info("HBONE handshake from %s refused: %s", peer_addr, f"{type(e).__name__}: {e}")
            if tls is not None:
                tls.abort()  # type: ignore[attr-defined]
            sock.close()
            return
        self.accepted += 1
        self._conns.add(conn)
        conn.start(tls, str(peer))
        try:
            await self._close_when_idle(conn)
        finally:
            self._conns.discard(conn)

    async def _close_when_idle(self, conn: H2Conn) -> None:
        """Wait for the connection to end; close it once it carried no stream for idle_timeout.

        Checked a few times per timeout (like the client pool's sweep), not timed per
        stream: a stream opened and finished between two checks still counts as use,
        because h2's highest stream id moved.
        """
        if self._idle_timeout <= 0:
            await conn.closed.wait()
            return
        loop = asyncio.get_running_loop()
        interval = min(self._idle_timeout / 4, 30.0)
        idle_since = loop.time()
        last_sid = conn.h2.highest_inbound_stream_id
        while not conn.closed.is_set():
            try:
                await asyncio.wait_for(conn.closed.wait(), interval)
                return
            except asyncio.TimeoutError:
                pass
            sid = conn.h2.highest_inbound_stream_id
            if conn.streams or sid != last_sid:
                idle_since, last_sid = loop.time(), sid
            elif loop.time() - idle_since >= self._idle_timeout:
                self.idle_closed += 1
                log.info("HBONE connection from %s (%s) carried no stream for %gs: closing",
                         conn.peer_address, conn.peer_identity, self._idle_timeout)
                conn.close()
                try:
                    await asyncio.wait_for(conn.closed.wait(), interval)
                except asyncio.TimeoutError:  # the peer never finished the TLS close
                    conn._abort()
                return

    async def _stream(self, stream: HboneStream) -> None:
        method = stream.headers.get(":method")
        target = parse_authority(stream.headers.get(":authority"))
        if method != "CONNECT" or target is None:
            self._respond(stream, 400)
            return
        extra = {k: v for k, v in stream.headers.items() if not k.startswith(":")}
        try:
            result = await self._handler(stream.headers[":authority"], extra,
                                         stream.peer_identity, stream.peer_address)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any handler failure is "no upstream"
            log.info("HBONE upstream for %s failed: %s", stream.headers.get(":authority"), e)
            result = 503
        if isinstance(result, int):
            self._respond(stream, result)
            return
        reader, writer = result
        if stream._error is not None:  # client went away while we connected
            writer.close()
            return
        self._respond(stream, 200, end=False)
        await relay(stream, reader, writer)

    @staticmethod
    def _respond(stream: HboneStream, status: int, end: bool = True) -> None:
        if stream._error is not None:
            return
        stream._conn.h2.send_headers(stream.stream_id, [(":status", str(status))], end_stream=end)
        stream._conn.flush()
        if end:
            stream._local_ended = True
            if not stream._eof:  # the client may still be sending; we will not read it
                stream.reset(ErrorCodes.NO_ERROR)
            stream._maybe_done()
