"""netlab.dataplane.http1 on 127.0.0.1 TCP, with raw bytes on the other end (no root).

Raw bytes rather than an HTTP client, so each test states exactly what is on the wire.
TCP rather than a socketpair, because the lingering-close test depends on TCP's reset.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Awaitable, Callable

import pytest

from netlab.dataplane import http1

Respond = Callable[[http1.Request], Awaitable[http1.Response]]


async def _ok(req: http1.Request) -> http1.Response:
    """Reply with what the server saw, so a test can check parsing through the reply."""
    return http1.Response(200, [("X-Method", req.method), ("X-Target", req.target)],
                          req.body or str(req.body_size).encode())


def served(data: bytes, respond: Respond = _ok, half_close: bool = True,
           **kwargs: bool) -> tuple[bytes, list[http1.HttpError], list[http1.Request]]:
    """Send `data` to http1.serve; return all the server wrote until it closed."""
    async def go() -> tuple[bytes, list[http1.HttpError], list[http1.Request]]:
        bad: list[http1.HttpError] = []
        seen: list[http1.Request] = []

        async def recording(req: http1.Request) -> http1.Response:
            seen.append(req)
            return await respond(req)

        async def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await http1.serve(r, w, recording, bad.append, **kwargs)
            finally:
                w.close()

        server = await asyncio.start_server(conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            await writer.drain()
            if half_close:
                writer.write_eof()
            out = await asyncio.wait_for(reader.read(), 5)  # up to the server's close
            writer.close()
        return out, bad, seen
    return asyncio.run(go())


def test_keep_alive_serves_requests_in_order_with_content_length_bodies() -> None:
    out, bad, seen = served(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
                            b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    assert bad == []
    assert [(r.method, r.target, r.body) for r in seen] == [("GET", "/a?x=1", b""),
                                                            ("POST", "/b", b"hello")]
    first, second = out.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert b"X-Target: /a?x=1\r\nContent-Length: 1\r\n\r\n0" in first
    assert second.endswith(b"Content-Length: 5\r\n\r\nhello")
    assert b"Connection: close" not in out  # HTTP/1.1 stays open until the client ends it


def test_chunked_request_body_is_read_whole_and_trailers_dropped() -> None:
    _, _, seen = served(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert seen[0].body == b"abcdefg" and seen[0].body_size == 7


def test_discarded_body_is_still_counted() -> None:
    out, _, seen = served(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd",
                          keep_body=False)
    assert seen[0].body == b"" and seen[0].body_size == 4
    assert out.endswith(b"\r\n\r\n4")


def test_expect_100_continue_is_answered_before_the_final_response() -> None:
    out, _, seen = served(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                          b"Content-Length: 2\r\n\r\nhi")
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert seen[0].body == b"hi"


def test_connection_close_is_honoured() -> None:
    out, _, seen = served(b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
                          b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n", half_close=False)
    assert [r.target for r in seen] == ["/1"]
    assert out.count(b"HTTP/1.1 200") == 1 and b"Connection: close\r\n" in out


def test_http10_gets_one_response_then_close_even_when_asking_keep_alive() -> None:
    # h11 does not keep HTTP/1.0 connections open (docs/apps.md says so).
    out, _, seen = served(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", half_close=False)
    assert seen[0].http_version == "1.0" and seen[0].header("host") is None
    assert b"Connection: close\r\n" in out


@pytest.mark.parametrize("data", [b"NOT HTTP\r\n\r\n",
                                  b"GET / HTTP/1.1\r\n\r\n",  # 1.1 without Host
                                  b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
                                  b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
                                  b"GET / HTTP/1.1\r\nHo"])  # EOF inside the head
def test_malformed_input_gets_400_and_close(data: bytes) -> None:
    out, bad, seen = served(data)
    assert out == b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert seen == [] and [e.status for e in bad] == [400]


def test_oversized_head_gets_431_even_while_the_client_is_still_sending() -> None:
    # The client does not half-close: the 431 must survive the server's close (linger).
    out, bad, _ = served(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n",
                         half_close=False)
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert [e.status for e in bad] == [431]


def test_declared_body_over_the_limit_gets_413_without_reading_it() -> None:
    big = http1.MAX_BODY + 1
    out, bad, _ = served(f"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {big}\r\n\r\n"
                         .encode() + b"x" * 1000, half_close=False)
    assert out.startswith(b"HTTP/1.1 413 ")
    assert [e.status for e in bad] == [413]


def test_head_reply_declares_the_get_length_and_sends_no_body() -> None:
    async def relayed(req: http1.Request) -> http1.Response:
        return http1.Response(200, [("Content-Length", "1234")], b"")  # a proxied HEAD

    out, _, _ = served(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", respond=relayed)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    out, _, _ = served(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert out.endswith(b"Content-Length: 1\r\n\r\n")  # len(body) of the GET, body unsent


def test_response_framing_headers_from_the_caller_are_replaced() -> None:
    async def sloppy(req: http1.Request) -> http1.Response:
        return http1.Response(200, [("Transfer-Encoding", "chunked"), ("Content-Length", "9"),
                                    ("Connection", "keep-alive")], b"abc")
    out, _, _ = served(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", respond=sloppy)
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"


def test_header_names_keep_their_case_and_obs_text_values_survive() -> None:
    _, _, seen = served(b"GET / HTTP/1.1\r\nHost: h\r\nX-MiXed: caf\xe9\r\nx-mixed: 2\r\n\r\n")
    assert ("X-MiXed", "caf\xe9") in seen[0].headers
    assert seen[0].header("x-mixed") == "caf\xe9, 2"


def test_end_to_end_drops_hop_by_hop_and_what_connection_names() -> None:
    req = http1.Request("GET", "/", [("Host", "h"), ("Connection", "close, X-Secret"),
                                     ("X-Secret", "1"), ("Keep-Alive", "5"), ("TE", "x"),
                                     ("Transfer-Encoding", "chunked"), ("Accept", "*/*")])
    assert req.end_to_end() == [("Host", "h"), ("Accept", "*/*")]


# The client side, against an upstream that writes canned bytes.

def exchanged(req: http1.Request, reply: bytes) -> tuple[bytes, http1.Response]:
    """Send `req` with ClientConnection to a server that answers `reply` and closes."""
    async def go() -> tuple[bytes, http1.Response]:
        got = asyncio.get_running_loop().create_future()

        async def upstream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            head = await r.readuntil(b"\r\n\r\n")
            length = [int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                      if ln.lower().startswith(b"content-length:")]
            got.set_result(head + (await r.readexactly(length[0]) if length else b""))
            w.write(reply)
            await w.drain()
            w.close()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1])
            try:
                conn = http1.ClientConnection(reader, writer)
                await conn.send_request(req)
                resp = await asyncio.wait_for(conn.read_response(), 5)
            finally:
                writer.close()
        return await got, resp
    return asyncio.run(go())


def test_client_frames_the_body_and_skips_interim_responses() -> None:
    sent, resp = exchanged(
        http1.Request("POST", "/q", [("Host", "up"), ("Content-Length", "99"),
                                     ("Transfer-Encoding", "chunked")], b"abc"),
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Made It\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert sent == b"POST /q HTTP/1.1\r\nHost: up\r\nContent-Length: 3\r\n\r\nabc"
    assert (resp.status, resp.reason, resp.body) == (201, "Made It", b"ok")


def test_client_sends_content_length_0_for_an_empty_post() -> None:
    sent, _ = exchanged(http1.Request("POST", "/", [("Host", "up")]),
                        b"HTTP/1.1 204 No Content\r\n\r\n")
    assert b"\r\nContent-Length: 0\r\n" in sent


def test_client_reads_a_body_delimited_by_close() -> None:
    _, resp = exchanged(http1.Request("GET", "/", [("Host", "up")]),
                        b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
    assert resp.body == b"until the end" and resp.http_version == "1.0"


@pytest.mark.parametrize("reply, why", [
    (b"", "closed the connection before a response"),
    (b"HTTP/1.1 200 OK\r\nConte", "closed the connection before a response"),
    (b"SSH-2.0-x\r\n\r\n", "illegal status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", "without sending complete message body"),
])
def test_client_raises_502_on_no_or_a_broken_response(reply: bytes, why: str) -> None:
    with pytest.raises(http1.HttpError, match=why) as err:
        exchanged(http1.Request("GET", "/", [("Host", "up")]), reply)
    assert err.value.status == 502


def _data_segs_out(sock: socket.socket) -> int:
    """Linux's tcp_info.tcpi_data_segs_out: TCP segments carrying data this socket sent."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    return struct.unpack_from("I", info, 156)[0]


def test_a_response_with_its_body_leaves_as_one_tcp_segment() -> None:
    """Head and body in one write: one segment (one TLS record on mTLS) and one wake-up of
    the reader, not two; through a chain of proxies each extra one is paid at every hop."""
    async def go() -> tuple[int, bytes]:
        segs: list[int] = []

        async def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            server = http1.ServerConnection(r, w)
            await server.read_request()
            sock = w.get_extra_info("socket")
            before = _data_segs_out(sock)
            await server.send_response(http1.Response(200, [("Content-Type", "text/plain")],
                                                      b"x" * 500))
            segs.append(_data_segs_out(sock) - before)
            w.close()

        server = await asyncio.start_server(conn, "127.0.0.1", 0)  # TCP_NODELAY on accept
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            out = await asyncio.wait_for(reader.read(), 5)
            writer.close()
        return segs[0], out
    segs, out = asyncio.run(go())
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\n" + b"x" * 500)
    assert segs == 1
