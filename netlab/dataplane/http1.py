"""HTTP/1.1 messages over asyncio streams, parsed and framed by h11.

h11 is a sans-IO state machine: it never touches a socket, it only turns bytes into
events and events into bytes. This module is the I/O half that drives it from an
asyncio StreamReader/StreamWriter pair, so one event loop can serve many keep-alive
connections. The built-in apps use it now; the sidecar and the waypoint will parse
HTTP/1.1 with the same code, so a fact such as "which headers are hop-by-hop" or
"how big a head may be" is decided here once.

Messages are read whole (head and body, bounded by MAX_BODY) because every user so far
decides on the complete request, and responses are always framed with Content-Length
(docs/apps.md), never chunked.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Awaitable, Callable, Iterable

import h11

# A head (start line + headers) still incomplete after MAX_HEAD buffered bytes gets 431.
# h11 checks only while the head is incomplete, so one read (READ_SIZE) of slack remains.
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024  # a kept body beyond this gets 413 (discarded bodies are unbounded)
READ_SIZE = 64 * 1024
# After an error reply, what is still coming from the client is read and dropped for at
# most this long (or this much), so that closing does not reset the reply away.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024
# A message up to this size is handed to the transport in one write (see _Connection._send);
# above it, head and body go apart, so a large body is not copied just to be joined.
COALESCE_MAX = 64 * 1024

# RFC 9110 §7.6.1 hop-by-hop fields; Go's httputil.ReverseProxy drops the same list.
HOP_BY_HOP = frozenset({"connection", "proxy-connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"})
# Framing is this module's job: callers' values for these are replaced.
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

Header = tuple[str, str]


class HttpError(Exception):
    """The peer broke HTTP/1.1 or a limit; `status` is what a server should answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Fields:
    """Header look-ups shared by requests and responses (names compare case-insensitively)."""

    headers: list[Header]

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def header(self, name: str) -> str | None:
        """The field's value; repeated fields joined with ', ' (RFC 9110 §5.3)."""
        values = self.all(name)
        return ", ".join(values) if values else None

    def connection_tokens(self) -> set[str]:
        """Lower-cased tokens of Connection: the extra fields it makes hop-by-hop."""
        return {t.strip().lower() for t in (self.header("connection") or "").split(",")
                if t.strip()}

    def end_to_end(self) -> list[Header]:
        """The headers a proxy forwards: without hop-by-hop ones and those Connection names."""
        drop = HOP_BY_HOP | self.connection_tokens()
        return [(k, v) for k, v in self.headers if k.lower() not in drop]


@dataclass
class Request(_Fields):
    method: str
    target: str  # as sent on the request line, query included
    headers: list[Header] = field(default_factory=list)  # names keep the sender's case
    body: bytes = b""
    body_size: int = 0  # bytes received, counted even when the body was discarded
    http_version: str = "1.1"


@dataclass
class Response(_Fields):
    status: int
    headers: list[Header] = field(default_factory=list)
    body: bytes = b""
    reason: str = ""  # empty: the standard phrase for `status`
    http_version: str = "1.1"


def _decode(event: h11.Request | h11.Response) -> list[Header]:
    # Raw names keep the sender's case; latin-1 maps every byte to one character, so
    # obs-text values survive the round trip through _encode.
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]


def _encode(headers: Iterable[Header]) -> list[tuple[bytes, bytes]]:
    # h11 would encode str as ASCII and fail on obs-text; latin-1 undoes _decode.
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _framed(headers: list[Header], length: int | str | None) -> list[Header]:
    out = [(k, v) for k, v in headers if k.lower() not in _FRAMING]
    if length is not None:
        out.append(("Content-Length", str(length)))
    return out


