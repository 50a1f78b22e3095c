"""ztunnel's node-side admin ports: 15020 (Prometheus metrics) and 15021 (readiness).

Both are bound in the process's own netns, which is the node's: `netlab metrics`
scrapes 15020 from there, as Prometheus scrapes a ztunnel pod on the host network.
"""

from __future__ import annotations

import asyncio
import socket

from netlab.dataplane import telemetry


def _listen(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    s.setblocking(False)
    return s


def serve_metrics(port: int, tel: telemetry.ZtunnelTelemetry) -> asyncio.Task[None]:
    return asyncio.create_task(tel.serve_metrics(_listen(port)))


async def serve_readiness(port: int) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nready\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, sock=_listen(port))
