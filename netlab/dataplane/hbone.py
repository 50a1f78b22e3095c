"""HBONE: TCP tunnelled as HTTP/2 CONNECT streams over mutual TLS (mesh-facts §3, §4).

One `_H2Conn` (an asyncio Protocol) carries one TLS+h2 connection for either
side; each proxied TCP connection is one `HboneStream` on it. Why a Protocol and
not StreamReader/Writer: h2 is event driven, so feeding it straight from
`data_received` avoids a reader task per connection and a copy per read.

Flow control: received DATA is acknowledged when the *application* reads it, so a
slow consumer throttles the sender through h2 windows instead of buffering without
bound. Windows are large (8 MiB per stream, 16 MiB per connection) and frames up to
256 KiB, so bulk transfers are not limited by round trips or by per-frame work.

Where this differs from ztunnel: no idle-timeout or connection draining in the pool,
no PROXY-protocol or double-HBONE, and the pool key also includes the destination
port (always 15008 in a lab; it keeps loopback tests with ephemeral ports apart).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections import deque
from typing import Awaitable, Callable, Union

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import DataFrame, Frame

from netlab.dataplane import identity as ident
from netlab.dataplane.tlsutil import MeshContext, require_alpn

log = logging.getLogger(__name__)

STREAM_WINDOW = 8 << 20
CONN_WINDOW = 16 << 20
# 64 KiB: big enough that per-frame Python work is small, small enough that every
# buffer h2 allocates per frame stays under glibc's mmap threshold (128 KiB); above
# it each frame costs fresh pages and page faults, and throughput falls by ~5x.
MAX_FRAME = 64 << 10
RELAY_CHUNK = 64 << 10
DEFAULT_WINDOW = 65535

Upstream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Handler = Callable[[str, dict[str, str], str, tuple[str, int]], Awaitable[Union[int, Upstream]]]
CtxProvider = Callable[[], Union[ssl.SSLContext, Awaitable[ssl.SSLContext]]]
ClientCtxProvider = Callable[[str], Union[ssl.SSLContext, Awaitable[ssl.SSLContext]]]
SockFactory = Callable[[tuple[str, int]], socket.socket]


class HboneError(Exception):
    """The HBONE server answered something other than 200 (or the tunnel broke)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"HBONE CONNECT answered {status}")
        self.status = status


async def _maybe_await(x: ssl.SSLContext | Awaitable[ssl.SSLContext]) -> ssl.SSLContext:
    return x if isinstance(x, ssl.SSLContext) else await x


def parse_authority(authority: str | None) -> tuple[str, int] | None:
    """`ip:port` or `[ip6]:port` → (ip, port); anything else (names included) → None."""
    if not authority:
        return None
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6 and not authority.startswith("["):
        return None
    return str(ip), int(port)


def make_headers(forwarded_for: tuple[str, int] | None = None, baggage: dict[str, str] | None = None,
                 traceparent: str | None = None) -> dict[str, str]:
    """The optional HBONE request headers of §4, shaped like ztunnel's."""
    out: dict[str, str] = {}
    if forwarded_for:
        ip, port = forwarded_for
        host = f"[{ip}]" if ":" in ip else ip
        out["forwarded"] = f'for="{host}:{port}"'
    if baggage:
        out["baggage"] = ",".join(f"{k}={v}" for k, v in baggage.items())
    if traceparent:
        out["traceparent"] = traceparent
    return out


class _QuietDataFrame(DataFrame):
    """A DataFrame whose repr does not hex-dump the payload.

    h2 evaluates `repr(frame)` for a trace log on every received frame even when
    logging is off, and DataFrame's repr serialises and hexlifies the whole body:
    about a sixth of the CPU of a bulk transfer. Only the repr changes.
    """

    def _body_repr(self) -> str:
        return f"<{len(self.data)} bytes>"


class _FrameBuffer(FrameBuffer):
    """h2's frame buffer with two fixes for bulk transfer.

    1. The frame-size limit is read live from the connection. h2 copies it into the
       buffer once per `receive_data`, so a SETTINGS ACK that raises MAX_FRAME_SIZE and
       a large DATA frame arriving in the same read were refused as "overlong".
    2. DATA frames become `_QuietDataFrame` when the connection can dispatch them.
    """

    def __init__(self, conn: h2.connection.H2Connection, quiet: bool) -> None:
        super().__init__(server=not conn.config.client_side)
        self._conn = conn
        self._quiet = quiet

    @property  # type: ignore[override]
    def max_frame_size(self) -> int:
        return self._conn.max_inbound_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int) -> None:
        pass  # always the connection's current (acknowledged) value

    def __next__(self) -> Frame:
        f = super().__next__()
        if self._quiet and type(f) is DataFrame:
            f.__class__ = _QuietDataFrame
        return f


