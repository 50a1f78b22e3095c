"""One tunnelled TCP connection: an HTTP/2 stream read and written like a socket."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

import h2.exceptions
from h2.errors import ErrorCodes

from netlab.dataplane.hbone.wire import RELAY_CHUNK

if TYPE_CHECKING:
    from netlab.dataplane.hbone.conn import H2Conn

log = logging.getLogger("netlab.dataplane.hbone")


class HboneStream:
    """One tunnelled TCP connection: a duplex byte stream over one h2 stream."""

    def __init__(self, conn: "H2Conn", stream_id: int) -> None:
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

    # --- fed by H2Conn -------------------------------------------------

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
