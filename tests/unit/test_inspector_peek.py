"""The listener filters' peek on a real accepted TCP socket (no root): what Envoy's
tls_inspector and http_inspector see, without consuming a byte the chain will need."""

from __future__ import annotations

import asyncio
import socket
import ssl

from netlab.dataplane.envoy import inspector

SNI = "outbound_.9090_._.prometheus.monitoring.svc.cluster.local"


def _client_hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_alpn_protocols(["istio-http/1.1", "istio", "http/1.1"])
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=SNI)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def _pair() -> tuple[socket.socket, socket.socket]:
    lsock = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(lsock.getsockname())
    server, _ = lsock.accept()
    lsock.close()
    server.setblocking(False)
    return client, server


def test_bytes_already_queued_are_inspected_and_left_in_place() -> None:
    async def go() -> tuple[inspector.Inspection, bytes]:
        client, server = _pair()
        request = b"GET / HTTP/1.1\r\nHost: prometheus:9090\r\n\r\n"
        client.sendall(request)  # queued before the peek starts, as with most clients
        seen = await inspector.peek(server, 5)
        left = server.recv(4096)
        client.close()
        server.close()
        return seen, left
    seen, left = asyncio.run(go())
    assert seen == inspector.Inspection("raw_buffer", alpn=("http/1.1",))
    assert left.startswith(b"GET / HTTP/1.1\r\n")  # the HTTP chain still gets every byte


def test_a_client_hello_in_two_segments_is_waited_for() -> None:
    async def go() -> tuple[bool, inspector.Inspection, int]:
        client, server = _pair()
        hello = _client_hello()
        client.sendall(hello[:40])
        task = asyncio.create_task(inspector.peek(server, 5))
        for _ in range(3):
            await asyncio.sleep(0)  # let the peek look at the first segment and wait for more
        waiting = not task.done()
        client.sendall(hello[40:])
        seen = await asyncio.wait_for(task, 5)
        left = len(server.recv(65536))
        client.close()
        server.close()
        return waiting, seen, left == len(hello)
    waiting, seen, whole = asyncio.run(go())
    assert waiting  # a cut ClientHello is not decided on
    assert seen.transport == "tls" and seen.sni == SNI
    assert seen.alpn == ("istio-http/1.1", "istio", "http/1.1")
    assert whole
