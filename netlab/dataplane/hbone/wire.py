"""What HBONE puts on the wire besides bytes: sizes, the CONNECT headers, errors (§4)."""

from __future__ import annotations

import ipaddress
import ssl
from typing import Awaitable

STREAM_WINDOW = 8 << 20
CONN_WINDOW = 16 << 20
# 64 KiB: big enough that per-frame Python work is small, small enough that every
# buffer h2 allocates per frame stays under glibc's mmap threshold (128 KiB); above
# it each frame costs fresh pages and page faults, and throughput falls by ~5x.
MAX_FRAME = 64 << 10
RELAY_CHUNK = 64 << 10
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
                 traceparent: str | None = None) -> dict[str, str]:
    """The optional HBONE request headers of §4, shaped like ztunnel's."""
    out: dict[str, str] = {}
    if forwarded_for:
        ip, port = forwarded_for
        host = f"[{ip}]" if ":" in ip else ip
        out["forwarded"] = f'for="{host}:{port}"'
    if baggage:
        out["baggage"] = ",".join(f"{k}={v}" for k, v in baggage.items())
    if traceparent:
        out["traceparent"] = traceparent
    return out
