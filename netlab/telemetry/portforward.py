"""`netlab port-forward`: a lab's service on the host's loopback, as `kubectl port-forward` does.

A userspace relay, nothing else: one listening TCP socket on the host's 127.0.0.1 (never
0.0.0.0), and for each connection accepted there, an upstream socket *created inside the
lab's netns* and connected to the service. No veth, route, address or rule is added to
the host's namespace, so when the command ends (Ctrl-C), the listening socket closes and
the host is as it was.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Callable

from netlab.errors import NetlabError
from netlab.kernel import netns as nsmod

LOOPBACK = "127.0.0.1"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Upstream:
    """Where a forward goes: an address as seen from inside `netns`."""

    netns: str
    host: str
    port: int


def listen(local_port: int, host: str = LOOPBACK) -> socket.socket:
    """The one host-side object: a listening socket on loopback (0 picks a free port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, local_port))
    except OSError as e:
        s.close()
        raise NetlabError(f"cannot listen on {host}:{local_port}: {e.strerror}; "
                          "pick another local port (0 picks a free one)") from None
    s.listen(64)
    s.setblocking(False)
    return s


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _relay(upstream: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_connection: Callable[[], None]) -> None:
    on_connection()
    with nsmod.entered(upstream.netns):  # the socket stays in the lab's netns
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (upstream.host, upstream.port))
        up_r, up_w = await asyncio.open_connection(sock=sock)
    except OSError:
        sock.close()
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
    finally:
        up_w.close()
        writer.close()


async def serve(sock: socket.socket, upstream: Upstream,
                on_connection: Callable[[], None] = lambda: None) -> None:
    """Relay every connection accepted on `sock` to `upstream` until cancelled."""
    server = await asyncio.start_server(
        lambda r, w: _relay(upstream, r, w, on_connection), sock=sock)
    async with server:
        await server.serve_forever()


def run(sock: socket.socket, upstream: Upstream, on_connection: Callable[[], None] = lambda: None) -> None:
    """Serve until Ctrl-C (KeyboardInterrupt propagates to the caller); always close the socket."""
    try:
        asyncio.run(serve(sock, upstream, on_connection))
    finally:
        sock.close()


TARGETS = ("prometheus",)


def target(lab: str, name: str) -> Upstream:
    """The upstream a `port-forward` target name stands for in `lab`."""
    from netlab.telemetry.promclient import Prometheus

    if name in ("prometheus", "svc/prometheus"):
        p = Prometheus.of_lab(lab)
        return Upstream(p.netns, p.host, p.port)
    raise NetlabError(f"netlab cannot forward {name!r}; targets: {', '.join(TARGETS)}")