class _Connection:
    """What both sides share: pull events out of h11, push events through it."""

    def __init__(self, role: type[h11.CLIENT] | type[h11.SERVER],
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_head: int = MAX_HEAD) -> None:
        self.h11 = h11.Connection(role, max_incomplete_event_size=max_head)
        self.reader = reader
        self.writer = writer
        self.eof = False  # the peer closed its side

    async def _event(self) -> h11.Event:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as e:
                raise HttpError(str(e), e.error_status_hint) from e
            if event is h11.PAUSED:
                raise RuntimeError("h11 paused: the previous exchange was not finished")
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            # b"" at EOF tells h11 the peer closed; it then decides if that was clean.
            data = await self.reader.read(READ_SIZE)
            self.eof = not data
            self.h11.receive_data(data)

    async def _send(self, *events: h11.Event) -> None:
        """Serialize `events` and hand them to the transport as ONE write.

        One write per message, not one per event: a head and its body written apart are two
        send() calls, two TCP segments (two TLS records on mTLS) and usually two wake-ups
        of the reader, which through a chain of proxies adds up to most of their latency.
        """
        parts: list[bytes] = []
        for event in events:
            try:
                data = self.h11.send(event)
            except h11.LocalProtocolError as e:
                if parts:  # what was valid still goes out, as when each event was written alone
                    self.writer.write(b"".join(parts))
                raise HttpError(f"cannot send: {e}", 500) from e
            if data:
                parts.append(data)
        if len(parts) == 1 or sum(map(len, parts)) > COALESCE_MAX:
            for data in parts:  # a big body fills whole segments anyway: no copy
                self.writer.write(data)
        elif parts:
            self.writer.write(b"".join(parts))
        await self.writer.drain()

    async def _body(self, keep: bool, limit: int) -> tuple[bytes, int]:
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if keep:
                    if size > limit:
                        raise HttpError(f"body larger than {limit} bytes", 413)
                    parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts), size  # trailers are dropped
            else:
                raise HttpError(f"unexpected {type(event).__name__} inside a body")


class ServerConnection(_Connection):
    """The server side: read requests, answer each, keep the connection while both may."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_head: int = MAX_HEAD) -> None:
        super().__init__(h11.SERVER, reader, writer, max_head)
        self._method = ""

    async def read_request(self, keep_body: bool = True,
                           max_body: int = MAX_BODY) -> Request | None:
        """The next request, or None when the client closed between requests.

        `Expect: 100-continue` is answered before the body is read (curl waits a second
        for it on bodies above 1 KiB). With keep_body=False the body is only counted.
        """
        event = await self._event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise HttpError(f"expected a request, got {type(event).__name__}")
        req = Request(method=event.method.decode("latin-1"),
                      target=event.target.decode("latin-1"), headers=_decode(event),
                      http_version=event.http_version.decode("ascii"))
        self._method = req.method
        declared = req.header("content-length")
        if keep_body and declared is not None and declared.isdigit() and int(declared) > max_body:
            raise HttpError(f"body larger than {max_body} bytes", 413)
        if self.h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[],
                                                    reason=b"Continue"))
        req.body, req.body_size = await self._body(keep_body, max_body)
        return req

    async def send_response(self, resp: Response, close: bool = False) -> bool:
        """Send `resp` with Content-Length framing; True if another request may follow.

        A HEAD answer declares the length a GET would get: the caller's Content-Length
        if it has one (a proxy relaying an upstream HEAD), else len(body). h11 adds
        `Connection: close` itself when the client asked for it or spoke HTTP/1.0.
        """
        head_only = self._method == "HEAD" or resp.status in (204, 304)
        declared = resp.header("content-length")
        length: int | str | None
        if resp.status == 204:
            length = None  # RFC 9110 §8.6: a 204 never carries Content-Length
        elif head_only and declared is not None:
            length = declared  # the length a GET would get, as the upstream declared it
        elif resp.status == 304:
            length = None
        else:
            length = len(resp.body)
        headers = _framed([(k, v) for k, v in resp.headers if k.lower() != "connection"],
                          length)
        if close:
            headers.append(("Connection", "close"))
        events: list[h11.Event] = [h11.Response(
            status_code=resp.status, headers=_encode(headers),
            reason=(resp.reason or _phrase(resp.status)).encode("latin-1"))]
        if resp.body and not head_only:
            events.append(h11.Data(data=resp.body))
        events.append(h11.EndOfMessage())
        await self._send(*events)
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False  # MUST_CLOSE, or the client's body was never read

    async def send_error(self, status: int) -> None:
        """Answer input that could not be read as a request; the caller then closes."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is already under way: closing is all that is left
        await self._send(
            h11.Response(status_code=status, reason=_phrase(status).encode("latin-1"),
                         headers=[(b"Content-Length", b"0"), (b"Connection", b"close")]),
            h11.EndOfMessage())

    async def linger(self) -> None:
        """Half-close, then drop what the client still sends until it closes (bounded).

        Closing a socket with unread bytes makes the kernel send RST, and a client that
        is still sending (a head over the limit, say) would then lose the error reply it
        has not read yet: RFC 9112 §9.6 calls for this "lingering close".
        """
        if self.writer.can_write_eof():
            self.writer.write_eof()

        async def drop_input() -> None:
            dropped = 0
            while dropped < LINGER_BYTES and (chunk := await self.reader.read(READ_SIZE)):
                dropped += len(chunk)
        try:
            await asyncio.wait_for(drop_input(), LINGER_SECONDS)
        except (TimeoutError, ConnectionError):
            pass


