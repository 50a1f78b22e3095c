"""A proxy's admin ports: 15020 (Prometheus metrics), 15021 (readiness), 15000 (JSON dumps).

Both are bound in the process's own netns (ztunnel's is the node's): `netlab metrics`
scrapes 15020 from there, as Prometheus scrapes a ztunnel pod on the host network.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Callable, Union

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# What /metrics serves: a prometheus_client registry (Prometheus text), or a function
# giving (Content-Type, body) for proxies with an exposition of their own (ztunnel's
# OpenMetrics).
Exposition = Callable[[], tuple[str, bytes]]
MetricsSource = Union[CollectorRegistry, Exposition]


def _exposition(source: MetricsSource) -> Exposition:
    if isinstance(source, CollectorRegistry):
        return lambda: (CONTENT_TYPE_LATEST, generate_latest(source))
    return source


def listen(port: int, backlog: int = 128) -> socket.socket:
    """A listener on 0.0.0.0:port in the process's own netns (a node's, or a proxy pod's own).

    IPPROTO_TCP, not 0, so asyncio sets TCP_NODELAY on the accepted sockets."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(backlog)
    s.setblocking(False)
    return s


def serve_metrics(port: int, registry: MetricsSource) -> asyncio.Task[None]:
    """Serve `/metrics` of `registry` on `port` until the task is cancelled."""
    return asyncio.create_task(metrics_server(registry, listen(port)))


async def metrics_server(registry: MetricsSource, sock: socket.socket) -> None:
    """A minimal HTTP/1.1 server for GET/HEAD /metrics (one request per connection)."""
    sock.setblocking(False)
    render = _exposition(registry)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, target = (head.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""])[:2]
            path = target.split("?", 1)[0]
            if method in ("GET", "HEAD") and path in ("/metrics", "/stats/prometheus"):
                ctype, body = render()
                status = "200 OK"
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            hdr = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                   "Connection: close\r\n\r\n").encode()
            writer.write(hdr + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


async def serve_readiness(port: int) -> asyncio.AbstractServer:
    """Answer 200 `ready` to any request: a proxy serves this port only once it is ready."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nready\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, sock=listen(port))


# What the admin port serves: path -> a function giving the JSON body (bytes).
AdminRoutes = dict[str, Callable[[], bytes]]


async def serve_admin(port: int, routes: AdminRoutes, host: str = "127.0.0.1") -> asyncio.AbstractServer:
    """Serve GET `routes` as JSON on `host:port` (ztunnel's admin port: localhost only, as
    real ztunnel binds it), one request per connection; 404 for any other path."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            method, target = (head.split(b"\r\n", 1)[0].decode("latin-1").split(" ") + ["", ""])[:2]
            route = routes.get(target.split("?", 1)[0]) if method == "GET" else None
            status, body = ("200 OK", route()) if route else ("404 Not Found", b'{"error": "not found"}')
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)
    s.setblocking(False)
    return await asyncio.start_server(handle, sock=s)
