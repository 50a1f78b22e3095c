"""What HBONE puts on the wire besides bytes: sizes, the CONNECT headers, errors (§4)."""

from __future__ import annotations

import ipaddress
import ssl
from typing import Awaitable

# ztunnel's own defaults (HTTP2_STREAM_WINDOW_SIZE, HTTP2_CONNECTION_WINDOW_SIZE,
# HTTP2_FRAME_SIZE in its config.rs): 4 MiB per stream, 16 MiB per connection, 1 MiB
# frames. Big frames also keep h2's per-frame Python work small next to the bytes
# moved. Buffers this size sit above glibc's default mmap threshold, so each one was a
# fresh mapping plus page faults; ztunnel raises the threshold at start
# (dataplane.proxy.config.tune_malloc).
STREAM_WINDOW = 4 << 20
CONN_WINDOW = 16 << 20
MAX_FRAME = 1 << 20
RELAY_CHUNK = 256 << 10  # the most one asyncio socket read returns
DEFAULT_WINDOW = 65535

class HboneError(Exception):
    """The HBONE server answered something other than 200 (or the tunnel broke)."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"HBONE CONNECT answered {status}")
        self.status = status


async def maybe_await(x: ssl.SSLContext | Awaitable[ssl.SSLContext]) -> ssl.SSLContext:
    return x if isinstance(x, ssl.SSLContext) else await x


def parse_authority(authority: str | None) -> tuple[str, int] | None:
    """`ip:port` or `[ip6]:port` → (ip, port); anything else (names included) → None."""
    if not authority:
        return None
    host, sep, port = authority.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 6 and not authority.startswith("["):
        return None
    return str(ip), int(port)


def make_headers(forwarded_for: tuple[str, int] | None = None, baggage: dict[str, str] | None = None,
                 traceparent: str | None = None, forwarded_host: str | None = None) -> dict[str, str]:
    """The optional HBONE request headers of §4, shaped like ztunnel's.

    `forwarded_host`: the intended Service's hostname, which ztunnel 1.24 adds as
    `host=` so the destination (ztunnel or waypoint) knows the Service (mesh-facts-2 §G4).
    """
    out: dict[str, str] = {}
    parts = []
    if forwarded_for:
        ip, port = forwarded_for
        host = f"[{ip}]" if ":" in ip else ip
        parts.append(f'for="{host}:{port}"')
    if forwarded_host:
        parts.append(f"host={forwarded_host}")
    if parts:
        out["forwarded"] = ";".join(parts)
    if baggage:
        out["baggage"] = ",".join(f"{k}={v}" for k, v in baggage.items())
    if traceparent:
        out["traceparent"] = traceparent
    return out