class ClientConnection(_Connection):
    """The client side: one request, then its final response (1xx interim ones skipped)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_head: int = MAX_HEAD) -> None:
        super().__init__(h11.CLIENT, reader, writer, max_head)
        self._got_head = False

    async def send_request(self, req: Request) -> None:
        """Send `req` framed by Content-Length (also `0` for an empty POST, PUT or PATCH)."""
        length = len(req.body) if req.body or req.method in _BODY_METHODS else None
        events: list[h11.Event] = [h11.Request(
            method=req.method.encode("latin-1"), target=req.target.encode("latin-1"),
            headers=_encode(_framed(req.headers, length)))]
        if req.body:
            events.append(h11.Data(data=req.body))
        events.append(h11.EndOfMessage())
        await self._send(*events)

    async def read_response(self, keep_body: bool = True,
                            max_body: int = MAX_BODY) -> Response:
        """The final response; a body without framing is read until the server closes.

        Every failure is an HttpError with status 502: to whoever relays this response,
        a broken upstream is a bad gateway whatever h11's hint for a server would be.
        """
        try:
            return await self._read_response(keep_body, max_body)
        except HttpError as e:
            if self.eof and not self._got_head:
                # h11 words an early close as a state error; say what happened.
                raise HttpError("closed the connection before a response", 502) from e
            raise HttpError(str(e), 502) from e

    async def _read_response(self, keep_body: bool, max_body: int) -> Response:
        while True:
            event = await self._event()
            if isinstance(event, h11.Response):
                self._got_head = True
                break
            if not isinstance(event, h11.InformationalResponse):
                raise HttpError(f"expected a response, got {type(event).__name__}")
        resp = Response(status=event.status_code, headers=_decode(event),
                        reason=event.reason.decode("latin-1"),
                        http_version=event.http_version.decode("ascii"))
        resp.body, _ = await self._body(keep_body, max_body)
        return resp


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


Respond = Callable[[Request], Awaitable[Response]]


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                respond: Respond, on_bad: Callable[[HttpError], None], *,
                keep_body: bool = True) -> None:
    """Answer requests on one connection until either side ends it.

    Input that is not HTTP/1.1 (or breaks a limit) is handed to `on_bad`, answered with
    its HttpError.status (400, 413 or 431) and `Connection: close`, and ends the connection.
    """
    conn = ServerConnection(reader, writer)
    while True:
        try:
            req = await conn.read_request(keep_body=keep_body)
        except HttpError as e:
            on_bad(e)
            await conn.send_error(e.status)
            await conn.linger()
            return
        if req is None or not await conn.send_response(await respond(req)):
            return
