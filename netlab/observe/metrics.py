"""Scrape a proxy's Prometheus endpoint from inside the namespace it listens in.

Why from inside: ztunnel serves :15020 in its node netns, where a Prometheus on the
host network of a real node would find it; the socket is created in that netns and
used from here, so no process is forked per scrape.
"""

from __future__ import annotations

import socket

from netlab.errors import NetlabError
from netlab.kernel import netns as nsmod
from netlab.mesh import METRICS_PORT

__all__ = ["scrape", "METRICS_PORT"]


def scrape(netns: str, port: int = METRICS_PORT, timeout: float = 5.0) -> str:
    """GET /metrics on 127.0.0.1:`port` in `netns`; the exposition text."""
    with nsmod.entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with s:
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        status = head.split(b"\r\n")[0].decode(errors="replace")
        raise NetlabError(f"{netns}:{port} answered {status!r}")
    return body.decode()
