"""Built-in images on 127.0.0.1, driven by the stdlib's own HTTP client (no root).

The servers run on an event loop in a background thread, so the blocking clients
(http.client, socket) exercise them exactly as an outside program would.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Awaitable, Callable, Iterator

import pytest

from netlab.dataplane.apps import http_echo, reverse_proxy, tcp_echo
from netlab.dataplane.apps._serve import Listeners


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.started: list[Listeners] = []

    def start(self, make: Callable[[], Awaitable[Listeners]]) -> Listeners:
        async def go() -> Listeners:
            return await make()
        listeners = asyncio.run_coroutine_threadsafe(go(), self.loop).result(5)
        self.started.append(listeners)
        return listeners

    def stop(self) -> None:
        for listeners in self.started:
            asyncio.run_coroutine_threadsafe(listeners.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    try:
        yield lp
    finally:
        lp.stop()


def get(port: int, path: str = "/", host: str | None = None,
        method: str = "GET", body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"Host": host} if host else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def echo(loop: Loop, name: str = "e") -> int:
    return loop.start(lambda: http_echo.serve([0], name, "127.0.0.1")).port()


def test_http_echo_reports_method_host_path_and_socket_peer(loop: Loop) -> None:
    port = echo(loop, "echo-1")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/a/b?x=1", body=b"hello", headers={"Host": "svc.ns:8080",
                                                                  "X-Test": "yes"})
        resp = conn.getresponse()
        got = json.loads(resp.read())
        client = conn.sock.getsockname()
    finally:
        conn.close()
    assert resp.status == 200
    assert got["method"] == "POST"
    assert got["host"] == "svc.ns:8080"
    assert got["path"] == "/a/b?x=1"
    assert got["server"] == "echo-1"
    assert got["peer"] == f"{client[0]}:{client[1]}"
    assert resp.getheader("X-Echo-Peer") == got["peer"]
    assert got["headers"]["x-test"] == "yes"


def test_http_echo_keep_alive_serves_two_requests_on_one_connection(loop: Loop) -> None:
    port = echo(loop)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        peers = []
        for path in ("/one", "/two"):
            conn.request("GET", path)
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert body["path"] == path
            assert resp.getheader("Connection") is None  # HTTP/1.1: open by default
            peers.append(body["peer"])
    finally:
        conn.close()
    assert peers[0] == peers[1]  # same source port: the same TCP connection


def test_http_echo_closes_when_asked(loop: Loop) -> None:
    port = echo(loop)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):  # ends because the server closes
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in data


def test_http_echo_answers_400_to_garbage(loop: Loop) -> None:
    port = echo(loop)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"NOT HTTP\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")


def test_http_echo_json_has_exactly_the_documented_fields(loop: Loop) -> None:
    port = echo(loop, "exact")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PUT /p?q=1 HTTP/1.1\r\nHost: h:1\r\nX-Dup: a\r\nx-dup: b\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  b"4\r\nbody\r\n0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        client = "%s:%d" % s.getsockname()
    head, _, body = data.partition(b"\r\n\r\n")
    assert json.loads(body) == {
        "method": "PUT", "host": "h:1", "path": "/p?q=1", "peer": client,
        "local": f"127.0.0.1:{port}", "server": "exact",
        "headers": {"host": "h:1", "x-dup": "a, b", "transfer-encoding": "chunked",
                    "connection": "close"}}
    assert b"\r\nContent-Type: application/json\r\n" in head
    assert f"\r\nContent-Length: {len(body)}\r\n".encode() in head  # never chunked


def test_http_echo_head_has_the_get_headers_and_no_body(loop: Loop) -> None:
    port = echo(loop)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:  # one connection, so the echoed peer is the same for both requests
        conn.request("GET", "/same")
        got = conn.getresponse()
        get_body = got.read()
        conn.request("HEAD", "/same")
        head = conn.getresponse()
        assert head.read() == b"" and head.status == 200
    finally:
        conn.close()
    assert head.getheader("Content-Type") == got.getheader("Content-Type")
    # The JSON the GET would get, with "HEAD" in place of "GET": one byte longer.
    assert int(head.getheader("Content-Length")) == len(get_body) + 1


def test_http_echo_answers_expect_100_continue_before_reading_the_body(loop: Loop) -> None:
    port = echo(loop)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 3\r\nConnection: close\r\n\r\n")
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"  # the body is not sent yet
        s.sendall(b"abc")
        assert s.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")


def test_tcp_echo_half_close_gets_everything_then_eof(loop: Loop) -> None:
    port = loop.start(lambda: tcp_echo.serve([0], "B|", "127.0.0.1")).port()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"ping")
        first = s.recv(4096)
        s.sendall(b"pong")
        s.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := s.recv(4096):
            rest += chunk
    assert first == b"B|ping"
    assert rest == b"B|pong"


def proxied(loop: Loop, rewrite: str | None, upstream_port: int) -> int:
    return loop.start(lambda: reverse_proxy.serve(
        [0], f"http://127.0.0.1:{upstream_port}", rewrite, "127.0.0.1")).port()


def test_reverse_proxy_keeps_host_by_default(loop: Loop) -> None:
    upstream = echo(loop, "upstream")
    proxy = proxied(loop, None, upstream)
    status, headers, body = get(proxy, "/api/v1/query?q=up", host="prometheus.monitoring:9090")
    seen = json.loads(body)
    assert status == 200
    assert seen["server"] == "upstream"
    assert seen["host"] == "prometheus.monitoring:9090"  # istio#55472: Host not rewritten
    assert seen["path"] == "/api/v1/query?q=up"
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert "X-Echo-Peer" in headers  # upstream headers come back


def test_reverse_proxy_rewrites_host_with_flag(loop: Loop) -> None:
    upstream = echo(loop, "upstream")
    proxy = proxied(loop, "thanos-querier.monitoring.svc:9091", upstream)
    status, _, body = get(proxy, "/", host="prometheus.monitoring:9090", method="POST",
                          body=b"q=1")
    seen = json.loads(body)
    assert status == 200
    assert seen["host"] == "thanos-querier.monitoring.svc:9091"
    assert seen["method"] == "POST"
    assert seen["headers"]["content-length"] == "3"


def test_reverse_proxy_appends_to_x_forwarded_for(loop: Loop) -> None:
    upstream = echo(loop)
    proxy = proxied(loop, None, upstream)
    conn = http.client.HTTPConnection("127.0.0.1", proxy, timeout=5)
    try:
        conn.request("GET", "/", headers={"X-Forwarded-For": "10.0.0.9"})
        seen = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert seen["headers"]["x-forwarded-for"] == "10.0.0.9, 127.0.0.1"


def test_reverse_proxy_answers_502_when_upstream_is_dead(loop: Loop) -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    proxy = proxied(loop, None, dead)
    status, _, body = get(proxy, "/")
    assert status == 502
    assert body == b""


def test_reverse_proxy_answers_502_when_upstream_closes_without_a_response(
        loop: Loop) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async def start() -> asyncio.Server:
        return await asyncio.start_server(hang_up, "127.0.0.1", 0)
    upstream = asyncio.run_coroutine_threadsafe(start(), loop.loop).result(5)
    try:
        status, _, body = get(proxied(loop, None, upstream.sockets[0].getsockname()[1]), "/")
    finally:
        loop.loop.call_soon_threadsafe(upstream.close)
    assert (status, body) == (502, b"")


def test_reverse_proxy_drops_hop_by_hop_headers_going_up(loop: Loop) -> None:
    proxy = proxied(loop, None, echo(loop))
    with socket.create_connection(("127.0.0.1", proxy), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
                  b"Keep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\n"
                  b"X-Kept: 2\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    seen = json.loads(data.partition(b"\r\n\r\n")[2])["headers"]
    assert seen == {"host": "h", "x-kept": "2", "x-forwarded-for": "127.0.0.1"}


def test_reverse_proxy_answers_400_to_garbage(loop: Loop) -> None:
    proxy = proxied(loop, None, echo(loop))
    with socket.create_connection(("127.0.0.1", proxy), timeout=5) as s:
        s.sendall(b"\x16\x03\x01 not http\r\n\r\n")  # a TLS hello sent to plain HTTP
        assert s.recv(4096).startswith(b"HTTP/1.1 400 ")


def test_reverse_proxy_resolves_the_upstream_name_per_request(loop: Loop) -> None:
    upstream = echo(loop, "by-name")
    proxy = loop.start(lambda: reverse_proxy.serve(
        [0], f"http://localhost:{upstream}", None, "127.0.0.1")).port()
    status, _, body = get(proxy, "/")
    assert status == 200 and json.loads(body)["server"] == "by-name"


def test_reverse_proxy_head_keeps_the_upstream_length(loop: Loop) -> None:
    proxy = proxied(loop, None, echo(loop))
    _, head, empty = get(proxy, "/h", host="h", method="HEAD")
    assert empty == b""
    # The echo's would-be body, not the 0 bytes the proxy actually received.
    assert int(head["Content-Length"]) > 100


def test_upstream_path_is_joined_like_go() -> None:
    up = reverse_proxy.Upstream.parse("http://u:9090/base/")
    assert up.target("/x?y=1") == "/base/x?y=1"
    assert reverse_proxy.Upstream.parse("http://u").target("/x") == "/x"
    assert up.authority() == "u:9090"


def run_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "netlab.dataplane.apps", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def ready_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else ""
    return json.loads(line)


@pytest.mark.parametrize("image", ["http-echo", "sleep"])
def test_cli_logs_json_and_stops_cleanly_on_sigterm(image: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [image] + (["--port", str(port), "--listen", "127.0.0.1", "--name", "cli"]
                      if image == "http-echo" else [])
    proc = run_cli(*args)
    try:
        ready = ready_line(proc)
        assert ready["ready"] is True and ready["image"] == image
        if image == "http-echo":
            assert ready["listen"] == [f"127.0.0.1:{port}"]
            get(port, "/logged")
            assert proc.stdout is not None
            entry = json.loads(proc.stdout.readline())
            assert entry["path"] == "/logged" and entry["status"] == 200
            assert entry["peer"].startswith("127.0.0.1:") and "ts" in entry
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
