"""Byte-counting relays with half-close: every proxy's metrics need bytes each way per connection.

`pipe` copies between two plain connections. `hbone.relay` moves the bytes for HBONE
streams; it sees an upstream as a (reader, writer) pair, so wrapping that pair is how
the counts (and the moment the connection ends) reach telemetry without touching the
HBONE module.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

CHUNK = 256 << 10
# StreamReader's buffer limit for app-side sockets. At the default (64 KiB) a reader
# pauses the transport at 128 KiB and resumes it after each read: two epoll_ctl calls
# per chunk at bulk rates. 1 MiB lets a 256 KiB read never trip it.
STREAM_LIMIT = 1 << 20


class CountingReader:
    """A StreamReader look-alike; `on_bytes(n)`, when given, hears each chunk as it is read
    (ztunnel's byte metrics grow while a connection lives, not at its end)."""

    def __init__(self, reader: asyncio.StreamReader, on_bytes: Callable[[int], None] | None = None) -> None:
        self._r = reader
        self._on_bytes = on_bytes
        self.count = 0

    async def read(self, n: int = -1) -> bytes:
        data = await self._r.read(n)
        self.count += len(data)
        if data and self._on_bytes:
            self._on_bytes(len(data))
        return data


class CountingWriter:
    """A StreamWriter look-alike; `on_close` runs once, when the relay lets go of it;
    `on_bytes(n)`, when given, hears each chunk as it is written."""

    def __init__(self, writer: asyncio.StreamWriter, on_close: Callable[[], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self._w = writer
        self._on_close = on_close
        self._on_bytes = on_bytes
        self.count = 0

    @property
    def transport(self) -> Any:
        return self._w.transport

    def write(self, data: bytes) -> None:
        self.count += len(data)
        self._w.write(data)
        if data and self._on_bytes:
            self._on_bytes(len(data))

    async def drain(self) -> None:
        await self._w.drain()

    def can_write_eof(self) -> bool:
        return self._w.can_write_eof() and not self._w.transport.is_closing()

    def write_eof(self) -> None:
        try:
            self._w.write_eof()
        except (OSError, RuntimeError):
            pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._w.get_extra_info(name, default)

    def close(self) -> None:
        self._w.close()
        cb, self._on_close = self._on_close, None
        if cb:
            cb()


async def pipe(down_r: CountingReader, down_w: CountingWriter,
               up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> str | None:
    """Copy both ways with half-close; returns an error text if a side broke."""
    error: list[str] = []

    async def copy(r: Any, w: Any) -> None:
        try:
            while data := await r.read(CHUNK):
                w.write(data)
                await w.drain()
            if w.can_write_eof():
                w.write_eof()
        except (OSError, asyncio.IncompleteReadError) as e:
            error.append(str(e))
            w.transport.abort()

    try:
        await asyncio.gather(copy(down_r, up_w), copy(up_r, down_w))
    finally:
        up_w.close()
        down_w.close()
    return error[0] if error else None
