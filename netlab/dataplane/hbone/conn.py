"""One TLS + HTTP/2 connection (client or server side) carrying many HboneStreams."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from netlab.dataplane.hbone.frames import TunnelH2Connection, tune
from netlab.dataplane.hbone.stream import HboneStream
from netlab.dataplane.hbone.wire import CONN_WINDOW, DEFAULT_WINDOW, MAX_FRAME, STREAM_WINDOW

log = logging.getLogger("netlab.dataplane.hbone")


class H2Conn(asyncio.Protocol):
    """One TLS + HTTP/2 connection, client or server side."""

    def __init__(self, client_side: bool, on_request: Callable[[HboneStream], None] | None = None,
                 max_streams: int = 100) -> None:
        self.client_side = client_side
        self.h2 = TunnelH2Connection(h2.config.H2Configuration(
            client_side=client_side, header_encoding="utf-8"))
        tune(self.h2)
        self.streams: dict[int, HboneStream] = {}
        self.peer_identity = ""
        self.peer_address: tuple[str, int] = ("", 0)
        self.transport: asyncio.BaseTransport | None = None
        self.closed = asyncio.Event()
        self.goaway = False
        self._on_request = on_request
        self._max_streams = max_streams
        self._early: list[bytes] = []
        self._ready = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._flush_pending = False

    # --- lifecycle -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Client side: the plain TCP transport, until the pool layers TLS on with start_tls.
        # Server side: the TLS transport, handshake done (HboneServer wraps the accepted
        # socket only once it holds a certificate); the peer's h2 preface may arrive before
        # its identity is checked, and waits in `_early` until `start`.
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_address = (peer[0], peer[1])

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
        chunks = self.h2.chunks_to_send()
        if chunks and self.transport is not None and not self.transport.is_closing():
            # One writelines: the TLS transport encrypts the list in one pass, one send().
            self.transport.writelines(chunks)  # type: ignore[attr-defined]

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
