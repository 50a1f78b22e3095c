"""Just enough HTTP/1.1 for the echo server and the reverse proxy.

The stdlib's http.server is thread-based and http.client blocks, and neither fits
one asyncio loop serving keep-alive connections; aiohttp would cost startup time and
a dependency. The labs need exact control anyway: the Host header must pass through
untouched (mesh-facts §10(d)), and the peer must be what the socket saw.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found",
           431: "Request Header Fields Too Large", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}

# RFC 9110 §7.6.1 hop-by-hop fields; Go's httputil.ReverseProxy drops the same list.
HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}


class BadMessage(Exception):
    """The peer sent something that is not HTTP/1.x; answer 400 and close."""


@dataclass
class Message:
    """A request (method, target) or a response (status, reason), headers in order."""

    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    method: str = ""
    target: str = ""
    status: int = 0
    reason: str = ""

    def header(self, name: str) -> str | None:
        """The field's value; repeated fields joined with ', ' (RFC 9110 §5.3)."""
        values = self.all(name)
        return ", ".join(values) if values else None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


async def _read_head(reader: asyncio.StreamReader) -> list[str] | None:
    """The start line and header lines, or None on a clean EOF between messages."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise BadMessage("connection closed inside the header") from e
    except asyncio.LimitOverrunError as e:
        raise BadMessage("header too large") from e
    lines = raw.decode("latin-1").lstrip("\r\n").split("\r\n")
    return [ln for ln in lines if ln]


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    out = []
    for ln in lines:
        name, sep, value = ln.partition(":")
        if not sep or not name or name != name.strip():
            raise BadMessage(f"bad header line {ln!r}")
        out.append((name, value.strip()))
    return out


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n")).split(b";")[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError as e:
            raise BadMessage("bad chunk size") from e
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers are dropped
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _read_body(reader: asyncio.StreamReader, msg: Message, to_eof: bool) -> bytes:
    if "chunked" in (msg.header("transfer-encoding") or "").lower():
        return await _read_chunked(reader)
    length = msg.header("content-length")
    if length is not None:
        try:
            n = int(length.split(",")[0])
        except ValueError as e:
            raise BadMessage("bad Content-Length") from e
        return await reader.readexactly(n)
    return await reader.read() if to_eof else b""


async def read_request(reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter | None = None) -> Message | None:
    """The next request on the connection, or None when the client closed it.

    With `writer`, an `Expect: 100-continue` is honoured before the body is read
    (curl waits a second for it on bodies above 1 KiB).
    """
    lines = await _read_head(reader)
    if lines is None:
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadMessage(f"bad request line {lines[0]!r}")
    msg = Message(version=parts[2], method=parts[0], target=parts[1],
                  headers=_parse_headers(lines[1:]))
    if writer is not None and (msg.header("expect") or "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    msg.body = await _read_body(reader, msg, to_eof=False)
    return msg


async def read_response(reader: asyncio.StreamReader, method: str) -> Message:
    """The final response to a request sent with `method` (1xx interim ones skipped)."""
    while True:
        lines = await _read_head(reader)
        if lines is None:
            raise BadMessage("upstream closed the connection before a response")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise BadMessage(f"bad status line {lines[0]!r}")
        msg = Message(version=version, status=int(code), reason=reason,
                      headers=_parse_headers(lines[1:]))
        if msg.status >= 200:
            break
    if method == "HEAD" or msg.status in (204, 304) or msg.status < 200:
        return msg
    msg.body = await _read_body(reader, msg, to_eof=True)
    return msg


def encode_request(msg: Message) -> bytes:
    head = [f"{msg.method} {msg.target} {msg.version}"]
    head += [f"{k}: {v}" for k, v in msg.headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + msg.body


def encode_response(status: int, headers: list[tuple[str, str]], body: bytes, *,
                    reason: str = "", keep_alive: bool = True, version: str = "HTTP/1.1",
                    head_only: bool = False) -> bytes:
    """A response framed with Content-Length, so keep-alive needs no chunking."""
    reason = reason or REASONS.get(status, "")
    declared = next((v for k, v in headers if k.lower() == "content-length"), None)
    # A HEAD answer declares the length a GET would get (a proxied HEAD has no body).
    length = declared if head_only and declared is not None else str(len(body))
    head = [f"HTTP/1.1 {status} {reason}"]
    head += [f"{k}: {v}" for k, v in headers
             if k.lower() not in ("content-length", "connection")]
    head.append(f"Content-Length: {length}")
    if not keep_alive:
        head.append("Connection: close")
    elif version == "HTTP/1.0":
        head.append("Connection: keep-alive")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    return data if head_only else data + body