def _tune(conn: h2.connection.H2Connection) -> None:
    """Install `_FrameBuffer`; quiet DATA frames only if h2 dispatches by class (it has since 3.0)."""
    table = getattr(conn, "_frame_dispatch_table", None)
    quiet = isinstance(table, dict) and DataFrame in table
    if quiet:
        assert isinstance(table, dict)
        table[_QuietDataFrame] = table[DataFrame]
    conn.incoming_buffer = _FrameBuffer(conn, quiet)


class HboneStream:
    """One tunnelled TCP connection: a duplex byte stream over one h2 stream."""

    def __init__(self, conn: "_H2Conn", stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.headers: dict[str, str] = {}  # request headers (server) or response headers (client)
        self.status: int | None = None
        self._buf: deque[tuple[bytes, int]] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._closed = asyncio.Event()
        self._response: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._eof = False
        self._local_ended = False
        self._error: BaseException | None = None

    @property
    def peer_identity(self) -> str:
        return self._conn.peer_identity

    @property
    def peer_address(self) -> tuple[str, int]:
        return self._conn.peer_address

    def at_eof(self) -> bool:
        return self._eof and not self._buf

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (all buffered if n < 0); b"" once the peer sent END_STREAM."""
        while not self._buf:
            if self._error:
                raise self._error
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        limit = n if n >= 0 else 1 << 62
        out: list[bytes] = []
        total = acked = 0
        while self._buf and total < limit:
            data, flow = self._buf[0]
            if total + len(data) <= limit:
                self._buf.popleft()
                out.append(data)
                total += len(data)
            else:
                take = limit - total
                out.append(data[:take])
                self._buf[0] = (data[take:], 0)
                total = limit
            acked += flow
        self._conn.ack(self.stream_id, acked)
        return out[0] if len(out) == 1 else b"".join(out)

    async def readexactly(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            chunk = await self.read(n - got)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send, waiting for the peer's flow-control window; returns once handed to TLS."""
        if self._local_ended:
            raise ConnectionError("write after write_eof")
        view = memoryview(data)
        h2c = self._conn.h2
        while view:
            if self._error:
                raise self._error
            try:
                window = h2c.local_flow_control_window(self.stream_id)
            except (h2.exceptions.StreamClosedError, KeyError):
                raise ConnectionResetError("HBONE stream closed") from None
            if window <= 0:
                self._conn.flush()
                self._writable.clear()
                await self._writable.wait()
                continue
            n = min(len(view), window, h2c.max_outbound_frame_size)
            h2c.send_data(self.stream_id, view[:n])
            self._conn.flush()
            view = view[n:]
        self._conn.flush()
        await self._conn.drain()

    async def drain(self) -> None:
        await self._conn.drain()

    def write_eof(self) -> None:
        """Half-close: send END_STREAM; reading continues until the peer's END_STREAM."""
        if self._local_ended or self._error:
            return
        self._local_ended = True
        try:
            self._conn.h2.end_stream(self.stream_id)
        except h2.exceptions.StreamClosedError:
            pass
        self._conn.flush()
        self._maybe_done()

    def reset(self, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        """Abort with RST_STREAM; both directions stop."""
        if self._closed.is_set():
            return
        try:
            self._conn.h2.reset_stream(self.stream_id, code)
            self._conn.flush()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        self._fail(ConnectionResetError(f"HBONE stream reset locally ({code.name})"))

    def close(self) -> None:
        """Done with the stream: end our side; if the peer has not finished, reset."""
        self.write_eof()
        if not self._eof:
            self.reset(ErrorCodes.CANCEL)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # --- fed by _H2Conn -------------------------------------------------

    def _feed(self, data: bytes, flow: int) -> None:
        if self._error:
            self._conn.ack(self.stream_id, flow)
            return
        self._buf.append((data, flow))
        self._readable.set()

    def _feed_eof(self) -> None:
        self._eof = True
        self._readable.set()
        self._maybe_done()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._buf.clear()
        for ev in (self._readable, self._writable):
            ev.set()
        if not self._response.done():
            self._response.set_exception(exc)
            self._response.exception()  # mark retrieved: server streams never await it
        self._finish()

    def _maybe_done(self) -> None:
        if self._eof and self._local_ended:
            self._finish()

    def _finish(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._conn.stream_done(self.stream_id)


class _H2Conn(asyncio.Protocol):
    """One TLS + HTTP/2 connection, client or server side."""

    def __init__(self, client_side: bool, on_request: Callable[[HboneStream], None] | None = None,
                 max_streams: int = 100, on_made: Callable[["_H2Conn"], None] | None = None) -> None:
        self.client_side = client_side
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=client_side, header_encoding="utf-8"))
        _tune(self.h2)
        self.streams: dict[int, HboneStream] = {}
        self.peer_identity = ""
        self.peer_address: tuple[str, int] = ("", 0)
        self.transport: asyncio.BaseTransport | None = None
        self.closed = asyncio.Event()
        self.goaway = False
        self._on_request = on_request
        self._on_made = on_made
        self._max_streams = max_streams
        self._early: list[bytes] = []
        self._ready = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._flush_pending = False

    # --- lifecycle -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The plain TCP transport: hold reads until TLS is layered on by start_tls.
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_address = (peer[0], peer[1])
        if not self.client_side:
            transport.pause_reading()  # type: ignore[attr-defined]
        if self._on_made:
            self._on_made(self)

    def start(self, tls_transport: asyncio.BaseTransport, peer_identity: str) -> None:
        """TLS is up and the peer checked: speak h2, then replay anything that came early."""
        self.transport = tls_transport
        self.peer_identity = peer_identity
        self.h2.initiate_connection()
        self.h2.update_settings({
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self._max_streams,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        self.h2.increment_flow_control_window(CONN_WINDOW - DEFAULT_WINDOW)
        self._ready = True
        self.flush()
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if not self._ready:
            self._early.append(data)
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            log.warning("HBONE h2 protocol error from %s: %s", self.peer_address, e)
            self.flush_now()  # the GOAWAY h2 queued, before the abort
            self._abort()
            return
        for ev in events:
            self._dispatch(ev)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        err = ConnectionResetError(f"HBONE connection lost: {exc or 'closed by peer'}")
        for s in list(self.streams.values()):
            s._fail(err)
        self._can_write.set()
        self.closed.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # --- helpers used by streams ---------------------------------------

    def flush(self) -> None:
        """Send what h2 has queued, once per event-loop turn.

        Why deferred: a stream's HEADERS, DATA and END_STREAM, or a WINDOW_UPDATE and
        the DATA it unblocks, are often queued in the same turn; writing them together
        makes one TLS record and one send() instead of one each, which is most of the
        per-connection cost of a Python proxy.
        """
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush_now)

    def flush_now(self) -> None:
        self._flush_pending = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)  # type: ignore[attr-defined]

    async def drain(self) -> None:
        if not self._can_write.is_set():
            await self._can_write.wait()
        if self.closed.is_set():
            raise ConnectionResetError("HBONE connection closed")

    def ack(self, stream_id: int, flow: int) -> None:
        if flow and not self.closed.is_set():
            self.h2.acknowledge_received_data(flow, stream_id)
            self.flush()

    def stream_done(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if self.goaway and not self.streams:
            self.close()

    def open_stream(self, headers: list[tuple[str, str]]) -> HboneStream:
        sid = self.h2.get_next_available_stream_id()
        stream = HboneStream(self, sid)
        self.streams[sid] = stream
        self.h2.send_headers(sid, headers)
        self.flush()
        return stream

    def capacity(self, limit: int) -> bool:
        peer_max = self.h2.remote_settings.max_concurrent_streams
        return (not self.goaway and not self.closed.is_set()
                and len(self.streams) < min(limit, peer_max))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.h2.close_connection()
                self.flush_now()  # before close(): GOAWAY must precede close_notify
            except h2.exceptions.ProtocolError:
                pass
            self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]

    # --- h2 events -------------------------------------------------------

    def _dispatch(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.DataReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s._feed(ev.data, ev.flow_controlled_length)
            else:
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.WindowUpdated):
            targets = self.streams.values() if ev.stream_id == 0 else \
                [self.streams[ev.stream_id]] if ev.stream_id in self.streams else []
            for s in targets:
                s._writable.set()
        elif isinstance(ev, h2.events.StreamEnded):
            if ev.stream_id in self.streams:
                self.streams[ev.stream_id]._feed_eof()
        elif isinstance(ev, h2.events.StreamReset):
            if ev.stream_id in self.streams:
                self.streams[ev.stream_id]._fail(
                    ConnectionResetError(f"HBONE stream reset by peer ({ev.error_code!s})"))
        elif isinstance(ev, h2.events.RequestReceived):
            s = HboneStream(self, ev.stream_id)
            s.headers = dict(ev.headers)  # type: ignore[arg-type]
            self.streams[ev.stream_id] = s
            if self._on_request:
                self._on_request(s)
        elif isinstance(ev, h2.events.ResponseReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.headers = dict(ev.headers)  # type: ignore[arg-type]
                s.status = int(s.headers.get(":status", "0"))
                if not s._response.done():
                    s._response.set_result(s.status)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            for s in self.streams.values():
                s._writable.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = True
            last = ev.last_stream_id if ev.last_stream_id is not None else 0
            for sid, s in list(self.streams.items()):
                if sid > last:
                    s._fail(ConnectionResetError("HBONE connection got GOAWAY"))
            if not self.streams:
                self.close()


async def relay(stream: HboneStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy both ways until both sides sent EOF; an error in either resets the stream."""

    async def to_upstream() -> None:
        while data := await stream.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def to_stream() -> None:
        while data := await reader.read(RELAY_CHUNK):
            await stream.write(data)
        stream.write_eof()

    tasks = [asyncio.create_task(to_upstream()), asyncio.create_task(to_stream())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            t.result()  # re-raise the first failure
        await asyncio.gather(*tasks)
    except Exception as e:  # noqa: BLE001 - any failure in either direction aborts both
        log.debug("HBONE relay on stream %d ended with %s", stream.stream_id, e)
        stream.reset(ErrorCodes.CONNECT_ERROR)
        writer.transport.abort()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()


class HboneServer:
    """ztunnel's inbound port 15008: answers CONNECT streams through `handler`.

    `ssl_ctx_provider()` is called per accepted connection (so a rotated cert is
    picked up by the next handshake). The handler gets (authority, extra headers,
    peer SPIFFE identity, peer address) and returns a status (400/401/503) or an
    upstream (reader, writer) that is already connected; only then is 200 sent.
    """

    def __init__(self, ssl_ctx_provider: CtxProvider, handler: Handler, *,
                 trust_domain: str | None = None, max_streams: int = 100,
                 handshake_timeout: float = 10.0) -> None:
        self._ctx_provider = ssl_ctx_provider
        self._handler = handler
        self._trust_domain = trust_domain
        self._max_streams = max_streams
        self._handshake_timeout = handshake_timeout
        self._server: asyncio.Server | None = None
        self._conns: set[_H2Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0  # TLS connections that passed the handshake and identity checks
        self.rejected = 0  # connections refused during TLS or identity checks

    async def start(self, sock: socket.socket) -> None:
        """Serve on an already bound, listening socket (ztunnel makes it inside the pod netns)."""
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_conn, sock=sock)

    async def serve(self, sock: socket.socket) -> None:
        """Serve until `close()` or cancellation."""
        await self.start(sock)
        assert self._server is not None
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            pass
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_conn(self) -> _H2Conn:
        return _H2Conn(client_side=False, max_streams=self._max_streams,
                       on_request=lambda s: self._spawn(self._stream(s)),
                       on_made=lambda c: self._spawn(self._handshake(c)))

    async def _handshake(self, conn: _H2Conn) -> None:
        loop = asyncio.get_running_loop()
        raw = conn.transport
        assert raw is not None
        try:
            ctx = await _maybe_await(self._ctx_provider())
            td = self._trust_domain or (ident.Identity.parse(ctx.identity).trust_domain
                                        if isinstance(ctx, MeshContext) and ctx.identity else None)
            if td is None:
                raise ident.IdentityError("HboneServer needs trust_domain= or a MeshContext")
            tls = await loop.start_tls(raw, conn, ctx, server_side=True,
                                       ssl_handshake_timeout=self._handshake_timeout)
            assert tls is not None
            sslobj = tls.get_extra_info("ssl_object")
            require_alpn(sslobj)
            peer = ident.verify_client_trust_domain(sslobj, td)
        except (OSError, ssl.SSLError, ident.IdentityError, asyncio.TimeoutError, ConnectionError) as e:
            self.rejected += 1
            log.info("HBONE handshake from %s refused: %s", conn.peer_address, e)
            raw.abort()  # type: ignore[attr-defined]
            return
        self.accepted += 1
        self._conns.add(conn)
        conn.start(tls, str(peer))
        await conn.closed.wait()
        self._conns.discard(conn)

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
        self._pools: dict[tuple[str, str, str, int], list[_H2Conn]] = {}
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

    async def _dial(self, dst: tuple[str, int], src_identity: str, dst_identity: str) -> _H2Conn:
        loop = asyncio.get_running_loop()
        ctx = await _maybe_await(self._ctx_provider(src_identity))
        sock = self._sock_factory(dst)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, dst)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw, conn = await loop.create_connection(
                lambda: _H2Conn(client_side=True, max_streams=self._max_streams), sock=sock)
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
