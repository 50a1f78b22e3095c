"""Envoy's listener filters that look before a filter chain is chosen: tls_inspector and
http_inspector, on bytes peeked from the socket (nothing is consumed).

Why peek: the chosen chain may terminate TLS, and the TLS library must see the ClientHello
itself. The kernel keeps peeked bytes; `SO_RCVLOWAT` makes the socket readable again only
when *more* bytes arrive, so waiting for the rest of a ClientHello that spans segments does
not spin.

- `tls_inspector` (envoyproxy/envoy `source/extensions/filters/listener/tls_inspector`):
  the transport is `tls` when the first bytes parse as a TLS ClientHello, with the SNI and
  the ALPN list it offers; otherwise `raw_buffer`.
- `http_inspector`: on `raw_buffer`, `http/1.1` or `http/1.0` when the first line is an
  HTTP/1.x request line, `h2c` for the HTTP/2 preface; otherwise nothing (plain TCP).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass

MAX_PEEK = 16 * 1024  # a ClientHello or a request line fits (Envoy reads up to 64 KiB)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE",
            b"PATCH")


@dataclass(frozen=True)
class Inspection:
    transport: str  # "tls" or "raw_buffer"
    sni: str | None = None
    alpn: tuple[str, ...] = ()  # TLS: offered by the client; raw: what http_inspector saw


class _More(Exception):
    """The bytes so far are a prefix of what we look for: wait for more."""


def _client_hello(data: bytes) -> tuple[str | None, tuple[str, ...]]:
    """(sni, alpn) of a ClientHello record; ValueError when it is not one, _More when cut."""
    if len(data) < 5:
        if data[:1] not in (b"", b"\x16"):
            raise ValueError("not a TLS handshake record")
        raise _More
    ctype, major, _minor, length = data[0], data[1], data[2], struct.unpack("!H", data[3:5])[0]
    if ctype != 0x16 or major != 3:
        raise ValueError("not a TLS handshake record")
    if len(data) < 5 + min(length, 4):
        raise _More
    body = data[5:5 + length]
    if body[0] != 0x01:
        raise ValueError("not a ClientHello")
    if len(body) < length:
        raise _More
    hs_len = int.from_bytes(body[1:4], "big")
    msg = body[4:4 + hs_len]
    pos = 2 + 32  # client_version, random
    pos += 1 + msg[pos]  # session id
    pos += 2 + struct.unpack("!H", msg[pos:pos + 2])[0]  # cipher suites
    pos += 1 + msg[pos]  # compression methods
    sni: str | None = None
    alpn: list[str] = []
    if pos + 2 > len(msg):
        return None, ()
    end = pos + 2 + struct.unpack("!H", msg[pos:pos + 2])[0]
    pos += 2
    while pos + 4 <= end:
        etype, elen = struct.unpack("!HH", msg[pos:pos + 4])
        ext = msg[pos + 4:pos + 4 + elen]
        pos += 4 + elen
        if etype == 0 and len(ext) >= 5 and ext[2] == 0:  # server_name, host_name
            n = struct.unpack("!H", ext[3:5])[0]
            sni = ext[5:5 + n].decode("ascii", "replace")
        elif etype == 16 and len(ext) >= 2:  # application_layer_protocol_negotiation
            i = 2
            while i < len(ext):
                n = ext[i]
                alpn.append(ext[i + 1:i + 1 + n].decode("ascii", "replace"))
                i += 1 + n
    return sni, tuple(alpn)


def _http(data: bytes) -> tuple[str, ...]:
    if data.startswith(H2_PREFACE):
        return ("h2c",)
    if H2_PREFACE.startswith(data):
        raise _More
    line, sep, _ = data.partition(b"\r\n")
    if not sep:
        if len(data) < 2048 and any(m.startswith(data[:len(m)]) or data.startswith(m + b" ")
                                    for m in _METHODS):
            raise _More
        return ()
    parts = line.split(b" ")
    if len(parts) == 3 and parts[0] in _METHODS:
        if parts[2] == b"HTTP/1.1":
            return ("http/1.1",)
        if parts[2] == b"HTTP/1.0":
            return ("http/1.0",)
    return ()


def inspect(data: bytes, final: bool = False) -> Inspection | None:
    """What the listener filters conclude from `data`; None when they need more bytes.

    `final`: no more bytes will come (EOF, timeout or buffer full): decide with what there is.
    """
    try:
        sni, alpn = _client_hello(data)
        return Inspection("tls", sni, alpn)
    except _More:
        if not final:
            return None
        return Inspection("raw_buffer")
    except (ValueError, IndexError, struct.error):
        pass
    try:
        return Inspection("raw_buffer", alpn=_http(data))
    except _More:
        return None if not final else Inspection("raw_buffer")


async def peek(sock: socket.socket, timeout: float) -> Inspection:
    """Peek at an accepted socket until the inspectors decide (Envoy's listener filter timeout
    is 15 s; a client that sends nothing first is then treated as raw TCP)."""
    loop = asyncio.get_running_loop()
    have = 0
    # A client usually writes right after connecting, so its first bytes are often queued by
    # the time the connection is accepted: look before waiting (saves a loop turn and two
    # epoll_ctl calls per connection).
    first = True
    try:
        async with asyncio.timeout(timeout):
            while True:
                data = None
                if first:
                    first = False
                    try:
                        data = sock.recv(MAX_PEEK, socket.MSG_PEEK)
                    except (BlockingIOError, InterruptedError):
                        pass
                if data is None:
                    ready = loop.create_future()
                    loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
                    try:
                        await ready
                    finally:
                        loop.remove_reader(sock.fileno())
                    data = sock.recv(MAX_PEEK, socket.MSG_PEEK)
                final = not data or len(data) >= MAX_PEEK or len(data) == have
                found = inspect(data, final=final)
                if found is not None:
                    return found
                have = len(data)
                # Readable again only once more than `have` bytes are queued.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, have + 1)
    except (TimeoutError, BlockingIOError, InterruptedError):
        data = b""
        try:
            data = sock.recv(MAX_PEEK, socket.MSG_PEEK)
        except OSError:
            pass
        return inspect(data, final=True) or Inspection("raw_buffer")
    finally:
        if have:  # SO_RCVLOWAT was raised: back to the default for whoever reads next
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            except OSError:
                pass
