"""Tuning of the h2 library for bulk tunnels: what it does per frame costs real CPU."""

from __future__ import annotations

import struct
from typing import Union

import h2.config
import h2.connection
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import DataFrame, Frame

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


Chunk = Union[bytes, memoryview]
_DATA_HEADER = struct.Struct(">BHBBL")  # 24-bit length, type, flags, stream id
_DATA, _END_STREAM = 0x0, 0x1


class TunnelH2Connection(h2.connection.H2Connection):
    """An H2Connection whose DATA payloads leave without being copied.

    Why: h2 serialises every outgoing frame into one bytearray, so each DATA payload
    was copied five times (body join, header + body, frame join, bytearray append,
    bytes() in data_to_send) before TLS read it; at bulk rates that was a fifth of the
    sending ztunnel's CPU. Here an unpadded DATA frame goes out as its 9-byte header
    plus the caller's own buffer, in order with the other frames, and `chunks_to_send()`
    stands in for `data_to_send()`. h2 still does all state and flow-control work.
    """

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self._chunks: list[Chunk] = []

    def _prepare_for_sending(self, frames: list[Frame]) -> None:
        for f in frames:
            if type(f) is not DataFrame or "PADDED" in f.flags:
                super()._prepare_for_sending([f])
                continue
            self._take_serialised()
            n = len(f.data)
            flags = _END_STREAM if "END_STREAM" in f.flags else 0
            self._chunks.append(_DATA_HEADER.pack(n >> 16, n & 0xFFFF, _DATA, flags, f.stream_id))
            if n:
                self._chunks.append(f.data)

    def _take_serialised(self) -> None:
        if self._data_to_send:
            self._chunks.append(bytes(self._data_to_send))
            self._data_to_send = bytearray()

    def chunks_to_send(self) -> list[Chunk]:
        """Everything queued, in wire order; the caller writes them (writelines)."""
        self._take_serialised()
        out, self._chunks = self._chunks, []
        return out


def tune(conn: h2.connection.H2Connection) -> None:
    """Install `_FrameBuffer`; quiet DATA frames only if h2 dispatches by class (it has since 3.0)."""
    table = getattr(conn, "_frame_dispatch_table", None)
    quiet = isinstance(table, dict) and DataFrame in table
    if quiet:
        assert isinstance(table, dict)
        table[_QuietDataFrame] = table[DataFrame]
    conn.incoming_buffer = _FrameBuffer(conn, quiet)
