"""The CA answers every request once and closes it, malformed ones with a 4xx.

Issue 14 found `[]`, `"x"`, `1e999` and a 70 KB header left unanswered with their
sockets open. Checked as a client sees it: the status line it reads, then EOF.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest

from netlab.dataplane import tlsutil
from netlab.dataplane.ca import CA_ALPN, CA_PATH, CAServer, LabCA


async def _server(tmp: Path, read_timeout: float = 5.0) -> tuple[CAServer, ssl.SSLContext]:
    ca = LabCA(tmp / "ca")
    pods = tmp / "pods.json"
    pods.write_text(json.dumps({"node-1": [["default", "client"]]}))
    server = CAServer(ca, pods, read_timeout=read_timeout)
    await server.start("127.0.0.1", 0)
    cert, key = ca.issue_bootstrap("node-1")
    return server, tlsutil.mesh_client_context(cert, key, ca.root_pem, "", alpn=[CA_ALPN])


async def _exchange(server: CAServer, ctx: ssl.SSLContext, raw: bytes) -> tuple[int, bytes]:
    """Send `raw`, read to EOF: (status, everything after the status line). EOF is the close."""
    host, port = server.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=ctx)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)  # returns only at EOF: the CA closed
    finally:
        writer.close()
    head = data.split(b"\r\n", 1)
    return int(head[0].split(b" ")[1]), head[1] if len(head) > 1 else b""


def _post(body: bytes, extra: str = "") -> bytes:
    return (f"POST {CA_PATH} HTTP/1.1\r\nHost: ca\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"1e999", b"NaN", b"{}", b'{"identity": 1, "csr": "x"}',
                                  b'{"identity": "spiffe://cluster.local/ns/default/sa/client", '
                                  b'"csr": "x", "ttl_seconds": "9"}', b"\xff\xfe", b"[" * 5000])
def test_malformed_body_is_400_and_closed(tmp_path: Path, body: bytes) -> None:
    async def main() -> None:
        server, ctx = await _server(tmp_path)
        try:
            status, _ = await _exchange(server, ctx, _post(body))
            assert status == 400
        finally:
            await server.close()
    asyncio.run(main())


def test_70kb_header_is_431_and_closed(tmp_path: Path) -> None:
    async def main() -> None:
        server, ctx = await _server(tmp_path)
        try:
            status, _ = await _exchange(server, ctx, _post(b"{}", extra=f"X-Big: {'a' * 70_000}\r\n"))
            assert status == 431
        finally:
            await server.close()
    asyncio.run(main())


@pytest.mark.parametrize("raw", [b"GARBAGE\r\n\r\n", _post(b"{}").replace(b"Content-Length: 2", b"Content-Length: -2"),
                                 _post(b"{}").replace(b"Content-Length: 2", b"Content-Length: 99999999")])
def test_malformed_head_is_4xx_and_closed(tmp_path: Path, raw: bytes) -> None:
    async def main() -> None:
        server, ctx = await _server(tmp_path)
        try:
            status, _ = await _exchange(server, ctx, raw)
            assert 400 <= status < 500
        finally:
            await server.close()
    asyncio.run(main())


def test_a_client_that_stops_sending_gets_408_and_is_closed(tmp_path: Path) -> None:
    async def main() -> None:
        server, ctx = await _server(tmp_path, read_timeout=0.3)
        try:
            status, _ = await _exchange(server, ctx, _post(b'{"identity": "sp')[:-5])  # body cut short
            assert status == 408
        finally:
            await server.close()
    asyncio.run(main())
